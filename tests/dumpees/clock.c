/* Round-trip dumpee: every tick compares glibc's clock_gettime (which goes
 * through the vDSO) with the raw system call, and reports whether they
 * agree, to argv[1].  Lines: "tick=N vdso=ok|BAD" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 1;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	for (unsigned long tick = 1;; tick++) {
		struct timespec a, b, c;
		syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &a);
		clock_gettime(CLOCK_MONOTONIC, &b);
		syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &c);
		double ta = a.tv_sec + a.tv_nsec / 1e9, tb = b.tv_sec + b.tv_nsec / 1e9, tc = c.tv_sec + c.tv_nsec / 1e9;
		dprintf(out, "tick=%lu vdso=%s\n", tick, ta <= tb && tb <= tc ? "ok" : "BAD");
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
