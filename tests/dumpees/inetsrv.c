/* TCP and UDP sockets a server holds while idle: a TCP listener on
 * 127.0.0.1 (SO_REUSEADDR, SO_KEEPALIVE, TCP_NODELAY, IP_TOS 0x10,
 * TCP_DEFER_ACCEPT, backlog 5), an IPv6-only TCP listener on ::1 (a hop
 * limit of 7), a UDP socket bound on
 * 127.0.0.1 (IP_PKTINFO, SO_TIMESTAMP) with two datagrams waiting ("d1", "d22"), and a
 * UDP socket connected to it (bound to the device "lo"), to which the
 * first is connected since the datagrams came (a connected socket with
 * datagrams waiting). The bound UDP socket and one end of a unix
 * datagram pair carry socket filters dropping what starts with 'x'; the
 * pair's message "xq" was queued before its filter came, so it waits all
 * the same.
 * Every tick: "tick=N inet=ok|BAD:WHAT" to OUTFILE, checking the ports,
 * the options, and the datagrams waiting without reading them.
 * Once GOFILE exists (or on SIGUSR1) it uses them once: connects to each
 * listener and accepts, reads both datagrams, sends through the connected
 * one ("x9", which the filter drops, then "d3"), reads "xq" and sends
 * "xz" and "ok" through the pair: "data=ok|BAD" on the next tick.
 * usage: inetsrv OUTFILE [GOFILE] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof(v);
	getsockopt(fd, level, name, &v, &l);
	return v;
}

/* Drops a packet whose byte at `at` is 'x' (a UDP socket's filter sees
 * the UDP header first, a unix socket's the message). */
static int drop_x(int fd, unsigned at)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, at),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 'x', 0, 1),
		BPF_STMT(BPF_RET | BPF_K, 0),
		BPF_STMT(BPF_RET | BPF_K, 0xffff),
	};
	struct sock_fprog p = {4, f};
	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &p, sizeof(p));
}

/* Whether fd's filter is drop_x(fd, at)'s, as SO_GET_FILTER shows it. */
static int has_drop_x(int fd, unsigned at)
{
	struct sock_filter f[8];
	socklen_t n = 8;
	if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, f, &n) || n != 4)
		return 0;
	return f[0].code == (BPF_LD | BPF_B | BPF_ABS) && f[0].k == at && f[1].k == 'x' && f[1].jt == 0 &&
	       f[1].jf == 1 && f[2].k == 0 && f[3].k == 0xffff;
}

static int port(int fd)
{
	struct sockaddr_in6 a;
	socklen_t l = sizeof(a);
	if (getsockname(fd, (void *)&a, &l))
		return -1;
	return ntohs(a.sin6_port); /* the same place in sockaddr_in */
}

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int one = 1, tos = 0x10;
	struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int t = socket(AF_INET, SOCK_STREAM, 0), t6 = socket(AF_INET6, SOCK_STREAM, 0);
	int u = socket(AF_INET, SOCK_DGRAM, 0), uc = socket(AF_INET, SOCK_DGRAM, 0);
	setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(t, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(t, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
	setsockopt(t6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	setsockopt(u, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
	setsockopt(u, SOL_SOCKET, SO_TIMESTAMP, &one, sizeof(one));
	int defer = 5, hops = 7;
	setsockopt(t, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer));
	setsockopt(t6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof(hops));
	setsockopt(uc, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3);
	if (out < 0 || bind(t, (void *)&lo, sizeof(lo)) || listen(t, 5) || bind(t6, (void *)&lo6, sizeof(lo6)) ||
	    listen(t6, 5) || bind(u, (void *)&lo, sizeof(lo)))
		return 3;
	struct sockaddr_in ua;
	socklen_t ul = sizeof(ua);
	getsockname(u, (void *)&ua, &ul);
	struct sockaddr_in uca;
	socklen_t ucl = sizeof(uca);
	if (connect(uc, (void *)&ua, ul) || send(uc, "d1", 2, 0) != 2 || send(uc, "d22", 3, 0) != 3 ||
	    getsockname(uc, (void *)&uca, &ucl) || connect(u, (void *)&uca, ucl))
		return 4;
	int pair[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, pair) || send(pair[1], "xq", 2, 0) != 2 || drop_x(pair[0], 0) ||
	    drop_x(u, 8))
		return 5;
	int pt = port(t), pt6 = port(t6), pu = port(u), puc = port(uc);
	signal(SIGUSR1, on_usr1);
	int done = 0;
	for (unsigned long tick = 1;; tick++) {
		char why[128] = "";
		int q = -1;
		ioctl(u, FIONREAD, &q);
		if (port(t) != pt || port(t6) != pt6 || port(u) != pu || port(uc) != puc)
			strcat(why, "ports,");
		struct sockaddr_in peer;
		socklen_t pl = sizeof(peer);
		if (getpeername(u, (void *)&peer, &pl) || peer.sin_port != uca.sin_port)
			strcat(why, "peer,");
		if (opt(t, SOL_SOCKET, SO_REUSEADDR) != 1 || opt(t, SOL_SOCKET, SO_KEEPALIVE) != 1 ||
		    opt(t, IPPROTO_TCP, TCP_NODELAY) != 1 || opt(t, IPPROTO_IP, IP_TOS) != tos ||
		    opt(t6, IPPROTO_IPV6, IPV6_V6ONLY) != 1 || opt(t, SOL_SOCKET, SO_ACCEPTCONN) != 1 ||
		    opt(u, IPPROTO_IP, IP_PKTINFO) != 1 || opt(u, SOL_SOCKET, SO_TIMESTAMP) != 1 ||
		    opt(t, IPPROTO_TCP, TCP_DEFER_ACCEPT) <= 0 || opt(t6, IPPROTO_IPV6, IPV6_UNICAST_HOPS) != hops)
			strcat(why, "options,");
		char dev[16] = "";
		socklen_t devl = sizeof(dev);
		if (getsockopt(uc, SOL_SOCKET, SO_BINDTODEVICE, dev, &devl) || strcmp(dev, "lo"))
			strcat(why, "device,");
		if (!has_drop_x(u, 8) || !has_drop_x(pair[0], 0))
			strcat(why, "filters,");
		if (!done && q != 2)
			snprintf(why + strlen(why), 40, "queue(%d),", q);
		if (argc == 3 && access(argv[2], F_OK) == 0)
			go = 1;
		if (go && !done) {
			char a[8] = "", b[8] = "";
			int c = socket(AF_INET, SOCK_STREAM, 0), c6 = socket(AF_INET6, SOCK_STREAM, 0);
			struct sockaddr_in ta = lo;
			struct sockaddr_in6 ta6 = lo6;
			ta.sin_port = htons(pt);
			ta6.sin6_port = htons(pt6);
			int ok = connect(c, (void *)&ta, sizeof(ta)) == 0 && connect(c6, (void *)&ta6, sizeof(ta6)) == 0;
			/* With TCP_DEFER_ACCEPT, accepted once the client has written. */
			ok = ok && write(c, "x", 1) == 1;
			int s1 = accept(t, 0, 0), s2 = accept(t6, 0, 0);
			ok = ok && s1 >= 0 && s2 >= 0 && read(s1, a, 1) == 1;
			ok = ok && recv(u, a, 8, 0) == 2 && !memcmp(a, "d1", 2) && recv(u, b, 8, 0) == 3 && !memcmp(b, "d22", 3);
			ok = ok && send(uc, "x9", 2, 0) == 2 && send(uc, "d3", 2, 0) == 2 && recv(u, a, 8, 0) == 2 &&
			     !memcmp(a, "d3", 2);
			ok = ok && recv(pair[0], a, 8, 0) == 2 && !memcmp(a, "xq", 2);
			ok = ok && send(pair[1], "xz", 2, 0) == 2 && send(pair[1], "ok", 2, 0) == 2 &&
			     recv(pair[0], a, 8, 0) == 2 && !memcmp(a, "ok", 2);
			dprintf(out, "data=%s\n", ok ? "ok" : "BAD");
			close(c);
			close(c6);
			close(s1);
			close(s2);
			done = 1;
		}
		dprintf(out, "tick=%lu inet=%s%s\n", tick, why[0] ? "BAD:" : "ok", why);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
