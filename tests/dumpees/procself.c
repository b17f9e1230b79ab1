/* Keeps its own /proc files open: /proc/self/maps (read from the start
 * every tick, it must list this process's stack) and /proc/self/status
 * (read 10 bytes once: its offset stays 10), and its network and UTS
 * namespace files (each must be the namespace it is in); and its child's
 * /proc/PID/stat, while the child keeps its parent's /proc/PID/status
 * (each must name the other; the child ends if not, or once orphaned).
 * Every tick: "pid=P tick=N ns=ok maps=ok pos=ok kin=ok" (BAD where not)
 * to OUTFILE.
 * usage: procself OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	pid_t parent = getpid(), child = fork();
	char path[64], buf[65536];
	if (child == 0) {
		snprintf(path, sizeof(path), "/proc/%d/status", (int)parent);
		int st = open(path, O_RDONLY);
		char want[32];
		snprintf(want, sizeof(want), "\nPid:\t%d\n", (int)parent);
		for (;;) {
			ssize_t n = pread(st, buf, sizeof(buf) - 1, 0);
			buf[n > 0 ? n : 0] = 0;
			if (getppid() != parent || !strstr(buf, want))
				_exit(1);
			struct timespec ts = {0, 30000000};
			nanosleep(&ts, 0);
		}
	}
	int maps = open("/proc/self/maps", O_RDONLY);
	int status = open("/proc/self/status", O_RDONLY);
	int net = open("/proc/self/ns/net", O_RDONLY);
	int uts = open("/proc/self/ns/uts", O_RDONLY);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)child);
	int kin = open(path, O_RDONLY);
	if (child < 0 || kin < 0 || out < 0 || maps < 0 || status < 0 || net < 0 || uts < 0 || read(status, buf, 10) != 10)
		return 3;
	for (unsigned long tick = 1;; tick++) {
		ssize_t n = pread(maps, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = 0;
		int maps_ok = strstr(buf, "[stack]") != NULL;
		int pos_ok = lseek(status, 0, SEEK_CUR) == 10;
		struct stat a, b, c, d;
		int ns_ok = fstat(net, &a) == 0 && stat("/proc/self/ns/net", &b) == 0 && a.st_ino == b.st_ino &&
			    fstat(uts, &c) == 0 && stat("/proc/self/ns/uts", &d) == 0 && c.st_ino == d.st_ino &&
			    a.st_ino != c.st_ino;
		n = pread(kin, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = 0;
		int who = 0, its_parent = 0;
		char state;
		int kin_ok = sscanf(buf, "%d (procself) %c %d", &who, &state, &its_parent) == 3 && who == child &&
			     its_parent == parent && waitpid(child, 0, WNOHANG) == 0;
		dprintf(out, "pid=%d tick=%lu ns=%s maps=%s pos=%s kin=%s\n", getpid(), tick, ns_ok ? "ok" : "BAD",
			maps_ok ? "ok" : "BAD", pos_ok ? "ok" : "BAD", kin_ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
