/* Unix sockets whose file is gone, as daemons end up after a cleanup or a
 * restart in place:
 *  - a datagram socket bound to DIR/s whose file was unlinked and another
 *    socket bound there since, each with a client connected to it;
 *  - a datagram socket bound to DIR/f whose file was unlinked and a FIFO
 *    made there since (held open), with a client connected to it;
 *  - a stream connection accepted from a listener on DIR/sub/l that was
 *    closed since, its file unlinked and DIR/sub removed.
 * Every tick: "tick=N gone=ok|BAD" to OUTFILE, checking without sending:
 * the names each socket is bound to and each peer's, a socket at DIR/s, a
 * FIFO at DIR/f, no DIR/sub.
 * On SIGUSR1 (or once GOFILE exists), uses each once (a datagram from
 * every client, the FIFO, a message each way on the connection):
 * "data=ok|BAD" on the next tick.
 * usage: unixgone OUTFILE DIR [GOFILE] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
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

static struct sockaddr_un at(const char *dir, const char *name)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/%s", dir, name);
	return a;
}

static int bound(int type, struct sockaddr_un *a)
{
	int s = socket(AF_UNIX, type, 0);
	return s >= 0 && bind(s, (struct sockaddr *)a, sizeof(*a)) == 0 ? s : -1;
}

static int connected(int type, struct sockaddr_un *a)
{
	int s = socket(AF_UNIX, type, 0);
	return s >= 0 && connect(s, (struct sockaddr *)a, sizeof(*a)) == 0 ? s : -1;
}

/* Whether fd's own name (or its peer's) is `a`'s path. */
static int named(int fd, int peer, struct sockaddr_un *a)
{
	struct sockaddr_un got;
	socklen_t len = sizeof(got);
	int r = peer ? getpeername(fd, (struct sockaddr *)&got, &len) : getsockname(fd, (struct sockaddr *)&got, &len);
	return r == 0 && strcmp(got.sun_path, a->sun_path) == 0;
}

static int unnamed(int fd)
{
	struct sockaddr_un got;
	socklen_t len = sizeof(got);
	return getsockname(fd, (struct sockaddr *)&got, &len) == 0 && len == sizeof(sa_family_t);
}

/* A message from `from` arrives at `to`, as sent. */
static int passes(int from, int to, const char *msg)
{
	char buf[32] = "";
	return write(from, msg, strlen(msg)) == (ssize_t)strlen(msg) && read(to, buf, sizeof(buf)) == (ssize_t)strlen(msg) &&
	       memcmp(buf, msg, strlen(msg)) == 0;
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4)
		return 2;
	const char *gofile = argc == 4 ? argv[3] : 0;
	int used = 0;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	const char *dir = argv[2];
	struct sockaddr_un s = at(dir, "s"), f = at(dir, "f"), l = at(dir, "sub/l");
	char sub[4096], fifo[4096];
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	snprintf(fifo, sizeof(fifo), "%s/f", dir);

	int old = bound(SOCK_DGRAM, &s), c1 = connected(SOCK_DGRAM, &s);
	if (out < 0 || old < 0 || c1 < 0 || unlink(s.sun_path))
		return 3;
	int new = bound(SOCK_DGRAM, &s), c2 = connected(SOCK_DGRAM, &s);
	if (new < 0 || c2 < 0)
		return 4;

	int fs = bound(SOCK_DGRAM, &f), cf = connected(SOCK_DGRAM, &f);
	if (fs < 0 || cf < 0 || unlink(f.sun_path) || mkfifo(fifo, 0600))
		return 5;
	int ff = open(fifo, O_RDWR);

	if (ff < 0 || mkdir(sub, 0700))
		return 6;
	int lis = bound(SOCK_STREAM, &l);
	if (lis < 0 || listen(lis, 1))
		return 7;
	int client = connected(SOCK_STREAM, &l), acc = accept(lis, 0, 0);
	if (client < 0 || acc < 0 || close(lis) || unlink(l.sun_path) || rmdir(sub))
		return 8;

	signal(SIGUSR1, on_usr1);
	for (unsigned long tick = 1;; tick++) {
		struct stat st;
		int ok = named(old, 0, &s) && named(c1, 1, &s) && named(new, 0, &s) && named(c2, 1, &s) &&
			 named(fs, 0, &f) && named(cf, 1, &f) && named(acc, 0, &l) && named(client, 1, &l) &&
			 unnamed(client) && unnamed(c1) && stat(s.sun_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
			 stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode) && access(sub, F_OK) != 0;
		dprintf(out, "tick=%lu gone=%s\n", tick, ok ? "ok" : "BAD");
		if (go || (gofile && !used && access(gofile, F_OK) == 0)) {
			go = 0;
			used = 1;
			int data = passes(c1, old, "to old") && passes(c2, new, "to new") && passes(cf, fs, "to f") &&
				   passes(ff, ff, "fifo") && passes(client, acc, "ping") && passes(acc, client, "pong");
			dprintf(out, "data=%s\n", data ? "ok" : "BAD");
		}
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
