/* A parent with one child; the child sleeps in pause(), the parent answers
 * pings. */
#include "pingpong.h"
#include <signal.h>
#include <sys/prctl.h>

int main(void)
{
	pid_t c = fork();
	if (c < 0)
		return 2;
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	fill_pattern(4096);
	printf("child %d\n", c);
	pingpong();
}
