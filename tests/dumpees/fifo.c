/* A named pipe DIR/fifo it holds both ends of, with bytes waiting: every
 * tick it reads what it wrote the tick before (it must be all there, and
 * nothing else), then writes "tick=N". With "unlinked", DIR/fifo is
 * unlinked once open, and every tick checks that it has no link left
 * and that nothing is at its path.
 * Every tick: "tick=N fifo=ok|BAD" to OUTFILE.
 * usage: fifo OUTFILE DIR [unlinked] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4)
		return 2;
	int unlinked = argc == 4;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char path[4096];
	snprintf(path, sizeof(path), "%s/fifo", argv[2]);
	if (out < 0 || mkfifo(path, 0600))
		return 3;
	int r = open(path, O_RDONLY | O_NONBLOCK);
	int w = open(path, O_WRONLY);
	if (r < 0 || w < 0 || (unlinked && unlink(path)))
		return 4;
	char last[32] = "start";
	if (write(w, last, strlen(last)) < 0)
		return 5;
	for (unsigned long tick = 1;; tick++) {
		char buf[64];
		ssize_t n = read(r, buf, sizeof(buf));
		int ok = n == (ssize_t)strlen(last) && memcmp(buf, last, n) == 0;
		struct stat st;
		if (unlinked && (fstat(w, &st) || !S_ISFIFO(st.st_mode) || st.st_nlink != 0 || access(path, F_OK) == 0))
			ok = 0;
		snprintf(last, sizeof(last), "tick=%lu", tick);
		if (write(w, last, strlen(last)) < 0)
			return 6;
		dprintf(out, "tick=%lu fifo=%s\n", tick, ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
