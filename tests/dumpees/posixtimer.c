/* Round-trip dumpee: two POSIX timers, the second firing SIGUSR2 every
 * 20 ms into a counting handler. Every tick reports to argv[1] how often
 * it fired and what timer_gettime says of the second timer (through the
 * timer_t the program holds, so its id must have come back).
 * Lines: "fired=N interval_ns=20000000 id=1 armed=1"
 * Two more fire every 5 ms blocked signals, so each has its signal
 * pending at any time: SIGRTMIN+1 to the process, SIGRTMIN+2 to the main
 * thread (SIGEV_THREAD_ID). Once GOFILE (argv[2]) exists, one tick takes
 * every instance of both and reports how many came from their timer:
 * "pending rt1=1 rt2=1" (the kernel keeps one signal per timer).
 * usage: posixtimer OUTFILE [GOFILE] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t fired;

static void on_usr2(int sig)
{
	(void)sig;
	fired++;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 1;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct sigaction sa = {.sa_handler = on_usr2, .sa_flags = SA_RESTART};
	sigaction(SIGUSR2, &sa, 0);
	timer_t idle, t;
	struct sigevent ev = {.sigev_notify = SIGEV_NONE};
	timer_create(CLOCK_MONOTONIC, &ev, &idle);
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGUSR2;
	timer_create(CLOCK_MONOTONIC, &ev, &t);
	struct itimerspec its = {{0, 20000000}, {0, 20000000}};
	timer_settime(t, 0, &its, 0);
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN + 1);
	sigaddset(&rt, SIGRTMIN + 2);
	sigprocmask(SIG_BLOCK, &rt, 0);
	timer_t rt1, rt2;
	ev.sigev_signo = SIGRTMIN + 1;
	timer_create(CLOCK_MONOTONIC, &ev, &rt1);
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGRTMIN + 2;
	ev._sigev_un._tid = gettid();
	timer_create(CLOCK_MONOTONIC, &ev, &rt2);
	struct itimerspec fast = {{0, 5000000}, {0, 5000000}};
	timer_settime(rt1, 0, &fast, 0);
	timer_settime(rt2, 0, &fast, 0);
	int checked = 0;
	for (;;) {
		if (argc > 2 && !checked && access(argv[2], F_OK) == 0) {
			int n1 = 0, n2 = 0, other = 0;
			siginfo_t si;
			struct timespec none = {0, 0};
			while (sigtimedwait(&rt, &si, &none) > 0) {
				if (si.si_code == SI_TIMER && si.si_signo == SIGRTMIN + 1 && si.si_timerid == (int)(long)rt1)
					n1++;
				else if (si.si_code == SI_TIMER && si.si_signo == SIGRTMIN + 2 && si.si_timerid == (int)(long)rt2)
					n2++;
				else
					other++;
			}
			dprintf(out, "pending rt1=%d rt2=%d other=%d\n", n1, n2, other);
			checked = 1;
		}
		struct itimerspec now;
		int ok = timer_gettime(t, &now) == 0;
		dprintf(out, "fired=%d interval_ns=%ld id=%ld armed=%d\n", (int)fired, ok ? now.it_interval.tv_nsec : -1L,
			(long)t, ok && (now.it_value.tv_sec || now.it_value.tv_nsec));
		struct timespec ts = {0, 50000000};
		while (nanosleep(&ts, &ts) != 0)
			;
	}
}
