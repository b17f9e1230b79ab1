/* State a dump cannot keep yet, one kind per run: "files" and "fs" start a
 * child that shares the file table or cwd/umask (clone with CLONE_FILES or
 * CLONE_FS), "timens" asks for a new time namespace for the next children
 * (unshare(CLONE_NEWTIME)). Prints "ready" on stdout, then sleeps.
 * usage: sharing files|fs|timens */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	if (strcmp(argv[1], "timens") == 0) {
		if (unshare(CLONE_NEWTIME))
			return 3;
	} else {
		int flag = strcmp(argv[1], "files") == 0 ? CLONE_FILES : CLONE_FS;
		size_t size = 64 * 1024;
		char *stack = malloc(size);
		if (clone(sleeper, stack + size, flag | SIGCHLD, 0) < 0)
			return 4;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
