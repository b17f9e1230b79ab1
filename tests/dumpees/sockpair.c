/* Unix socket pairs, each checked every tick:
 *   a stream pair between the parent and its child: the parent sends
 *     "ping N", the child answers "pong N" ("child");
 *   a datagram pair of the parent's with two messages waiting, "one" and
 *     "three!": read and sent again every tick, they must come back with
 *     their boundaries ("dgram");
 *   a seqpacket pair with one message waiting ("seqpacket");
 *   a stream pair whose writer sent "bye" and shut its sending side: the
 *     reader finds "bye" waiting and the writer may not send ("shutdown");
 *   the datagram reader's O_NONBLOCK, and its 1.5 s receive timeout
 *     ("opts").
 * Every tick: "tick=N child=ok dgram=ok seqpacket=ok shutdown=ok opts=ok"
 * (BAD where not) to OUTFILE.
 * usage: sockpair OUTFILE */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int pair(int type, int sv[2])
{
	return socketpair(AF_UNIX, type, 0, sv);
}

/* Reads the next message and sends it again from `from`; it must be `want`. */
static int cycle(int to, int from, const char *want)
{
	char buf[64];
	ssize_t n = recv(to, buf, sizeof(buf), MSG_DONTWAIT);
	int ok = n == (ssize_t)strlen(want) && memcmp(buf, want, n) == 0;
	if (n > 0)
		send(from, buf, n, 0);
	return ok;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int st[2], dg[2], sp[2], sh[2];
	if (out < 0 || pair(SOCK_STREAM, st) || pair(SOCK_DGRAM, dg) || pair(SOCK_SEQPACKET, sp) || pair(SOCK_STREAM, sh))
		return 3;
	if (fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(st[0]);
		char buf[64];
		for (;;) {
			ssize_t n = read(st[1], buf, sizeof(buf) - 1);
			if (n <= 0)
				return 0;
			buf[n] = 0;
			unsigned long k;
			if (sscanf(buf, "ping %lu", &k) == 1)
				dprintf(st[1], "pong %lu", k);
		}
	}
	close(st[1]);
	send(dg[1], "one", 3, 0);
	send(dg[1], "three!", 6, 0);
	send(sp[1], "seq", 3, 0);
	if (write(sh[1], "bye", 3) != 3 || shutdown(sh[1], SHUT_WR))
		return 4;
	fcntl(dg[0], F_SETFL, O_NONBLOCK);
	struct timeval tmo = {1, 500000};
	setsockopt(dg[0], SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo));
	for (unsigned long tick = 1;; tick++) {
		char buf[64];
		dprintf(st[0], "ping %lu", tick);
		ssize_t n = read(st[0], buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = 0;
		char want[64];
		snprintf(want, sizeof(want), "pong %lu", tick);
		int child = strcmp(buf, want) == 0;
		int dgram = cycle(dg[0], dg[1], "one") && cycle(dg[0], dg[1], "three!");
		int seq = cycle(sp[0], sp[1], "seq");
		n = recv(sh[0], buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
		int shut = n == 3 && memcmp(buf, "bye", 3) == 0 && send(sh[1], "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE;
		struct timeval t = {0, 0};
		socklen_t len = sizeof(t);
		int opts = (fcntl(dg[0], F_GETFL) & O_NONBLOCK) && getsockopt(dg[0], SOL_SOCKET, SO_RCVTIMEO, &t, &len) == 0 &&
			   t.tv_sec == 1 && t.tv_usec == 500000;
		dprintf(out, "tick=%lu child=%s dgram=%s seqpacket=%s shutdown=%s opts=%s\n", tick, child ? "ok" : "BAD",
			dgram ? "ok" : "BAD", seq ? "ok" : "BAD", shut ? "ok" : "BAD", opts ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
