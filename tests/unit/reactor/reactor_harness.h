/* Shared helpers of the reactor unit tests: start a group (skipping when
 * io_uring is blocked), record failures seen on core threads, and report
 * them from the test's main thread where criterion's asserts are valid. */
#ifndef TKV_TEST_REACTOR_HARNESS_H
#define TKV_TEST_REACTOR_HARNESS_H

#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "tkv/err.h"
#include "tkv/reactor.h"

static atomic_int h_failed;
static char h_fail_msg[1024];
static struct tkv_reactor_group *h_group;

__attribute__((format(printf, 3, 4))) static void h_fail(const char *file, int line,
                                                         const char *fmt, ...)
{
    if (atomic_exchange(&h_failed, 1) != 0)
        return;
    int n = snprintf(h_fail_msg, sizeof(h_fail_msg), "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h_fail_msg + n, sizeof(h_fail_msg) - (size_t)n, fmt, ap);
    va_end(ap);
    struct tkv_reactor *r = tkv_reactor_self();
    if (r != NULL)
        tkv_reactor_group_stop(tkv_reactor_group_of(r));
    else if (h_group != NULL)
        tkv_reactor_group_stop(h_group);
}

/* An assertion usable on core threads: the first failure is kept and the
 * group stopped; h_run() then fails the test with the message. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            h_fail(__FILE__, __LINE__, __VA_ARGS__);                                               \
    } while (0)

static inline uint64_t h_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define MS (1000ull * 1000)

static inline int h_start(uint32_t n, uint32_t ring_size, tkv_core_init_fn init,
                          tkv_core_fini_fn fini, void *arg)
{
    struct tkv_reactor_config cfg = {.n_cores = n, .pin = false, .xcore_ring_size = ring_size};
    int rv = tkv_reactor_group_start(&cfg, init, fini, arg, &h_group);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here (%s)", strerror(-rv));
    cr_assert_eq(rv, 0, "tkv_reactor_group_start: %s", tkv_strerror(rv));
    return rv;
}

/* Start n cores, wait for them to stop by themselves, fail on CHECKs. */
static inline int h_run(uint32_t n, uint32_t ring_size, tkv_core_init_fn init,
                        tkv_core_fini_fn fini, void *arg)
{
    h_start(n, ring_size, init, fini, arg);
    int rv = tkv_reactor_group_wait(h_group);
    h_group = NULL;
    cr_assert(!atomic_load(&h_failed), "%s", h_fail_msg);
#if defined(__SANITIZE_ADDRESS__)
    /* criterion workers exit without LeakSanitizer's final pass: check here
     * that the group freed everything it allocated */
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks after the group stopped (above)");
#endif
    return rv;
}

static inline void h_stop(void)
{
    tkv_reactor_group_stop(h_group);
}

#endif
