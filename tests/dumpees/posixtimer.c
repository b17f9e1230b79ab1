/* Round-trip dumpee: two POSIX timers, the second firing SIGUSR2 every
 * 20 ms into a counting handler. Every tick reports to argv[1] how often
 * it fired and what timer_gettime says of the second timer (through the
 * timer_t the program holds, so its id must have come back).
 * Lines: "fired=N interval_ns=20000000 id=1 armed=1" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
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
	for (;;) {
		struct itimerspec now;
		int ok = timer_gettime(t, &now) == 0;
		dprintf(out, "fired=%d interval_ns=%ld id=%ld armed=%d\n", (int)fired, ok ? now.it_interval.tv_nsec : -1L,
			(long)t, ok && (now.it_value.tv_sec || now.it_value.tv_nsec));
		struct timespec ts = {0, 50000000};
		while (nanosleep(&ts, &ts) != 0)
			;
	}
}
