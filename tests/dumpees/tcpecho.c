/* A TCP server for a client outside the tree: listens on 127.0.0.1 and
 * ::1 (ports chosen by the kernel, written "port4=P port6=Q" as the first
 * line of OUTFILE), serves every connection: each line "N" gets "N*2",
 * a space and N%50 'x's back; "flood K" gets K bytes (byte i is
 * (i*7+3)&255) back, written blocking, so that the server stalls while
 * the client does not read. A tick line "tick=N conns=C" every 100 ms.
 * usage: tcpecho OUTFILE */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 16

struct conn {
	int fd;
	char buf[4096];
	size_t len;
};

static int out;

static void say(const char *s)
{
	if (write(out, s, strlen(s)) < 0)
		exit(3);
}

static int port_of(int fd)
{
	struct sockaddr_in6 a;
	socklen_t l = sizeof(a);
	getsockname(fd, (void *)&a, &l);
	return ntohs(a.sin6_port);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return;
		p += w;
		n -= w;
	}
}

static void serve_line(int fd, char *line)
{
	char reply[128];
	if (!strncmp(line, "flood ", 6)) {
		long k = atol(line + 6);
		static char chunk[65536];
		for (long i = 0; i < k;) {
			long n = k - i < (long)sizeof(chunk) ? k - i : (long)sizeof(chunk);
			for (long j = 0; j < n; j++)
				chunk[j] = (char)(((i + j) * 7 + 3) & 255);
			write_all(fd, chunk, n);
			i += n;
		}
		return;
	}
	long n = atol(line);
	int len = snprintf(reply, sizeof(reply), "%ld ", n * 2);
	for (long i = 0; i < n % 50; i++)
		reply[len++] = 'x';
	reply[len++] = '\n';
	write_all(fd, reply, len);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int one = 1;
	struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int l4 = socket(AF_INET, SOCK_STREAM, 0), l6 = socket(AF_INET6, SOCK_STREAM, 0);
	setsockopt(l6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(l4, (void *)&lo, sizeof(lo)) || bind(l6, (void *)&lo6, sizeof(lo6)) || listen(l4, 8) ||
	    listen(l6, 8))
		return 4;
	char line[256];
	snprintf(line, sizeof(line), "port4=%d port6=%d\n", port_of(l4), port_of(l6));
	say(line);
	struct conn c[MAXC];
	int nc = 0;
	long tick = 0;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		struct pollfd p[MAXC + 2] = {{.fd = l4, .events = POLLIN}, {.fd = l6, .events = POLLIN}};
		for (int i = 0; i < nc; i++)
			p[i + 2] = (struct pollfd){.fd = c[i].fd, .events = POLLIN};
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long ms = (next.tv_sec - now.tv_sec) * 1000 + (next.tv_nsec - now.tv_nsec) / 1000000;
		int r = poll(p, nc + 2, ms > 0 ? (int)ms : 0);
		if (r < 0)
			continue;
		for (int i = 0; i < 2; i++)
			if ((p[i].revents & POLLIN) && nc < MAXC) {
				int fd = accept(p[i].fd, NULL, NULL);
				if (fd >= 0) {
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					c[nc++] = (struct conn){.fd = fd};
				}
			}
		for (int i = 0; i < nc; i++) {
			if (!(p[i + 2].revents & (POLLIN | POLLHUP)))
				continue;
			struct conn *k = &c[i];
			ssize_t n = read(k->fd, k->buf + k->len, sizeof(k->buf) - 1 - k->len);
			if (n <= 0) {
				close(k->fd);
				c[i--] = c[--nc];
				/* p[] no longer lines up: poll again. */
				break;
			}
			k->len += n;
			char *nl;
			while ((nl = memchr(k->buf, '\n', k->len))) {
				*nl = 0;
				serve_line(k->fd, k->buf);
				k->len -= nl + 1 - k->buf;
				memmove(k->buf, nl + 1, k->len);
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > next.tv_sec || (now.tv_sec == next.tv_sec && now.tv_nsec >= next.tv_nsec)) {
			snprintf(line, sizeof(line), "tick=%ld conns=%d\n", ++tick, nc);
			say(line);
			next.tv_nsec += 100000000;
			if (next.tv_nsec >= 1000000000) {
				next.tv_nsec -= 1000000000;
				next.tv_sec++;
			}
		}
	}
}
