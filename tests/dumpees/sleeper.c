/* Sleeps in nanosleep() in a loop, with a SIGUSR1 handler on an alternate
 * stack, SIGUSR2 blocked, SIGPIPE ignored and SIGCHLD left to its default
 * with SA_NOCLDSTOP; prints "tick N" after each sleep, so a dump catches it
 * inside an interrupted nanosleep. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on_usr1(int s) { got = s; }

int main(void)
{
	static char alt[65536];
	stack_t ss = { .ss_sp = alt, .ss_size = sizeof(alt) };
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_ONSTACK | SA_RESTART };
	sigset_t m;
	struct sigaction ign = { .sa_handler = SIG_IGN, .sa_flags = SA_RESTART };
	struct sigaction chld = { .sa_handler = SIG_DFL, .sa_flags = SA_NOCLDSTOP };
	if (sigaltstack(&ss, 0) || sigaction(SIGUSR1, &sa, 0) || sigaction(SIGPIPE, &ign, 0) ||
	    sigaction(SIGCHLD, &chld, 0))
		return 2;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	sigprocmask(SIG_BLOCK, &m, 0);
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (unsigned long n = 1;; n++) {
		struct timespec t = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
		while (nanosleep(&t, &t))
			;
		printf("tick %lu\n", n);
		fflush(stdout);
	}
}
