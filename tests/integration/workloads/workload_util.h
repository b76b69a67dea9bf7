/* What the history-recording workloads (tkv-raw-workload, tkv-txn-workload)
 * share: the monotonic clock, a xorshift generator the caller seeds, and the
 * history output (one write per JSON line on out_fd, opened O_APPEND by the
 * caller, so lines stay whole across processes and a kill -9). The includer
 * defines LINE_MAX_BYTES (longest line) and WORKLOAD_NAME (for messages).
 * Single-threaded programs: the state is file-static. */
#ifndef TKV_WORKLOAD_UTIL_H
#define TKV_WORKLOAD_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int out_fd = -1;
static uint64_t rng = 88172645463325252ull;

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t rnd(uint64_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? rng % n : 0;
}

__attribute__((format(printf, 1, 2))) static inline void emit(const char *fmt, ...)
{
    char line[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 1)
        return;
    line[n++] = '\n';
    if (write(out_fd, line, (size_t)n) != n)
        fprintf(stderr, WORKLOAD_NAME ": write: %s\n", strerror(errno));
}

#endif
