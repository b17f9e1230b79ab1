/* A pseudoterminal slave whose master is gone, as a program started in
 * the background of a terminal holds it once the terminal has closed
 * (an ssh session that ended): two descriptions of the slave, opened
 * before the master was closed, which hung them up.
 * Every tick: "tick=N hung=ok|BAD" to OUTFILE: both still the same
 * /dev/pts slave, shown deleted, writes failing (EIO), reads at end of
 * file.
 * On SIGUSR1: asks for the settings once (a hung-up terminal has none:
 * EIO), "data=ok|BAD".
 * usage: hungpty OUTFILE */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t asked;

static void on_usr1(int sig)
{
	(void)sig;
	asked = 1;
}

/* The /proc name of fd, and whether it is a hung-up pty slave. */
static int hung(int fd, char *name, size_t len)
{
	char link[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, name, len - 1);
	name[n > 0 ? n : 0] = 0;
	struct stat st;
	char c;
	errno = 0;
	int wrote = write(fd, "x", 1);
	int werr = errno;
	return n > 0 && strncmp(name, "/dev/pts/", 9) == 0 && strstr(name, " (deleted)") && fstat(fd, &st) == 0 &&
	       S_ISCHR(st.st_mode) && major(st.st_rdev) >= 136 && major(st.st_rdev) <= 143 && wrote < 0 &&
	       werr == EIO && read(fd, &c, 1) == 0;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	if (out < 0 || master < 0 || grantpt(master) || unlockpt(master))
		return 3;
	int a = open(ptsname(master), O_RDWR | O_NOCTTY), b = open(ptsname(master), O_RDWR | O_NOCTTY);
	if (a < 0 || b < 0 || close(master))
		return 4;
	signal(SIGUSR1, on_usr1);
	for (unsigned long tick = 1;; tick++) {
		char na[256], nb[256];
		int ok = hung(a, na, sizeof(na)) && hung(b, nb, sizeof(nb)) && strcmp(na, nb) == 0;
		dprintf(out, "tick=%lu hung=%s\n", tick, ok ? "ok" : "BAD");
		if (asked) {
			asked = 0;
			struct termios t;
			dprintf(out, "data=%s\n", tcgetattr(a, &t) < 0 && errno == EIO ? "ok" : "BAD");
		}
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
