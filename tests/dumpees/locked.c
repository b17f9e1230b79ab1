/* Holds a lock on a file: flock(2) with "flock", a POSIX record lock with
 * "posix", a read lease with "lease". Prints "ready" once it holds it,
 * then sleeps.
 * usage: locked FILE flock|posix|lease */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int lease = strcmp(argv[2], "lease") == 0;
	if (lease)
		close(open(argv[1], O_RDWR | O_CREAT, 0644));
	int fd = open(argv[1], lease ? O_RDONLY : O_RDWR | O_CREAT, 0644);
	if (fd < 0)
		return 3;
	if (lease) {
		if (fcntl(fd, F_SETLEASE, F_RDLCK))
			return 6;
	} else if (strcmp(argv[2], "flock") == 0) {
		if (flock(fd, LOCK_EX))
			return 4;
	} else {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10 };
		if (fcntl(fd, F_SETLK, &fl))
			return 5;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
