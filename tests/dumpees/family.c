/* Round-trip dumpee: a parent and its two children in one session, all
 * ticking into argv[1]; the first child leads a process group of its own,
 * which the second joins (as a shell's pipeline does). Once the file
 * argv[2] exists the parent stops its children, reaps them and reports
 * what wait returned for each.
 * Lines: "parent pid=P tick=N", "child pid=C ppid=P pgid=G tick=N",
 * "reaped pid=C signal=15" (one per child, in the order they were made) */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void nap(void)
{
	struct timespec ts = {0, 50000000};
	nanosleep(&ts, 0);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 1;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pid_t child[2];
	for (int i = 0; i < 2; i++) {
		child[i] = fork();
		/* Both sides set the group, so neither waits on the other. */
		if (child[i] == 0)
			setpgid(0, i ? child[0] : 0);
		else if (child[i] > 0)
			setpgid(child[i], child[0]);
		if (child[i] == 0) {
			for (unsigned long t = 1;; t++) {
				dprintf(out, "child pid=%d ppid=%d pgid=%d tick=%lu\n", getpid(), getppid(), getpgrp(), t);
				nap();
			}
		}
	}
	for (unsigned long t = 1;; t++) {
		if (access(argv[2], F_OK) == 0) {
			for (int i = 0; i < 2; i++) {
				kill(child[i], SIGTERM);
				int st;
				pid_t got = waitpid(child[i], &st, 0);
				dprintf(out, "reaped pid=%d signal=%d\n", got, WIFSIGNALED(st) ? WTERMSIG(st) : -1);
			}
			return 0;
		}
		dprintf(out, "parent pid=%d tick=%lu\n", getpid(), t);
		nap();
	}
}
