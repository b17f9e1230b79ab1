/* Process and thread settings a restore must keep, printed every tick:
 * child subreaper, THP disabled, personality, the nice value of the main
 * thread and of a second thread, which also runs SCHED_BATCH with
 * SCHED_RESET_ON_FORK, the timer slack (both threads), the OOM score
 * adjustment, the membarrier registrations, the second thread's CPU
 * affinity (CPU 0) and I/O priority (best effort, level 6), the core
 * dump filter, that it is not dumpable (PR_SET_DUMPABLE 0), and KSM for
 * all its memory (PR_SET_MEMORY_MERGE: 1, or 0 without CAP_SYS_RESOURCE,
 * -1 where the kernel lacks it), and its autogroup's nice value (4; "-"
 * where the kernel has no autogroups). Run it in a session of its own: the
 * autogroup is the session's.
 * usage: knobs OUTFILE */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile pid_t worker_tid;
static volatile unsigned long worker_slack;
static volatile long worker_ioprio;
static volatile unsigned long worker_cpus;

static void nap(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000 };
	while (nanosleep(&t, &t))
		;
}

static void *worker(void *arg)
{
	(void)arg;
	struct sched_param sp = { 0 };
	sched_setscheduler(0, SCHED_BATCH | SCHED_RESET_ON_FORK, &sp);
	setpriority(PRIO_PROCESS, 0, 3);
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	sched_setaffinity(0, sizeof one, &one);
	syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, (2 << 13) | 6 /* best effort, 6 */);
	worker_tid = syscall(SYS_gettid);
	for (;;) {
		worker_slack = prctl(PR_GET_TIMERSLACK);
		worker_ioprio = syscall(SYS_ioprio_get, 1, 0);
		cpu_set_t now;
		CPU_ZERO(&now);
		sched_getaffinity(0, sizeof now, &now);
		worker_cpus = now.__bits[0];
		nap(10);
	}
	return 0;
}

int main(int argc, char **argv)
{
	pthread_t t;
	if (argc != 2)
		return 2;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	prctl(PR_SET_TIMERSLACK, 123456);
	int oom = open("/proc/self/oom_score_adj", O_WRONLY);
	if (oom < 0 || write(oom, "100", 3) != 3)
		return 4;
	close(oom);
	int filter = open("/proc/self/coredump_filter", O_WRONLY);
	if (filter < 0 || write(filter, "0x3f", 4) != 4)
		return 6;
	close(filter);
	int ag = open("/proc/self/autogroup", O_WRONLY);
	if (ag >= 0 && write(ag, "4", 1) != 1)
		return 7;
	if (ag >= 0)
		close(ag);
	prctl(PR_SET_DUMPABLE, 0);
	prctl(67 /* PR_SET_MEMORY_MERGE */, 1, 0, 0, 0);
	prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	personality(ADDR_NO_RANDOMIZE);
	setpriority(PRIO_PROCESS, 0, 7);
	if (syscall(SYS_membarrier, 1 << 4 /* REGISTER_PRIVATE_EXPEDITED */, 0, 0))
		return 5;
	if (pthread_create(&t, 0, worker, 0))
		return 3;
	while (!worker_tid)
		nap(1);
	for (unsigned long n = 1;; n++) {
		int sub = -1;
		char adj[16] = "";
		prctl(PR_GET_CHILD_SUBREAPER, &sub);
		int oom = open("/proc/self/oom_score_adj", O_RDONLY);
		ssize_t got = read(oom, adj, sizeof adj - 1);
		close(oom);
		adj[got > 0 ? got - 1 : 0] = 0;
		char core[16] = "";
		int cf = open("/proc/self/coredump_filter", O_RDONLY);
		got = read(cf, core, sizeof core - 1);
		close(cf);
		core[got > 0 ? got - 1 : 0] = 0;
		char group[64] = "", *nice = "-";
		int agr = open("/proc/self/autogroup", O_RDONLY);
		got = agr < 0 ? -1 : read(agr, group, sizeof group - 1);
		if (agr >= 0)
			close(agr);
		group[got > 0 ? got - 1 : 0] = 0;
		if (strstr(group, " nice "))
			nice = strstr(group, " nice ") + 6;
		dprintf(fd,
			"tick=%lu subreaper=%d thp_disabled=%d personality=%#x nice=%d worker_nice=%d worker_policy=%d "
			"slack=%d worker_slack=%lu oom_score_adj=%s membarrier=%#lx worker_cpus=%#lx worker_ioprio=%#lx "
			"coredump_filter=%s dumpable=%d ksm=%d autogroup=%s\n",
			n, sub, prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), personality(0xffffffff),
			getpriority(PRIO_PROCESS, 0), getpriority(PRIO_PROCESS, worker_tid), sched_getscheduler(worker_tid),
			prctl(PR_GET_TIMERSLACK), worker_slack, adj, syscall(SYS_membarrier, 1 << 9 /* GET_REGISTRATIONS */, 0, 0),
			worker_cpus, worker_ioprio, core, prctl(PR_GET_DUMPABLE), prctl(68 /* PR_GET_MEMORY_MERGE */, 0, 0, 0, 0),
			nice);
		nap(20);
	}
}
