/* A pseudoterminal pair it holds both ends of, as its session's terminal,
 * with a child leading the foreground group, its own settings (VINTR ^A,
 * no ECHOCTL), a 33x77 window, and bytes waiting at both ends: "hello\n"
 * for the slave's reader, the echo of it and "out1\n" (as "out1\r\n")
 * for the master's (in either order: the echo comes as the kernel gets
 * to it).
 * Every tick: "tick=N tty=ok|BAD:WHAT" to OUTFILE, checking what a restore
 * must keep without disturbing the queues (their sizes through FIONREAD).
 * On SIGUSR1, or once GOFILE exists, it reads both queues once:
 * "data=ok|BAD" on the next tick.
 * usage: pty OUTFILE [GOFILE] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t drain;

static void on_usr1(int sig)
{
	(void)sig;
	drain = 1;
}

static const char in_bytes[] = "hello\n";
/* The echo and the slave's line, in the order the kernel queued them. */
static const char out_bytes[] = "hello\r\nout1\r\n";
static const char out_other[] = "out1\r\nhello\r\n";

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (out < 0 || m < 0 || grantpt(m) || unlockpt(m))
		return 3;
	char name[64];
	snprintf(name, sizeof(name), "%s", ptsname(m));
	/* We lead our session (the harness made it): the slave, opened
	 * without O_NOCTTY, becomes its terminal. */
	int s = open(name, O_RDWR);
	if (s < 0)
		return 4;
	struct termios t;
	tcgetattr(s, &t);
	t.c_cc[VINTR] = 1;
	t.c_lflag &= ~ECHOCTL;
	tcsetattr(s, TCSANOW, &t);
	struct winsize w = {.ws_row = 33, .ws_col = 77};
	ioctl(s, TIOCSWINSZ, &w);
	signal(SIGTTOU, SIG_IGN);
	pid_t child = fork();
	if (child == 0) {
		setpgid(0, 0);
		for (;;)
			pause();
	}
	setpgid(child, child);
	if (tcsetpgrp(s, child))
		return 5;
	if (write(m, in_bytes, strlen(in_bytes)) < 0 || write(s, "out1\n", 5) < 0)
		return 6;
	signal(SIGUSR1, on_usr1);
	int drained = 0;
	struct timespec settle = {0, 50000000};
	nanosleep(&settle, 0);
	for (unsigned long tick = 1;; tick++) {
		char why[128] = "";
		struct termios now;
		struct winsize wn;
		int sid = 0, in_q = -1, out_q = -1, tty = open("/dev/tty", O_RDWR);
		tcgetattr(s, &now);
		ioctl(s, TIOCGWINSZ, &wn);
		ioctl(s, TIOCGSID, &sid);
		ioctl(s, FIONREAD, &in_q);
		ioctl(m, FIONREAD, &out_q);
		if (now.c_cc[VINTR] != 1 || (now.c_lflag & ECHOCTL) || !(now.c_lflag & ECHO))
			strcat(why, "termios,");
		if (wn.ws_row != 33 || wn.ws_col != 77)
			strcat(why, "winsize,");
		if (strcmp(ptsname(m), name))
			strcat(why, "index,");
		if (sid != getpid() || tty < 0)
			strcat(why, "ctty,");
		if (tcgetpgrp(s) != child)
			strcat(why, "foreground,");
		if (!drained && (in_q != (int)strlen(in_bytes) || out_q != (int)strlen(out_bytes)))
			snprintf(why + strlen(why), 40, "queues(%d,%d),", in_q, out_q);
		if (tty >= 0)
			close(tty);
		if (argc == 3 && access(argv[2], F_OK) == 0)
			drain = 1;
		if (drain && !drained) {
			char a[64] = "", b[64] = "";
			fcntl(s, F_SETFL, O_NONBLOCK);
			fcntl(m, F_SETFL, O_NONBLOCK);
			/* Reading its terminal from the background would fail. */
			tcsetpgrp(s, getpgrp());
			ssize_t na = read(s, a, sizeof(a) - 1), nb = read(m, b, sizeof(b) - 1);
			tcsetpgrp(s, child);
			int ok = na == (ssize_t)strlen(in_bytes) && !memcmp(a, in_bytes, na) &&
				 nb == (ssize_t)strlen(out_bytes) && (!memcmp(b, out_bytes, nb) || !memcmp(b, out_other, nb));
			dprintf(out, "data=%s\n", ok ? "ok" : "BAD");
			drained = 1;
		}
		dprintf(out, "tick=%lu tty=%s%s\n", tick, why[0] ? "BAD:" : "ok", why);
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
