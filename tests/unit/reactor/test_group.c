/* Group lifecycle: stop from a non-core thread (on_stop hooks, in-flight
 * operations cancelled after the grace period, fini last), an init failure
 * stopping the group, and SIGTERM handling in a forked child. */
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reactor_harness.h"

struct gcore {
    int sv[2];
    char buf[8];
    struct tkv_io recv_io;
    struct tkv_timer tick;
    int recv_res, recv_fired;
    uint64_t recv_at;
    int on_stop_ran, fini_ran;
    bool fini_after_recv;
    uint32_t hook_core;
    struct tkv_io close_io;
    int close_res, close_fired;
};
static struct gcore G[3];
static uint64_t stop_called_at;
static _Atomic int ticks;

static void g_recv_cb(struct tkv_io *io, int res)
{
    struct gcore *c = io->data;
    c->recv_fired++;
    c->recv_res = res;
    c->recv_at = h_mono_ns();
}

static void g_tick(struct tkv_timer *t)
{
    ticks++;
    tkv_timer_start(tkv_reactor_self(), t, 5 * MS); /* keeps running while stopping */
}

static int late_hook_ran;

static void g_late_hook(void *arg)
{
    (void)arg;
    late_hook_ran++;
}

static void g_on_stop(void *arg)
{
    struct gcore *c = arg;
    c->on_stop_ran++;
    if (c == &G[0]) /* registered after the stop began: still runs */
        tkv_reactor_on_stop(tkv_reactor_self(), g_late_hook, NULL);
    c->hook_core = tkv_core_self();
    CHECK(tkv_reactor_stopping(tkv_reactor_self()), "stopping() false inside on_stop");
    /* core 1 closes its "listener" itself; core 0 leaves its recv to the
     * reactor's grace-period cancel */
    if (c == &G[1])
        tkv_reactor_cancel(tkv_reactor_self(), &c->recv_io);
}

static int g_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    struct gcore *c = &G[core];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c->sv) == 0, "socketpair");
    tkv_io_init(&c->recv_io, g_recv_cb, c);
    tkv_reactor_recv(r, &c->recv_io, c->sv[0], c->buf, sizeof(c->buf));
    tkv_reactor_on_stop(r, g_on_stop, c);
    tkv_timer_init(&c->tick, g_tick, NULL);
    tkv_timer_start(r, &c->tick, 5 * MS);
    return 0;
}

static void g_close_cb(struct tkv_io *io, int res)
{
    struct gcore *c = io->data;
    c->close_res = res;
    c->close_fired++;
}

static void g_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    struct gcore *c = &G[core];
    c->fini_ran++;
    CHECK(tkv_core_self() == core, "fini of core %u ran on core %u", core, tkv_core_self());
    CHECK(tkv_reactor_stopping(r), "fini before stop");
    c->fini_after_recv = c->recv_fired == 1 && !tkv_io_pending(&c->recv_io);
    tkv_timer_stop(r, &c->tick);
    /* an operation submitted by fini still completes before the thread ends */
    tkv_io_init(&c->close_io, g_close_cb, c);
    tkv_reactor_close(r, &c->close_io, c->sv[0]);
    close(c->sv[1]);
}

Test(reactor_group, stop_from_other_thread_cancels_and_runs_fini, .timeout = 20)
{
    h_start(2, 0, g_init, g_fini, NULL);
    usleep(30 * 1000);
    stop_called_at = h_mono_ns();
    tkv_reactor_group_stop(h_group);
    tkv_reactor_group_stop(h_group); /* idempotent */
    int rv = tkv_reactor_group_wait(h_group);
    h_group = NULL;
    cr_assert(!atomic_load(&h_failed), "%s", h_fail_msg);
    cr_assert_eq(rv, 0);
    for (uint32_t i = 0; i < 2; i++) {
        cr_assert_eq(G[i].on_stop_ran, 1, "core %u on_stop ran %d times", i, G[i].on_stop_ran);
        cr_assert_eq(G[i].hook_core, i, "on_stop of core %u ran on core %u", i, G[i].hook_core);
        cr_assert_eq(G[i].recv_fired, 1, "core %u recv fired %d times", i, G[i].recv_fired);
        cr_assert_eq(G[i].recv_res, -ECANCELED, "core %u recv res %d", i, G[i].recv_res);
        cr_assert_eq(G[i].fini_ran, 1, "core %u fini ran %d times", i, G[i].fini_ran);
        cr_assert(G[i].fini_after_recv, "core %u fini ran before its recv completed", i);
        cr_assert_eq(G[i].close_fired, 1, "core %u: close submitted in fini fired %d times", i,
                     G[i].close_fired);
        cr_assert_eq(G[i].close_res, 0, "core %u: close in fini: %d", i, G[i].close_res);
    }
    /* the explicit cancel is immediate; the leftover waits for the grace */
    cr_assert_lt(G[1].recv_at - stop_called_at, 1000 * MS, "on_stop cancel took too long");
    cr_assert_geq(G[0].recv_at - stop_called_at, 1900 * MS,
                  "leftover recv cancelled after %llu ms, before the 2 s grace period",
                  (unsigned long long)((G[0].recv_at - stop_called_at) / MS));
    cr_assert_gt(ticks, 0);
    cr_assert_eq(late_hook_ran, 1, "on_stop hook registered while stopping ran %d times",
                 late_hook_ran);
}

/* ---- init failure ---- */

static int fail_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)arg;
    return core == 1 ? -EADDRINUSE : 0;
}

static void count_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)arg;
    G[core].fini_ran++;
}

Test(reactor_group, init_failure_stops_group_and_is_returned, .timeout = 20)
{
    h_start(3, 0, fail_init, count_fini, NULL);
    int rv = tkv_reactor_group_wait(h_group);
    h_group = NULL;
    cr_assert_eq(rv, -EADDRINUSE, "group_wait returned %d (%s)", rv, tkv_strerror(rv));
    cr_assert_eq(G[0].fini_ran, 1);
    cr_assert_eq(G[1].fini_ran, 0, "fini ran for the core whose init failed");
    cr_assert_eq(G[2].fini_ran, 1);
}

Test(reactor_group, run_until_signal_returns_when_group_stops_itself, .timeout = 20)
{
    h_start(2, 0, fail_init, count_fini, NULL);
    int rv = tkv_reactor_group_run_until_signal(h_group);
    h_group = NULL;
    cr_assert_eq(rv, -EADDRINUSE, "run_until_signal returned %d", rv);
}

Test(reactor_group, bad_config_is_rejected)
{
    struct tkv_reactor_group *g = NULL;
    struct tkv_reactor_config c0 = {.n_cores = 0};
    cr_assert_eq(tkv_reactor_group_start(&c0, NULL, NULL, NULL, &g), TKV_EINVAL);
    struct tkv_reactor_config c1 = {.n_cores = 2, .xcore_ring_size = 100};
    cr_assert_eq(tkv_reactor_group_start(&c1, NULL, NULL, NULL, &g), TKV_EINVAL);
    cr_assert_null(g);
}

/* ---- SIGTERM in a forked child running run_until_signal ---- */

static int sig_pipe[2];
static _Atomic int sig_stops, sig_finis;

static void sig_on_stop(void *arg)
{
    (void)arg;
    sig_stops++;
}

static int sig_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    tkv_reactor_on_stop(r, sig_on_stop, NULL);
    if (core == 0) {
        char b = 'r';
        if (write(sig_pipe[1], &b, 1) != 1)
            return -EIO;
    }
    return 0;
}

static void sig_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    sig_finis++;
}

static void sig_child(void)
{
    tkv_reactor_block_signals();
    struct tkv_reactor_config cfg = {.n_cores = 2, .pin = true};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&cfg, sig_init, sig_fini, NULL, &g);
    if (rv == -ENOSYS || rv == -EPERM)
        _exit(77);
    if (rv != 0)
        _exit(10);
    rv = tkv_reactor_group_run_until_signal(g);
    if (rv != 0)
        _exit(11);
    _exit(sig_stops == 2 && sig_finis == 2 ? 0 : 12);
}

Test(reactor_group, sigterm_stops_run_until_signal, .timeout = 20)
{
    cr_assert_eq(pipe(sig_pipe), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        sig_child();
    struct pollfd pfd = {.fd = sig_pipe[0], .events = POLLIN};
    int n = poll(&pfd, 1, 10000);
    int status = 0;
    if (n != 1) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
            cr_skip_test("io_uring unavailable here");
        cr_assert_fail("child did not start its cores (status %d)", status);
    }
    cr_assert_eq(kill(pid, SIGTERM), 0);
    for (int i = 0; i < 1000; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        usleep(10 * 1000);
        if (i == 999) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            cr_assert_fail("child still running 10 s after SIGTERM");
        }
    }
    cr_assert(WIFEXITED(status), "child died by signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0,
                 "child exit %d (10 start, 11 run_until_signal rv, 12 hooks/fini missing)",
                 WEXITSTATUS(status));
}

/* ---- a core whose ring cannot be created fails group_start cleanly ---- */

#include <sys/resource.h>

static void setup_fail_child(void)
{
    /* leave room for the group's stop eventfd and one ring: the second
     * core's io_uring_queue_init (or an eventfd) gets EMFILE */
    int k = dup(0);
    if (k < 0)
        _exit(20);
    close(k);
    struct rlimit rl = {.rlim_cur = (rlim_t)k + 2, .rlim_max = (rlim_t)k + 2};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        _exit(21);
    struct tkv_reactor_config cfg = {.n_cores = 2};
    struct tkv_reactor_group *g = NULL;
    int rv = tkv_reactor_group_start(&cfg, NULL, NULL, NULL, &g);
    if (rv == -ENOSYS || rv == -EPERM)
        _exit(77);
    _exit(rv == -EMFILE && g == NULL ? 0 : 22);
}

Test(reactor_group, ring_setup_failure_is_returned, .timeout = 20)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        setup_fail_child();
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "child died by signal %d", WTERMSIG(status));
    if (WEXITSTATUS(status) == 77)
        cr_skip_test("io_uring unavailable here");
    cr_assert_eq(WEXITSTATUS(status), 0, "child exit %d (22: group_start did not return -EMFILE)",
                 WEXITSTATUS(status));
}
