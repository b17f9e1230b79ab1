/* Round-trip dumpee for SysV shared memory: segment A (5 pages and a bit,
 * keyed) attached three times: read-write, read-only at an address that is
 * page- but not 16 KiB-aligned, and read-write with its first page
 * mprotected read-only (two pieces); segment B (private, one page)
 * attached once. Every tick it counts in A through the first attachment and
 * checks that the others see it, that the pattern is intact, that the
 * attachment counts are 4 (3 + the split) and 1 and, with "rmid", that both are marked
 * removed. With "fork", a child inherits the attachments (doubling the
 * counts) and keeps counting in B, which the parent checks moves on.
 * usage: sysvshm OUTFILE keep|rmid [fork] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define A_SIZE (5 * PAGE + 100)

static int nattch_is(int id, unsigned long n, int dest) {
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds) != 0)
		return 0;
	return ds.shm_nattch == n && !!(ds.shm_perm.mode & SHM_DEST) == dest;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 1;
	int rmid = strcmp(argv[2], "rmid") == 0;
	int forked = argc > 3 && strcmp(argv[3], "fork") == 0;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 2;
	int a = shmget(0x7e000000 | getpid(), A_SIZE, IPC_CREAT | IPC_EXCL | 0640);
	int b = shmget(IPC_PRIVATE, PAGE, IPC_CREAT | 0600);
	if (a < 0 || b < 0)
		return 3;
	/* A free address 4 KiB past a 16 KiB boundary. */
	char *room = mmap(0, 16 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *odd = (char *)(((uintptr_t)room + 4 * PAGE - 1) / (4 * PAGE) * (4 * PAGE) + PAGE);
	munmap(room, 16 * PAGE);
	volatile uint64_t *rw = shmat(a, 0, 0);
	volatile uint64_t *ro = shmat(a, odd, SHM_RDONLY);
	volatile uint64_t *split = shmat(a, 0, 0);
	volatile uint64_t *bb = shmat(b, 0, 0);
	if (rw == (void *)-1 || ro == (void *)-1 || split == (void *)-1 || bb == (void *)-1 || (char *)ro != odd)
		return 4;
	if (mprotect((void *)split, PAGE, PROT_READ) != 0)
		return 5;
	size_t words = A_SIZE / 8;
	for (size_t i = 1; i < words; i++)
		rw[i] = i * 0x9E3779B97F4A7C15ull;
	bb[7] = 0xb0b;
	if (rmid && (shmctl(a, IPC_RMID, 0) != 0 || shmctl(b, IPC_RMID, 0) != 0))
		return 6;
	if (forked) {
		pid_t child = fork();
		if (child < 0)
			return 7;
		if (child == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			for (;;) {
				bb[8]++;
				struct timespec ts = {0, 10000000};
				nanosleep(&ts, 0);
			}
		}
		while (bb[8] == 0)
			usleep(1000);
	}
	unsigned long n = forked ? 2 : 1;
	uint64_t seen = 0;
	for (unsigned long tick = 1;; tick++) {
		rw[0] = tick;
		split[PAGE / 8] = tick; /* the second piece is writable */
		int ok = ro[0] == tick && ro[PAGE / 8] == tick && bb[7] == 0xb0b;
		for (size_t i = PAGE / 8 + 1; ok && i < words; i++)
			ok = ro[i] == i * 0x9E3779B97F4A7C15ull;
		/* The kernel counts mappings: the split attachment counts twice. */
		ok = ok && nattch_is(a, 4 * n, rmid) && nattch_is(b, n, rmid);
		if (forked) {
			/* The child runs when the scheduler lets it: on a loaded
			 * machine it may miss a tick, so wait for it (2 s at most). */
			for (int i = 0; i < 2000 && bb[8] == seen; i++)
				usleep(1000);
			ok = ok && bb[8] != seen;
			seen = bb[8];
		}
		dprintf(fd, "pid=%d tick=%lu a=%d b=%d check=%s\n", getpid(), tick, a, b, ok ? "ok" : "BAD");
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
