/* A process in a chroot with its cwd below the new root: every tick it
 * writes its cwd as it sees it and whether a file there is found by a
 * relative and by an absolute path.
 * Lines: "tick=N cwd=/sub found=1". usage: chrooted OUTFILE ROOT (ROOT,
 * ROOT/sub and ROOT/sub/marker are made if missing) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char path[4096];
	mkdir(argv[2], 0755);
	snprintf(path, sizeof path, "%s/sub", argv[2]);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/sub/marker", argv[2]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	if (out < 0 || chroot(argv[2]) || chdir("/sub"))
		return 3;
	for (unsigned long tick = 1;; tick++) {
		char cwd[256] = "";
		if (!getcwd(cwd, sizeof cwd))
			cwd[0] = '?';
		int found = access("marker", F_OK) == 0 && access("/sub/marker", F_OK) == 0;
		dprintf(out, "tick=%lu cwd=%s found=%d\n", tick, cwd, found);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
