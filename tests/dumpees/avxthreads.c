/* Round-trip dumpee: three threads besides main, each keeping its own value
 * in ymm8 across a raw nanosleep (where a dump catches it) and reporting
 * whether the value survived, with its TID, to argv[1].
 * Lines: "tid=T n=N ymm=ok|BAD" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int fd;

static void *worker(void *arg)
{
	double v = 1.5 + (long)arg;
	pid_t tid = gettid();
	for (unsigned long n = 1;; n++) {
		struct timespec ts = {0, 50000000};
		long r;
		double out[4];
		__asm__ volatile("vbroadcastsd %0, %%ymm8" : : "m"(v) : "xmm8");
		/* No libc between loading and checking ymm8: nothing else may
		 * touch it but the kernel (and a checkpoint). */
		__asm__ volatile("syscall" : "=a"(r) : "a"(SYS_nanosleep), "D"(&ts), "S"(0) : "rcx", "r11", "memory");
		__asm__ volatile("vmovupd %%ymm8, %0" : "=m"(out));
		int ok = out[0] == v && out[1] == v && out[2] == v && out[3] == v;
		dprintf(fd, "tid=%d n=%lu ymm=%s\n", tid, n, ok ? "ok" : "BAD");
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 1;
	fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pthread_t t[3];
	for (long i = 0; i < 3; i++)
		pthread_create(&t[i], 0, worker, (void *)i);
	worker((void *)3);
}
