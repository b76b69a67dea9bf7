/* Cross-core messages: one ck_ring SPSC ring per ordered core pair, a local
 * overflow FIFO per target when a ring is full, and wake-ups batched to the
 * end of the producer's turn (Seastar smp_message_queue). */
#include <stdlib.h>
#include <string.h>

#include "reactor_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

CK_RING_PROTOTYPE(reactor_task, reactor_task)

/* ck's fences are inline assembly, which ThreadSanitizer cannot see: in
 * the TSan build (TKV_TSAN, tests/tsan.sh) say explicitly that a post
 * publishes what the producer wrote before it and a drain acquires it.
 * The ring slot's own copy inside ck is suppressed (tests/tsan.supp). */
#if defined(TKV_TSAN)
#include <sanitizer/tsan_interface.h>
#define RING_RELEASE(x) __tsan_release(x)
#define RING_ACQUIRE(x) __tsan_acquire(x)
#else
#define RING_RELEASE(x) ((void)(x))
#define RING_ACQUIRE(x) ((void)(x))
#endif

static bool ring_put(struct reactor_xring *x, struct reactor_task *t)
{
    RING_RELEASE(x);
    return ck_ring_enqueue_spsc_reactor_task(&x->ring, x->slots, t);
}

static bool ring_get(struct reactor_xring *x, struct reactor_task *t)
{
    if (!ck_ring_dequeue_spsc_reactor_task(&x->ring, x->slots, t))
        return false;
    RING_ACQUIRE(x);
    return true;
}

int reactor_rings_init(struct tkv_reactor_group *g, uint32_t slots)
{
    size_t n = (size_t)g->n * g->n;
    /* cache-line aligned: calloc's 16-byte alignment is not enough */
    g->xr = aligned_alloc(REACTOR_CACHELINE, n * sizeof(*g->xr));
    if (g->xr == NULL)
        return TKV_ENOMEM;
    memset(g->xr, 0, n * sizeof(*g->xr));
    for (size_t i = 0; i < n; i++) {
        uint32_t from = (uint32_t)(i / g->n), to = (uint32_t)(i % g->n);
        if (from == to)
            continue; /* posting to oneself is a defer */
        ck_ring_init(&g->xr[i].ring, slots);
        g->xr[i].slots = tkv_calloc(slots, sizeof(struct reactor_task));
        if (g->xr[i].slots == NULL)
            return TKV_ENOMEM;
    }
    return 0;
}

void reactor_rings_free(struct tkv_reactor_group *g)
{
    if (g->xr == NULL)
        return;
    for (size_t i = 0; i < (size_t)g->n * g->n; i++)
        tkv_free(g->xr[i].slots);
    free(g->xr);
    g->xr = NULL;
}

static struct reactor_xring *xring(struct tkv_reactor_group *g, uint32_t from, uint32_t to)
{
    return &g->xr[(size_t)from * g->n + to];
}

size_t reactor_rings_drain(struct tkv_reactor *r)
{
    struct tkv_reactor_group *g = r->g;
    size_t total = 0;
    for (uint32_t from = 0; from < g->n; from++) {
        if (from == r->core)
            continue;
        struct reactor_xring *x = xring(g, from, r->core);
        /* at most one ring's worth per turn, so a chatty producer cannot
         * keep this core from its I/O and timers */
        unsigned budget = x->ring.size;
        struct reactor_task t;
        while (budget-- > 0 && ring_get(x, &t)) {
            t.fn(t.arg);
            total++;
        }
    }
    return total;
}

bool reactor_rings_nonempty(const struct tkv_reactor *r)
{
    struct tkv_reactor_group *g = r->g;
    for (uint32_t from = 0; from < g->n; from++) {
        if (from == r->core)
            continue;
        if (ck_ring_size(&xring(g, from, r->core)->ring) > 0)
            return true;
    }
    return false;
}

size_t reactor_rings_depth(const struct tkv_reactor *r)
{
    struct tkv_reactor_group *g = r->g;
    size_t n = 0;
    for (uint32_t from = 0; from < g->n; from++)
        if (from != r->core)
            n += ck_ring_size(&xring(g, from, r->core)->ring);
    return n;
}

static void owe_wake(struct tkv_reactor *r, uint32_t to)
{
    r->wake_owed[to] = 1;
    r->any_wake_owed = true;
}

/* Move as much of the overflow for `to` as fits; true when it is empty. */
static bool flush_overflow(struct tkv_reactor *r, uint32_t to)
{
    struct reactor_taskq *q = &r->overflow[to];
    struct reactor_xring *x = xring(r->g, r->core, to);
    bool moved = false;
    while (q->len > 0) {
        struct reactor_task *t = &q->v[q->head];
        if (!ring_put(x, t))
            break;
        struct reactor_task dummy;
        reactor_taskq_pop(q, &dummy);
        r->overflow_total--;
        moved = true;
    }
    if (moved)
        owe_wake(r, to);
    return q->len == 0;
}

void tkv_reactor_post(struct tkv_reactor *r, uint32_t to, tkv_task_fn fn, void *arg)
{
    REACTOR_OWNER(r);
    tkv_assert(to < r->n_cores);
    if (to == r->core) {
        tkv_reactor_defer(r, fn, arg);
        return;
    }
    r->st.posts++;
    /* order per pair: nothing may overtake what already waits in overflow */
    if (TKV_UNLIKELY(r->overflow[to].len > 0) && !flush_overflow(r, to)) {
        reactor_taskq_push(&r->overflow[to], fn, arg);
        r->overflow_total++;
        r->st.posts_overflowed++;
        return;
    }
    struct reactor_xring *x = xring(r->g, r->core, to);
    struct reactor_task t = {fn, arg};
    if (TKV_UNLIKELY(!ring_put(x, &t))) {
        reactor_taskq_push(&r->overflow[to], fn, arg);
        r->overflow_total++;
        r->st.posts_overflowed++;
    }
    owe_wake(r, to);
}

void reactor_rings_flush(struct tkv_reactor *r)
{
    struct tkv_reactor_group *g = r->g;
    if (r->overflow_total > 0) {
        for (uint32_t to = 0; to < g->n; to++)
            if (r->overflow[to].len > 0)
                flush_overflow(r, to);
    }
    if (!r->any_wake_owed)
        return;
    r->any_wake_owed = false;
    for (uint32_t to = 0; to < g->n; to++) {
        if (r->wake_owed[to]) {
            r->wake_owed[to] = 0;
            r->st.wakeups_sent += reactor_wake_if_sleeping(g->cores[to]);
        }
    }
}

size_t reactor_rings_leftover(struct tkv_reactor_group *g)
{
    size_t n = 0;
    if (g->xr == NULL)
        return 0;
    for (uint32_t from = 0; from < g->n; from++)
        for (uint32_t to = 0; to < g->n; to++)
            if (from != to && g->xr[(size_t)from * g->n + to].slots != NULL)
                n += ck_ring_size(&xring(g, from, to)->ring);
    return n;
}
