/* A memfd ("mybuf", 3 pages, sealed against shrinking and growing) that a
 * parent and its child share: both hold the fd (one description, offset
 * 5), both map it shared, and the child counts in its first word; the
 * parent also maps it privately and changed its private copy's last page.
 * Every tick the parent checks: the child's count moves (through its
 * mapping and through pread), the contents, the seals, the name in
 * /proc/self/fd, the offset, and the private copy.
 * Every tick: "pid=P tick=N child=ok content=ok seals=ok name=ok pos=ok
 * private=ok" (BAD where not) to OUTFILE.
 * usage: memfd OUTFILE */
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
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int fd = memfd_create("mybuf", MFD_ALLOW_SEALING);
	if (out < 0 || fd < 0 || ftruncate(fd, 3 * PAGE))
		return 3;
	if (pwrite(fd, "hello", 5, PAGE) != 5 || lseek(fd, 5, SEEK_SET) != 5)
		return 4;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
		return 5;
	volatile uint64_t *shared = mmap(0, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	char *priv = mmap(0, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (shared == MAP_FAILED || priv == MAP_FAILED)
		return 6;
	memset(priv + 2 * PAGE, 'P', PAGE);
	if (fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			shared[0]++;
			nap(5);
		}
	}
	uint64_t seen = 0;
	char path[64], link[256];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	for (unsigned long tick = 1;; tick++) {
		for (int i = 0; i < 400 && shared[0] == seen; i++)
			nap(5);
		uint64_t via_fd = 0;
		int child = shared[0] != seen && pread(fd, &via_fd, 8, 0) == 8 && via_fd >= seen + 1;
		seen = shared[0];
		char hello[6] = "";
		int content = pread(fd, hello, 5, PAGE) == 5 && strcmp(hello, "hello") == 0;
		int seals = fcntl(fd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = 0;
		int name = strcmp(link, "/memfd:mybuf (deleted)") == 0;
		int pos = lseek(fd, 0, SEEK_CUR) == 5;
		int private = priv[2 * PAGE] == 'P' && priv[2 * PAGE + PAGE - 1] == 'P' && memcmp(priv + PAGE, "hello", 5) == 0;
		dprintf(out, "pid=%d tick=%lu child=%s content=%s seals=%s name=%s pos=%s private=%s\n", getpid(), tick,
			child ? "ok" : "BAD", content ? "ok" : "BAD", seals ? "ok" : "BAD", name ? "ok" : "BAD",
			pos ? "ok" : "BAD", private ? "ok" : "BAD");
		nap(30);
	}
}
