/* An eventfd, a timerfd (every 10 ms), a signalfd (SIGUSR2) and an epoll
 * watching the eventfd, made before a fork (as an event loop made before
 * a fork is), so that parent and child share each: the child reads the
 * eventfd and the timerfd and counts what it gets in a shared page.
 * Every tick the parent writes 1 to the eventfd: "tick=N shared=ok|BAD"
 * to OUTFILE, ok when each of the four is one file for both (kcmp), the
 * epoll still has the eventfd under its number (EPOLL_CTL_MOD finds it)
 * and the child counted the write within a second.
 * On SIGUSR1: writes 7 at once and waits for them: "data=ok|BAD".
 * usage: sharedfds OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t asked;

static void on_usr1(int sig)
{
	(void)sig;
	asked = 1;
}

/* Waits up to a second for the child's count to reach `want`. */
static int counted(volatile uint64_t *count, uint64_t want)
{
	for (int i = 0; i < 1000 && *count < want; i++) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, 0);
	}
	return *count == want;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	sigset_t usr2;
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	sigprocmask(SIG_BLOCK, &usr2, 0);
	int efd = eventfd(5, EFD_NONBLOCK), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	int sfd = signalfd(-1, &usr2, SFD_NONBLOCK);
	struct itimerspec every = {{0, 10000000}, {0, 10000000}};
	volatile uint64_t *count = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
	if (out < 0 || efd < 0 || tfd < 0 || sfd < 0 || ep != sfd + 1 || count == MAP_FAILED ||
	    timerfd_settime(tfd, 0, &every, 0) || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev))
		return 3;
	pid_t parent = getpid(), child = fork();
	if (child == 0) {
		while (getppid() == parent) {
			uint64_t v;
			if (read(efd, &v, 8) == 8)
				count[0] += v;
			if (read(tfd, &v, 8) == 8)
				count[1] += v;
			struct timespec ts = {0, 2000000};
			nanosleep(&ts, 0);
		}
		return 0;
	}
	signal(SIGUSR1, on_usr1);
	uint64_t written = 5;
	for (unsigned long tick = 1;; tick++) {
		uint64_t one = 1;
		int same = 1;
		for (int fd = efd; fd <= ep; fd++)
			same = same && syscall(SYS_kcmp, parent, child, KCMP_FILE, fd, fd) == 0;
		same = same && epoll_ctl(ep, EPOLL_CTL_MOD, efd, &ev) == 0;
		written += write(efd, &one, 8) == 8;
		int ok = same && counted(count, written);
		dprintf(out, "tick=%lu shared=%s\n", tick, ok ? "ok" : "BAD");
		if (asked) {
			asked = 0;
			uint64_t seven = 7;
			written += write(efd, &seven, 8) == 8 ? 7 : 0;
			dprintf(out, "data=%s\n", counted(count, written) && count[1] > 0 ? "ok" : "BAD");
		}
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
