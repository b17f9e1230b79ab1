/* POSIX shared memory and a named semaphore, both unlinked at once (as
 * Python's multiprocessing does with its locks and queues), so that only
 * the mappings of their /dev/shm files (deleted) are left, shared with a
 * child. Every tick the parent posts the semaphore and waits for the
 * child, which waits on it, to count the post in the shared page. A
 * second semaphore keeps its name (glibc maps it under a temporary name,
 * links it under its own and unlinks the first, so the mapping shows a
 * deleted name of a file still linked): it is posted and counted the same
 * way, and its mapping must keep showing the temporary name, deleted. The
 * child unlinks that name once the parent is gone.
 * Every tick: "tick=N sem=ok|BAD" to OUTFILE (BAD: the count did not
 * follow within a second, or the name changed).
 * On SIGUSR1: ten posts at once, then "data=ok|BAD" once all are counted.
 * usage: posixsem OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t asked;
static void on_usr1(int sig) { (void)sig; asked = 1; }

/* Waits up to a second for both shared counts to reach `want`. */
static int counted(volatile unsigned long *count, unsigned long want)
{
	for (int i = 0; i < 1000; i++) {
		if (count[0] == want && count[1] == want)
			return 1;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, 0);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	FILE *out = fopen(argv[1], "a");
	char name[64];
	snprintf(name, sizeof(name), "/revenant-sem-%d", getpid());
	sem_t *sem = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
	if (!out || sem == SEM_FAILED || sem_unlink(name))
		return 3;
	char named[64];
	snprintf(named, sizeof(named), "/revenant-named-%d", getpid());
	sem_t *kept = sem_open(named, O_CREAT | O_EXCL, 0600, 0);
	if (kept == SEM_FAILED)
		return 6;
	snprintf(name, sizeof(name), "/revenant-count-%d", getpid());
	int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
	if (fd < 0 || ftruncate(fd, 4096) || shm_unlink(name))
		return 4;
	volatile unsigned long *count = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (count == MAP_FAILED)
		return 5;
	close(fd);
	pid_t parent = getpid();
	if (fork() == 0) {
		while (getppid() == parent) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += 1;
			if (sem_timedwait(sem, &until) == 0)
				(*count)++;
			if (sem_timedwait(kept, &until) == 0)
				count[1]++;
		}
		sem_unlink(named);
		return 0;
	}
	/* The name the kept semaphore's mapping shows, as first seen. */
	char link[64], shown[256] = "", now[256];
	unsigned long at = (unsigned long)kept & ~4095UL;
	snprintf(link, sizeof(link), "/proc/self/map_files/%lx-%lx", at, at + 4096);
	ssize_t n = readlink(link, shown, sizeof(shown) - 1);
	if (n <= 0 || !strstr(shown, " (deleted)"))
		return 7;
	signal(SIGUSR1, on_usr1);
	unsigned long posted = *count;
	for (unsigned long tick = 1;; tick++) {
		sem_post(sem);
		sem_post(kept);
		posted++;
		n = readlink(link, now, sizeof(now) - 1);
		now[n > 0 ? n : 0] = 0;
		int same = strcmp(now, shown) == 0;
		fprintf(out, "tick=%lu sem=%s\n", tick, counted(count, posted) && same ? "ok" : "BAD");
		if (asked) {
			asked = 0;
			for (int i = 0; i < 10; i++) {
				sem_post(sem);
				sem_post(kept);
			}
			posted += 10;
			fprintf(out, "data=%s\n", counted(count, posted) ? "ok" : "BAD");
		}
		fflush(out);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
