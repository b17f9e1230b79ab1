/* State a dump cannot keep yet, one kind per run: "files" and "fs" start a
 * child that shares the file table or cwd/umask (clone with CLONE_FILES or
 * CLONE_FS), "timens" asks for a new time namespace for the next children
 * (unshare(CLONE_NEWTIME)), "procfile" has a child keep its sibling's
 * /proc/PID/stat open, "mseal" seals a page, "mdwe" denies itself
 * writable executable memory (PR_SET_MDWE), "speculation" disables
 * speculative store bypass for itself (PR_SET_SPECULATION_CTRL),
 * "mempolicy" binds its memory to node 0 (set_mempolicy), "mbind" one area
 * (mbind), "mbindbig" one area beside 128 MiB of touched memory,
 * "passcred" and "timestamp" a datagram waiting on a unix socket that
 * gets its sender's credentials or its arrival time; each prints
 * "unsupported" where the kernel lacks it.
 * Prints "ready" on stdout, then sleeps.
 * usage: sharing files|fs|timens|procfile|mseal|mdwe|speculation|mempolicy|mbind|mbindbig|
 *        passcred|timestamp */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	if (strcmp(argv[1], "timens") == 0) {
		if (unshare(CLONE_NEWTIME))
			return 3;
	} else if (strcmp(argv[1], "procfile") == 0) {
		pid_t child = fork();
		if (child == 0)
			for (;;)
				pause();
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/stat", child);
		/* Ready once the sibling holds it. */
		int opened[2];
		if (pipe(opened))
			return 6;
		if (fork() == 0) {
			if (open(path, O_RDONLY) < 0 || write(opened[1], "o", 1) != 1)
				_exit(6);
			for (;;)
				pause();
		}
		char o;
		if (read(opened[0], &o, 1) != 1)
			return 6;
		close(opened[0]);
		close(opened[1]);
	} else if (strcmp(argv[1], "mseal") == 0) {
		char *p = mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 8;
		if (syscall(462 /* mseal on x86_64 */, p, 4096, 0)) {
			printf("unsupported\n");
			fflush(stdout);
		}
	} else if (strcmp(argv[1], "mbind") == 0 || strcmp(argv[1], "mbindbig") == 0) {
		/* One area bound to node 0. "mbindbig" also holds 128 MiB in
		 * another area: then asking each area costs less than reading
		 * numa_maps, and the dump asks (it reads for a small process). */
		unsigned long node0 = 1;
		char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 10;
		if (strcmp(argv[1], "mbindbig") == 0) {
			size_t big = 128 << 20;
			char *b = mmap(0, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (b == MAP_FAILED)
				return 11;
			memset(b, 1, big);
		}
		if (syscall(SYS_mbind, p, 4096, 2 /* MPOL_BIND */, &node0, 8 * sizeof node0, 0)) {
			printf("unsupported\n");
			fflush(stdout);
		}
		p[0] = 1;
	} else if (strcmp(argv[1], "mempolicy") == 0) {
		unsigned long node0 = 1;
		if (syscall(SYS_set_mempolicy, 2 /* MPOL_BIND */, &node0, 8 * sizeof node0)) {
			printf("unsupported\n");
			fflush(stdout);
		}
	} else if (strcmp(argv[1], "mdwe") == 0) {
		if (prctl(65 /* PR_SET_MDWE */, 1 /* REFUSE_EXEC_GAIN */, 0, 0, 0)) {
			printf("unsupported\n");
			fflush(stdout);
		}
	} else if (strcmp(argv[1], "onfault") == 0) {
		char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 9;
		if (syscall(SYS_mlock2, p, 4096, 1 /* MLOCK_ONFAULT */)) {
			printf("unsupported\n");
			fflush(stdout);
		}
	} else if (strcmp(argv[1], "anonname") == 0) {
		char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return 10;
		if (prctl(0x53564d41 /* PR_SET_VMA */, 0 /* PR_SET_VMA_ANON_NAME */, p, 4096, "cache")) {
			printf("unsupported\n");
			fflush(stdout);
		}
	} else if (strcmp(argv[1], "corecookie") == 0) {
		if (prctl(62 /* PR_SCHED_CORE */, 1 /* PR_SCHED_CORE_CREATE */, 0, 0 /* PIDTYPE_PID */, 0)) {
			printf("unsupported\n");
			fflush(stdout);
		}
	} else if (strcmp(argv[1], "passcred") == 0 || strcmp(argv[1], "timestamp") == 0) {
		int sv[2], one = 1;
		int opt = strcmp(argv[1], "passcred") == 0 ? SO_PASSCRED : SO_TIMESTAMP;
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) || setsockopt(sv[0], SOL_SOCKET, opt, &one, sizeof(one)) ||
		    send(sv[1], "hi", 2, 0) != 2)
			return 11;
	} else if (strcmp(argv[1], "speculation") == 0) {
		if (prctl(PR_SET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, PR_SPEC_DISABLE, 0, 0)) {
			printf("unsupported\n");
			fflush(stdout);
		}
	} else {
		int flag = strcmp(argv[1], "files") == 0 ? CLONE_FILES : CLONE_FS;
		size_t size = 64 * 1024;
		char *stack = malloc(size);
		if (clone(sleeper, stack + size, flag | SIGCHLD, 0) < 0)
			return 4;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
