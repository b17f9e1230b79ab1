#define _GNU_SOURCE
/* Round-trip dumpee: a pipe with both ends open and "through the pipe"
 * buffered in it, its read end non-blocking, its capacity 256 KiB. Ticks
 * into argv[1]; once the
 * file argv[2] exists it reads the pipe, then sends "again" through it and
 * reads that back, and reports both.
 * Lines: "pid=P tick=N" then "pipe=through the pipe again=again (16 5)
 * size=262144" */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int p[2];
	if (argc < 3 || pipe(p) || write(p[1], "through the pipe", 16) != 16)
		return 2;
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	if (fcntl(p[1], F_SETPIPE_SZ, 256 * 1024) < 0)
		return 4;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	for (unsigned long tick = 1;; tick++) {
		if (access(argv[2], F_OK) == 0) {
			char a[64] = {0}, b[64] = {0};
			ssize_t n = read(p[0], a, sizeof a - 1);
			if (write(p[1], "again", 5) != 5)
				return 3;
			ssize_t m = read(p[0], b, sizeof b - 1);
			dprintf(out, "pipe=%s again=%s (%zd %zd) size=%d\n", n > 0 ? a : "", m > 0 ? b : "", n, m,
				fcntl(p[0], F_GETPIPE_SZ));
			return 0;
		}
		dprintf(out, "pid=%d tick=%lu\n", getpid(), tick);
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
