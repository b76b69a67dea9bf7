/* Core threads: creation, CPU pinning, signal masks, the thread-local
 * current core, and the group's start / stop / wait / signal handling. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "reactor_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

_Thread_local struct tkv_reactor *reactor_tls;

uint32_t tkv_core_self(void)
{
    return reactor_tls ? reactor_tls->core : TKV_CORE_NONE;
}

struct tkv_reactor *tkv_reactor_self(void)
{
    return reactor_tls;
}

uint32_t tkv_reactor_group_cores(const struct tkv_reactor_group *g)
{
    return g->n;
}

struct tkv_reactor_group *tkv_reactor_group_of(const struct tkv_reactor *r)
{
    return r->g;
}

/* Pin core k to the k-th CPU of the process's allowed set (modulo its
 * size), so containers with a restricted cpuset still spread cores. */
static void pin_self(uint32_t core)
{
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return;
    int n = CPU_COUNT(&allowed);
    if (n <= 0)
        return;
    int want = (int)(core % (uint32_t)n), seen = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed))
            continue;
        if (seen++ == want) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            int rv = pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
            if (rv != 0)
                TKV_LOG_WARN("cannot pin core", TKV_LF_U64("core", core),
                             TKV_LF_U64("cpu", (uint64_t)cpu), TKV_LF_ERR(-rv));
            return;
        }
    }
}

/* Asynchronous signals are for the main thread (run_until_signal); core
 * threads block them so the kernel never interrupts a loop turn with one. */
static void block_async_signals(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGABRT);
    sigdelset(&all, SIGTRAP);
    pthread_sigmask(SIG_BLOCK, &all, old);
}

static void reactor_destroy(struct tkv_reactor *r)
{
    if (r == NULL)
        return;
    reactor_uring_exit(r);
    reactor_wake_close(r);
    reactor_taskq_free(&r->deferred);
    reactor_taskq_free(&r->after_hooks);
    reactor_taskq_free(&r->on_stop);
    reactor_hooks_free(r);
    tkv_free(r->heap);
    if (r->overflow != NULL)
        for (uint32_t i = 0; i < r->n_cores; i++)
            reactor_taskq_free(&r->overflow[i]);
    tkv_free(r->overflow);
    tkv_free(r->wake_owed);
    free(r); /* aligned_alloc'ed for its cache-line members */
}

/* After the loop: run what fini submitted (a last close, say) to its
 * callbacks, and cancel the armed wake read and wait for its CQE, so the
 * kernel is done with r->wake_buf before r is freed. */
static void drain_final(struct tkv_reactor *r)
{
    r->exiting = true;
    if (r->wake_armed) {
        struct io_uring_sqe *sqe = reactor_sqe(r);
        io_uring_prep_cancel64(sqe, UD_WAKE, 0);
        io_uring_sqe_set_data64(sqe, UD_CANCEL);
        r->intern_inflight++;
    }
    while (r->intern_inflight > 0 || r->user_inflight > 0 || r->deferred.len > 0) {
        if (r->deferred.len == 0) {
            int rv = io_uring_submit_and_wait(&r->ring, 1);
            if (rv < 0 && rv != -EINTR && rv != -EAGAIN && rv != -EBUSY)
                TKV_PANIC("io_uring wait at exit: %s", strerror(-rv));
        } else {
            io_uring_submit(&r->ring);
        }
        reactor_uring_reap(r);
        struct reactor_task t;
        size_t n = r->deferred.len;
        while (n-- > 0 && reactor_taskq_pop(&r->deferred, &t))
            t.fn(t.arg);
    }
}

static void *core_main(void *p)
{
    struct tkv_reactor *r = p;
    struct tkv_reactor_group *g = r->g;

    reactor_tls = r;
    if (g->cfg.pin)
        pin_self(r->core);
    r->setup_rv =
        reactor_uring_init(r, g->cfg.uring_entries ? g->cfg.uring_entries : 256, g->uring_cap);
    if (r->setup_rv == 0)
        r->setup_rv = reactor_wake_init(r);

    /* all rings exist before any init runs, since init may post */
    pthread_mutex_lock(&g->mu);
    g->n_ready++;
    pthread_cond_broadcast(&g->cv);
    while (g->go == 0)
        pthread_cond_wait(&g->cv, &g->mu);
    int go = g->go;
    pthread_mutex_unlock(&g->mu);
    if (go < 0)
        return NULL;

    r->now_ns = reactor_clock_ns();
    reactor_metrics_start(r);
    /* again after the metrics set-up (registration takes a while under
     * ASan): init's timers count from here */
    r->now_ns = reactor_clock_ns();
    atomic_store_explicit(&r->heartbeat_ns, r->now_ns, memory_order_relaxed);
    reactor_wake_arm(r);
    int rv = g->init ? g->init(r, r->core, g->arg) : 0;
    if (rv < 0) {
        int zero = 0;
        atomic_compare_exchange_strong(&g->first_err, &zero, rv);
        TKV_LOG_ERROR("core init failed", TKV_LF_U64("core", r->core), TKV_LF_ERR(rv));
        /* "fully fails": its hooks belong to state init has torn down */
        reactor_taskq_free(&r->on_stop);
        r->bs_head = r->bs_tail = NULL; /* owned ones are freed at destroy */
        tkv_reactor_group_stop(g);
    } else {
        r->init_ok = true;
    }
    reactor_loop_run(r);
    if (r->init_ok && g->fini)
        g->fini(r, r->core, g->arg);
    drain_final(r);
    reactor_metrics_stop(r);
    reactor_tls = NULL;
    return NULL;
}

/* cfg's mode, capped by TKV_REACTOR_URING (read once per group start, on the
 * starting thread). An unknown value is logged and ignored. */
static enum tkv_uring_setup uring_setup_cap(enum tkv_uring_setup want)
{
    const char *env = getenv("TKV_REACTOR_URING");
    enum tkv_uring_setup cap = TKV_URING_SETUP_AUTO;
    if (want == TKV_URING_SETUP_AUTO)
        want = TKV_URING_SETUP_DEFER;
    if (env == NULL || *env == '\0')
        return want;
    if (strcmp(env, "defer") == 0)
        cap = TKV_URING_SETUP_DEFER;
    else if (strcmp(env, "coop") == 0)
        cap = TKV_URING_SETUP_COOP;
    else if (strcmp(env, "plain") == 0)
        cap = TKV_URING_SETUP_PLAIN;
    else
        TKV_LOG_WARN("TKV_REACTOR_URING ignored (want defer, coop or plain)",
                     TKV_LF_STR("value", env));
    /* the higher the enum, the plainer the mode */
    return cap > want ? cap : want;
}

int tkv_reactor_group_start(const struct tkv_reactor_config *cfg, tkv_core_init_fn init,
                            tkv_core_fini_fn fini, void *arg, struct tkv_reactor_group **group_out)
{
    int rv = 0;
    if (cfg == NULL || cfg->n_cores == 0 || cfg->n_cores > 1024 || group_out == NULL)
        return TKV_EINVAL;
    uint32_t slots = cfg->xcore_ring_size ? cfg->xcore_ring_size : 1024;
    if (slots < 2 || (slots & (slots - 1)) != 0 || slots > (1u << 24))
        return TKV_EINVAL;
    if (cfg->uring_entries > 32768)
        return TKV_EINVAL;
    if (cfg->uring_setup > TKV_URING_SETUP_PLAIN)
        return TKV_EINVAL;

    struct tkv_reactor_group *g = tkv_calloc(1, sizeof(*g));
    if (g == NULL)
        return TKV_ENOMEM;
    g->n = cfg->n_cores;
    g->cfg = *cfg;
    g->uring_cap = uring_setup_cap(cfg->uring_setup);
    g->init = init;
    g->fini = fini;
    g->arg = arg;
    g->stop_fd = -1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    atomic_init(&g->stop, 0);
    atomic_init(&g->first_err, 0);
    atomic_init(&g->n_idle, 0);

    g->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (g->stop_fd < 0) {
        rv = -errno;
        goto err;
    }
    g->cores = tkv_calloc(g->n, sizeof(*g->cores));
    if (g->cores == NULL) {
        rv = TKV_ENOMEM;
        goto err;
    }
    TKV_ERR(reactor_rings_init(g, slots));
    for (uint32_t i = 0; i < g->n; i++) {
        struct tkv_reactor *r = aligned_alloc(REACTOR_CACHELINE, sizeof(*r));
        if (r == NULL) {
            rv = TKV_ENOMEM;
            goto err;
        }
        memset(r, 0, sizeof(*r));
        r->g = g;
        r->core = i;
        r->n_cores = g->n;
        r->wake_fd = -1;
        atomic_init(&r->sleeping, 0);
        atomic_init(&r->heartbeat_ns, 0);
        g->cores[i] = r;
        r->overflow = tkv_calloc(g->n, sizeof(*r->overflow));
        r->wake_owed = tkv_calloc(g->n, 1);
        if (r->overflow == NULL || r->wake_owed == NULL) {
            rv = TKV_ENOMEM;
            goto err;
        }
    }

    sigset_t old;
    block_async_signals(&old);
    for (uint32_t i = 0; i < g->n; i++) {
        int prv = pthread_create(&g->cores[i]->thread, NULL, core_main, g->cores[i]);
        if (prv != 0) {
            rv = -prv;
            break;
        }
        g->cores[i]->thread_started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    /* wait for every started thread's ring, then release or abort them */
    uint32_t started = 0;
    for (uint32_t i = 0; i < g->n; i++)
        started += g->cores[i]->thread_started;
    pthread_mutex_lock(&g->mu);
    while (g->n_ready < started)
        pthread_cond_wait(&g->cv, &g->mu);
    for (uint32_t i = 0; i < g->n && rv == 0; i++)
        if (g->cores[i]->setup_rv < 0)
            rv = g->cores[i]->setup_rv;
    g->go = rv == 0 ? 1 : -1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (rv < 0)
        goto err;

    *group_out = g;
    return 0;

err:
    if (g->cores != NULL) {
        for (uint32_t i = 0; i < g->n; i++)
            if (g->cores[i] != NULL && g->cores[i]->thread_started)
                pthread_join(g->cores[i]->thread, NULL);
        for (uint32_t i = 0; i < g->n; i++)
            reactor_destroy(g->cores[i]);
    }
    tkv_free(g->cores);
    reactor_rings_free(g);
    if (g->stop_fd >= 0)
        close(g->stop_fd);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    tkv_free(g);
    return rv;
}

void tkv_reactor_group_stop(struct tkv_reactor_group *g)
{
    if (atomic_exchange(&g->stop, 1) != 0)
        return;
    for (uint32_t i = 0; i < g->n; i++)
        reactor_wake_kick(g->cores[i]);
    uint64_t one = 1;
    ssize_t n = write(g->stop_fd, &one, sizeof(one));
    (void)n; /* EAGAIN only when already signalled */
}

int tkv_reactor_group_wait(struct tkv_reactor_group *g)
{
    for (uint32_t i = 0; i < g->n; i++)
        pthread_join(g->cores[i]->thread, NULL);
    size_t left = reactor_rings_leftover(g);
    size_t over = 0;
    for (uint32_t i = 0; i < g->n; i++)
        over += g->cores[i]->overflow_total;
    if (left + over > 0)
        TKV_LOG_WARN("cross-core messages dropped at shutdown", TKV_LF_U64("in_rings", left),
                     TKV_LF_U64("in_overflow", over));
    int rv = atomic_load(&g->first_err);
    for (uint32_t i = 0; i < g->n; i++)
        reactor_destroy(g->cores[i]);
    tkv_free(g->cores);
    reactor_rings_free(g);
    close(g->stop_fd);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    tkv_free(g);
    return rv;
}

static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

void tkv_reactor_block_signals(void)
{
    sigset_t set;
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int tkv_reactor_group_run_until_signal(struct tkv_reactor_group *g)
{
    return tkv_reactor_group_run(g, NULL);
}

uint64_t tkv_reactor_group_core_stall_ns(const struct tkv_reactor_group *g, uint32_t core)
{
    if (core >= g->n)
        return UINT64_MAX;
    uint64_t hb = atomic_load_explicit(&g->cores[core]->heartbeat_ns, memory_order_relaxed);
    if (hb == 0)
        return UINT64_MAX;
    uint64_t now = reactor_clock_ns();
    return now > hb ? now - hb : 0;
}

static int poll_timeout_ms(uint64_t next_tick_ns)
{
    if (next_tick_ns == 0)
        return -1;
    uint64_t now = reactor_clock_ns();
    if (next_tick_ns <= now)
        return 0;
    uint64_t ms = (next_tick_ns - now + 999999) / 1000000;
    return ms > 60000 ? 60000 : (int)ms;
}

int tkv_reactor_group_run(struct tkv_reactor_group *g, const struct tkv_reactor_run_hooks *hooks)
{
    sigset_t set;
    stop_signals(&set);
    /* harmless if the caller already did; without it the default action
     * would kill the process instead of reaching the signalfd */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0) {
        TKV_LOG_ERROR("signalfd failed; stopping", TKV_LF_ERR(-errno));
        tkv_reactor_group_stop(g);
        return tkv_reactor_group_wait(g);
    }
    uint64_t tick_ns = hooks && hooks->on_tick ? hooks->tick_ns : 0;
    uint64_t next_tick = tick_ns ? reactor_clock_ns() + tick_ns : 0;
    struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = g->stop_fd, .events = POLLIN}};
    for (;;) {
        int n = poll(fds, 2, poll_timeout_ms(next_tick));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            TKV_LOG_ERROR("poll failed; stopping", TKV_LF_ERR(-errno));
            break;
        }
        if (next_tick && reactor_clock_ns() >= next_tick) {
            hooks->on_tick(hooks->arg);
            next_tick = reactor_clock_ns() + tick_ns;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
                continue;
            if (si.ssi_signo == SIGHUP && hooks && hooks->on_reload) {
                TKV_LOG_INFO("SIGHUP received, reloading");
                hooks->on_reload(hooks->arg);
                continue;
            }
            TKV_LOG_INFO("signal received, stopping", TKV_LF_U64("signal", si.ssi_signo));
            break;
        }
        if (fds[1].revents & POLLIN)
            break;
    }
    close(sfd);
    tkv_reactor_group_stop(g);
    return tkv_reactor_group_wait(g);
}
