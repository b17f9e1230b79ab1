/* A process whose cwd is the /proc directory of a child that ended and
 * was reaped since. Every tick it checks that /proc/self/cwd reads
 * "/proc/PID (deleted)", that getcwd fails with ENOENT, and that no
 * process has that PID.
 * Every tick: "tick=N cwd=ok|BAD:WHAT" to OUTFILE.
 * usage: procgone OUTFILE */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	FILE *out = fopen(argv[1], "a");
	pid_t child = fork();
	if (child == 0) {
		pause();
		_exit(0);
	}
	char dir[64], want[80];
	snprintf(dir, sizeof(dir), "/proc/%d", (int)child);
	snprintf(want, sizeof(want), "%s (deleted)", dir);
	if (!out || child < 0 || chdir(dir))
		return 3;
	kill(child, SIGKILL);
	if (waitpid(child, 0, 0) != child)
		return 4;
	for (unsigned long tick = 1;; tick++) {
		char got[128], buf[128];
		ssize_t n = readlink("/proc/self/cwd", got, sizeof(got) - 1);
		got[n > 0 ? n : 0] = 0;
		const char *bad = 0;
		if (strcmp(got, want) != 0)
			bad = "name";
		else if (getcwd(buf, sizeof(buf)) || errno != ENOENT)
			bad = "getcwd";
		else if (kill(child, 0) == 0 || errno != ESRCH)
			bad = "pid";
		fprintf(out, "tick=%lu cwd=%s%s\n", tick, bad ? "BAD:" : "ok", bad ? bad : "");
		fflush(out);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
