/* A daemon's sockets to services outside it: a datagram socket connected
 * to DIR/log (as syslog(3) keeps one to /dev/log) and a stream socket
 * connected to DIR/srv. Every tick it sends "tick N" on both and writes
 * "tick=N ext=ok|BAD" to OUTFILE (BAD: a send failed).
 * usage: extpeer OUTFILE DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int to(int type, const char *dir, const char *name)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/%s", dir, name);
	int s = socket(AF_UNIX, type, 0);
	if (s < 0 || connect(s, (void *)&a, sizeof(a)))
		return -1;
	return s;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int lg = to(SOCK_DGRAM, argv[2], "log"), sv = to(SOCK_STREAM, argv[2], "srv");
	if (out < 0 || lg < 0 || sv < 0)
		return 3;
	for (unsigned long tick = 1;; tick++) {
		char line[64];
		int n = snprintf(line, sizeof(line), "tick %lu\n", tick);
		int ok = send(lg, line, n, MSG_NOSIGNAL) == n && send(sv, line, n, MSG_NOSIGNAL) == n;
		dprintf(out, "tick=%lu ext=%s\n", tick, ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
