/* Holds a read lease on FILE (created if needed). Prints "ready" once it
 * holds it, then sleeps.
 * usage: locked FILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	close(open(argv[1], O_RDWR | O_CREAT, 0644));
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK))
		return 3;
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
