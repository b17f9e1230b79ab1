/* A program that notices when it has been changed: four threads, an
 * interval timer firing every millisecond, a blocked SIGUSR2 pending for
 * the process and a blocked SIGUSR1 pending for one thread, a distinct
 * signal mask and alternate stack per thread, and 1 MiB of patterned
 * memory. The three workers sleep in raw nanosleep calls with known values
 * in callee-saved and vector registers and check them after every call.
 *
 * Usage: survivor OUT. Writes "ready PID" to OUT, then every 10 ms
 * "tick N alarms=A iters=I bad=B why=W" (W is the first check that failed,
 * "-" if none). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 3
#define MEM (1 << 20)

static volatile unsigned long alarms, iters[WORKERS], bad;
static const char *volatile why = "-";
static unsigned char *mem;
static int out;

static void fail(const char *what)
{
	if (!bad++)
		why = what;
}

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void thread_mask(int i, sigset_t *s)
{
	sigemptyset(s);
	sigaddset(s, SIGUSR2);
	sigaddset(s, SIGRTMIN + i);
	if (i == 1)
		sigaddset(s, SIGUSR1);
}

/* One raw nanosleep with known values in rbx, r12-r15 and xmm8; 0 if they
 * all came back. */
static int regs_survive_sleep(unsigned long magic)
{
	struct timespec ts = { 0, 1000 * 1000 };
	register unsigned long r12 asm("r12") = magic;
	register unsigned long r13 asm("r13") = magic + 1;
	register unsigned long r14 asm("r14") = magic + 2;
	register unsigned long r15 asm("r15") = magic + 3;
	unsigned long rbx, x8;
	long ret;
	asm volatile("mov %[m], %%rbx\n\t"
		     "movq %[m], %%xmm8\n\t"
		     "syscall\n\t"
		     "mov %%rbx, %[b]\n\t"
		     "movq %%xmm8, %[x]"
		     : "=a"(ret), [b] "=&r"(rbx), [x] "=&r"(x8), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15)
		     : "0"((long)SYS_nanosleep), "D"(&ts), "S"(0L), [m] "r"(magic)
		     : "rcx", "r11", "rbx", "xmm8", "memory");
	(void)ret;
	return !(rbx == magic && x8 == magic && r12 == magic && r13 == magic + 1 && r14 == magic + 2 &&
		 r15 == magic + 3);
}

static void check_thread(int i, const stack_t *ss)
{
	sigset_t want, now, pend;
	stack_t cur;
	thread_mask(i, &want);
	pthread_sigmask(SIG_BLOCK, 0, &now);
	for (int s = 1; s < SIGRTMAX; s++)
		if (sigismember(&want, s) != sigismember(&now, s)) {
			fail("signal mask");
			break;
		}
	sigaltstack(0, &cur);
	if (cur.ss_sp != ss->ss_sp || cur.ss_size != ss->ss_size || cur.ss_flags != 0)
		fail("alternate stack");
	sigpending(&pend);
	if (!sigismember(&pend, SIGUSR2))
		fail("pending SIGUSR2");
	if (i == 1 && !sigismember(&pend, SIGUSR1))
		fail("pending SIGUSR1");
}

static void *worker(void *arg)
{
	int i = (int)(long)arg;
	sigset_t m;
	stack_t ss = { .ss_sp = malloc(SIGSTKSZ * 4), .ss_size = SIGSTKSZ * 4 };
	sigaltstack(&ss, 0);
	thread_mask(i, &m);
	pthread_sigmask(SIG_SETMASK, &m, 0);
	if (i == 1)
		pthread_kill(pthread_self(), SIGUSR1);
	for (;;) {
		if (regs_survive_sleep(0x1234567800000000ul + ((unsigned long)i << 20) + iters[i]))
			fail("registers");
		check_thread(i, &ss);
		iters[i]++;
	}
	return 0;
}

int main(int argc, char **argv)
{
	char line[256];
	pthread_t t;
	sigset_t m;
	if (argc != 2)
		return 2;
	out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	mem = malloc(MEM);
	for (int i = 0; i < MEM; i++)
		mem[i] = (unsigned char)(i * 7 + 3);
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	sigaction(SIGALRM, &sa, 0);
	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	sigprocmask(SIG_BLOCK, &m, 0);
	kill(getpid(), SIGUSR2);
	for (long i = 0; i < WORKERS; i++)
		if (pthread_create(&t, 0, worker, (void *)i))
			return 3;
	struct itimerval it = { { 0, 1000 }, { 0, 1000 } };
	setitimer(ITIMER_REAL, &it, 0);
	write(out, line, snprintf(line, sizeof line, "ready %d\n", getpid()));
	for (unsigned long n = 1;; n++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		while (nanosleep(&ts, &ts))
			;
		for (int i = 0; i < MEM; i++)
			if (mem[i] != (unsigned char)(i * 7 + 3)) {
				fail("memory");
				break;
			}
		sigset_t pend;
		sigpending(&pend);
		if (!sigismember(&pend, SIGUSR2))
			fail("pending SIGUSR2 (main)");
		unsigned long total = 0;
		for (int i = 0; i < WORKERS; i++)
			total += iters[i];
		write(out, line,
		      snprintf(line, sizeof line, "tick %lu alarms=%lu iters=%lu bad=%lu why=%s\n", n, alarms, total,
			       bad, why));
	}
}
