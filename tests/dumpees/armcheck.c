/* The state an armv7 dump and restore must keep, checked by the process
 * itself (scripts/armvm.sh runs it in the ARM VM; it builds and runs on
 * x86_64 too):
 * - a 1 MiB heap pattern (pingpong.h) and the main thread's TLS word;
 * - two threads spinning on counters, each checking its TLS word: the
 *   counters must move, three tasks must exist;
 * - four signal handlers installed by sigaction, each with its own
 *   sa_mask and flags (SA_RESTART, SA_ONSTACK, SA_SIGINFO, SA_NODEFER), an
 *   alternate stack, a blocked mask: sigaction(sig, NULL, &old) must give
 *   back what was installed, and each handler, raised, must run (on the
 *   alternate stack where SA_ONSTACK) with sa_mask added to the mask;
 * - FILE (created here, 4 pages of a known pattern) mapped twice: page 1
 *   MAP_PRIVATE read-only at file offset 4096, page 2 MAP_SHARED
 *   read-write at offset 8192; the shared page's first word counts the
 *   checks, and the file (pread) must agree with the mapping;
 * - a SysV segment (2 pages, a pattern, a counter) at an address 4 KiB
 *   past a 16 KiB boundary: page-aligned but not SHMLBA-aligned on ARM.
 *   ARM's kernel refuses such a shmat (SHMLBA is forced there, whatever
 *   the cache), so then the segment is attached anywhere and moved there
 *   with mremap, as revenant's restorer does; stderr says which.
 * Every mapping must still be where it was, with its offset, in
 * /proc/self/maps.
 * Prints "ready PID", then answers each byte on stdin with one line: "ok",
 * or "BAD" and what was wrong. usage: armcheck [FILE] (/tmp/armcheck.dat) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

#include "pingpong.h"

#define PAGE 4096
#define FILE_PAGES 4
#define SHM_SIZE (2 * PAGE)
#define ARM_SHMLBA (4 * PAGE)
#define SPINNERS 2
#define TLS_MAIN 0x5eed00ffUL

static char bad[2048];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	size_t n = strlen(bad);
	if (n + 2 >= sizeof bad)
		return;
	va_list ap;
	va_start(ap, fmt);
	bad[n] = ' ';
	vsnprintf(bad + n + 1, sizeof bad - n - 1, fmt, ap);
	va_end(ap);
	n = strlen(bad);
	if (n + 1 < sizeof bad)
		strcat(bad, ";");
}

static void nap(long ms)
{
	struct timespec ts = {0, ms * 1000000};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* --- threads ------------------------------------------------------------ */

static __thread unsigned long tls_tag;
static volatile unsigned long counters[SPINNERS];
static volatile int tls_bad[SPINNERS];

static void *spin(void *arg)
{
	int i = (int)(intptr_t)arg;
	tls_tag = 0x5eed0000UL + i;
	for (;;) {
		for (unsigned n = 0; n < 1u << 16; n++)
			counters[i]++;
		if (tls_tag != 0x5eed0000UL + i)
			tls_bad[i] = 1;
	}
	return 0;
}

static void check_threads(void)
{
	unsigned long seen[SPINNERS];
	for (int i = 0; i < SPINNERS; i++)
		seen[i] = counters[i];
	/* The spinners run when the scheduler lets them: 5 s at most. */
	for (int t = 0; t < 500; t++) {
		int all = 1;
		for (int i = 0; i < SPINNERS; i++)
			all &= counters[i] != seen[i];
		if (all)
			break;
		nap(10);
	}
	for (int i = 0; i < SPINNERS; i++) {
		if (counters[i] == seen[i])
			fail("thread %d: counter stuck at %lu", i, seen[i]);
		if (tls_bad[i])
			fail("thread %d: TLS word changed", i);
	}
	if (tls_tag != TLS_MAIN)
		fail("main thread TLS word %#lx", tls_tag);
	int tasks = 0;
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	while (f && fgets(line, sizeof line, f))
		sscanf(line, "Threads: %d", &tasks);
	if (f)
		fclose(f);
	if (tasks != 1 + SPINNERS)
		fail("%d threads, not %d", tasks, 1 + SPINNERS);
}

/* --- signals ------------------------------------------------------------ */

#define FLAGS_KEPT (SA_RESTART | SA_ONSTACK | SA_SIGINFO | SA_NODEFER | SA_RESETHAND)
#define NSPEC 4

static struct spec {
	int sig;
	int flags;
	sigset_t mask;
	/* Set by the handler. */
	volatile sig_atomic_t ran, onstack;
	sigset_t in_handler;
} specs[NSPEC];

static char *altstack;
static const size_t altstack_size = 64 * 1024;
static sigset_t blocked;

static void handle(int sig)
{
	char here;
	for (int i = 0; i < NSPEC; i++) {
		if (specs[i].sig != sig)
			continue;
		specs[i].ran++;
		specs[i].onstack = &here >= altstack && &here < altstack + altstack_size;
		sigprocmask(SIG_BLOCK, 0, &specs[i].in_handler);
	}
}

static void handle_info(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (si->si_signo == sig)
		handle(sig);
}

static void add(sigset_t *s, const int *sigs)
{
	sigemptyset(s);
	for (; *sigs; sigs++)
		sigaddset(s, *sigs);
}

static void install_signals(void)
{
	altstack = mmap(0, altstack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	stack_t ss = {.ss_sp = altstack, .ss_size = altstack_size};
	if (altstack == MAP_FAILED || sigaltstack(&ss, 0)) {
		perror("armcheck: alternate stack");
		exit(2);
	}
	int rt = SIGRTMIN + 3;
	specs[0].sig = SIGUSR1;
	specs[0].flags = SA_RESTART | SA_SIGINFO;
	add(&specs[0].mask, (int[]){SIGUSR2, SIGTERM, 0});
	specs[1].sig = SIGUSR2;
	specs[1].flags = SA_RESTART | SA_ONSTACK;
	add(&specs[1].mask, (int[]){SIGHUP, SIGALRM, SIGRTMIN + 1, 0});
	specs[2].sig = SIGHUP;
	specs[2].flags = SA_ONSTACK | SA_NODEFER;
	add(&specs[2].mask, (int[]){SIGINT, SIGQUIT, SIGPIPE, SIGCHLD, 0});
	specs[3].sig = rt;
	specs[3].flags = SA_RESTART | SA_ONSTACK | SA_SIGINFO;
	add(&specs[3].mask, (int[]){SIGUSR1, SIGPROF, SIGRTMAX, 0});
	for (int i = 0; i < NSPEC; i++) {
		struct sigaction sa = {.sa_mask = specs[i].mask, .sa_flags = specs[i].flags};
		if (specs[i].flags & SA_SIGINFO)
			sa.sa_sigaction = handle_info;
		else
			sa.sa_handler = handle;
		if (sigaction(specs[i].sig, &sa, 0)) {
			perror("armcheck: sigaction");
			exit(2);
		}
	}
	add(&blocked, (int[]){SIGWINCH, SIGURG, 0});
	sigprocmask(SIG_BLOCK, &blocked, 0);
}

static int same_set(const sigset_t *a, const sigset_t *b)
{
	for (int s = 1; s <= SIGRTMAX; s++)
		if (sigismember(a, s) != sigismember(b, s))
			return 0;
	return 1;
}

static void check_signals(void)
{
	sigset_t cur;
	sigprocmask(SIG_BLOCK, 0, &cur);
	if (!same_set(&cur, &blocked))
		fail("blocked mask changed");
	stack_t ss;
	if (sigaltstack(0, &ss) || ss.ss_sp != altstack || ss.ss_size != altstack_size || ss.ss_flags)
		fail("alternate stack %p+%zu flags %d", ss.ss_sp, ss.ss_size, ss.ss_flags);
	for (int i = 0; i < NSPEC; i++) {
		struct spec *s = &specs[i];
		struct sigaction old;
		if (sigaction(s->sig, 0, &old)) {
			fail("sigaction(%d): %s", s->sig, strerror(errno));
			continue;
		}
		void *want = s->flags & SA_SIGINFO ? (void *)handle_info : (void *)handle;
		void *got = old.sa_flags & SA_SIGINFO ? (void *)old.sa_sigaction : (void *)old.sa_handler;
		if (got != want)
			fail("signal %d: handler %p, not %p", s->sig, got, want);
		if ((int)(old.sa_flags & FLAGS_KEPT) != s->flags)
			fail("signal %d: flags %#x, not %#x", s->sig, old.sa_flags & FLAGS_KEPT, s->flags);
		if (!same_set(&old.sa_mask, &s->mask))
			fail("signal %d: sa_mask changed", s->sig);
		/* Delivered now: raise() signals this thread, on its way out. */
		int ran = s->ran;
		raise(s->sig);
		if (s->ran != ran + 1) {
			fail("signal %d: handler did not run", s->sig);
			continue;
		}
		if (s->onstack != !!(s->flags & SA_ONSTACK))
			fail("signal %d: ran %s the alternate stack", s->sig, s->onstack ? "on" : "off");
		sigset_t want_mask = blocked;
		sigorset(&want_mask, &want_mask, &s->mask);
		if (!(s->flags & SA_NODEFER))
			sigaddset(&want_mask, s->sig);
		if (!same_set(&s->in_handler, &want_mask))
			fail("signal %d: mask in its handler is not mask + sa_mask", s->sig);
	}
}

/* --- mappings ----------------------------------------------------------- */

static unsigned char file_byte(size_t off)
{
	return (unsigned char)(off * 7 + (off >> 12) * 13 + 1);
}

static const char *path;
static int fd;
static const unsigned char *priv; /* file page 1, MAP_PRIVATE, read-only */
static volatile uint32_t *shared; /* file page 2, MAP_SHARED, read-write */
static uint32_t file_gen;

static volatile uint32_t *shm;
static int shm_id;
static uint32_t shm_gen;

/* The maps line for [addr, addr + len): its perms, offset and path. */
static void check_maps(const void *addr, size_t len, const char *perms, unsigned long off, const char *name)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512], p[8], file[256];
	unsigned long lo, hi, o;
	int found = 0;
	while (f && fgets(line, sizeof line, f)) {
		file[0] = 0;
		if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %255[^\n]", &lo, &hi, p, &o, file) < 4)
			continue;
		if (lo != (unsigned long)(uintptr_t)addr)
			continue;
		found = 1;
		if (hi - lo != len || strcmp(p, perms) || o != off || strncmp(file, name, strlen(name)))
			fail("maps at %p: %s", addr, strtok(line, "\n"));
	}
	if (f)
		fclose(f);
	if (!found)
		fail("maps: nothing starts at %p (%s)", addr, name);
}

static void make_file(void)
{
	unsigned char buf[FILE_PAGES * PAGE];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = file_byte(i);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
		perror(path);
		exit(2);
	}
	priv = mmap(0, PAGE, PROT_READ, MAP_PRIVATE, fd, PAGE);
	shared = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 2 * PAGE);
	if (priv == MAP_FAILED || shared == MAP_FAILED) {
		perror("armcheck: mmap");
		exit(2);
	}
	/* Word 0 of the shared page counts the checks (0 so far). */
	shared[0] = 0;
}

static void check_file(void)
{
	for (size_t i = 0; i < PAGE; i++)
		if (priv[i] != file_byte(PAGE + i)) {
			fail("private file page: byte %zu is %#x", i, priv[i]);
			break;
		}
	const unsigned char *s = (const unsigned char *)shared;
	for (size_t i = 4; i < PAGE; i++)
		if (s[i] != file_byte(2 * PAGE + i)) {
			fail("shared file page: byte %zu is %#x", i, s[i]);
			break;
		}
	uint32_t in_file = 0;
	if (pread(fd, &in_file, 4, 2 * PAGE) != 4)
		fail("pread %s: %s", path, strerror(errno));
	if (shared[0] != file_gen || in_file != file_gen)
		fail("shared file word: mapping %u, file %u, not %u", shared[0], in_file, file_gen);
	shared[0] = ++file_gen;
	if (pread(fd, &in_file, 4, 2 * PAGE) != 4 || in_file != file_gen)
		fail("shared file page: a write to it did not reach the file");
	check_maps(priv, PAGE, "r--p", PAGE, path);
	check_maps((const void *)shared, PAGE, "rw-s", 2 * PAGE, path);
}

static void make_shm(void)
{
	shm_id = shmget(IPC_PRIVATE, SHM_SIZE, IPC_CREAT | 0600);
	/* A free range, and in it an address 4 KiB past a 16 KiB boundary. */
	char *room = mmap(0, 8 * ARM_SHMLBA, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (shm_id < 0 || room == MAP_FAILED) {
		perror("armcheck: shmget");
		exit(2);
	}
	uintptr_t want = (((uintptr_t)room + ARM_SHMLBA - 1) & ~(uintptr_t)(ARM_SHMLBA - 1)) + PAGE;
	munmap(room, 8 * ARM_SHMLBA);
	void *got = shmat(shm_id, (void *)want, 0);
	if (got == (void *)-1) {
		fprintf(stderr, "armcheck: shmat at %#lx (SHMLBA %#lx): %s; attaching anywhere and moving it\n",
			(unsigned long)want, (unsigned long)SHMLBA, strerror(errno));
		got = shmat(shm_id, 0, 0);
		if (got != (void *)-1 && (uintptr_t)got != want)
			got = mremap(got, SHM_SIZE, SHM_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)want);
	} else {
		fprintf(stderr, "armcheck: shmat at %#lx (SHMLBA %#lx): attached\n", (unsigned long)want,
			(unsigned long)SHMLBA);
	}
	if (got == (void *)-1 || got == MAP_FAILED || (uintptr_t)got != want) {
		fprintf(stderr, "armcheck: SysV segment not at %#lx: %s\n", (unsigned long)want, strerror(errno));
		shmctl(shm_id, IPC_RMID, 0);
		exit(2);
	}
	/* Removed now: it lives as long as the attachment. */
	shmctl(shm_id, IPC_RMID, 0);
	shm = got;
	for (size_t i = 1; i < SHM_SIZE / 4; i++)
		shm[i] = (uint32_t)(i * 0x01000193u);
	shm[0] = 0;
}

static uintptr_t shm_addr;

static void check_shm(void)
{
	if ((uintptr_t)shm != shm_addr || shm_addr % ARM_SHMLBA != PAGE)
		fail("SysV segment at %p", (void *)shm);
	for (size_t i = 1; i < SHM_SIZE / 4; i++)
		if (shm[i] != (uint32_t)(i * 0x01000193u)) {
			fail("SysV segment: word %zu is %#x", i, shm[i]);
			break;
		}
	if (shm[0] != shm_gen)
		fail("SysV segment: counter %u, not %u", shm[0], shm_gen);
	shm[0] = ++shm_gen;
	struct shmid_ds ds;
	if (shmctl(shm_id, IPC_STAT, &ds))
		fail("SysV segment %d: IPC_STAT: %s", shm_id, strerror(errno));
	else if (ds.shm_segsz != SHM_SIZE || ds.shm_nattch != 1)
		fail("SysV segment %d: size %zu, %lu attached", shm_id, (size_t)ds.shm_segsz,
		     (unsigned long)ds.shm_nattch);
	check_maps((const void *)shm, SHM_SIZE, "rw-s", 0, "/SYSV");
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	(void)pingpong; /* pingpong.h's loop: this program answers its own way */
	path = argc > 1 ? argv[1] : "/tmp/armcheck.dat";
	tls_tag = TLS_MAIN;
	fill_pattern(1 << 20);
	make_file();
	make_shm();
	shm_addr = (uintptr_t)shm;
	install_signals();
	pthread_t t;
	for (int i = 0; i < SPINNERS; i++)
		if (pthread_create(&t, 0, spin, (void *)(intptr_t)i)) {
			fprintf(stderr, "armcheck: pthread_create failed\n");
			return 2;
		}
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (;;) {
		char c;
		ssize_t r = read(0, &c, 1);
		if (r == 0)
			return 0;
		if (r < 0)
			continue;
		bad[0] = 0;
		if (!pattern_ok())
			fail("heap pattern changed");
		check_threads();
		check_signals();
		check_file();
		check_shm();
		if (bad[0])
			printf("BAD%s\n", bad);
		else
			printf("ok\n");
		fflush(stdout);
	}
}
