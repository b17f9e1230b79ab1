/* A process group whose leader is gone, as a job-control shell leaves a
 * pipeline whose first command exited: the root (a child subreaper)
 * forks L, which makes its own group, forks M (which sleeps) and, with
 * CLONE_PARENT, Z (the root's child, which exits at once and stays a
 * zombie), and exits; the root reaps L only. M and the zombie Z are the
 * root's children in group L, which nothing leads.
 * Every tick the root appends "tick=N group=ok" (or "group=BAD:WHAT") to
 * OUTFILE: M and Z are still in group L, and L's id is free.
 * usage: lonegroup OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	pid_t root = getpid();
	int ids[2];
	if (pipe(ids))
		return 2;
	pid_t l = fork();
	if (l == 0) {
		setpgid(0, 0);
		pid_t m = fork();
		if (m == 0) {
			/* Goes with the root (its parent once L is gone). */
			for (;;) {
				struct timespec ts = {0, 100000000};
				nanosleep(&ts, 0);
				if (kill(root, 0) != 0)
					_exit(0);
			}
		}
		pid_t z = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
		if (z == 0)
			_exit(7);
		pid_t both[2] = {m, z};
		write(ids[1], both, sizeof both);
		_exit(0);
	}
	pid_t both[2];
	if (read(ids[0], both, sizeof both) != sizeof both || waitpid(l, 0, 0) != l)
		return 3;
	siginfo_t info;
	if (waitid(P_PID, both[1], &info, WEXITED | WNOWAIT))
		return 4;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	for (unsigned long tick = 1;; tick++) {
		char why[64] = "";
		if (getpgid(both[0]) != l)
			snprintf(why, sizeof why, "member%d", getpgid(both[0]));
		else if (getpgid(both[1]) != l)
			snprintf(why, sizeof why, "zombie%d", getpgid(both[1]));
		else if (kill(l, 0) == 0)
			snprintf(why, sizeof why, "leader-there");
		else if (waitid(P_PID, both[1], &info, WEXITED | WNOWAIT) || info.si_status != 7)
			snprintf(why, sizeof why, "zombie-status");
		dprintf(out, "tick=%lu group=%s%s\n", tick, why[0] ? "BAD:" : "ok", why);
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
