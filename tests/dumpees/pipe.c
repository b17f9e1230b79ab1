/* A pipe with both ends open and "buffered" waiting in it. */
#include "pingpong.h"

int main(void)
{
	int p[2];
	if (pipe(p) || write(p[1], "buffered", 8) != 8)
		return 2;
	fill_pattern(4096);
	pingpong();
}
