/* A child stopped by SIGTSTP in a process group that is not orphaned (its
 * parent made the group and has its own parent, the root, in another group
 * of the session): after a restore its parent must see it stopped by
 * SIGTSTP again, not by SIGSTOP. The parent writes what waitid reports
 * every tick: "tick=N stopsig=20".
 * usage: tstp OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (out < 0)
		return 3;
	if (fork() != 0) {
		/* The root: its child's group differs from its own. */
		for (;;)
			pause();
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	setpgid(0, 0);
	pid_t child = fork();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	kill(child, SIGTSTP);
	for (unsigned long tick = 1;; tick++) {
		siginfo_t info = {0};
		int stopsig = -1;
		if (waitid(P_PID, child, &info, WSTOPPED | WNOWAIT) == 0 && info.si_code == CLD_STOPPED)
			stopsig = info.si_status;
		dprintf(out, "tick=%lu stopsig=%d\n", tick, stopsig);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
