/* Holds file locks of every kind: flock(LOCK_EX) on DIR/a, POSIX record
 * locks on DIR/b (write [0, 10), read [20, 30)), an OFD write lock on all
 * of DIR/c, a read lease on DIR/d and a write lease on DIR/e; with
 * "breaking", two leases being broken too (a child's open without waiting
 * began each break): a write lease on DIR/f going to read, a read lease
 * on DIR/g going.
 * Every tick a short-lived child (another process, with descriptions of
 * its own) checks that it finds each lock taken, by us, and we check the
 * leases (opening their files would break them) and that each break was
 * told (SIGIO) once, never again: "tick=N locks=ok|BAD" into OUTFILE.
 * usage: locks OUTFILE DIR [breaking] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int open_in(const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return open(path, O_RDWR | O_CREAT, 0644);
}

static volatile sig_atomic_t breaks;

static void told(int sig)
{
	(void)sig;
	breaks++;
}

/* A lease of `type` on DIR/NAME, opened with `mode`, and a child's open
 * with `breaker` begins its break. */
static int breaking(const char *dir, const char *name, int mode, int type, int breaker)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	close(open(path, O_RDWR | O_CREAT, 0644));
	int fd = open(path, mode);
	if (fd < 0 || fcntl(fd, F_SETLEASE, type))
		return -1;
	pid_t c = fork();
	if (c == 0)
		_exit(open(path, breaker | O_NONBLOCK) < 0 && errno == EWOULDBLOCK ? 0 : 1);
	int status = -1;
	return waitpid(c, &status, 0) == c && status == 0 ? fd : -1;
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4)
		return 2;
	int with_breaks = argc == 4 && strcmp(argv[3], "breaking") == 0;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int a = open_in(argv[2], "a"), b = open_in(argv[2], "b"), c = open_in(argv[2], "c");
	char dp[4096], ep[4096];
	snprintf(dp, sizeof(dp), "%s/d", argv[2]);
	snprintf(ep, sizeof(ep), "%s/e", argv[2]);
	int d = open(dp, O_RDONLY | O_CREAT, 0644), e = open(ep, O_WRONLY | O_CREAT, 0644);
	if (out < 0 || a < 0 || b < 0 || c < 0 || d < 0 || e < 0)
		return 3;
	if (fcntl(d, F_SETLEASE, F_RDLCK) || fcntl(e, F_SETLEASE, F_WRLCK))
		return 5;
	signal(SIGIO, told);
	int f = -1, g = -1;
	if (with_breaks) {
		f = breaking(argv[2], "f", O_WRONLY, F_WRLCK, O_RDONLY);
		g = breaking(argv[2], "g", O_RDONLY, F_RDLCK, O_WRONLY);
		if (f < 0 || g < 0)
			return 6;
		while (breaks < 2)
			pause();
	}
	struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
	struct flock r = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 20, .l_len = 10};
	struct flock all = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	if (flock(a, LOCK_EX) || fcntl(b, F_SETLK, &w) || fcntl(b, F_SETLK, &r) || fcntl(c, F_OFD_SETLK, &all))
		return 4;
	pid_t me = getpid();
	for (unsigned long tick = 1;; tick++) {
		pid_t checker = fork();
		if (checker == 0) {
			int a2 = open_in(argv[2], "a"), b2 = open_in(argv[2], "b"), c2 = open_in(argv[2], "c");
			struct flock p1 = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
			struct flock p2 = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 20, .l_len = 10};
			struct flock o = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
			int ok = flock(a2, LOCK_EX | LOCK_NB) < 0 && fcntl(b2, F_GETLK, &p1) == 0 && p1.l_type == F_WRLCK &&
				 p1.l_pid == me && fcntl(b2, F_GETLK, &p2) == 0 && p2.l_type == F_RDLCK && p2.l_pid == me &&
				 fcntl(c2, F_OFD_GETLK, &o) == 0 && o.l_type == F_WRLCK;
			_exit(ok ? 0 : 1);
		}
		int status = -1;
		waitpid(checker, &status, 0);
		int leases = fcntl(d, F_GETLEASE) == F_RDLCK && fcntl(e, F_GETLEASE) == F_WRLCK &&
			     (!with_breaks || (fcntl(f, F_GETLEASE) == F_RDLCK && fcntl(g, F_GETLEASE) == F_UNLCK)) &&
			     breaks == (with_breaks ? 2 : 0);
		dprintf(out, "tick=%lu locks=%s\n", tick, status == 0 && leases ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
