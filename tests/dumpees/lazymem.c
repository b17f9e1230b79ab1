/* Lazy restore dumpee: argv[1] MiB of patterned heap (every 64th page left
 * untouched, so it reads as zeros), a 1 MiB side area, out file argv[2],
 * argv[3] checking threads. Writes "ready PID", then waits. Each SIGUSR1
 * runs one round of checks, in an order that makes the kernel, a forked
 * child and several threads at once be the first to reach pages since a
 * restore, and writes "round=N bad=B" (B: words that differ):
 *  1. write() of the first 4 MiB into a memfd (the kernel reads the
 *     program's memory), read back and compared;
 *  2. a forked child checks the last quarter, and exits with the verdict;
 *  3. first round only: half the side area dropped (MADV_DONTNEED, must
 *     read zeros from then on), the other half moved with mremap (must
 *     keep its bytes at the new place); checked in every round;
 *  4. every thread checks the whole heap area at the same time, from the
 *     same end. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define HOLE_EVERY 64
#define SIDE (1 << 20)

static uint64_t *heap;
static size_t heap_words;
static unsigned char *side, *moved;
static const char *out;
static volatile sig_atomic_t asked;
static pthread_barrier_t start, end;
static unsigned long bad_by[64];
static int nthreads;

static uint64_t expect(size_t i)
{
	if ((i * 8 / PAGE) % HOLE_EVERY == HOLE_EVERY - 1)
		return 0;
	return i * 0x9E3779B97F4A7C15ull ^ 0x5a5a5a5a5a5a5a5aull;
}

static unsigned char side_byte(size_t i)
{
	return (unsigned char)(i * 131 + 7);
}

static unsigned long check_words(size_t from, size_t to)
{
	unsigned long bad = 0;
	for (size_t i = from; i < to; i++)
		bad += heap[i] != expect(i);
	return bad;
}

static void say(const char *fmt, unsigned long a, unsigned long b)
{
	FILE *f = fopen(out, "a");
	if (f) {
		fprintf(f, fmt, a, b);
		fclose(f);
	}
}

static void *checker(void *arg)
{
	long me = (long)arg;
	for (;;) {
		pthread_barrier_wait(&start);
		bad_by[me] = check_words(0, heap_words);
		pthread_barrier_wait(&end);
	}
	return 0;
}

static unsigned long round_of_checks(unsigned long round)
{
	unsigned long bad = 0;
	/* 1: the kernel reads first. */
	size_t len = 4 << 20;
	if (len > heap_words * 8)
		len = heap_words * 8;
	int fd = memfd_create("lazymem", 0);
	if (fd < 0 || write(fd, heap, len) != (ssize_t)len)
		return 1000000;
	uint64_t *copy = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (copy == MAP_FAILED || pread(fd, copy, len, 0) != (ssize_t)len)
		return 1000001;
	for (size_t i = 0; i < len / 8; i++)
		bad += copy[i] != expect(i);
	munmap(copy, len);
	close(fd);
	/* 2: a child made while pages are missing. */
	pid_t c = fork();
	if (c == 0)
		_exit(check_words(heap_words / 4 * 3, heap_words) ? 1 : 0);
	int st = 0;
	if (c < 0 || waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		bad += 1;
	/* 3: memory dropped and moved. */
	if (round == 1) {
		madvise(side, SIDE / 2, MADV_DONTNEED);
		void *to = mmap(0, SIDE / 2, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		moved = mremap(side + SIDE / 2, SIDE / 2, SIDE / 2, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		if (moved == MAP_FAILED)
			return 1000002;
	}
	for (size_t i = 0; i < SIDE / 2; i++)
		bad += side[i] != 0;
	for (size_t i = 0; i < SIDE / 2; i++)
		bad += moved[i] != side_byte(SIDE / 2 + i);
	/* 4: every thread at once. */
	pthread_barrier_wait(&start);
	pthread_barrier_wait(&end);
	for (int t = 0; t < nthreads; t++)
		bad += bad_by[t];
	return bad;
}

static void on_usr1(int sig)
{
	(void)sig;
	asked = 1;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 1;
	out = argv[2];
	nthreads = atoi(argv[3]);
	if (nthreads < 1 || nthreads > 64)
		return 1;
	heap_words = strtoul(argv[1], 0, 10) * (1 << 20) / 8;
	heap = mmap(0, heap_words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	side = mmap(0, SIDE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (heap == MAP_FAILED || side == MAP_FAILED)
		return 2;
	for (size_t i = 0; i < heap_words; i++)
		if (expect(i))
			heap[i] = expect(i);
	for (size_t i = 0; i < SIDE; i++)
		side[i] = side_byte(i);
	moved = side + SIDE / 2;
	/* Blocked before the threads exist, so they inherit it: only the main
	 * thread, in sigsuspend, takes SIGUSR1. A checker thread taking it
	 * would run the handler there and leave main asleep. */
	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	signal(SIGUSR1, on_usr1);
	pthread_barrier_init(&start, 0, nthreads + 1);
	pthread_barrier_init(&end, 0, nthreads + 1);
	for (long t = 0; t < nthreads; t++) {
		pthread_t th;
		if (pthread_create(&th, 0, checker, (void *)t))
			return 3;
	}
	say("ready %lu%.0lu\n", getpid(), 0);
	for (unsigned long round = 1;; round++) {
		while (!asked)
			sigsuspend(&old);
		asked = 0;
		unsigned long bad = round_of_checks(round);
		say("round=%lu bad=%lu\n", round, bad);
	}
}
