/* Named unix sockets: a stream listener bound to DIR/srv.sock (mode 0640)
 * with one connection accepted ("ping" waiting at the accepted end,
 * "pong" at the client's) and one still waiting to be accepted, a
 * listener bound to an abstract name, and a datagram socket bound to
 * DIR/dg.sock with two datagrams from a client connected to it, the
 * client with SO_TIMESTAMP and SO_PASSSEC on (on a socket with messages
 * waiting, such options make a dump refuse: each message got its own
 * arrival time or sender label, which no restore can give again). A child
 * holds the client end of the accepted connection too. A TCP listener on
 * 127.0.0.1 comes first, at a lower fd than the unix sockets, as a
 * PostgreSQL server holds its two.
 * Every tick: "tick=N named=ok|BAD:WHAT" to OUTFILE, checking what must
 * survive without reading anything: names, the socket file's mode, the
 * waiting connection, the queued byte counts.
 * Once GOFILE exists (or on SIGUSR1), reads everything once:
 * "data=ok|BAD" on the next tick.
 * usage: unixsrv OUTFILE DIR [GOFILE] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static socklen_t addr(struct sockaddr_un *a, const char *name, int abstract)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	strncpy(a->sun_path + abstract, name, sizeof(a->sun_path) - 2);
	return offsetof(struct sockaddr_un, sun_path) + abstract + strlen(name) + (abstract ? 0 : 1);
}

static int named(int fd, int peer, const struct sockaddr_un *want, socklen_t len)
{
	struct sockaddr_un got;
	socklen_t n = sizeof(got);
	if ((peer ? getpeername(fd, (void *)&got, &n) : getsockname(fd, (void *)&got, &n)) < 0)
		return 0;
	return n == len && memcmp(&got, want, len) == 0;
}

static int inq(int fd)
{
	int n = -1;
	ioctl(fd, FIONREAD, &n);
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char path[200], dpath[200], abs_name[64];
	snprintf(path, sizeof(path), "%s/srv.sock", argv[2]);
	snprintf(dpath, sizeof(dpath), "%s/dg.sock", argv[2]);
	snprintf(abs_name, sizeof(abs_name), "revenant-test-%d", getpid());
	struct sockaddr_un sa, da, xa;
	socklen_t sl = addr(&sa, path, 0), dl = addr(&da, dpath, 0), xl = addr(&xa, abs_name, 1);
	struct sockaddr_in ta = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int t = socket(AF_INET, SOCK_STREAM, 0);
	if (t < 0 || bind(t, (void *)&ta, sizeof(ta)) || listen(t, 4))
		return 3;
	int l = socket(AF_UNIX, SOCK_STREAM, 0), x = socket(AF_UNIX, SOCK_STREAM, 0);
	int ds = socket(AF_UNIX, SOCK_DGRAM, 0), dc = socket(AF_UNIX, SOCK_DGRAM, 0);
	int c = socket(AF_UNIX, SOCK_STREAM, 0), w = socket(AF_UNIX, SOCK_STREAM, 0);
	if (out < 0 || bind(l, (void *)&sa, sl) || listen(l, 8) || chmod(path, 0640) || bind(x, (void *)&xa, xl) ||
	    listen(x, 3) || bind(ds, (void *)&da, dl) || connect(dc, (void *)&da, dl))
		return 3;
	int one = 1;
	if (connect(c, (void *)&sa, sl) || setsockopt(dc, SOL_SOCKET, SO_TIMESTAMP, &one, sizeof(one)) ||
	    setsockopt(dc, SOL_SOCKET, SO_PASSSEC, &one, sizeof(one)))
		return 4;
	int a = accept(l, 0, 0);
	if (a < 0 || connect(w, (void *)&sa, sl) || write(c, "ping", 4) != 4 || write(a, "pong", 4) != 4 ||
	    send(dc, "d1", 2, 0) != 2 || send(dc, "d2", 2, 0) != 2)
		return 5;
	pid_t parent = getpid(), child = fork();
	if (child == 0) {
		/* Holds the client end too, while its parent lives. */
		while (getppid() == parent)
			sleep(1);
		return 0;
	}
	signal(SIGUSR1, on_usr1);
	int done = 0;
	for (unsigned long tick = 1;; tick++) {
		char why[128] = "";
		struct stat st;
		struct pollfd p = {.fd = l, .events = POLLIN};
		if (!named(l, 0, &sa, sl) || !named(a, 0, &sa, sl) || !named(c, 1, &sa, sl) || !named(x, 0, &xa, xl) ||
		    !named(ds, 0, &da, dl) || !named(dc, 1, &da, dl))
			strcat(why, "names,");
		if (stat(path, &st) || !S_ISSOCK(st.st_mode) || (st.st_mode & 0777) != 0640)
			strcat(why, "file,");
		int listening = 0;
		socklen_t ll = sizeof(listening);
		if (getsockopt(t, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) || !listening)
			strcat(why, "tcp,");
		int stamp = 0, sec = 0;
		socklen_t tl = sizeof(stamp);
		getsockopt(dc, SOL_SOCKET, SO_TIMESTAMP, &stamp, &tl);
		getsockopt(dc, SOL_SOCKET, SO_PASSSEC, &sec, &tl);
		if (stamp != 1 || sec != 1)
			strcat(why, "opts,");
		if (!done && (poll(&p, 1, 0) != 1 || inq(a) != 4 || inq(c) != 4 || inq(ds) != 2))
			snprintf(why + strlen(why), 60, "queues(%d,%d,%d,%d),", p.revents, inq(a), inq(c), inq(ds));
		if (argc == 4 && access(argv[3], F_OK) == 0)
			go = 1;
		if (go && !done) {
			char b1[8] = "", b2[8] = "", g1[8] = "", g2[8] = "";
			int ok = read(a, b1, 8) == 4 && !memcmp(b1, "ping", 4) && read(c, b2, 8) == 4 && !memcmp(b2, "pong", 4);
			ok = ok && recv(ds, g1, 8, 0) == 2 && !memcmp(g1, "d1", 2) && recv(ds, g2, 8, 0) == 2 && !memcmp(g2, "d2", 2);
			int a2 = accept4(l, 0, 0, SOCK_NONBLOCK);
			ok = ok && a2 >= 0 && write(w, "late", 4) == 4 && read(a2, b1, 8) == 4 && !memcmp(b1, "late", 4);
			dprintf(out, "data=%s\n", ok ? "ok" : "BAD");
			done = 1;
		}
		dprintf(out, "tick=%lu named=%s%s\n", tick, why[0] ? "BAD:" : "ok", why);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
