/* Waits in poll() on stdin with no timeout, as event loops (and script(1))
 * do; a poll that fails with EINTR ends it ("eintr" on stdout, exit 3),
 * as such loops treat it. Answers every byte with "pong N ok=1". */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
	unsigned long n = 0;
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (;;) {
		struct pollfd p = {.fd = 0, .events = POLLIN};
		if (poll(&p, 1, -1) < 0) {
			printf("eintr %d\n", errno);
			fflush(stdout);
			exit(3);
		}
		char c;
		if (read(0, &c, 1) <= 0)
			exit(0);
		printf("pong %lu ok=1\n", ++n);
		fflush(stdout);
	}
}
