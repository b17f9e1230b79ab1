/* Inotify watches, by number: DIR (IN_CREATE) is watch 1, DIR/f
 * (IN_MODIFY) watch 2, a watch taken and dropped used up number 3, DIR/g
 * (IN_MODIFY) is watch 4. Every tick it creates DIR/tN and appends to
 * DIR/g, then reads the events: IN_CREATE "tN" on watch 1 and IN_MODIFY
 * on watch 4 must be there, nothing for watch 2 (IN_IGNORED of watch 3 is
 * read before the first tick).
 * Every tick: "tick=N inotify=ok|BAD" to OUTFILE.
 * usage: inotify OUTFILE DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char f[4096], g[4096], path[4096];
	snprintf(f, sizeof(f), "%s/f", argv[2]);
	snprintf(g, sizeof(g), "%s/g", argv[2]);
	close(open(f, O_WRONLY | O_CREAT, 0644));
	int gfd = open(g, O_WRONLY | O_CREAT | O_APPEND, 0644);
	int in = inotify_init1(IN_NONBLOCK);
	if (out < 0 || gfd < 0 || in < 0)
		return 3;
	if (inotify_add_watch(in, argv[2], IN_CREATE) != 1 || inotify_add_watch(in, f, IN_MODIFY) != 2)
		return 4;
	if (inotify_add_watch(in, g, IN_ACCESS) != 3 || inotify_rm_watch(in, 3) || inotify_add_watch(in, g, IN_MODIFY) != 4)
		return 5;
	char buf[8192];
	while (read(in, buf, sizeof(buf)) > 0)
		;
	for (unsigned long tick = 1;; tick++) {
		char name[32];
		snprintf(name, sizeof(name), "t%lu", tick);
		snprintf(path, sizeof(path), "%s/%s", argv[2], name);
		close(open(path, O_WRONLY | O_CREAT, 0644));
		if (write(gfd, "x", 1) != 1)
			return 6;
		int created = 0, modified = 0, other = 0;
		ssize_t n = read(in, buf, sizeof(buf));
		for (char *p = buf; n > 0 && p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			if (e->wd == 1 && (e->mask & IN_CREATE) && strcmp(e->name, name) == 0)
				created = 1;
			else if (e->wd == 4 && (e->mask & IN_MODIFY))
				modified = 1;
			else
				other = 1;
			p += sizeof(*e) + e->len;
		}
		dprintf(out, "tick=%lu inotify=%s\n", tick, created && modified && !other ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
