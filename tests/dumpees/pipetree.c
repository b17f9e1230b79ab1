/* A parent and its child joined by a pipe they both inherited: every tick
 * the parent sends "msg N" through it, and the child writes
 * "child=PID got=N" to OUTFILE for each message it reads. A pipe restored
 * as two separate pipes would leave the child reading nothing (or EOF) and
 * the parent writing into the void.
 * usage: pipetree OUTFILE */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int p[2];
	if (argc != 2 || pipe(p))
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pid_t child = fork();
	if (child == 0) {
		close(p[1]);
		char buf[64];
		size_t have = 0;
		for (;;) {
			ssize_t n = read(p[0], buf + have, sizeof buf - 1 - have);
			if (n <= 0) {
				dprintf(out, "child=%d got=EOF\n", getpid());
				return 3;
			}
			have += n;
			char *nl;
			while ((nl = memchr(buf, '\n', have))) {
				*nl = 0;
				dprintf(out, "child=%d got=%s\n", getpid(), buf + 4);
				have -= nl + 1 - buf;
				memmove(buf, nl + 1, have);
			}
		}
	}
	close(p[0]);
	for (unsigned long n = 1;; n++) {
		char m[32];
		int len = snprintf(m, sizeof m, "msg %lu\n", n);
		if (write(p[1], m, len) != len)
			return 4;
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		while (nanosleep(&ts, &ts))
			;
	}
}
