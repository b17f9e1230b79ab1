/* One thread, a patterned heap of argv[1] KiB, blocked in read(). */
#include "pingpong.h"

int main(int argc, char **argv)
{
	fill_pattern(argc > 1 ? strtoul(argv[1], 0, 10) * 1024 : 1 << 20);
	pingpong();
}
