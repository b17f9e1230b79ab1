/* A file it unlinked while holding it open twice (two descriptions, at
 * offsets 3 and 7): every tick it checks the contents through both, the
 * offsets, that the file has no link left, and that /proc/self/fd shows
 * its old path as deleted, and its modification time (set to 1234567890
 * before the unlink). Also a sparse file (a hole, then "end" at
 * 64 KiB), unlinked: the hole must still be one; and a file opened under
 * two hard links, both unlinked: a write through one shows through the
 * other. And a file it mapped twice (shared, and private with its first
 * page written), closed and unlinked: both mappings keep their contents,
 * the shared one carrying a write each tick, the untouched page of the
 * private one still reading from the file. And a log rotated away:
 * DIR/app.log unlinked while open and made again with other contents;
 * both must keep their own.
 * Every tick: "tick=N ghost=ok|BAD" to OUTFILE.
 * usage: ghost OUTFILE DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char path[4096], want[4200], shown[4200], procfd[64];
	snprintf(path, sizeof(path), "%s/scratch", argv[2]);
	int a = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
	int b = open(path, O_RDONLY);
	if (out < 0 || a < 0 || b < 0 || write(a, "hello ghost", 11) != 11)
		return 3;
	struct timespec times[2] = {{1234567890, 0}, {1234567890, 0}};
	if (futimens(a, times))
		return 7;
	lseek(a, 3, SEEK_SET);
	lseek(b, 7, SEEK_SET);
	if (unlink(path))
		return 4;
	char sparse[4096], l1[4096], l2[4096];
	snprintf(sparse, sizeof(sparse), "%s/sparse", argv[2]);
	snprintf(l1, sizeof(l1), "%s/linked", argv[2]);
	snprintf(l2, sizeof(l2), "%s/linked2", argv[2]);
	int s = open(sparse, O_RDWR | O_CREAT | O_TRUNC, 0600);
	int h1 = open(l1, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (s < 0 || h1 < 0 || pwrite(s, "end", 3, 65536) != 3 || link(l1, l2))
		return 5;
	int h2 = open(l2, O_RDWR);
	if (h2 < 0 || unlink(sparse) || unlink(l1) || unlink(l2))
		return 6;
	char mp[4096];
	snprintf(mp, sizeof(mp), "%s/mapped", argv[2]);
	int mf = open(mp, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (mf < 0 || ftruncate(mf, 8192) || pwrite(mf, "mapped data", 11, 0) != 11 ||
	    pwrite(mf, "second page", 11, 4096) != 11)
		return 8;
	char *sh = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mf, 0);
	char *pr = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, mf, 0);
	if (sh == MAP_FAILED || pr == MAP_FAILED)
		return 9;
	pr[0] = 'P';
	close(mf);
	if (unlink(mp))
		return 10;
	/* A log rotated away: the file it holds is unlinked and another is
	 * made at its path. */
	char lp[4096];
	snprintf(lp, sizeof(lp), "%s/app.log", argv[2]);
	int lg = open(lp, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (lg < 0 || write(lg, "old log", 7) != 7 || unlink(lp))
		return 11;
	int nl = open(lp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (nl < 0 || write(nl, "new log", 7) != 7 || close(nl))
		return 12;
	snprintf(want, sizeof(want), "%s (deleted)", path);
	snprintf(procfd, sizeof(procfd), "/proc/self/fd/%d", a);
	for (unsigned long tick = 1;; tick++) {
		char buf[16] = "";
		struct stat st;
		ssize_t n = readlink(procfd, shown, sizeof(shown) - 1);
		shown[n > 0 ? n : 0] = 0;
		int ok = pread(b, buf, 11, 0) == 11 && memcmp(buf, "hello ghost", 11) == 0 && lseek(a, 0, SEEK_CUR) == 3 &&
			 lseek(b, 0, SEEK_CUR) == 7 && fstat(a, &st) == 0 && st.st_nlink == 0 && (st.st_mode & 0777) == 0640 &&
			 st.st_mtime == 1234567890 &&
			 strcmp(shown, want) == 0;
		char end[4] = "", mark[8] = "";
		ok = ok && lseek(s, 0, SEEK_DATA) == 65536 && pread(s, end, 3, 65536) == 3 && memcmp(end, "end", 3) == 0;
		snprintf(buf, sizeof(buf), "t%lu", tick % 10);
		ok = ok && pwrite(h1, buf, 2, 0) == 2 && pread(h2, mark, 2, 0) == 2 && memcmp(mark, buf, 2) == 0;
		char was = sh[100];
		ok = ok && memcmp(sh, "mapped data", 11) == 0 && memcmp(sh + 4096, "second page", 11) == 0 &&
		     memcmp(pr, "Papped data", 11) == 0 && memcmp(pr + 4096, "second page", 11) == 0 &&
		     (tick == 1 || was == (char)('0' + (tick - 1) % 10));
		char lb[8] = "", nb[8] = "";
		char aside[4200];
		snprintf(aside, sizeof(aside), "%s/.app.log.revenant-unlinked", argv[2]);
		int nf = open(lp, O_RDONLY);
		ok = ok && access(aside, F_OK) != 0;
		ok = ok && pread(lg, lb, 7, 0) == 7 && memcmp(lb, "old log", 7) == 0 && fstat(lg, &st) == 0 &&
		     st.st_nlink == 0 && nf >= 0 && pread(nf, nb, 7, 0) == 7 && memcmp(nb, "new log", 7) == 0;
		if (nf >= 0)
			close(nf);
		sh[100] = (char)('0' + tick % 10);
		dprintf(out, "tick=%lu ghost=%s\n", tick, ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
