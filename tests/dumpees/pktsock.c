/* A packet socket as a DHCP client holds one: cooked (SOCK_DGRAM), IPv4
 * frames only, bound to the loopback interface, with a socket filter
 * letting through only UDP to PORT (so that no other traffic queues on
 * it), PACKET_AUXDATA, PACKET_ORIGDEV, TPACKET_V2, a reserve of 64, a
 * fanout group, and the multicast address 01:00:5e:7f:12:34 joined on the
 * loopback (/proc/net/dev_mcast shows it); and a raw packet socket
 * never bound, with protocol 0 (receiving nothing).
 * Every tick: "tick=N packet=ok|BAD:WHAT" to OUTFILE.
 * On SIGUSR1 it sends "pk" to 127.0.0.1:PORT and reads it on the packet
 * socket: "data=ok|BAD" on the next tick.
 * usage: pktsock OUTFILE */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PORT 47919
#define FANOUT_ID 77

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static int opt(int fd, int name)
{
	int v = -1;
	socklen_t l = sizeof(v);
	getsockopt(fd, SOL_PACKET, name, &v, &l);
	return v;
}

/* Whether the loopback's multicast list holds our address. */
static int joined(void)
{
	char line[256];
	int found = 0;
	FILE *f = fopen("/proc/net/dev_mcast", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, " lo ") && strstr(line, "01005e7f1234"))
			found = 1;
	if (f)
		fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int lo = if_nametoindex("lo"), one = 1, v2 = TPACKET_V2, reserve = 64;
	int p = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP)), idle = socket(AF_PACKET, SOCK_RAW, 0);
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	if (out < 0 || p < 0 || idle < 0 || u < 0 || !lo)
		return 3;
	/* Cooked frames start at the IP header: UDP (17) to PORT. */
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 17, 0, 3),
		BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 22),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PORT, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, 0xffff),
		BPF_STMT(BPF_RET | BPF_K, 0),
	};
	struct sock_fprog fp = {6, f};
	struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = lo};
	struct packet_mreq mr = {.mr_ifindex = lo, .mr_type = PACKET_MR_MULTICAST, .mr_alen = 6,
				 .mr_address = {0x01, 0x00, 0x5e, 0x7f, 0x12, 0x34}};
	int fanout = FANOUT_ID | (PACKET_FANOUT_HASH << 16);
	if (setsockopt(p, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof(fp)) ||
	    setsockopt(p, SOL_PACKET, PACKET_VERSION, &v2, sizeof(v2)) ||
	    setsockopt(p, SOL_PACKET, PACKET_RESERVE, &reserve, sizeof(reserve)) ||
	    setsockopt(p, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) ||
	    setsockopt(p, SOL_PACKET, PACKET_ORIGDEV, &one, sizeof(one)) || bind(p, (void *)&a, sizeof(a)) ||
	    setsockopt(p, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) ||
	    setsockopt(p, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout)))
		return 4;
	signal(SIGUSR1, on_usr1);
	int done = 0;
	for (unsigned long tick = 1;; tick++) {
		char why[128] = "";
		struct sockaddr_ll got = {0};
		socklen_t gl = sizeof(got);
		if (getsockname(p, (void *)&got, &gl) || got.sll_ifindex != lo || got.sll_protocol != htons(ETH_P_IP))
			strcat(why, "bound,");
		if (opt(p, PACKET_VERSION) != TPACKET_V2 || opt(p, PACKET_RESERVE) != reserve ||
		    opt(p, PACKET_AUXDATA) != 1 || opt(p, PACKET_ORIGDEV) != 1 || opt(p, PACKET_FANOUT) != fanout)
			strcat(why, "options,");
		struct sock_filter g[8];
		socklen_t n = 8;
		if (getsockopt(p, SOL_SOCKET, SO_GET_FILTER, g, &n) || n != 6)
			strcat(why, "filter,");
		if (!joined())
			strcat(why, "mcast,");
		if (go && !done) {
			struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(PORT),
						 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
			struct timeval tmo = {2, 0};
			char buf[256];
			setsockopt(p, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo));
			int ok = sendto(u, "pk", 2, 0, (void *)&to, sizeof(to)) == 2;
			/* An IP header, a UDP header, then "pk". */
			ok = ok && recv(p, buf, sizeof(buf), 0) == 30 && !memcmp(buf + 28, "pk", 2);
			dprintf(out, "data=%s\n", ok ? "ok" : "BAD");
			done = 1;
		}
		dprintf(out, "tick=%lu packet=%s%s\n", tick, why[0] ? "BAD:" : "ok", why);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
