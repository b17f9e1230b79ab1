/* Round-trip dumpee: moves its own [vvar], [vvar_vclock] and [vdso] to a
 * new place with mremap (keeping their layout), finds clock_gettime in the
 * moved vDSO's ELF symbols, and every tick compares a call to it with the
 * raw system call, reporting to argv[1].  Right after the moved vDSO it
 * keeps a page of its own data, checked every tick too: its pages follow
 * the vDSO's in memory and in the pages image, where a restore that skips
 * the vDSO's pages must not skip them along.  Lines: "tick=N moved=ok|BAD" */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct piece { unsigned long start, end; };

static int find(const char *name, struct piece *p)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int found = 0;
	while (fgets(line, sizeof line, f)) {
		if (strstr(line, name)) {
			sscanf(line, "%lx-%lx", &p->start, &p->end);
			found = 1;
		}
	}
	fclose(f);
	return found;
}

static void *symbol(unsigned long base, const char *want)
{
	Elf64_Ehdr *eh = (Elf64_Ehdr *)base;
	Elf64_Shdr *sh = (Elf64_Shdr *)(base + eh->e_shoff);
	unsigned long load = ~0ul;
	Elf64_Phdr *ph = (Elf64_Phdr *)(base + eh->e_phoff);
	for (int i = 0; i < eh->e_phnum; i++)
		if (ph[i].p_type == PT_LOAD && ph[i].p_vaddr < load)
			load = ph[i].p_vaddr;
	for (int i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != SHT_DYNSYM)
			continue;
		Elf64_Sym *s = (Elf64_Sym *)(base + sh[i].sh_offset);
		const char *str = (const char *)(base + sh[sh[i].sh_link].sh_offset);
		for (unsigned long j = 0; j < sh[i].sh_size / sizeof *s; j++)
			if (s[j].st_shndx && !strcmp(str + s[j].st_name, want))
				return (void *)(base + s[j].st_value - load);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 1;
	int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	struct piece vvar = {0, 0}, clock = {0, 0}, vdso;
	if (!find("[vdso]", &vdso))
		return 3;
	int has_vvar = find("[vvar]", &vvar), has_clock = find("[vvar_vclock]", &clock);
	unsigned long first = has_vvar ? vvar.start : vdso.start, len = vdso.end - first;
	char *to = mmap(0, len + (1 << 20) + 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned long dst = ((unsigned long)to + (1 << 20)) & ~((1ul << 20) - 1);
	struct piece all[3] = {vvar, clock, vdso};
	for (int i = 0; i < 3; i++) {
		if (!all[i].end)
			continue;
		unsigned long l = all[i].end - all[i].start;
		if (mremap((void *)all[i].start, l, l, MREMAP_FIXED | MREMAP_MAYMOVE, (void *)(dst + all[i].start - first)) == MAP_FAILED)
			return 4;
	}
	(void)has_clock;
	unsigned char *after = mmap((void *)(dst + len), 4096, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (after == MAP_FAILED)
		return 6;
	for (int i = 0; i < 4096; i++)
		after[i] = (unsigned char)(i * 7 + 3);
	int (*moved)(clockid_t, struct timespec *) = symbol(dst + vdso.start - first, "__vdso_clock_gettime");
	if (!moved)
		return 5;
	for (unsigned long tick = 1;; tick++) {
		struct timespec a, b, c;
		syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &a);
		int r = moved(CLOCK_MONOTONIC, &b);
		syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &c);
		double ta = a.tv_sec + a.tv_nsec / 1e9, tb = b.tv_sec + b.tv_nsec / 1e9, tc = c.tv_sec + c.tv_nsec / 1e9;
		int kept = 1;
		for (int i = 0; i < 4096; i++)
			kept &= after[i] == (unsigned char)(i * 7 + 3);
		dprintf(out, "tick=%lu moved=%s\n", tick, r == 0 && ta <= tb && tb <= tc && kept ? "ok" : "BAD");
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, 0);
	}
}
