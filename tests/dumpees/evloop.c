/* An event loop's kernel objects, each checked every tick:
 *   an eventfd in semaphore mode, counting down from 1000 by one read a
 *     tick ("efd": each read gives 1 and fdinfo's count is 1000 - reads);
 *   a timerfd firing every 20 ms ("tfd": it fired since the last tick, its
 *     interval is still 20 ms);
 *   a signalfd for SIGUSR1, which is blocked and raised every tick ("sfd":
 *     the signalfd reads it);
 *   an epoll watching all three (the timer edge-triggered) and the read
 *     end of a pipe that holds 3 bytes nobody reads, each with its own
 *     data ("epoll": after the raise, one epoll_wait reports all four with
 *     the right data, the eventfd while its count is above zero);
 *   a second fd on the eventfd (dup), which must read the same counter.
 * Every tick: "tick=N efd=ok tfd=ok sfd=ok epoll=ok" (BAD where not).
 * usage: evloop OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static void nap(long ms)
{
	struct timespec ts = {0, ms * 1000000};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* The eventfd's count as /proc/self/fdinfo shows it, -1 if unknown. */
static long long count(int fd)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	ssize_t n = f < 0 ? -1 : read(f, buf, sizeof(buf) - 1);
	if (f >= 0)
		close(f);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *c = strstr(buf, "eventfd-count:");
	return c ? strtoll(c + 14, 0, 16) : -1;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, 0);
	int efd = eventfd(1000, EFD_SEMAPHORE | EFD_NONBLOCK);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	int sfd = signalfd(-1, &usr1, SFD_NONBLOCK);
	int ep = epoll_create1(0);
	int pipefd[2];
	if (out < 0 || efd < 0 || tfd < 0 || sfd < 0 || ep < 0 || pipe(pipefd) < 0 || write(pipefd[1], "abc", 3) != 3)
		return 3;
	int edup = dup(efd);
	struct itimerspec every = {{0, 20000000}, {0, 20000000}};
	if (timerfd_settime(tfd, 0, &every, 0))
		return 4;
	struct epoll_event ev[8] = {
		{EPOLLIN, {.u64 = 0x1111}}, {EPOLLIN | EPOLLET, {.u64 = 0x2222}},
		{EPOLLIN, {.u64 = 0x3333}}, {EPOLLIN, {.u64 = 0x4444}}};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev[0]) || epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev[1]) ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev[2]) || epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &ev[3]))
		return 5;
	long long reads = 0;
	for (unsigned long tick = 1;; tick++) {
		nap(30);
		raise(SIGUSR1);
		int n = epoll_wait(ep, ev, 8, 1000), seen = 0;
		for (int i = 0; i < n; i++)
			if (ev[i].events & EPOLLIN)
				seen |= ev[i].data.u64 == 0x1111 ? 1 : ev[i].data.u64 == 0x2222 ? 2 :
					ev[i].data.u64 == 0x3333 ? 4 : ev[i].data.u64 == 0x4444 ? 8 : 16;
		/* The eventfd is readable while its count is above zero. */
		int want = 14 | (count(efd) > 0);
		uint64_t v = 0, fired = 0;
		int efd_ok = read(tick % 2 ? efd : edup, &v, 8) == 8 && v == 1;
		reads++;
		efd_ok = efd_ok && count(efd) == 1000 - reads;
		struct itimerspec now;
		int tfd_ok = read(tfd, &fired, 8) == 8 && fired >= 1 && timerfd_gettime(tfd, &now) == 0 &&
			     now.it_interval.tv_sec == 0 && now.it_interval.tv_nsec == 20000000;
		struct signalfd_siginfo si;
		int sfd_ok = read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo == SIGUSR1;
		dprintf(out, "tick=%lu efd=%s tfd=%s sfd=%s epoll=%s\n", tick, efd_ok ? "ok" : "BAD", tfd_ok ? "ok" : "BAD",
			sfd_ok ? "ok" : "BAD", seen == want ? "ok" : "BAD");
	}
}
