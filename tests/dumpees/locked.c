/* Holds a read lease on FILE (created if needed) that is being broken: a
 * child's non-blocking open for writing started the break, and the lease
 * stays "BREAKING" until it is given up or the kernel's lease-break-time
 * runs out. Prints "ready" then, and sleeps (SIGIO, which says the lease
 * is being broken, ignored).
 * usage: locked FILE */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	signal(SIGIO, SIG_IGN);
	close(open(argv[1], O_RDWR | O_CREAT, 0644));
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK))
		return 3;
	pid_t c = fork();
	if (c == 0)
		_exit(open(argv[1], O_WRONLY | O_NONBLOCK) < 0 && errno == EWOULDBLOCK ? 0 : 1);
	int status = -1;
	if (waitpid(c, &status, 0) != c || status != 0)
		return 4;
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
