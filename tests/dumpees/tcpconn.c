/* Both ends of TCP connections in one process: an IPv4 and an IPv6 pair
 * (client connected to a listener of ours, server end accepted), each
 * with bytes always in flight both ways: every tick the client sends 1000
 * bytes the server reads only on the next tick, and the server writes up
 * to 16 KiB the client takes 4 KiB of per tick, so the server's send
 * queue stays full. Byte i of either stream is (i*13+5)&255 (client to
 * server) or (i*7+3)&255 (server to client), checked as read.
 * With "half", a third pair whose client has shut down its sending side:
 * the server end sees the end of its stream and still writes 100 bytes a
 * tick that the client reads.
 * Every 50 ms: "tick=N tcp=ok|BAD:WHAT" to OUTFILE.
 * usage: tcpconn OUTFILE [half] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct pair {
	int c, s;
	long up_sent, up_read;     /* client to server */
	long down_sent, down_read; /* server to client */
	int half;
};

static char bad[256];

static void fail(const char *what, int k)
{
	if (!bad[0])
		snprintf(bad, sizeof(bad), "%s(%d,%d)", what, k, errno);
}

static int pair(struct pair *p, int family, int half)
{
	int one = 1;
	struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	struct sockaddr *a = family == AF_INET ? (void *)&lo : (void *)&lo6;
	socklen_t al = family == AF_INET ? sizeof(lo) : sizeof(lo6);
	int l = socket(family, SOCK_STREAM, 0);
	if (bind(l, a, al) || listen(l, 1) || getsockname(l, a, &al))
		return -1;
	p->c = socket(family, SOCK_STREAM, 0);
	if (connect(p->c, a, al))
		return -1;
	p->s = accept(l, NULL, NULL);
	close(l);
	setsockopt(p->c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(p->c, F_SETFL, O_NONBLOCK);
	fcntl(p->s, F_SETFL, O_NONBLOCK);
	p->half = half;
	if (half)
		shutdown(p->c, SHUT_WR);
	return p->s < 0 ? -1 : 0;
}

static void step(struct pair *p, int k)
{
	char buf[16384];
	ssize_t n;
	/* The server reads what the client sent last tick. */
	while ((n = read(p->s, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++, p->up_read++)
			if (buf[i] != (char)((p->up_read * 13 + 5) & 255))
				return fail("up", k);
	if (n == 0 && !p->half)
		return fail("eof", k);
	if (n < 0 && errno != EAGAIN)
		return fail("sread", k);
	if (p->half && n != 0)
		return fail("noeof", k);
	/* It writes what the client's queue takes. */
	long want = p->half ? 100 : (long)sizeof(buf);
	for (long i = 0; i < want; i++)
		buf[i] = (char)(((p->down_sent + i) * 7 + 3) & 255);
	n = write(p->s, buf, want);
	if (n > 0)
		p->down_sent += n;
	else if (errno != EAGAIN)
		return fail("swrite", k);
	/* The client takes 4 KiB. */
	n = read(p->c, buf, 4096);
	if (n > 0) {
		for (ssize_t i = 0; i < n; i++, p->down_read++)
			if (buf[i] != (char)((p->down_read * 7 + 3) & 255))
				return fail("down", k);
	} else if (n == 0 || errno != EAGAIN)
		return fail("cread", k);
	if (p->half)
		return;
	/* And sends 1000 bytes, read next tick. */
	for (int i = 0; i < 1000; i++)
		buf[i] = (char)(((p->up_sent + i) * 13 + 5) & 255);
	n = write(p->c, buf, 1000);
	if (n > 0)
		p->up_sent += n;
	else if (errno != EAGAIN)
		return fail("cwrite", k);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int half = argc > 2 && !strcmp(argv[2], "half");
	struct pair p[3] = {0};
	int np = half ? 3 : 2;
	if (pair(&p[0], AF_INET, 0) || pair(&p[1], AF_INET6, 0) || (half && pair(&p[2], AF_INET, 1)))
		return 3;
	for (long tick = 1;; tick++) {
		struct timespec t = {0, 50000000};
		nanosleep(&t, NULL);
		for (int k = 0; k < np; k++)
			step(&p[k], k);
		char line[400];
		int len = snprintf(line, sizeof(line), "tick=%ld tcp=%s%s\n", tick, bad[0] ? "BAD:" : "ok", bad);
		if (write(out, line, len) != len)
			return 4;
	}
}
