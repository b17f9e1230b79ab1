/* The main thread computes without system calls; a second thread answers
 * pings with the main thread's progress, so a dump catches a thread
 * interrupted in user code (no system call to restart). */
#include "pingpong.h"
#include <pthread.h>

static volatile unsigned long progress;

static void *answer(void *arg)
{
	(void)arg;
	pingpong();
	return 0;
}

int main(void)
{
	pthread_t t;
	fill_pattern(4096);
	if (pthread_create(&t, 0, answer, 0))
		return 2;
	for (;;)
		progress++;
}
