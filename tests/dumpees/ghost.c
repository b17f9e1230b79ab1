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
 * both must keep their own. And a file made with O_TMPFILE in DIR
 * (never named), open twice (the second description through
 * /proc/self/fd) and mapped shared: one file behind all three, no link,
 * its offset, mode and contents; on SIGUSR1 it is linked into DIR as
 * "tmp-linked" (which only a file made by O_TMPFILE allows), found there
 * from then on. And DIR/w, watched by an inotify for files made or
 * removed in it, holding a file unlinked while open and watched by the
 * same inotify for writes (a `tail -f` of a log deleted under it): each
 * tick writes to it, and the write's event, and no other, must come (a
 * restore that made and removed the file where the directory's watch
 * sees it would send one). And a device node it made (the null device)
 * and unlinked while open: still that device, writable, reading nothing,
 * with no link. And a symbolic link held by an O_PATH descriptor and
 * unlinked: still a link, to where it pointed, held by O_PATH.
 * Every tick: "tick=N ghost=ok|BAD" to OUTFILE; once linked,
 * "link=ok|BAD" before it.
 * usage: ghost OUTFILE DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t link_asked;

static void ask_link(int sig)
{
	(void)sig;
	link_asked = 1;
}

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
	int t = open(argv[2], O_RDWR | O_TMPFILE, 0604);
	if (t < 0 || ftruncate(t, 4096) || pwrite(t, "tmpfile data", 12, 0) != 12 || lseek(t, 5, SEEK_SET) != 5)
		return 13;
	char tpath[64], tshown[4200], twant[4200], tlinked[4200], tmap[128];
	snprintf(tpath, sizeof(tpath), "/proc/self/fd/%d", t);
	int t2 = open(tpath, O_RDONLY);
	char *tm = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, t, 0);
	struct stat tst;
	if (t2 < 0 || tm == MAP_FAILED || fstat(t, &tst))
		return 14;
	snprintf(tmap, sizeof(tmap), "/proc/self/map_files/%lx-%lx", (unsigned long)tm, (unsigned long)tm + 4096);
	snprintf(tlinked, sizeof(tlinked), "%s/tmp-linked", argv[2]);
	char wdir[4096], wfile[4200];
	snprintf(wdir, sizeof(wdir), "%s/w", argv[2]);
	snprintf(wfile, sizeof(wfile), "%s/held", wdir);
	int wf = -1, in = inotify_init1(IN_NONBLOCK), fwd = -1;
	char ev[4096];
	if (mkdir(wdir, 0700) || (wf = open(wfile, O_RDWR | O_CREAT, 0600)) < 0 || in < 0 ||
	    inotify_add_watch(in, wdir, IN_CREATE | IN_DELETE) < 0 || (fwd = inotify_add_watch(in, wfile, IN_MODIFY)) < 0 ||
	    unlink(wfile))
		return 15;
	while (read(in, ev, sizeof(ev)) > 0)
		;
	char devpath[4200];
	snprintf(devpath, sizeof(devpath), "%s/null", argv[2]);
	int nul = -1;
	if (mknod(devpath, S_IFCHR | 0600, makedev(1, 3)) || (nul = open(devpath, O_RDWR)) < 0 || unlink(devpath))
		return 16;
	char lnkpath[4200];
	snprintf(lnkpath, sizeof(lnkpath), "%s/lnk", argv[2]);
	int lnk = -1;
	if (symlink("somewhere/else", lnkpath) || (lnk = open(lnkpath, O_PATH | O_NOFOLLOW)) < 0 || unlink(lnkpath))
		return 17;
	signal(SIGUSR1, ask_link);
	int linked = 0;
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
		/* The O_TMPFILE file: its inode number changes with a restore,
		 * so the name it shows is checked against the current one. */
		struct stat t1s, t2s, tms;
		char tb[16] = "";
		ok = ok && fstat(t, &t1s) == 0 && fstat(t2, &t2s) == 0 && stat(tmap, &tms) == 0 &&
		     t1s.st_ino == t2s.st_ino && t1s.st_ino == tms.st_ino && t1s.st_nlink == (nlink_t)linked &&
		     (t1s.st_mode & 0777) == 0604 && lseek(t, 0, SEEK_CUR) == 5 && pread(t2, tb, 12, 0) == 12 &&
		     memcmp(tb, "tmpfile data", 12) == 0 && memcmp(tm, "tmpfile data", 12) == 0;
		n = readlink(tpath, tshown, sizeof(tshown) - 1);
		tshown[n > 0 ? n : 0] = 0;
		/* Linked or not, the descriptor keeps the name it was made
		 * with: "DIR/#INO (deleted)" (a restore by CRIU keeps the old
		 * INO, ours shows the new one, as the kernel names it). */
		snprintf(twant, sizeof(twant), "%s/#", argv[2]);
		size_t tl = strlen(tshown);
		ok = ok && strncmp(tshown, twant, strlen(twant)) == 0 && tl > 10 &&
		     strcmp(tshown + tl - 10, " (deleted)") == 0;
		struct stat ls;
		ok = ok && (!linked || (stat(tlinked, &ls) == 0 && ls.st_ino == t1s.st_ino));
		/* Every event: the write's, on the file's watch. */
		int events = 0, others = 0;
		if (pwrite(wf, "x", 1, 0) == 1)
			for (ssize_t got; (got = read(in, ev, sizeof(ev))) > 0;)
				for (char *e = ev; e < ev + got; e += sizeof(struct inotify_event) + ((struct inotify_event *)e)->len) {
					struct inotify_event *ie = (struct inotify_event *)e;
					events++;
					others += ie->wd != fwd || ie->mask != IN_MODIFY;
				}
		ok = ok && events >= 1 && others == 0 && fstat(wf, &ls) == 0 && ls.st_nlink == 0;
		ok = ok && fstat(nul, &ls) == 0 && S_ISCHR(ls.st_mode) && ls.st_rdev == makedev(1, 3) &&
		     ls.st_nlink == 0 && write(nul, "x", 1) == 1 && read(nul, ev, 1) == 0;
		char to[64] = "";
		ok = ok && fstatat(lnk, "", &ls, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ls.st_mode) &&
		     ls.st_nlink == 0 && readlinkat(lnk, "", to, sizeof(to) - 1) == 14 && strcmp(to, "somewhere/else") == 0 &&
		     (fcntl(lnk, F_GETFL) & O_PATH) != 0;
		if (link_asked && !linked) {
			linked = linkat(AT_FDCWD, tpath, AT_FDCWD, tlinked, AT_SYMLINK_FOLLOW) == 0;
			dprintf(out, "link=%s\n", linked ? "ok" : "BAD");
		}
		sh[100] = (char)('0' + tick % 10);
		dprintf(out, "tick=%lu ghost=%s\n", tick, ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
