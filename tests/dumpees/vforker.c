/* A process that cannot be stopped for a while: it vforks a child that
 * sleeps SECONDS before it exits, so the parent waits uninterruptibly
 * (D) until then. It writes "ready PID" to OUTFILE first, then, once
 * the vfork is over, "done PID".
 * usage: vforker OUTFILE SECONDS */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (out < 0)
		return 3;
	dprintf(out, "ready %d\n", getpid());
	if (vfork() == 0) {
		sleep(atoi(argv[2]));
		_exit(0);
	}
	dprintf(out, "done %d\n", getpid());
	for (;;)
		pause();
}
