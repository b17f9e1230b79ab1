/* Netlink sockets as daemons hold them: a routing socket bound to the
 * link group (RTMGRP_LINK) and to group 33 (joined by
 * NETLINK_ADD_MEMBERSHIP, past the 32 bind can name), with
 * NETLINK_EXT_ACK and NETLINK_GET_STRICT_CHK on and a big receive buffer;
 * a uevent socket bound to group 1 with SO_PASSCRED and a socket filter,
 * as udev's monitors have; a routing socket never bound; and two
 * NETLINK_USERSOCK sockets, one bound to a port id of its own choosing,
 * the other connected to it.
 * Every tick: "tick=N netlink=ok|BAD:WHAT" to OUTFILE, checking port ids,
 * groups, options and the connection.
 * On SIGUSR1 it uses them once: asks the kernel for the loopback link on
 * the routing socket and reads the answer, sends "hello" from the
 * connected socket and reads it on the bound one: "data=ok|BAD" on the
 * next tick.
 * With "plain", only what CRIU's images carry too: no group past 32, no
 * netlink options, every socket raw.
 * usage: nlsock OUTFILE [plain] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define USER_PORT 0x7e570001u

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static unsigned port(int s)
{
	struct sockaddr_nl a = {0};
	socklen_t l = sizeof(a);
	if (getsockname(s, (void *)&a, &l))
		return 0;
	return a.nl_pid;
}

static int nlopt(int s, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	getsockopt(s, SOL_NETLINK, opt, &v, &l);
	return v;
}

/* Words 0 and 1 of the socket's group bitmap. */
static void groups(int s, unsigned g[2])
{
	unsigned all[8] = {0};
	socklen_t l = sizeof(all);
	getsockopt(s, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, all, &l);
	g[0] = all[0];
	g[1] = all[1];
}

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return 2;
	int plain = argc == 3 && !strcmp(argv[2], "plain");
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int one = 1, big = 1 << 20, group = 33;
	int rt = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	int ue = socket(AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT);
	int idle = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	int ua = socket(AF_NETLINK, plain ? SOCK_RAW : SOCK_DGRAM, NETLINK_USERSOCK);
	int ub = socket(AF_NETLINK, SOCK_RAW, NETLINK_USERSOCK);
	struct sockaddr_nl a = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK};
	if (out < 0 || rt < 0 || ue < 0 || idle < 0 || ua < 0 || ub < 0 || bind(rt, (void *)&a, sizeof(a)))
		return 3;
	if (!plain) {
		setsockopt(rt, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group));
		setsockopt(rt, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
		setsockopt(rt, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one, sizeof(one));
	}
	setsockopt(rt, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	a.nl_groups = 1;
	if (bind(ue, (void *)&a, sizeof(a)))
		return 4;
	setsockopt(ue, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
	struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, 0xffff)};
	struct sock_fprog fp = {1, f};
	setsockopt(ue, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof(fp));
	a.nl_groups = 0;
	a.nl_pid = USER_PORT;
	if (bind(ua, (void *)&a, sizeof(a)) || connect(ub, (void *)&a, sizeof(a)))
		return 5;
	unsigned prt = port(rt), pue = port(ue), pub = port(ub);
	signal(SIGUSR1, on_usr1);
	int done = 0;
	for (unsigned long tick = 1;; tick++) {
		char why[128] = "";
		unsigned g[2];
		if (port(rt) != prt || !prt || port(ue) != pue || !pue || port(ua) != USER_PORT || port(ub) != pub ||
		    port(idle) != 0)
			strcat(why, "ports,");
		groups(rt, g);
		if (g[0] != RTMGRP_LINK || g[1] != !plain)
			strcat(why, "groups,");
		groups(ue, g);
		if (g[0] != 1 || g[1] != 0)
			strcat(why, "uevent-groups,");
		int v = 0, t = 0;
		socklen_t l = sizeof(v);
		getsockopt(ue, SOL_SOCKET, SO_PASSCRED, &v, &l);
		getsockopt(ua, SOL_SOCKET, SO_TYPE, &t, &l);
		struct sock_filter got[2];
		socklen_t n = 2;
		if (nlopt(rt, NETLINK_EXT_ACK) != !plain || nlopt(rt, NETLINK_GET_STRICT_CHK) != !plain ||
		    nlopt(rt, NETLINK_NO_ENOBUFS) != 0 || v != 1 || t != (plain ? SOCK_RAW : SOCK_DGRAM) ||
		    getsockopt(ue, SOL_SOCKET, SO_GET_FILTER, got, &n) || n != 1)
			strcat(why, "options,");
		struct sockaddr_nl peer = {0};
		socklen_t pl = sizeof(peer);
		if (getpeername(ub, (void *)&peer, &pl) || peer.nl_pid != USER_PORT)
			strcat(why, "peer,");
		if (go && !done) {
			struct {
				struct nlmsghdr h;
				struct ifinfomsg i;
			} req = {
				.h = {.nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST},
				.i = {.ifi_family = AF_UNSPEC, .ifi_index = 1},
			};
			char buf[8192];
			struct nlmsghdr *h = (void *)buf;
			int ok = send(rt, &req, sizeof(req), 0) == sizeof(req);
			ok = ok && recv(rt, buf, sizeof(buf), 0) > 0 && h->nlmsg_type == RTM_NEWLINK;
			ok = ok && send(ub, "hello", 5, 0) == 5 && recv(ua, buf, sizeof(buf), 0) == 5 &&
			     !memcmp(buf, "hello", 5);
			dprintf(out, "data=%s\n", ok ? "ok" : "BAD");
			done = 1;
		}
		dprintf(out, "tick=%lu netlink=%s%s\n", tick, why[0] ? "BAD:" : "ok", why);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
