/* The per-core run loop and its turn order (see include/tkv/reactor.h), plus
 * the core-local task queue behind defer, hooks and overflow. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "reactor_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

uint64_t reactor_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void reactor_taskq_push(struct reactor_taskq *q, tkv_task_fn fn, void *arg)
{
    if (q->len == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 64;
        struct reactor_task *nv = tkv_xmalloc(ncap * sizeof(*nv));
        /* unwrap the circular buffer into the new array */
        for (size_t i = 0; i < q->len; i++)
            nv[i] = q->v[(q->head + i) & (q->cap - 1)];
        tkv_free(q->v);
        q->v = nv;
        q->cap = ncap;
        q->head = 0;
    }
    q->v[(q->head + q->len) & (q->cap - 1)] = (struct reactor_task){fn, arg};
    q->len++;
}

bool reactor_taskq_pop(struct reactor_taskq *q, struct reactor_task *out)
{
    if (q->len == 0)
        return false;
    *out = q->v[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return true;
}

void reactor_taskq_free(struct reactor_taskq *q)
{
    tkv_free(q->v);
    memset(q, 0, sizeof(*q));
}

void tkv_reactor_defer(struct tkv_reactor *r, tkv_task_fn fn, void *arg)
{
    REACTOR_OWNER(r);
    reactor_taskq_push(r->in_hooks ? &r->after_hooks : &r->deferred, fn, arg);
}

void tkv_reactor_hook_init(struct tkv_reactor_hook *h, tkv_task_fn fn, void *arg)
{
    *h = (struct tkv_reactor_hook){.fn = fn, .arg = arg};
}

void tkv_reactor_hook_add(struct tkv_reactor *r, struct tkv_reactor_hook *h)
{
    REACTOR_OWNER(r);
    if (h->linked)
        return;
    h->linked = true;
    h->next = NULL;
    h->prev = r->bs_tail;
    if (r->bs_tail)
        r->bs_tail->next = h;
    else
        r->bs_head = h;
    r->bs_tail = h;
    /* added during step 5 after the pass reached the end: runs next turn */
}

void tkv_reactor_hook_remove(struct tkv_reactor *r, struct tkv_reactor_hook *h)
{
    REACTOR_OWNER(r);
    if (!h->linked)
        return;
    if (r->bs_next == h)
        r->bs_next = h->next;
    if (h->prev)
        h->prev->next = h->next;
    else
        r->bs_head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        r->bs_tail = h->prev;
    h->prev = h->next = NULL;
    h->linked = false;
}

void tkv_reactor_on_before_sleep(struct tkv_reactor *r, tkv_task_fn fn, void *arg)
{
    REACTOR_OWNER(r);
    struct reactor_owned_hook *oh = tkv_xcalloc(1, sizeof(*oh));
    tkv_reactor_hook_init(&oh->hook, fn, arg);
    oh->next = r->owned_hooks;
    r->owned_hooks = oh;
    tkv_reactor_hook_add(r, &oh->hook);
}

void reactor_hooks_free(struct tkv_reactor *r)
{
    /* Callers' hooks may be gone already: forget them without touching
     * them (their owners' fini ended their use). */
    r->bs_head = r->bs_tail = r->bs_next = NULL;
    while (r->owned_hooks) {
        struct reactor_owned_hook *oh = r->owned_hooks;
        r->owned_hooks = oh->next;
        tkv_free(oh);
    }
}

/* Step 5. bs_next lets a hook remove itself or any other hook. */
static void run_before_sleep(struct tkv_reactor *r)
{
    for (struct tkv_reactor_hook *h = r->bs_head; h; h = r->bs_next) {
        r->bs_next = h->next;
        h->fn(h->arg);
    }
    r->bs_next = NULL;
}

void tkv_reactor_on_stop(struct tkv_reactor *r, tkv_task_fn fn, void *arg)
{
    REACTOR_OWNER(r);
    /* registered after the stop began (a connection accepted meanwhile):
     * it must still run, so run it as soon as possible */
    if (r->stopping)
        reactor_taskq_push(&r->deferred, fn, arg);
    else
        reactor_taskq_push(&r->on_stop, fn, arg);
}

uint32_t tkv_reactor_core_id(const struct tkv_reactor *r)
{
    return r->core;
}

uint32_t tkv_reactor_n_cores(const struct tkv_reactor *r)
{
    return r->n_cores;
}

bool tkv_reactor_stopping(const struct tkv_reactor *r)
{
    return r->stopping;
}

void tkv_reactor_get_stats(const struct tkv_reactor *r, struct tkv_reactor_stats *out)
{
    *out = r->st;
}

uint64_t tkv_now_ns(const struct tkv_reactor *r)
{
    return r->now_ns;
}

/* Step 3: only the tasks queued before this step started, so a task that
 * re-defers itself yields to I/O and timers instead of spinning here. */
static void run_deferred(struct tkv_reactor *r)
{
    size_t n = r->deferred.len;
    struct reactor_task t;
    while (n-- > 0 && reactor_taskq_pop(&r->deferred, &t))
        t.fn(t.arg);
}

/* Step 5b: what the hooks deferred (typically "flush this connection" after
 * a group commit answered its calls) runs now, so its sends are submitted
 * at step 6 of THIS turn. Without it they would run at step 3 of the next
 * turn and be submitted only after that turn's hooks -- one blocking commit
 * later. Tasks these tasks defer go to the ordinary queue (next turn). */
static void run_after_hooks(struct tkv_reactor *r)
{
    struct reactor_task t;
    while (reactor_taskq_pop(&r->after_hooks, &t))
        t.fn(t.arg);
}

static void begin_stop(struct tkv_reactor *r)
{
    struct reactor_task t;
    r->stopping = true;
    r->cancel_at_ns = r->now_ns + REACTOR_GRACE_NS;
    /* hooks may register more hooks; they run in this same pass */
    while (reactor_taskq_pop(&r->on_stop, &t))
        t.fn(t.arg);
}

/* Nothing of this core's own is left: no I/O in flight, no task queued, no
 * message waiting to leave. */
static bool locally_idle(const struct tkv_reactor *r)
{
    return r->user_inflight == 0 && r->deferred.len == 0 && r->overflow_total == 0 &&
           !reactor_rings_nonempty(r);
}

/* While stopping, a core leaves only when it and every other core have
 * been idle, so replies to messages still travelling find their home core
 * alive ("messages return home"). */
static bool may_exit(struct tkv_reactor *r)
{
    struct tkv_reactor_group *g = r->g;
    if (!locally_idle(r))
        return false;
    if (!r->marked_idle) {
        r->marked_idle = true;
        if (atomic_fetch_add(&g->n_idle, 1) + 1 == g->n) {
            for (uint32_t i = 0; i < g->n; i++)
                if (i != r->core)
                    reactor_wake_kick(g->cores[i]);
        }
    }
    return atomic_load(&g->n_idle) == g->n;
}

/* Step 6: submit queued SQEs and block until a CQE, the next timer or a
 * wake-up. The sleeping flag is raised BEFORE the last look at the rings
 * (reactor_wake.c), so a post either is seen here or kicks the eventfd. */
static void submit_and_wait(struct tkv_reactor *r)
{
    bool can_block = r->deferred.len == 0;
    uint64_t deadline = reactor_timers_next(r);
    if (r->overflow_total > 0) {
        uint64_t retry = reactor_clock_ns() + REACTOR_OVERFLOW_RETRY_NS;
        if (retry < deadline)
            deadline = retry;
    }
    if (r->stopping && r->user_inflight > 0) {
        if (r->cancel_at_ns < deadline)
            deadline = r->cancel_at_ns;
    }
    if (can_block && io_uring_cq_ready(&r->ring) > 0)
        can_block = false;
    if (can_block && !reactor_wake_prepare_sleep(r))
        can_block = false;

    if (!can_block) {
        reactor_uring_submit_nowait(r);
        return;
    }

    struct io_uring_cqe *cqe;
    int rv;
    uint64_t slept_at = reactor_clock_ns();
    r->st.sleeps++;
    if (deadline == UINT64_MAX) {
        rv = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, NULL, NULL);
    } else {
        uint64_t now = reactor_clock_ns();
        uint64_t d = deadline > now ? deadline - now : 0;
        struct __kernel_timespec ts = {.tv_sec = (long long)(d / 1000000000ull),
                                       .tv_nsec = (long long)(d % 1000000000ull)};
        if (d == 0) {
            reactor_uring_submit_nowait(r);
            rv = 0;
        } else {
            rv = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
        }
    }
    reactor_wake_end_sleep(r);
    r->sleep_ns += reactor_clock_ns() - slept_at;
    if (rv < 0 && rv != -ETIME && rv != -EINTR && rv != -EAGAIN && rv != -EBUSY)
        TKV_PANIC("io_uring wait: %s", strerror(-rv));
}

void reactor_loop_run(struct tkv_reactor *r)
{
    struct tkv_reactor_group *g = r->g;
    for (;;) {
        r->now_ns = reactor_clock_ns();
        r->st.turns++;
        atomic_store_explicit(&r->heartbeat_ns, r->now_ns, memory_order_relaxed);
        if (TKV_UNLIKELY(!r->stopping && atomic_load_explicit(&g->stop, memory_order_acquire)))
            begin_stop(r);

        r->st.msgs_run += reactor_rings_drain(r);      /* 1 */
        r->st.cqes += reactor_uring_reap(r);           /* 2 */
        run_deferred(r);                               /* 3 */
        reactor_timers_fire(r);                        /* 4 */
        r->in_hooks = true;
        run_before_sleep(r); /* 5 */
        r->in_hooks = false;
        run_after_hooks(r); /* 5b */
        reactor_rings_flush(r);

        if (r->stopping) {
            if (may_exit(r))
                break;
            if (r->user_inflight > 0 && r->now_ns >= r->cancel_at_ns) {
                TKV_LOG_WARN("grace period over, cancelling operations",
                             TKV_LF_U64("core", r->core), TKV_LF_U64("inflight", r->user_inflight));
                reactor_uring_cancel_all(r);
                /* again later if the owners keep re-submitting */
                r->cancel_at_ns = r->now_ns + REACTOR_GRACE_NS / 20;
            }
        }
        submit_and_wait(r); /* 6 */
    }
}
