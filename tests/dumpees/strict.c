/* Strict seccomp (SECCOMP_MODE_STRICT): a child enters it and waits in
 * read() on a pipe; strict mode also makes rdtsc fault (x86). Each tick
 * the parent appends "tick=N" to OUTFILE. Once GOFILE exists it checks the
 * child's /proc status (Seccomp: 1), sends it a byte, reads its answer
 * (write() is allowed), sends another, upon which the child runs rdtsc
 * and, if that did not fault, says so; then reaps it: "strict=ok" when
 * the child answered, was in mode 1 and died of SIGSEGV at rdtsc, else
 * "strict=BAD:WHAT".
 * usage: strict OUTFILE GOFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int mode_of(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	int mode = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "Seccomp:\t%d", &mode) == 1)
			break;
	if (f)
		fclose(f);
	return mode;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int down[2], up[2];
	if (pipe(down) || pipe(up))
		return 2;
	pid_t child = fork();
	if (child == 0) {
		char c;
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
			syscall(SYS_exit, 3);
		if (read(down[0], &c, 1) != 1 || write(up[1], "A", 1) != 1 || read(down[0], &c, 1) != 1)
			syscall(SYS_exit, 4);
		unsigned lo, hi;
		__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
		(void)write(up[1], "T", 1);
		syscall(SYS_exit, 0);
	}
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	for (unsigned long tick = 1;; tick++) {
		if (access(argv[2], F_OK) == 0) {
			char why[64] = "", c = 0;
			int status = 0;
			if (mode_of(child) != 1)
				snprintf(why, sizeof why, "mode%d", mode_of(child));
			else if (write(down[1], "x", 1) != 1 || read(up[0], &c, 1) != 1 || c != 'A')
				snprintf(why, sizeof why, "noanswer");
			else if (write(down[1], "y", 1) != 1 || waitpid(child, &status, 0) != child)
				snprintf(why, sizeof why, "wait");
			else if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
				snprintf(why, sizeof why, "status%#x", status);
			dprintf(out, "strict=%s%s\n", why[0] ? "BAD:" : "ok", why);
			return 0;
		}
		dprintf(out, "tick=%lu\n", tick);
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
