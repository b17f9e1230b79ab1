/* Benchmark dumpee: touches argv[1] MiB of heap, then appends a line to
 * argv[2] every 100 ms. SIGUSR1 writes one word in each of 256 pages
 * spread over the heap (1 MiB of pages dirtied, for iterative dumps) and
 * appends "dirtied=N" (N counts the SIGUSR1s). Its fds are all regular
 * files or /dev/null, so it restores. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t asked;
static void on_usr1(int s) { (void)s; asked++; }

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
	signal(SIGUSR1, on_usr1);
	unsigned long dirtied = 0;
	for (unsigned long tick = 1;; tick++) {
		FILE *f = fopen(argv[2], "a");
		while (dirtied < (unsigned long)asked) {
			dirtied++;
			size_t step = words / 256;
			for (size_t i = 0; step && i < 256; i++)
				p[i * step] += dirtied;
			if (f)
				fprintf(f, "dirtied=%lu\n", dirtied);
		}
		if (f) {
			fprintf(f, "pid=%d tick=%lu\n", getpid(), tick);
			fclose(f);
		}
		struct timespec ts = {0, 100000000};
		nanosleep(&ts, 0);
	}
}
