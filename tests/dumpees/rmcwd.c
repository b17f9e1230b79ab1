/* A process whose cwd was removed: it makes DIR/gone (mode 0751), enters
 * it and removes it. Every tick it checks that /proc/self/cwd still
 * names DIR/gone as deleted, that "." has no link left and mode 0751,
 * that nothing can be made in it, and that DIR/gone is not there. It
 * also holds DIR/up/down open, both removed: the fd must still name it
 * as deleted, with no link left, and DIR/up must be gone.
 * Every tick: "tick=N cwd=ok|BAD:WHAT" to OUTFILE.
 * On SIGUSR1: "data=ok|BAD" once, from the same checks.
 * usage: rmcwd OUTFILE DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t asked;
static void on_usr1(int sig) { (void)sig; asked = 1; }

static int down = -1;
static char up[400];

/* Whether the /proc link `link` reads "PATH (deleted)". */
static int shows_deleted(const char *link, const char *path)
{
	char got[512], want[520];
	ssize_t n = readlink(link, got, sizeof(got) - 1);
	if (n < 0)
		return 0;
	got[n] = 0;
	snprintf(want, sizeof(want), "%s (deleted)", path);
	return strcmp(got, want) == 0;
}

static const char *check(const char *gone)
{
	char link[64], path[512];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", down);
	snprintf(path, sizeof(path), "%s/down", up);
	if (!shows_deleted(link, path))
		return "name-down";
	struct stat ds;
	if (fstat(down, &ds) || !S_ISDIR(ds.st_mode) || ds.st_nlink != 0 || access(up, F_OK) == 0)
		return "down";
	if (!shows_deleted("/proc/self/cwd", gone))
		return "name";
	struct stat st;
	if (stat(".", &st) || !S_ISDIR(st.st_mode) || st.st_nlink != 0 || (st.st_mode & 0777) != 0751)
		return "stat";
	if (open("x", O_CREAT | O_WRONLY, 0600) >= 0)
		return "creatable";
	if (access(gone, F_OK) == 0)
		return "still-there";
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	FILE *out = fopen(argv[1], "a");
	char gone[400];
	snprintf(gone, sizeof(gone), "%s/gone", argv[2]);
	if (!out || mkdir(gone, 0700) || chmod(gone, 0751) || chdir(gone) || rmdir(gone))
		return 3;
	char path[500];
	snprintf(up, sizeof(up), "%s/up", argv[2]);
	snprintf(path, sizeof(path), "%s/down", up);
	if (mkdir(up, 0700) || mkdir(path, 0700) || (down = open(path, O_RDONLY | O_DIRECTORY)) < 0 || rmdir(path) ||
	    rmdir(up))
		return 4;
	signal(SIGUSR1, on_usr1);
	for (unsigned long tick = 1;; tick++) {
		const char *bad = check(gone);
		fprintf(out, "tick=%lu cwd=%s%s\n", tick, bad ? "BAD:" : "ok", bad ? bad : "");
		if (asked) {
			asked = 0;
			fprintf(out, "data=%s\n", check(gone) ? "BAD" : "ok");
		}
		fflush(out);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
