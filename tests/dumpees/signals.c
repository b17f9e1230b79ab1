/* Round-trip dumpee for signal state. A 20 ms interval timer fires a
 * SIGALRM handler on an alternate stack; SIGUSR1 is blocked and pending
 * (raised once); SIGUSR2 is blocked. Every tick reports to argv[1] how
 * often the handler ran, whether it last ran on the alternate stack, and
 * the mask, and raises SIGTRAP to see its handler run (the restorer's own
 * traps must not take it away). Once the file argv[2] exists it unblocks
 * SIGUSR1, reports whether its handler ran, and exits.
 * Lines: "alarms=N onstack=1 trap=1 usr2blocked=1", "usr1=delivered" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char altstack[65536];
static volatile sig_atomic_t alarms, onstack, usr1, traps;

static void on_alarm(int sig)
{
	char here;
	(void)sig;
	alarms++;
	onstack = &here >= altstack && &here < altstack + sizeof altstack;
}

static void on_trap(int sig)
{
	(void)sig;
	traps++;
}

static void on_usr1(int sig)
{
	(void)sig;
	usr1 = 1;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 1;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
	sigaltstack(&ss, 0);
	struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_ONSTACK | SA_RESTART};
	sigaction(SIGALRM, &sa, 0);
	sa.sa_handler = on_usr1;
	sa.sa_flags = 0;
	sigaction(SIGUSR1, &sa, 0);
	sa.sa_handler = on_trap;
	sigaction(SIGTRAP, &sa, 0);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, 0);
	raise(SIGUSR1);
	struct itimerval it = {{0, 20000}, {0, 20000}};
	setitimer(ITIMER_REAL, &it, 0);
	for (;;) {
		if (access(argv[2], F_OK) == 0) {
			sigset_t one;
			sigemptyset(&one);
			sigaddset(&one, SIGUSR1);
			sigprocmask(SIG_UNBLOCK, &one, 0);
			dprintf(out, "usr1=%s\n", usr1 ? "delivered" : "lost");
			return 0;
		}
		sigset_t now;
		sigprocmask(SIG_BLOCK, 0, &now);
		int before = traps;
		raise(SIGTRAP);
		dprintf(out, "alarms=%d onstack=%d trap=%d usr2blocked=%d\n", (int)alarms, (int)onstack, traps == before + 1,
			sigismember(&now, SIGUSR2));
		struct timespec ts = {0, 50000000};
		while (nanosleep(&ts, &ts) != 0)
			;
	}
}
