/* Open file descriptions shared and not shared. A parent and its child
 * write records through one inherited description of SCRATCH (no
 * O_APPEND): with its offset shared, the writer's offset is always the
 * file's end; two descriptions would overwrite each other's records. The
 * parent also reads its pipe through a second description of the read end
 * (reopened through /proc, O_NONBLOCK) while the first stays blocking,
 * and has made itself the owner of that second description, with SIGUSR2
 * for its signal (F_SETOWN_EX, F_SETSIG). It also holds SCRATCH open with
 * O_PATH (which answers no owner questions).
 * Every tick: "tick=N shared=ok|BAD pipe=ok|BAD owner=ok|BAD opath=ok|BAD"
 * to OUTFILE.
 * usage: shareddesc OUTFILE SCRATCH */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static void nap(long ms)
{
	struct timespec ts = {0, ms * 1000000};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* Our offset is the file's end, give or take a record the other process
 * is writing right now. */
static int at_end(int fd)
{
	for (int i = 0; i < 50; i++) {
		struct stat st;
		off_t pos = lseek(fd, 0, SEEK_CUR);
		if (fstat(fd, &st) == 0 && pos == st.st_size)
			return 1;
		nap(2);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int shared = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0644);
	int p[2];
	if (out < 0 || shared < 0 || pipe(p))
		return 3;
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
	int r2 = open(path, O_RDONLY | O_NONBLOCK);
	int opath = open(argv[2], O_PATH);
	struct f_owner_ex me = {F_OWNER_PID, getpid()};
	if (r2 < 0 || opath < 0 || fcntl(r2, F_SETOWN_EX, &me) || fcntl(r2, F_SETSIG, SIGUSR2))
		return 4;
	if (fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			if (write(shared, "child\n", 6) != 6)
				return 5;
			nap(7);
		}
	}
	for (unsigned long tick = 1;; tick++) {
		char rec[32];
		int n = snprintf(rec, sizeof rec, "parent %lu\n", tick);
		int ok_shared = write(shared, rec, n) == n && at_end(shared);
		char c = 'x', got = 0;
		int ok_pipe = write(p[1], &c, 1) == 1 && read(r2, &got, 1) == 1 && got == 'x' &&
			      (fcntl(r2, F_GETFL) & O_NONBLOCK) && !(fcntl(p[0], F_GETFL) & O_NONBLOCK);
		struct f_owner_ex owner = {0, 0};
		int ok_owner = fcntl(r2, F_GETOWN_EX, &owner) == 0 && owner.type == F_OWNER_PID &&
			       owner.pid == getpid() && fcntl(r2, F_GETSIG) == SIGUSR2 && fcntl(p[0], F_GETSIG) == 0;
		struct stat a, b;
		int ok_opath = (fcntl(opath, F_GETFL) & O_PATH) && fstat(opath, &a) == 0 && fstat(shared, &b) == 0 &&
			       a.st_ino == b.st_ino;
		dprintf(out, "tick=%lu shared=%s pipe=%s owner=%s opath=%s\n", tick, ok_shared ? "ok" : "BAD",
			ok_pipe ? "ok" : "BAD", ok_owner ? "ok" : "BAD", ok_opath ? "ok" : "BAD");
		nap(40);
	}
}
