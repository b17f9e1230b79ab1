/* Descriptors in flight: the read end of a pipe (whose write end it keeps,
 * with "piped" written into it) and a file opened at offset 3, sent in one
 * SCM_RIGHTS message over a datagram socket pair and not received yet; its
 * own descriptors on them are closed. With "sock", also one end of a
 * stream socket pair with "hello" waiting in it, whose other end it keeps.
 * Every tick: "tick=N scm=ok|BAD", checking the message is still waiting.
 * Once GOFILE exists (or on SIGUSR1) it receives them once and uses them
 * (the socket: reads "hello", answers "back" to the end it kept):
 * "data=ok|BAD" on the next tick.
 * usage: scm OUTFILE DIR [GOFILE [sock]] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 5)
		return 2;
	int with_sock = argc == 5 && !strcmp(argv[4], "sock");
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	char path[4096];
	snprintf(path, sizeof(path), "%s/inflight", argv[2]);
	int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	int sk[2], p[2];
	if (out < 0 || f < 0 || write(f, "abcdefgh", 8) != 8 || lseek(f, 3, SEEK_SET) != 3 ||
	    socketpair(AF_UNIX, SOCK_DGRAM, 0, sk) || pipe(p) || write(p[1], "piped", 5) != 5)
		return 3;
	int pair[2] = {-1, -1};
	if (with_sock && (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) || write(pair[0], "hello", 5) != 5))
		return 3;
	int fds[3] = {p[0], f, pair[1]};
	int nfds = with_sock ? 3 : 2;
	char cbuf[CMSG_SPACE(sizeof(fds))] = {0};
	struct iovec iov = {.iov_base = "fds", .iov_len = 3};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			   .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	if (sendmsg(sk[0], &m, 0) != 3)
		return 4;
	close(p[0]);
	close(f);
	if (with_sock)
		close(pair[1]);
	signal(SIGUSR1, on_usr1);
	int done = 0;
	for (unsigned long tick = 1;; tick++) {
		int q = -1;
		ioctl(sk[1], FIONREAD, &q);
		int ok = done || q == 3;
		if (argc >= 4 && access(argv[3], F_OK) == 0)
			go = 1;
		if (go && !done) {
			char b[8] = "", rbuf[CMSG_SPACE(sizeof(fds))];
			struct iovec riov = {.iov_base = b, .iov_len = sizeof(b)};
			struct msghdr r = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = rbuf, .msg_controllen = sizeof(rbuf)};
			int good = recvmsg(sk[1], &r, 0) == 3 && !memcmp(b, "fds", 3);
			struct cmsghdr *rc = CMSG_FIRSTHDR(&r);
			int got[3] = {-1, -1, -1};
			if (good && rc && rc->cmsg_type == SCM_RIGHTS && rc->cmsg_len == CMSG_LEN(nfds * sizeof(int)))
				memcpy(got, CMSG_DATA(rc), nfds * sizeof(int));
			char a[8] = "", d[8] = "";
			good = good && got[0] >= 0 && read(got[0], a, 5) == 5 && !memcmp(a, "piped", 5);
			good = good && read(got[1], d, 5) == 5 && !memcmp(d, "defgh", 5);
			if (with_sock) {
				char h[8] = "", k[8] = "";
				good = good && got[2] >= 0 && read(got[2], h, 5) == 5 && !memcmp(h, "hello", 5);
				good = good && write(got[2], "back", 4) == 4 && read(pair[0], k, 4) == 4 &&
				       !memcmp(k, "back", 4);
			}
			dprintf(out, "data=%s\n", good ? "ok" : "BAD");
			done = 1;
		}
		dprintf(out, "tick=%lu scm=%s\n", tick, ok ? "ok" : "BAD");
		struct timespec ts = {0, 30000000};
		nanosleep(&ts, 0);
	}
}
