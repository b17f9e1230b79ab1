/* Round-trip dumpee: counts ticks into OUTFILE (kept open, written at its
 * file position), checks a 1 MiB heap pattern and a static array every
 * tick, and reports its pid and cwd, so a restore shows whether memory,
 * the fd's offset, the cwd and the PID came back.
 * usage: counter OUTFILE DIR [MIB] (DIR becomes the cwd; MIB of heap, 1
 * by default) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint32_t table[4096];

int main(int argc, char **argv) {
	if (argc < 3 || chdir(argv[2]) != 0)
		return 1;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 2;
	size_t n = (argc > 3 ? strtoul(argv[3], 0, 10) : 1) * (1 << 20) / 8;
	uint64_t *p = malloc(n * 8);
	for (size_t i = 0; i < n; i++)
		p[i] = i * 0x9E3779B97F4A7C15ull;
	for (int i = 0; i < 4096; i++)
		table[i] = i * 2654435761u;
	char cwd[256];
	for (unsigned long tick = 1;; tick++) {
		int ok = getcwd(cwd, sizeof cwd) != NULL;
		for (size_t i = 0; ok && i < n; i++)
			ok = p[i] == i * 0x9E3779B97F4A7C15ull;
		for (int i = 0; ok && i < 4096; i++)
			ok = table[i] == i * 2654435761u;
		dprintf(fd, "pid=%d tick=%lu check=%s cwd=%s\n", getpid(), tick, ok ? "ok" : "BAD", cwd);
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
