/* Three threads: two sleep in nanosleep() loops counting, the main thread
 * prints "tick N" with the sum of their counts after each of its sleeps.
 * Needs no stdin, so a restore by another tool can run it on files. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long counts[2];

static void nap(long ms)
{
	struct timespec t = { .tv_sec = 0, .tv_nsec = ms * 1000 * 1000 };
	while (nanosleep(&t, &t))
		;
}

static void *counter(void *arg)
{
	for (;;) {
		nap(20);
		counts[(long)arg]++;
	}
	return 0;
}

int main(void)
{
	pthread_t t;
	for (long i = 0; i < 2; i++)
		if (pthread_create(&t, 0, counter, (void *)i))
			return 2;
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (unsigned long n = 1;; n++) {
		nap(50);
		printf("tick %lu %lu\n", n, counts[0] + counts[1]);
		fflush(stdout);
	}
}
