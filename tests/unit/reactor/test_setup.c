/* The io_uring set-up modes (enum tkv_uring_setup): which mode a core ends
 * up in (config, TKV_REACTOR_URING, the kernel refusing a mode's flags
 * through the failpoints of Debug builds), and that the loop works in each
 * one: a sleeping core woken by a post, and a core that never blocks (a
 * task that keeps re-deferring itself) still seeing its I/O complete, which
 * DEFER_TASKRUN only posts when the core asks the kernel for completions. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

#include "reactor_harness.h"

struct sstate {
    uint32_t mode[2];
    /* busy-core check, on core 0 */
    int pipe_fd[2];
    char rbuf[8];
    struct tkv_io rio, wio;
    struct iovec wiov;
    struct tkv_timer write_timer;
    bool read_done;
    int read_res;
    uint64_t spins;
    uint64_t busy_until_ns;
    /* wake check: both cores asleep, core 0 posts to core 1 and back */
    _Atomic int pongs;
};
static struct sstate S;

static void stop_group(void)
{
    tkv_reactor_group_stop(tkv_reactor_group_of(tkv_reactor_self()));
}

static void record_mode(struct tkv_reactor *r, uint32_t core)
{
    struct tkv_reactor_stats st;
    tkv_reactor_get_stats(r, &st);
    S.mode[core] = st.uring_setup;
}

static int mode_only_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    record_mode(r, core);
    if (core == 0)
        tkv_reactor_group_stop(tkv_reactor_group_of(r));
    return 0;
}

/* The mode a 1-core group started with cfg.uring_setup = want lands in. */
static uint32_t mode_of(enum tkv_uring_setup want)
{
    memset(&S, 0, sizeof(S));
    struct tkv_reactor_config cfg = {.n_cores = 1, .uring_setup = want};
    int rv = tkv_reactor_group_start(&cfg, mode_only_init, NULL, NULL, &h_group);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here (%s)", strerror(-rv));
    cr_assert_eq(rv, 0, "tkv_reactor_group_start: %s", tkv_strerror(rv));
    cr_assert_eq(tkv_reactor_group_wait(h_group), 0);
    h_group = NULL;
    return S.mode[0];
}

/* DEFER_TASKRUN exists from Linux 6.1 on. */
static bool kernel_has_defer(void)
{
    struct utsname u;
    int major = 0, minor = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
        return false;
    return major > 6 || (major == 6 && minor >= 1);
}

Test(reactor_setup, modes_from_config_and_environment, .timeout = 20)
{
    unsetenv("TKV_REACTOR_URING");
    if (!kernel_has_defer())
        cr_skip_test("kernel older than 6.1: DEFER_TASKRUN unavailable");
    cr_assert_eq(mode_of(TKV_URING_SETUP_AUTO), TKV_URING_SETUP_DEFER, "AUTO on 6.1+ is %s",
                 tkv_uring_setup_name(S.mode[0]));
    cr_assert_eq(mode_of(TKV_URING_SETUP_DEFER), TKV_URING_SETUP_DEFER);
    cr_assert_eq(mode_of(TKV_URING_SETUP_COOP), TKV_URING_SETUP_COOP);
    cr_assert_eq(mode_of(TKV_URING_SETUP_PLAIN), TKV_URING_SETUP_PLAIN);

    /* the environment caps the config's mode, never enriches it */
    setenv("TKV_REACTOR_URING", "plain", 1);
    cr_assert_eq(mode_of(TKV_URING_SETUP_AUTO), TKV_URING_SETUP_PLAIN);
    setenv("TKV_REACTOR_URING", "coop", 1);
    cr_assert_eq(mode_of(TKV_URING_SETUP_AUTO), TKV_URING_SETUP_COOP);
    cr_assert_eq(mode_of(TKV_URING_SETUP_PLAIN), TKV_URING_SETUP_PLAIN);
    setenv("TKV_REACTOR_URING", "bogus", 1); /* logged and ignored */
    cr_assert_eq(mode_of(TKV_URING_SETUP_AUTO), TKV_URING_SETUP_DEFER);
    unsetenv("TKV_REACTOR_URING");

    struct tkv_reactor_config bad = {.n_cores = 1, .uring_setup = (enum tkv_uring_setup)7};
    struct tkv_reactor_group *g = NULL;
    cr_assert_eq(tkv_reactor_group_start(&bad, NULL, NULL, NULL, &g), TKV_EINVAL);
}

Test(reactor_setup, einval_falls_back_one_mode_at_a_time, .timeout = 20)
{
#ifndef FIU_ENABLE
    cr_skip_test("failpoints are compiled in Debug builds only");
#else
    unsetenv("TKV_REACTOR_URING");
    if (!kernel_has_defer())
        cr_skip_test("kernel older than 6.1: DEFER_TASKRUN unavailable");
    fiu_init(0);
    fiu_enable("reactor/uring_refuse_defer", 1, NULL, 0);
    cr_assert_eq(mode_of(TKV_URING_SETUP_AUTO), TKV_URING_SETUP_COOP,
                 "DEFER refused: want coop, got %s", tkv_uring_setup_name(S.mode[0]));
    fiu_enable("reactor/uring_refuse_coop", 1, NULL, 0);
    cr_assert_eq(mode_of(TKV_URING_SETUP_AUTO), TKV_URING_SETUP_PLAIN,
                 "DEFER and COOP refused: want plain, got %s", tkv_uring_setup_name(S.mode[0]));
    fiu_disable("reactor/uring_refuse_defer");
    cr_assert_eq(mode_of(TKV_URING_SETUP_AUTO), TKV_URING_SETUP_DEFER,
                 "COOP refused, DEFER allowed: want defer, got %s", tkv_uring_setup_name(S.mode[0]));
    cr_assert_eq(mode_of(TKV_URING_SETUP_COOP), TKV_URING_SETUP_PLAIN,
                 "COOP asked for and refused: want plain, got %s", tkv_uring_setup_name(S.mode[0]));
    fiu_disable("reactor/uring_refuse_coop");
#endif
}

/* ---- the loop in a given mode ---- */

static struct tkv_timer post_timer, deadline_timer;

static void read_cb(struct tkv_io *io, int res)
{
    (void)io;
    S.read_done = true;
    S.read_res = res;
}

static void write_cb(struct tkv_io *io, int res)
{
    (void)io;
    CHECK(res == 4, "pipe write: %d", res);
}

/* Fires while the read waits in the kernel (an armed poll): the read then
 * completes through task work, which a DEFER ring runs only when the core
 * asks for completions. */
static void write_later(struct tkv_timer *t)
{
    (void)t;
    S.wiov = (struct iovec){.iov_base = "ping", .iov_len = 4};
    tkv_reactor_writev(tkv_reactor_self(), &S.wio, S.pipe_fd[1], &S.wiov, 1, (uint64_t)-1);
}

/* Re-defers itself every turn, so core 0 never blocks, until the read
 * completed or 3 s passed. */
static void spin(void *arg)
{
    (void)arg;
    struct tkv_reactor *r = tkv_reactor_self();
    S.spins++;
    if (!S.read_done && tkv_now_ns(r) < S.busy_until_ns) {
        tkv_reactor_defer(r, spin, NULL);
        return;
    }
    CHECK(S.read_done, "busy core (%s): the pipe read never completed (%llu turns)",
          tkv_uring_setup_name(S.mode[0]), (unsigned long long)S.spins);
    CHECK(S.read_res == 4 && memcmp(S.rbuf, "ping", 4) == 0, "pipe read: %d", S.read_res);
    stop_group();
}

/* Back on core 0 (woken from its sleep by core 1's post): start the busy
 * phase. */
static void pong(void *arg)
{
    (void)arg;
    struct tkv_reactor *r = tkv_reactor_self();
    atomic_fetch_add(&S.pongs, 1);
    tkv_timer_stop(r, &deadline_timer);
    tkv_timer_init(&S.write_timer, write_later, NULL);
    tkv_timer_start(r, &S.write_timer, 50 * MS);
    S.busy_until_ns = tkv_now_ns(r) + 3000 * MS;
    tkv_reactor_defer(r, spin, NULL);
}

static void at_core1(void *arg)
{
    (void)arg;
    tkv_reactor_post(tkv_reactor_self(), 0, pong, NULL);
}

/* Both cores are asleep by now (nothing else to do): this post must wake
 * core 1, and its answer core 0. */
static void post_to_sleeper(struct tkv_timer *t)
{
    (void)t;
    tkv_reactor_post(tkv_reactor_self(), 1, at_core1, NULL);
}

static void no_pong(struct tkv_timer *t)
{
    (void)t;
    CHECK(false, "(%s) no answer from the sleeping core within 3 s",
          tkv_uring_setup_name(S.mode[0]));
}

static int loop_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    record_mode(r, core);
    if (core != 0)
        return 0;
    /* blocking fds: io_uring answers EAGAIN at once on O_NONBLOCK ones */
    if (pipe2(S.pipe_fd, O_CLOEXEC) != 0) {
        CHECK(false, "pipe2: %s", strerror(errno));
        return -errno;
    }
    tkv_io_init(&S.rio, read_cb, NULL);
    tkv_io_init(&S.wio, write_cb, NULL);
    tkv_reactor_read(r, &S.rio, S.pipe_fd[0], S.rbuf, sizeof(S.rbuf), (uint64_t)-1);
    tkv_timer_init(&post_timer, post_to_sleeper, NULL);
    tkv_timer_start(r, &post_timer, 20 * MS);
    tkv_timer_init(&deadline_timer, no_pong, NULL);
    tkv_timer_start(r, &deadline_timer, 3000 * MS);
    return 0;
}

static void run_loop_in(enum tkv_uring_setup want)
{
    unsetenv("TKV_REACTOR_URING");
    memset(&S, 0, sizeof(S));
    S.pipe_fd[0] = S.pipe_fd[1] = -1;
    struct tkv_reactor_config cfg = {.n_cores = 2, .uring_setup = want};
    int rv = tkv_reactor_group_start(&cfg, loop_init, NULL, NULL, &h_group);
    if (rv == -ENOSYS || rv == -EPERM)
        cr_skip_test("io_uring unavailable here (%s)", strerror(-rv));
    cr_assert_eq(rv, 0, "tkv_reactor_group_start: %s", tkv_strerror(rv));
    tkv_reactor_group_wait(h_group);
    h_group = NULL;
    for (int i = 0; i < 2; i++)
        if (S.pipe_fd[i] >= 0)
            close(S.pipe_fd[i]);
    cr_assert(!atomic_load(&h_failed), "%s", h_fail_msg);
    cr_assert_eq(atomic_load(&S.pongs), 1);
    cr_assert(S.read_done);
    if (kernel_has_defer())
        cr_assert_eq(S.mode[0], (uint32_t)want, "core 0 runs %s, asked for %s",
                     tkv_uring_setup_name(S.mode[0]), tkv_uring_setup_name(want));
}

Test(reactor_setup, loop_works_defer, .timeout = 20)
{
    run_loop_in(TKV_URING_SETUP_DEFER);
}

Test(reactor_setup, loop_works_coop, .timeout = 20)
{
    run_loop_in(TKV_URING_SETUP_COOP);
}

Test(reactor_setup, loop_works_plain, .timeout = 20)
{
    run_loop_in(TKV_URING_SETUP_PLAIN);
}
