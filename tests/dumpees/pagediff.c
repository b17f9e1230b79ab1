/* `show --diff` dumpee: 64 pages of patterned memory at an address it
 * reports ("ready PID BASE"); each SIGUSR1 changes one byte in pages 3
 * and 40 and says "changed N". */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t asked;

static void on_usr1(int sig)
{
	(void)sig;
	asked = 1;
}

int main(void)
{
	unsigned char *p = mmap(0, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	for (int i = 0; i < 64 * 4096; i++)
		p[i] = (unsigned char)(i * 7 + 1);
	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	signal(SIGUSR1, on_usr1);
	printf("ready %d %p\n", getpid(), (void *)p);
	fflush(stdout);
	for (int n = 1;; n++) {
		while (!asked)
			sigsuspend(&old);
		asked = 0;
		p[3 * 4096 + 100]++;
		p[40 * 4096]++;
		printf("changed %d\n", n);
		fflush(stdout);
	}
}
