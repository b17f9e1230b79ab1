/* Shared anonymous memory between a parent and its child, as fork leaves
 * it: region A (3 pages, a pattern in its first and last page, the middle
 * page never touched) is shared with the child, which counts in it; the
 * parent checks every tick that the count moves and the pattern holds.
 * Region B is the parent's alone, mapped as two areas of one object (the
 * middle page unmapped), so the second area maps it at an offset.
 * Every tick: "pid=P tick=N child=ok|BAD pattern=ok|BAD b=ok|BAD" to OUTFILE.
 * usage: shmanon OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
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
	if (argc != 2)
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
		dprintf(out, "pid=%d tick=%lu child=%s pattern=%s b=%s\n", getpid(), tick, child ? "ok" : "BAD",
			pattern ? "ok" : "BAD", bok ? "ok" : "BAD");
		nap(30);
	}
}
