/* Benchmark dumpee: touches argv[1] MiB of heap, then appends a line to
 * argv[2] every 100 ms. Its fds are all regular files or /dev/null, so it
 * restores. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		return 1;
	size_t words = strtoul(argv[1], 0, 10) * (1 << 20) / 8;
	uint64_t *p = malloc(words * 8);
	if (!p)
		return 2;
	for (size_t i = 0; i < words; i++)
		p[i] = i * 0x9E3779B97F4A7C15ull;
	for (unsigned long tick = 1;; tick++) {
		FILE *f = fopen(argv[2], "a");
		if (f) {
			fprintf(f, "pid=%d tick=%lu\n", getpid(), tick);
			fclose(f);
		}
		struct timespec ts = {0, 100000000};
		nanosleep(&ts, 0);
	}
}
