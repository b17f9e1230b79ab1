/* Iterative dump dumpee: argv[2] pages (default 4096: 16 MiB), each
 * filled with a pattern of its index and its generation; gen[] (a block
 * of its own) holds each page's generation. Every 20 ms one page, round
 * robin, moves to its next generation (so pages change while a pre-dump
 * copies them), every byte of every page is checked against its
 * generation, the generations' sum against the count of rewrites main()
 * keeps in a local (registers and a stack that is written all the time,
 * so a restore that brought back stale pages and a stale gen[] with them
 * is caught too), and "tick=N check=ok" (or "check=BAD:...") is appended
 * to argv[1].
 * SIGUSR1: every page whose index % 8 is the round number % 8 moves on,
 * then "round=R pages=P" is appended. With argv[3] "fork" it forks once
 * its pages are filled (sharing them copy-on-write), and both processes
 * go on the same way, each checking its own pages.
 * It also reserves 64 MiB it never touches, half PROT_NONE (as runtimes
 * reserve address space) and half writable: nothing a dump should copy. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static volatile sig_atomic_t rounds_asked;
static void on_usr1(int s) { (void)s; rounds_asked++; }

static unsigned char *mem;
static uint32_t *gen;
static size_t npages;

static unsigned char byte(size_t page, uint32_t g, size_t off)
{
	return (unsigned char)(page * 131 + g * 29 + off * 7 + (off >> 8));
}

static void fill(size_t page)
{
	unsigned char *p = mem + page * PAGE;
	for (size_t off = 0; off < PAGE; off++)
		p[off] = byte(page, gen[page], off);
}

static uint64_t gensum(void)
{
	uint64_t s = 0;
	for (size_t i = 0; i < npages; i++)
		s += gen[i];
	return s;
}

static long check(void)
{
	for (size_t i = 0; i < npages; i++) {
		unsigned char *p = mem + i * PAGE;
		for (size_t off = 0; off < PAGE; off++)
			if (p[off] != byte(i, gen[i], off))
				return (long)i;
	}
	return -1;
}

static void say(const char *path, const char *line)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
	if (fd >= 0) {
		write(fd, line, strlen(line));
		close(fd);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 1;
	npages = argc > 2 ? strtoul(argv[2], 0, 10) : 4096;
	if (mmap(0, 32 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) == MAP_FAILED ||
	    mmap(0, 32 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
		return 2;
	mem = aligned_alloc(PAGE, npages * PAGE);
	gen = calloc(npages, sizeof(*gen));
	if (!mem || !gen)
		return 2;
	for (size_t i = 0; i < npages; i++)
		fill(i);
	if (argc > 3 && !strcmp(argv[3], "fork") && fork() < 0)
		return 3;
	signal(SIGUSR1, on_usr1);
	char line[128];
	unsigned long round = 0;
	uint64_t rewrites = 0;
	for (unsigned long tick = 1;; tick++) {
		while (round < (unsigned long)rounds_asked) {
			round++;
			size_t n = 0;
			for (size_t i = round % 8; i < npages; i += 8, n++) {
				gen[i]++;
				fill(i);
				rewrites++;
			}
			snprintf(line, sizeof line, "round=%lu pages=%zu\n", round, n);
			say(argv[1], line);
		}
		size_t i = tick % npages;
		gen[i]++;
		fill(i);
		rewrites++;
		long bad = check();
		uint64_t sum = gensum();
		if (bad >= 0)
			snprintf(line, sizeof line, "pid=%d tick=%lu check=BAD:page=%ld\n", getpid(), tick, bad);
		else if (sum != rewrites)
			snprintf(line, sizeof line, "pid=%d tick=%lu check=BAD:gensum=%llu,rewrites=%llu\n", getpid(), tick,
				 (unsigned long long)sum, (unsigned long long)rewrites);
		else
			snprintf(line, sizeof line, "pid=%d tick=%lu check=ok\n", getpid(), tick);
		say(argv[1], line);
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, 0);
	}
}
