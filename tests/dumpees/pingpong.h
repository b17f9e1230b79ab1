/* Shared by the dump test programs: a byte on stdin asks "are you still
 * there and intact?", the answer is one line on stdout. The program sits
 * blocked in read() between questions, so a dump catches it inside a
 * system call that must be restarted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdint.h>

static uint64_t *pattern;
static size_t pattern_words;

static void fill_pattern(size_t bytes)
{
	pattern_words = bytes / 8;
	pattern = malloc(pattern_words * 8 + 8);
	if (!pattern)
		exit(2);
	for (size_t i = 0; i < pattern_words; i++)
		pattern[i] = i * 0x9E3779B97F4A7C15ull;
}

static int pattern_ok(void)
{
	for (size_t i = 0; i < pattern_words; i++)
		if (pattern[i] != i * 0x9E3779B97F4A7C15ull)
			return 0;
	return 1;
}

/* Prints "ready" and answers every byte read from stdin with "pong N ok=B". */
static void pingpong(void)
{
	unsigned long n = 0;
	char c;
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (;;) {
		ssize_t r = read(0, &c, 1);
		if (r == 0)
			exit(0);
		if (r < 0)
			continue;
		printf("pong %lu ok=%d\n", ++n, pattern_ok());
		fflush(stdout);
	}
}
