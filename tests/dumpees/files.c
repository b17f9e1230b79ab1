/* Open regular files: argv[1] read-write at offset 5, the same description
 * again at fd 10, /dev/null read-only at fd 7 with close-on-exec. */
#define _GNU_SOURCE
#include "pingpong.h"
#include <fcntl.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int fd = open(argv[1], O_RDWR);
	if (fd < 0 || lseek(fd, 5, SEEK_SET) != 5 || dup2(fd, 10) != 10)
		return 3;
	int n = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (n < 0 || dup3(n, 7, O_CLOEXEC) != 7)
		return 4;
	close(n);
	fill_pattern(4096);
	pingpong();
}
