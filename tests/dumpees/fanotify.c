/* A fanotify group (notification class, non-blocking) with a mark on
 * DIR/watched (modify and close-after-write) and an ignored mask on
 * DIR/quiet. Every tick it writes DIR/watched, reads the group's events
 * and checks that a modify and a close-after-write came for that file,
 * and that fdinfo lists the group and its marks as at the start.
 * With "shared", a child holds the group too (inherited), and lives while
 * its parent does.
 * Every tick: "tick=N fan=ok|BAD:WHAT" to OUTFILE.
 * usage: fanotify OUTFILE DIR [shared] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static void marks(int fd, char *out, size_t len)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	out[0] = 0;
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "fanotify ", 9) == 0)
			strncat(out, line, len - strlen(out) - 1);
	if (f)
		fclose(f);
}

int main(int argc, char **argv)
{
	if (argc != 3 && (argc != 4 || strcmp(argv[3], "shared") != 0))
		return 2;
	FILE *out = fopen(argv[1], "a");
	char watched[400], quiet[400];
	snprintf(watched, sizeof(watched), "%s/watched", argv[2]);
	snprintf(quiet, sizeof(quiet), "%s/quiet", argv[2]);
	close(open(watched, O_CREAT | O_WRONLY, 0644));
	close(open(quiet, O_CREAT | O_WRONLY, 0644));
	int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
	if (!out || fan < 0 ||
	    fanotify_mark(fan, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, watched) ||
	    fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK, FAN_MODIFY, AT_FDCWD, quiet))
		return 3;
	static char before[4096], now[4096];
	marks(fan, before, sizeof(before));
	if (argc == 4 && fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	for (unsigned long tick = 1;; tick++) {
		int w = open(watched, O_WRONLY | O_APPEND);
		if (w >= 0) {
			if (write(w, "x", 1) != 1)
				return 4;
			close(w);
		}
		char buf[8192];
		unsigned got = 0;
		ssize_t n;
		while ((n = read(fan, buf, sizeof(buf))) > 0) {
			for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
				char link[64], path[512];
				snprintf(link, sizeof(link), "/proc/self/fd/%d", m->fd);
				ssize_t k = m->fd >= 0 ? readlink(link, path, sizeof(path) - 1) : -1;
				path[k > 0 ? k : 0] = 0;
				if (strcmp(path, watched) == 0)
					got |= m->mask;
				if (m->fd >= 0)
					close(m->fd);
			}
		}
		marks(fan, now, sizeof(now));
		const char *bad = strcmp(before, now) ? "fdinfo"
				  : (got & (FAN_MODIFY | FAN_CLOSE_WRITE)) != (FAN_MODIFY | FAN_CLOSE_WRITE) ? "events"
													     : 0;
		fprintf(out, "tick=%lu fan=%s%s\n", tick, bad ? "BAD:" : "ok", bad ? bad : "");
		fflush(out);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
