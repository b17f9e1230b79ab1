/* Keeps its own /proc files open: /proc/self/maps (read from the start
 * every tick, it must list this process's stack) and /proc/self/status
 * (read 10 bytes once: its offset stays 10).
 * Every tick: "pid=P tick=N maps=ok pos=ok" (BAD where not) to OUTFILE.
 * usage: procself OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int maps = open("/proc/self/maps", O_RDONLY);
	int status = open("/proc/self/status", O_RDONLY);
	char buf[65536];
	if (out < 0 || maps < 0 || status < 0 || read(status, buf, 10) != 10)
		return 3;
	for (unsigned long tick = 1;; tick++) {
		ssize_t n = pread(maps, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = 0;
		int maps_ok = strstr(buf, "[stack]") != NULL;
		int pos_ok = lseek(status, 0, SEEK_CUR) == 10;
		dprintf(out, "pid=%d tick=%lu maps=%s pos=%s\n", getpid(), tick, maps_ok ? "ok" : "BAD", pos_ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
