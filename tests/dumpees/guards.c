/* Guard regions (MADV_GUARD_INSTALL, Linux 6.13+): a private anonymous
 * area of 16 pages, each filled with its index, with guards installed on
 * pages 3-4 and 10 (which split nothing: the area stays one mapping).
 * Every tick checks that the other pages hold their bytes, that
 * /proc/self/pagemap marks exactly pages 3, 4 and 10 as guards (bit 58),
 * and that reading page 10 faults; appends "tick=N guards=ok" (or
 * "guards=BAD:WHAT") to OUTFILE. Exits 3 where the kernel has no guards.
 * usage: guards OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGES 16
#define GUARD_INSTALL 102
#define PM_GUARD (1ULL << 58)

static sigjmp_buf jump;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(jump, 1);
}

static int guarded(int i)
{
	return i == 3 || i == 4 || i == 10;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	long page = sysconf(_SC_PAGESIZE);
	unsigned char *m = mmap(0, PAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 2;
	for (int i = 0; i < PAGES; i++)
		memset(m + i * page, i + 1, page);
	if (madvise(m + 3 * page, 2 * page, GUARD_INSTALL) || madvise(m + 10 * page, page, GUARD_INSTALL))
		return 3;
	struct sigaction sa = {.sa_handler = on_segv, .sa_flags = SA_NODEFER};
	sigaction(SIGSEGV, &sa, 0);
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int pm = open("/proc/self/pagemap", O_RDONLY);
	for (unsigned long tick = 1;; tick++) {
		char why[64] = "";
		for (int i = 0; i < PAGES && !why[0]; i++) {
			uint64_t e = 0;
			if (pread(pm, &e, 8, ((uintptr_t)m / page + i) * 8) != 8)
				snprintf(why, sizeof why, "pagemap");
			else if (!!(e & PM_GUARD) != guarded(i))
				snprintf(why, sizeof why, "guard%d", i);
			else if (!guarded(i) && (m[i * page] != i + 1 || m[i * page + page - 1] != i + 1))
				snprintf(why, sizeof why, "page%d", i);
		}
		volatile unsigned char *g = m + 10 * page;
		if (!why[0] && sigsetjmp(jump, 1) == 0) {
			(void)*g;
			snprintf(why, sizeof why, "nofault");
		}
		dprintf(out, "tick=%lu guards=%s%s\n", tick, why[0] ? "BAD:" : "ok", why);
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
