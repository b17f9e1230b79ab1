/* Private memory shared copy-on-write between a parent and its child, as
 * fork leaves it. A 4-page private anonymous area, written before the fork:
 *   page 0 'A': nobody writes it again, so parent and child share its frame;
 *   page 1 'B': the child writes 'C' over it after the fork;
 *   page 2:     untouched before the fork; the parent writes 'D' after it
 *               (the child has no page there: zeros);
 *   page 3 'E': the parent drops it after the fork (zeros for it), the
 *               child keeps 'E'.
 * And a private mapping of a 2-page file of 'F's (OUTFILE.map), its first
 * page written 'W' before the fork: that written page is shared too.
 * Every tick the parent checks both processes' contents (the child's
 * through /proc/CHILD/mem) and whether page 0 and the file's written page
 * are one frame in both and page 1 is not (/proc/PID/pagemap, which shows
 * frames to root):
 * "pid=P tick=N contents=ok|BAD shared=ok|BAD" to OUTFILE.
 * usage: cow OUTFILE */
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

/* The frame number of the page at addr in pid, 0 if not present. */
static uint64_t frame(pid_t pid, char *addr)
{
	char path[64];
	uint64_t e = 0;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	if (pread(fd, &e, 8, (uintptr_t)addr / PAGE * 8) != 8)
		e = 0;
	close(fd);
	return e >> 63 ? e & ((1ULL << 55) - 1) : 0;
}

static int all(const char *p, char c)
{
	for (int i = 0; i < PAGE; i++)
		if (p[i] != c)
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	/* Unmapped pages on both sides keep the area from merging with others. */
	char *m = mmap(0, 6 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (out < 0 || m == MAP_FAILED)
		return 3;
	munmap(m, PAGE);
	munmap(m + 5 * PAGE, PAGE);
	char *a = m + PAGE;
	memset(a, 'A', PAGE);
	memset(a + PAGE, 'B', PAGE);
	memset(a + 3 * PAGE, 'E', PAGE);
	char mpath[4096], fpage[2 * PAGE];
	snprintf(mpath, sizeof(mpath), "%s.map", argv[1]);
	int mf = open(mpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
	memset(fpage, 'F', sizeof(fpage));
	if (mf < 0 || write(mf, fpage, sizeof(fpage)) != sizeof(fpage))
		return 3;
	char *fm = mmap(0, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, mf, 0);
	close(mf);
	if (fm == MAP_FAILED)
		return 3;
	memset(fm, 'W', PAGE);
	int ready[2];
	if (pipe(ready) < 0)
		return 3;
	pid_t child = fork();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		memset(a + PAGE, 'C', PAGE);
		write(ready[1], "", 1);
		for (;;)
			nap(1000);
	}
	char c;
	if (read(ready[0], &c, 1) != 1)
		return 3;
	close(ready[0]);
	close(ready[1]);
	memset(a + 2 * PAGE, 'D', PAGE);
	madvise(a + 3 * PAGE, PAGE, MADV_DONTNEED);
	char path[64], theirs[4 * PAGE];
	snprintf(path, sizeof(path), "/proc/%d/mem", child);
	for (unsigned long tick = 1;; tick++) {
		int ok = all(a, 'A') && all(a + PAGE, 'B') && all(a + 2 * PAGE, 'D') && all(a + 3 * PAGE, 0);
		int mem = open(path, O_RDONLY);
		ok = ok && mem >= 0 && pread(mem, theirs, sizeof(theirs), (uintptr_t)a) == sizeof(theirs);
		ok = ok && all(theirs, 'A') && all(theirs + PAGE, 'C') && all(theirs + 2 * PAGE, 0) &&
		     all(theirs + 3 * PAGE, 'E');
		if (mem >= 0)
			close(mem);
		ok = ok && all(fm, 'W') && all(fm + PAGE, 'F');
		uint64_t mine = frame(getpid(), a), its = frame(child, a);
		uint64_t fmine = frame(getpid(), fm), fits = frame(child, fm);
		int shared = mine && mine == its && frame(getpid(), a + PAGE) != frame(child, a + PAGE) && fmine &&
			     fmine == fits;
		dprintf(out, "pid=%d tick=%lu contents=%s shared=%s\n", getpid(), tick, ok ? "ok" : "BAD",
			shared ? "ok" : "BAD");
		nap(30);
	}
}
