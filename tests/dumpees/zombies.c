/* A parent with two zombie children: one exited with code 7, one killed
 * by SIGTERM. It leaves them unreaped until the file REAPFILE exists, then
 * waits for both and reports how they ended; until then every tick names
 * them, with how many SIGCHLDs it has had (a restore must not add any).
 * usage: zombies OUTFILE REAPFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t chld;

static void on_chld(int sig)
{
	(void)sig;
	chld++;
}

static const char *how(int status, int *n)
{
	*n = WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status);
	return WIFEXITED(status) ? "exit" : "signal";
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 1;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 2;
	struct sigaction sa_chld = {.sa_handler = on_chld, .sa_flags = SA_RESTART};
	sigaction(SIGCHLD, &sa_chld, 0);
	pid_t a = fork();
	if (a == 0)
		_exit(7);
	pid_t b = fork();
	if (b == 0) {
		pause();
		_exit(0);
	}
	kill(b, SIGTERM);
	/* Both dead, neither reaped. */
	siginfo_t si;
	if (waitid(P_PID, a, &si, WEXITED | WNOWAIT) || waitid(P_PID, b, &si, WEXITED | WNOWAIT))
		return 3;
	int sa = -1, sb = -1;
	for (unsigned long tick = 1;; tick++) {
		if (sa < 0 && access(argv[2], F_OK) == 0 && (waitpid(a, &sa, 0) != a || waitpid(b, &sb, 0) != b))
			return 4;
		if (sa < 0) {
			dprintf(fd, "pid=%d tick=%lu zombies a=%d b=%d chld=%d\n", getpid(), tick, a, b, (int)chld);
		} else {
			int na, nb;
			const char *ha = how(sa, &na), *hb = how(sb, &nb);
			dprintf(fd, "pid=%d tick=%lu reaped a=%s:%d b=%s:%d\n", getpid(), tick, ha, na, hb, nb);
		}
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
