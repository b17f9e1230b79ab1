/* A parent with one child; the child sleeps in pause(), the parent answers
 * pings. */
#include "pingpong.h"
#include <signal.h>
#include <sys/prctl.h>

int main(void)
{
	int up[2];
	char c1;
	if (pipe(up))
		return 2;
	pid_t c = fork();
	if (c < 0)
		return 2;
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(up[0]);
		/* Tell the parent the child runs its own code now. */
		if (write(up[1], "u", 1) != 1)
			return 3;
		close(up[1]);
		for (;;)
			pause();
	}
	close(up[1]);
	if (read(up[0], &c1, 1) != 1)
		return 4;
	close(up[0]);
	fill_pattern(4096);
	printf("child %d\n", c);
	pingpong();
}
