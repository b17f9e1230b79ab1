/* pidfds on processes of the tree: on itself, on its child and on the
 * child's child (a grandchild the restore makes after this process opens
 * its files), one of them non-blocking; and two pidfds (two descriptions)
 * on a second child that has exited and been collected, one of them
 * non-blocking. Every tick: "tick=N pidfd=ok|BAD" to OUTFILE, checking
 * that each live one names the right PID (its fdinfo) and that a signal
 * 0 through it reaches that process; that the dead ones name none (Pid
 * -1), poll as exited, refuse signals (ESRCH) and, where pidfs gives
 * pidfds inodes, share the inode of their process.
 * usage: pidfds OUTFILE */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The Pid line of fd's fdinfo; 0 when there is none to read. */
static int fdinfo_pid(int fd)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	ssize_t n = f < 0 ? -1 : read(f, buf, sizeof(buf) - 1);
	if (f >= 0)
		close(f);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *p = strstr(buf, "\nPid:");
	return p ? atoi(p + 5) : 0;
}

static int names(int fd, pid_t pid)
{
	return fdinfo_pid(fd) == pid && syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) == 0;
}

/* A pidfd of a process that has exited and been collected. */
static int dead(int fd)
{
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	return fdinfo_pid(fd) == -1 && poll(&pf, 1, 0) == 1 && (pf.revents & POLLIN) &&
	       syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) < 0 && errno == ESRCH;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int p[2];
	if (pipe(p))
		return 3;
	pid_t child = fork();
	if (child == 0) {
		pid_t g = fork();
		if (g == 0)
			for (;;)
				pause();
		if (write(p[1], &g, sizeof(g)) != sizeof(g))
			_exit(1);
		for (;;)
			pause();
	}
	pid_t grandchild;
	if (read(p[0], &grandchild, sizeof(grandchild)) != sizeof(grandchild))
		return 4;
	int self = syscall(SYS_pidfd_open, getpid(), 0);
	int c = syscall(SYS_pidfd_open, child, O_NONBLOCK);
	int g = syscall(SYS_pidfd_open, grandchild, 0);
	if (self < 0 || c < 0 || g < 0)
		return 5;
	pid_t gone = fork();
	if (gone == 0) {
		pause();
		_exit(0);
	}
	int d1 = syscall(SYS_pidfd_open, gone, 0), d2 = syscall(SYS_pidfd_open, gone, O_NONBLOCK);
	if (d1 < 0 || d2 < 0 || kill(gone, SIGKILL) || waitpid(gone, 0, 0) != gone)
		return 6;
	struct stat s1, s2;
	/* Under pidfs (Linux 6.9) both have their process's inode. */
	int pidfs = !fstat(d1, &s1) && !fstat(d2, &s2) && s1.st_ino == s2.st_ino;
	for (unsigned long tick = 1;; tick++) {
		int ok = names(self, getpid()) && names(c, child) && names(g, grandchild) &&
			 (fcntl(c, F_GETFL) & O_NONBLOCK) && !(fcntl(g, F_GETFL) & O_NONBLOCK);
		ok = ok && dead(d1) && dead(d2) && (fcntl(d2, F_GETFL) & O_NONBLOCK) && !(fcntl(d1, F_GETFL) & O_NONBLOCK);
		ok = ok && (!pidfs || (!fstat(d1, &s1) && !fstat(d2, &s2) && s1.st_ino == s2.st_ino));
		dprintf(out, "tick=%lu pidfd=%s\n", tick, ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
