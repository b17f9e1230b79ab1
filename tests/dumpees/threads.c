/* Four threads: three wait on a pipe that never gets data, each with its
 * own blocked-signal mask; the main thread answers pings. */
#include "pingpong.h"
#include <pthread.h>
#include <signal.h>

static int never[2];

static void *waiter(void *arg)
{
	sigset_t s;
	char c;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + (int)(long)arg);
	pthread_sigmask(SIG_BLOCK, &s, 0);
	for (;;)
		if (read(never[0], &c, 1) <= 0)
			pause();
	return 0;
}

int main(void)
{
	pthread_t t;
	fill_pattern(64 << 10);
	if (pipe(never))
		return 2;
	for (long i = 1; i <= 3; i++)
		if (pthread_create(&t, 0, waiter, (void *)i))
			return 3;
	pingpong();
}
