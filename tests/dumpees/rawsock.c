/* The inet sockets that are neither TCP nor UDP: a ping socket (ICMP
 * datagrams, its echo id fixed by binding, IP_RECVTTL on, as ping has
 * it), a raw ICMP socket letting
 * only echo replies through (ICMP_FILTER), a raw ICMPv6 socket with its
 * filter, an IPPROTO_RAW socket (headers included) with IP_NODEFRAG, and
 * a UDP-Lite socket bound on 127.0.0.1 with a datagram waiting ("q1").
 * Every tick: "tick=N raw=ok|BAD:WHAT" to OUTFILE, checking addresses,
 * options and the datagram waiting without reading it.
 * On SIGUSR1 it uses them once: pings 127.0.0.1 through the ping socket
 * and reads the reply (with its echo id and its TTL), finds that reply on the raw
 * ICMP socket too, reads "q1" and a new datagram on the UDP-Lite socket:
 * "data=ok|BAD" on the next tick. Where ping sockets are not allowed to
 * root's group (net.ipv4.ping_group_range), it says "ping=none" once and
 * checks the rest.
 * usage: rawsock OUTFILE */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ECHO_ID 0x4242
#ifndef IP_NODEFRAG
#define IP_NODEFRAG 22
#endif

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

static int port(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);
	if (getsockname(fd, (void *)&a, &l))
		return -1;
	return ntohs(a.sin_port);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int ping = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
	int ricmp = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	int ricmp6 = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
	int rraw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	int lite = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE), lite2 = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	if (out < 0 || ricmp < 0 || ricmp6 < 0 || rraw < 0 || lite < 0 || lite2 < 0)
		return 3;
	if (ping < 0)
		dprintf(out, "ping=none\n");
	struct sockaddr_in pa = lo;
	pa.sin_port = htons(ECHO_ID);
	int one = 1;
	if (ping >= 0 && (bind(ping, (void *)&pa, sizeof(pa)) || setsockopt(ping, SOL_IP, IP_RECVTTL, &one, sizeof(one))))
		return 4;
	struct icmp_filter f = {~(1u << ICMP_ECHOREPLY)};
	struct icmp6_filter f6;
	memset(&f6, 0xff, sizeof(f6));
	f6.data[ICMPV6_ECHO_REPLY >> 5] &= ~(1u << (ICMPV6_ECHO_REPLY & 31));
	if (setsockopt(ricmp, SOL_RAW, ICMP_FILTER, &f, sizeof(f)) ||
	    setsockopt(ricmp6, SOL_ICMPV6, ICMPV6_FILTER, &f6, sizeof(f6)) ||
	    setsockopt(rraw, SOL_IP, IP_NODEFRAG, &one, sizeof(one)))
		return 5;
	struct sockaddr_in la;
	socklen_t ll = sizeof(la);
	if (bind(lite, (void *)&lo, sizeof(lo)) || getsockname(lite, (void *)&la, &ll) ||
	    sendto(lite2, "q1", 2, 0, (void *)&la, ll) != 2)
		return 6;
	int plite = port(lite);
	signal(SIGUSR1, on_usr1);
	int done = 0;
	for (unsigned long tick = 1;; tick++) {
		char why[128] = "";
		if ((ping >= 0 && port(ping) != ECHO_ID) || port(lite) != plite)
			strcat(why, "ports,");
		if (ping >= 0 && opt(ping, SOL_IP, IP_RECVTTL) != 1)
			strcat(why, "recvttl,");
		struct icmp_filter g = {0};
		struct icmp6_filter g6;
		socklen_t gl = sizeof(g), gl6 = sizeof(g6);
		memset(&g6, 0, sizeof(g6));
		if (getsockopt(ricmp, SOL_RAW, ICMP_FILTER, &g, &gl) || g.data != f.data ||
		    getsockopt(ricmp6, SOL_ICMPV6, ICMPV6_FILTER, &g6, &gl6) || memcmp(&g6, &f6, sizeof(f6)))
			strcat(why, "filters,");
		if (opt(rraw, SOL_IP, IP_HDRINCL) != 1 || opt(rraw, SOL_IP, IP_NODEFRAG) != 1 ||
		    opt(ricmp, SOL_IP, IP_HDRINCL) != 0 || opt(lite, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_UDPLITE ||
		    opt(ricmp6, SOL_SOCKET, SO_TYPE) != SOCK_RAW)
			strcat(why, "options,");
		int q = -1;
		ioctl(lite, FIONREAD, &q);
		if (!done && q != 2)
			snprintf(why + strlen(why), 40, "queue(%d),", q);
		if (go && !done) {
			char buf[256];
			int ok = 1;
			if (ping >= 0) {
				struct icmphdr e = {.type = ICMP_ECHO, .un.echo.sequence = htons(7)};
				struct icmphdr *r = (void *)buf;
				char cbuf[256];
				struct iovec iov = {buf, sizeof(buf)};
				struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
						   .msg_controllen = sizeof(cbuf)};
				ok = sendto(ping, &e, sizeof(e), 0, (void *)&lo, sizeof(lo)) == sizeof(e);
				ok = ok && recvmsg(ping, &m, 0) >= (int)sizeof(*r) && r->type == ICMP_ECHOREPLY &&
				     ntohs(r->un.echo.id) == ECHO_ID && ntohs(r->un.echo.sequence) == 7;
				struct cmsghdr *c = CMSG_FIRSTHDR(&m);
				ok = ok && c && c->cmsg_level == SOL_IP && c->cmsg_type == IP_TTL && *(int *)CMSG_DATA(c) > 0;
				/* The raw socket sees the reply, IP header first. */
				int n = recv(ricmp, buf, sizeof(buf), 0);
				r = (void *)(buf + 20);
				ok = ok && n >= 28 && r->type == ICMP_ECHOREPLY && ntohs(r->un.echo.id) == ECHO_ID;
			}
			ok = ok && recv(lite, buf, sizeof(buf), 0) == 2 && !memcmp(buf, "q1", 2);
			ok = ok && sendto(lite2, "q2", 2, 0, (void *)&la, ll) == 2 && recv(lite, buf, sizeof(buf), 0) == 2 &&
			     !memcmp(buf, "q2", 2);
			dprintf(out, "data=%s\n", ok ? "ok" : "BAD");
			done = 1;
		}
		dprintf(out, "tick=%lu raw=%s%s\n", tick, why[0] ? "BAD:" : "ok", why);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
