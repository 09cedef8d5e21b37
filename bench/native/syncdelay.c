/* A preloaded shim for `make bench` (bench/bench_sync.py): every fsync and fdatasync
 * of the process waits OTC_SYNC_DELAY_US microseconds first, as a sync on an SD card
 * does, and is counted in the 8-byte counter file OTC_SYNC_COUNTER (mapped shared, so
 * the bench reads it while the process runs). SQLite's syncs go through these too.
 * This machine's kernel has no device-mapper, so dm-delay is not available. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile uint64_t *counter;
static long delay_us = -1;

static void setup(void) {
    if (delay_us >= 0) return;
    const char *d = getenv("OTC_SYNC_DELAY_US");
    delay_us = d ? atol(d) : 0;
    const char *path = getenv("OTC_SYNC_COUNTER");
    if (path) {
        int fd = open(path, O_RDWR);
        if (fd >= 0) {
            void *p = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) counter = p;
            close(fd);
        }
    }
}

static void before_sync(void) {
    setup();
    if (counter) __atomic_add_fetch(counter, 1, __ATOMIC_SEQ_CST);
    if (delay_us > 0) {
        struct timespec ts = { delay_us / 1000000, (delay_us % 1000000) * 1000 };
        while (nanosleep(&ts, &ts) != 0) {}
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    before_sync();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    before_sync();
    return real(fd);
}
