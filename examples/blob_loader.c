/* A reference loader for revenant's restorer blob, written against nothing
 * but what `revenant blob export DIR` writes: blob.bin, relocs.bin and
 * revenant_blob.h (blob.json says the same in words).
 *
 *   cc -std=gnu11 -O2 -I DIR -o blob_loader blob_loader.c
 *   ./blob_loader DIR selftest [INPUT]
 *   ./blob_loader DIR restore [BREAK]
 *
 * Each run forks a child that maps the blob, relocates it, builds an
 * argument block and enters the blob; the parent reads the child's status
 * records (the completion protocol: no log parsing) and its end, and
 * prints one line:
 *
 *   result exit=N signal=N status=N|none records=N
 *
 * `selftest` checks the exit code and status against
 * revenant_selftest_exit_code(INPUT). `restore` makes the child become a
 * one-page, one-thread process: the page holds a few instructions and a
 * data word; the thread's registers (in its rt_sigreturn frame) point the
 * program counter at the instructions, which compare the word with a
 * register and exit with RESTORED_EXIT when they match. The loader exits 0
 * when the run went as the ABI says it must.
 *
 * BREAK breaks one documented precondition on purpose, to see the
 * documented refusal (the exit status is then only printed):
 * block-misaligned, bad-magic, bad-version, bad-arch, header-flags,
 * too-big, stack-misaligned, stack-outside, block-outside, restore-flags,
 * vma-how, command, rseq. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "revenant_blob.h"

#define PAGE 4096u
#define RESTORED_EXIT 42
/* What the restored page's data word holds. */
#define PAGE_WORD 0x52455354u
#define WORD_AT 2048u

static void die(const char *what)
{
    fprintf(stderr, "blob_loader: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* The whole of a small file. */
static void *slurp(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(path);
    off_t size = lseek(fd, 0, SEEK_END);
    void *buf = malloc(size ? (size_t)size : 1);
    if (size < 0 || !buf || pread(fd, buf, (size_t)size, 0) != size)
        die(path);
    close(fd);
    *len = (size_t)size;
    return buf;
}

/* Builds the argument block: the header, then each array 8-aligned. */
struct block {
    uint8_t *bytes;
    uint32_t len;
    uint32_t cap;
};

static struct revenant_span push(struct block *b, const void *items, uint32_t size, uint32_t count)
{
    b->len = (b->len + 7u) & ~7u;
    struct revenant_span span = {b->len, count};
    if (b->len + size * count > b->cap) {
        fprintf(stderr, "blob_loader: argument block overflows\n");
        exit(2);
    }
    memcpy(b->bytes + b->len, items, (size_t)size * count);
    b->len += size * count;
    return span;
}

/* The instructions of the restored page: `*(u32 *)arg0 == arg1 ?
 * exit_group(arg2) : exit_group(1)`, the arguments in the first three
 * argument registers. */
#if defined(__x86_64__)
static const uint8_t page_code[] = {
    0x8b, 0x07,                   /* mov eax, [rdi] */
    0x39, 0xf0,                   /* cmp eax, esi */
    0x75, 0x04,                   /* jne bad */
    0x89, 0xd7,                   /* mov edi, edx */
    0xeb, 0x05,                   /* jmp out */
    0xbf, 0x01, 0x00, 0x00, 0x00, /* bad: mov edi, 1 */
    0xb8, 0xe7, 0x00, 0x00, 0x00, /* out: mov eax, 231 (exit_group) */
    0x0f, 0x05,                   /* syscall */
    0x0f, 0x0b,                   /* ud2 */
};
#elif defined(__arm__)
static const uint32_t page_code[] = {
    0xe5903000, /* ldr r3, [r0] */
    0xe1530001, /* cmp r3, r1 */
    0x13a02001, /* movne r2, #1 */
    0xe1a00002, /* mov r0, r2 */
    0xe3a070f8, /* mov r7, #248 (exit_group) */
    0xef000000, /* svc 0 */
    0xe7f000f0, /* udf */
};
#else
#error "the blob exists for x86_64 and 32-bit ARM"
#endif

static void put(uint8_t *frame, unsigned off, uint64_t value, unsigned size)
{
    memcpy(frame + off, &value, size); /* little-endian on both arches */
}

/* The rt_sigreturn frame of the restored thread: the registers that run
 * page_code with its three arguments, no alternate stack, nothing blocked. */
static void build_frame(uint8_t *frame, uint64_t page, uint64_t sp)
{
    memset(frame, 0, REVENANT_SIGFRAME_SIZE);
    put(frame, REVENANT_SIGFRAME_UC_STACK_FLAGS, REVENANT_FRAME_SS_DISABLE, 4);
#if defined(__x86_64__)
    put(frame, REVENANT_SIGFRAME_UC_FLAGS, REVENANT_FRAME_UC_SIGCONTEXT_SS, 8);
    put(frame, REVENANT_SIGFRAME_RDI, page + WORD_AT, 8);
    put(frame, REVENANT_SIGFRAME_RSI, PAGE_WORD, 8);
    put(frame, REVENANT_SIGFRAME_RDX, RESTORED_EXIT, 8);
    put(frame, REVENANT_SIGFRAME_RSP, sp, 8);
    put(frame, REVENANT_SIGFRAME_RIP, page, 8);
    put(frame, REVENANT_SIGFRAME_EFLAGS, 0x202, 8);
    put(frame, REVENANT_SIGFRAME_CS, REVENANT_FRAME_CS, 2);
    put(frame, REVENANT_SIGFRAME_SS, REVENANT_FRAME_SS, 2);
#else
    put(frame, REVENANT_SIGFRAME_R0, page + WORD_AT, 4);
    put(frame, REVENANT_SIGFRAME_R1, PAGE_WORD, 4);
    put(frame, REVENANT_SIGFRAME_R2, RESTORED_EXIT, 4);
    put(frame, REVENANT_SIGFRAME_SP, sp, 4);
    put(frame, REVENANT_SIGFRAME_PC, page, 4);
    put(frame, REVENANT_SIGFRAME_CPSR, REVENANT_FRAME_CPSR_USR, 4);
    put(frame, REVENANT_SIGFRAME_VFP_MAGIC, REVENANT_FRAME_VFP_MAGIC, 4);
    put(frame, REVENANT_SIGFRAME_VFP_SIZE, REVENANT_FRAME_VFP_SIZE, 4);
    put(frame, REVENANT_SIGFRAME_VFP_FPEXC, REVENANT_FRAME_FPEXC_EN, 4);
#endif
}

/* Switches to `stack_top` and calls the blob's entry with the block; the
 * blob never returns. */
static void __attribute__((noreturn)) enter(uintptr_t entry, uintptr_t block, uintptr_t stack_top)
{
#if defined(__x86_64__)
    __asm__ volatile("mov %0, %%rsp\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "call *%1\n\t"
                     "ud2"
                     :
                     : "r"(stack_top), "r"(entry), "D"(block)
                     : "memory");
#else
    register uintptr_t r0 __asm__("r0") = block;
    __asm__ volatile("mov sp, %0\n\t"
                     "blx %1\n\t"
                     "udf #0"
                     :
                     : "r"(stack_top), "r"(entry), "r"(r0)
                     : "memory");
#endif
    __builtin_unreachable();
}

/* glibc registers an rseq area for each thread; the kernel keeps writing
 * to it, so it must go before a restore unmaps it. */
extern __attribute__((weak)) const ptrdiff_t __rseq_offset;
extern __attribute__((weak)) const unsigned int __rseq_size;

static void unregister_rseq(void)
{
    if (&__rseq_size == NULL || __rseq_size == 0)
        return;
    uint32_t sig;
#if defined(__x86_64__)
    sig = 0x53053053;
#else
    sig = 0xe7f5def3;
#endif
    char *area = (char *)__builtin_thread_pointer() + __rseq_offset;
    /* glibc registers 32 bytes or its feature size. */
    if (syscall(SYS_rseq, area, 32, 1 /* RSEQ_FLAG_UNREGISTER */, sig) != 0)
        syscall(SYS_rseq, area, __rseq_size, 1, sig);
}

struct layout {
    uint8_t *base;    /* the bootstrap area */
    size_t len;
    uintptr_t entry;
    uintptr_t stack_top;
    uint8_t *frame;
    uint8_t *block;   /* where the argument block goes */
    size_t block_room;
};

/* Maps the bootstrap area, [blob | stack | frame | block], and loads the
 * blob into it: copy, relocate, protect the code. */
static struct layout load(const char *dir)
{
    size_t image_len, relocs_len;
    uint8_t *image = slurp(dir, "blob.bin", &image_len);
    uint32_t *relocs = slurp(dir, "relocs.bin", &relocs_len);
    if (image_len != REVENANT_BLOB_IMAGE_SIZE || relocs_len != 4u * REVENANT_BLOB_RELOC_COUNT) {
        fprintf(stderr, "blob_loader: blob.bin or relocs.bin is not the blob revenant_blob.h describes\n");
        exit(2);
    }
    struct layout l;
    l.block_room = 4 * PAGE;
    l.len = REVENANT_BLOB_MAP_SIZE + REVENANT_MIN_STACK + PAGE + l.block_room;
    l.base = mmap(NULL, l.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (l.base == MAP_FAILED)
        die("mapping the bootstrap area");
    memcpy(l.base, image, image_len);
    for (size_t i = 0; i < REVENANT_BLOB_RELOC_COUNT; i++) {
        uint8_t *word = l.base + relocs[i];
        if (REVENANT_BLOB_WORD_SIZE == 8) {
            uint64_t v;
            memcpy(&v, word, 8);
            v += (uintptr_t)l.base;
            memcpy(word, &v, 8);
        } else {
            uint32_t v;
            memcpy(&v, word, 4);
            v += (uint32_t)(uintptr_t)l.base;
            memcpy(word, &v, 4);
        }
    }
    if (mprotect(l.base, REVENANT_BLOB_DATA_START, PROT_READ | PROT_EXEC) != 0)
        die("protecting the blob's code");
    __builtin___clear_cache((char *)l.base, (char *)l.base + REVENANT_BLOB_MAP_SIZE);
    l.entry = (uintptr_t)l.base + REVENANT_BLOB_ENTRY;
    l.stack_top = (uintptr_t)l.base + REVENANT_BLOB_MAP_SIZE + REVENANT_MIN_STACK;
    l.frame = (uint8_t *)l.stack_top;
    l.block = l.frame + PAGE;
    free(image);
    free(relocs);
    return l;
}

static struct revenant_header header(uint32_t command, uint32_t status_fd)
{
    struct revenant_header h;
    memset(&h, 0, sizeof h);
    h.magic = REVENANT_MAGIC;
    h.version = REVENANT_VERSION;
#if defined(__x86_64__)
    h.arch = REVENANT_ARCH_X86_64;
#else
    h.arch = REVENANT_ARCH_ARM;
#endif
    h.command = command;
    h.log_level = REVENANT_LOG_INFO;
    h.log_fd = 2;
    h.status_fd = (int32_t)status_fd;
    return h;
}

/* Writes `h` in front of the arrays in `b`, sizes filled in. */
static void finish(struct block *b, struct revenant_header *h)
{
    h->total_size = b->len;
    h->mapped_size = b->cap;
    memcpy(b->bytes, h, sizeof *h);
}

static void selftest_block(struct layout *l, uint32_t input, int status_fd)
{
    struct block b = {l->block, sizeof(struct revenant_header), (uint32_t)l->block_room};
    static const char message[] = "hello from a C loader";
    struct revenant_self_test st = {input, 0, push(&b, message, 1, sizeof message - 1)};
    struct revenant_header h = header(REVENANT_COMMAND_SELFTEST, (uint32_t)status_fd);
    h.selftest = push(&b, &st, sizeof st, 1);
    finish(&b, &h);
}

/* The restore of a one-page, one-thread process; `brk` breaks one rule. */
static void restore_block(struct layout *l, const char *brk, int status_fd, int pages_fd, uint64_t page)
{
    struct block b = {l->block, sizeof(struct revenant_header), (uint32_t)l->block_room};
    struct revenant_vma vma;
    memset(&vma, 0, sizeof vma);
    vma.start = page;
    vma.end = page + PAGE;
    vma.prot = PROT_READ | PROT_EXEC;
    vma.flags = MAP_PRIVATE | MAP_ANONYMOUS;
    vma.fd = -1;
    vma.how = REVENANT_VMA_FILL;
    if (!strcmp(brk, "vma-how"))
        vma.how |= 1u << 20;
    struct revenant_iovec iov = {page, PAGE};
    struct revenant_page_read read = {0, 0, 1, pages_fd, 0};
    struct revenant_thread t;
    memset(&t, 0, sizeof t);
    t.tid = (uint32_t)getpid();
    t.sigframe = (uintptr_t)l->frame;
    int32_t close_fds[] = {pages_fd, status_fd};

    struct revenant_restore r;
    memset(&r, 0, sizeof r);
    r.bootstrap_start = (uintptr_t)l->base;
    r.bootstrap_len = l->len;
    if (!strcmp(brk, "block-outside"))
        r.bootstrap_len = (uintptr_t)l->block - (uintptr_t)l->base;
    r.task_size = REVENANT_TASK_SIZE;
    r.lazy_fd = -1;
    r.exe_fd = -1;
    r.flags = REVENANT_RESTORE_NO_MM_MAP;
    if (!strcmp(brk, "restore-flags"))
        r.flags |= 1u << 30;
    r.vmas = push(&b, &vma, sizeof vma, 1);
    r.page_reads = push(&b, &read, sizeof read, 1);
    r.iovs = push(&b, &iov, sizeof iov, 1);
    r.threads = push(&b, &t, sizeof t, 1);
    r.close_fds = push(&b, close_fds, sizeof close_fds[0], 2);
    memcpy(r.comm, "restored", 9);

    struct revenant_header h = header(REVENANT_COMMAND_RESTORE, (uint32_t)status_fd);
    h.restore = push(&b, &r, sizeof r, 1);
    finish(&b, &h);
    uint32_t *word = NULL;
    if (!strcmp(brk, "bad-magic"))
        word = &h.magic;
    else if (!strcmp(brk, "bad-version"))
        word = &h.version;
    else if (!strcmp(brk, "bad-arch"))
        word = &h.arch;
    else if (!strcmp(brk, "header-flags"))
        word = &h.flags;
    else if (!strcmp(brk, "command"))
        word = &h.command;
    if (word)
        *word ^= 0x40;
    if (!strcmp(brk, "too-big"))
        h.mapped_size = h.total_size - 8;
    memcpy(b.bytes, &h, sizeof h);

    build_frame(l->frame, page, page + PAGE);
}

/* The pages image: one page, the code at its start and the word. */
static int pages_image(void)
{
    uint8_t page[PAGE];
    memset(page, 0, sizeof page);
    memcpy(page, page_code, sizeof page_code);
    uint32_t word = PAGE_WORD;
    memcpy(page + WORD_AT, &word, 4);
    int fd = memfd_create("revenant-pages", 0);
    if (fd < 0 || write(fd, page, sizeof page) != (ssize_t)sizeof page)
        die("writing the pages image");
    return fd;
}

/* An address where nothing is mapped now: the restored page goes there. */
static uint64_t free_page(void)
{
    void *p = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || munmap(p, PAGE) != 0)
        die("finding a free page");
    return (uintptr_t)p;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[2], "selftest") && strcmp(argv[2], "restore"))) {
        fprintf(stderr, "usage: %s DIR selftest [INPUT] | DIR restore [BREAK]\n", argv[0]);
        return 2;
    }
    int selftest = !strcmp(argv[2], "selftest");
    uint32_t input = selftest && argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : REVENANT_SELFTEST_EXAMPLE_INPUT;
    const char *brk = !selftest && argc > 3 ? argv[3] : "";

    struct layout l = load(argv[1]);
    int status[2];
    if (pipe2(status, O_CLOEXEC) != 0)
        die("pipe");
    int pages_fd = selftest ? -1 : pages_image();
    uint64_t page = free_page();
    if (selftest)
        selftest_block(&l, input, status[1]);
    else
        restore_block(&l, brk, status[1], pages_fd, page);

    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(status[0]);
        if (strcmp(brk, "rseq"))
            unregister_rseq();
        uintptr_t block = (uintptr_t)l.block;
        uintptr_t sp = l.stack_top;
        if (!strcmp(brk, "block-misaligned")) {
            memmove(l.block + 4, l.block, l.block_room - 4);
            block += 4;
        }
        if (!strcmp(brk, "stack-misaligned"))
            sp -= REVENANT_STACK_ALIGN / 2;
        if (!strcmp(brk, "stack-outside")) {
            void *s = mmap(NULL, REVENANT_MIN_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (s == MAP_FAILED)
                _exit(3);
            sp = (uintptr_t)s + REVENANT_MIN_STACK;
        }
        enter(l.entry, block, sp);
    }

    /* Every record until the child's write end closes (at its exit, or
     * when a restore closes it right before rt_sigreturn); the last one
     * tells how it ended. */
    close(status[1]);
    int records = 0;
    long code = -1;
    struct revenant_status rec;
    ssize_t n;
    while ((n = read(status[0], &rec, sizeof rec)) == (ssize_t)sizeof rec) {
        if (rec.magic != REVENANT_STATUS_MAGIC) {
            fprintf(stderr, "blob_loader: a status record without its magic\n");
            return 2;
        }
        records++;
        code = rec.code;
    }
    int ws;
    if (waitpid(child, &ws, 0) != child)
        die("waitpid");
    int exit_code = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    int sig = WIFSIGNALED(ws) ? WTERMSIG(ws) : 0;
    if (code < 0)
        printf("result exit=%d signal=%d status=none records=%d\n", exit_code, sig, records);
    else
        printf("result exit=%d signal=%d status=%ld records=%d\n", exit_code, sig, code, records);

    if (selftest) {
        long want = revenant_selftest_exit_code(input);
        printf("selftest input=%u expected=%ld\n", input, want);
        return exit_code == want && code == want ? 0 : 1;
    }
    if (*brk)
        return 0;
    /* The blob reported the handover, and the restored page's code ran. */
    return code == REVENANT_STATUS_RESTORED && exit_code == RESTORED_EXIT ? 0 : 1;
}
