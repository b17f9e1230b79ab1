/* Shared anonymous memory between a parent and its child, as fork leaves
 * it: region A (3 pages, a pattern in its first and last page, the middle
 * page never touched) is shared with the child, which counts in it; the
 * parent checks every tick that the count moves and the pattern holds.
 * Region B is the parent's alone, mapped as two areas of one object (the
 * middle page unmapped), so the second area maps it at an offset.
 * With "priv", region A's file is mapped privately too (through
 * /proc/self/map_files), its last page written there: that page is the
 * mapping's own, the others show region A.
 * Every tick: "pid=P tick=N child=ok|BAD pattern=ok|BAD b=ok|BAD" (and
 * " priv=ok|BAD") to OUTFILE.
 * usage: shmanon OUTFILE [priv] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static void nap(long ms)
{
	struct timespec ts = {0, ms * 1000000};
	while (nanosleep(&ts, &ts) != 0)
		;
}

int main(int argc, char **argv)
{
	if (argc != 2 && (argc != 3 || strcmp(argv[2], "priv") != 0))
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	volatile uint64_t *a = mmap(0, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char *b = mmap(0, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (out < 0 || a == MAP_FAILED || b == MAP_FAILED)
		return 3;
	a[1] = 0xabcdef;
	a[2 * PAGE / 8 + 5] = 0x123456;
	b[0] = 'x';
	b[2 * PAGE] = 'y';
	munmap(b + PAGE, PAGE);
	volatile uint64_t *c = 0;
	if (argc == 3) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (unsigned long)a,
			 (unsigned long)a + 3 * PAGE);
		int fd = open(path, O_RDWR);
		c = fd < 0 ? MAP_FAILED : mmap(0, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (c == MAP_FAILED)
			return 4;
		close(fd);
		c[2 * PAGE / 8 + 7] = 0x777;
	}
	if (fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			a[0]++;
			nap(5);
		}
	}
	uint64_t seen = 0;
	for (unsigned long tick = 1;; tick++) {
		/* The child runs when the scheduler lets it: wait for it (2 s at most). */
		for (int i = 0; i < 400 && a[0] == seen; i++)
			nap(5);
		int child = a[0] != seen;
		seen = a[0];
		int pattern = a[1] == 0xabcdef && a[2 * PAGE / 8 + 5] == 0x123456 && a[PAGE / 8] == 0;
		int bok = b[0] == 'x' && b[2 * PAGE] == 'y';
		int priv = !c || (c[1] == 0xabcdef && c[2 * PAGE / 8 + 5] == 0x123456 && c[2 * PAGE / 8 + 7] == 0x777 &&
				  a[2 * PAGE / 8 + 7] == 0);
		dprintf(out, "pid=%d tick=%lu child=%s pattern=%s b=%s%s\n", getpid(), tick, child ? "ok" : "BAD",
			pattern ? "ok" : "BAD", bok ? "ok" : "BAD", !c ? "" : priv ? " priv=ok" : " priv=BAD");
		nap(30);
	}
}
