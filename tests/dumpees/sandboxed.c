/* Round-trip dumpee under seccomp filters. The main thread sets
 * no_new_privs and installs a filter that fails getppid with errno 77;
 * then it starts a thread, which inherits that filter and adds one that
 * fails getpgrp with errno 78. Every tick the main thread reports what
 * both calls did in both threads, so a restore shows whether each thread
 * got its own chain of filters back.
 * usage: sandboxed OUTFILE */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int deny(long nr, int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof f / sizeof f[0], f};
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* errno of a call, 0 if it worked. */
static int err_of(long nr)
{
	return syscall(nr) < 0 ? errno : 0;
}

static volatile int thread_ppid = -1, thread_pgrp = -1;

static void *worker(void *arg)
{
	(void)arg;
	if (deny(SYS_getpgrp, 78))
		return 0;
	for (;;) {
		thread_ppid = err_of(SYS_getppid);
		thread_pgrp = err_of(SYS_getpgrp);
		struct timespec ts = {0, 5000000};
		nanosleep(&ts, 0);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 1;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || deny(SYS_getppid, 77))
		return 2;
	pthread_t t;
	if (pthread_create(&t, 0, worker, 0))
		return 3;
	for (unsigned long tick = 1;; tick++) {
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
		dprintf(fd, "pid=%d tick=%lu main=%d,%d thread=%d,%d\n", getpid(), tick, err_of(SYS_getppid),
			err_of(SYS_getpgrp), thread_ppid, thread_pgrp);
	}
}
