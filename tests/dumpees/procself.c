/* Keeps its own /proc files open: /proc/self/maps (read from the start
 * every tick, it must list this process's stack) and /proc/self/status
 * (read 10 bytes once: its offset stays 10), and its network and UTS
 * namespace files (each must be the namespace it is in).
 * Every tick: "pid=P tick=N ns=ok maps=ok pos=ok" (BAD where not) to
 * OUTFILE.
 * usage: procself OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int maps = open("/proc/self/maps", O_RDONLY);
	int status = open("/proc/self/status", O_RDONLY);
	int net = open("/proc/self/ns/net", O_RDONLY);
	int uts = open("/proc/self/ns/uts", O_RDONLY);
	char buf[65536];
	if (out < 0 || maps < 0 || status < 0 || net < 0 || uts < 0 || read(status, buf, 10) != 10)
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
		dprintf(out, "pid=%d tick=%lu ns=%s maps=%s pos=%s\n", getpid(), tick, ns_ok ? "ok" : "BAD",
			maps_ok ? "ok" : "BAD", pos_ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
