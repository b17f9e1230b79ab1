/* Holds file locks of every kind: flock(LOCK_EX) on DIR/a, POSIX record
 * locks on DIR/b (write [0, 10), read [20, 30)), an OFD write lock on all
 * of DIR/c, a read lease on DIR/d and a write lease on DIR/e. Every tick a
 * short-lived child (another process, with descriptions of its own)
 * checks that it finds each lock taken, by us, and we check the leases
 * (opening their files would break them): "tick=N locks=ok|BAD" into
 * OUTFILE.
 * usage: locks OUTFILE DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
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

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
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
		int leases = fcntl(d, F_GETLEASE) == F_RDLCK && fcntl(e, F_GETLEASE) == F_WRLCK;
		dprintf(out, "tick=%lu locks=%s\n", tick, status == 0 && leases ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
