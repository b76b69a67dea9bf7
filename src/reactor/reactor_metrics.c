/* Per-core reactor metrics, published by each core into its own slot of the
 * process registry once a second from a timer (the same timer guarantees an
 * idle loop still turns, which the heartbeat read by the watchdog and by
 * /readyz relies on). */
#include <stdio.h>

#include "reactor_private.h"
#include "tkv/mem.h"
#include "tkv/metrics.h"

#define TICK_NS (1000ull * 1000 * 1000)

struct reactor_metrics {
    struct tkv_timer tick;
    struct tkv_counter *turns, *overflowed, *msgs;
    struct tkv_gauge *busy, *depth, *overflow_pending;
    struct tkv_reactor_stats last; /* st at the previous tick */
    uint64_t last_ns, last_sleep_ns;
};

static void publish(struct tkv_reactor *r)
{
    struct reactor_metrics *m = r->metrics;
    uint64_t now = reactor_clock_ns();
    uint64_t elapsed = now - m->last_ns, slept = r->sleep_ns - m->last_sleep_ns;
    if (elapsed > 0) {
        double busy = 1.0 - (double)slept / (double)elapsed;
        tkv_gauge_set(m->busy, busy < 0 ? 0 : busy > 1 ? 1 : busy);
    }
    tkv_counter_add(m->turns, r->st.turns - m->last.turns);
    tkv_counter_add(m->overflowed, r->st.posts_overflowed - m->last.posts_overflowed);
    tkv_counter_add(m->msgs, r->st.msgs_run - m->last.msgs_run);
    tkv_gauge_set(m->depth, (double)reactor_rings_depth(r));
    tkv_gauge_set(m->overflow_pending, (double)r->overflow_total);
    m->last = r->st;
    m->last_ns = now;
    m->last_sleep_ns = r->sleep_ns;
}

static void on_tick(struct tkv_timer *t)
{
    struct tkv_reactor *r = t->data;
    publish(r);
    if (!r->stopping)
        tkv_timer_start(r, t, TICK_NS);
}

void reactor_metrics_start(struct tkv_reactor *r)
{
    struct tkv_metrics *reg = tkv_metrics_default();
    struct reactor_metrics *m = tkv_xcalloc(1, sizeof(*m));
    char core[16];
    snprintf(core, sizeof(core), "%u", (unsigned)r->core);
    const char *labels[] = {"core", core, NULL};

    tkv_metrics_set_thread_slot(r->core);
    m->turns = tkv_metrics_counter(reg, "tinykv_reactor_loop_turns_total",
                                   "Event-loop turns of each core.", labels);
    m->msgs = tkv_metrics_counter(reg, "tinykv_reactor_xcore_messages_total",
                                  "Cross-core messages run on each core.", labels);
    m->overflowed = tkv_metrics_counter(
        reg, "tinykv_reactor_xcore_overflow_total",
        "Cross-core posts from each core that found the ring full and waited in the overflow "
        "queue.",
        labels);
    m->busy = tkv_metrics_gauge(reg, "tinykv_reactor_busy_ratio",
                                "Share of the last second each core's event loop spent working "
                                "(not blocked in the kernel), 0..1.",
                                labels);
    m->depth = tkv_metrics_gauge(reg, "tinykv_reactor_xcore_ring_depth",
                                 "Cross-core messages waiting in the rings into each core.",
                                 labels);
    m->overflow_pending = tkv_metrics_gauge(
        reg, "tinykv_reactor_xcore_overflow_pending",
        "Cross-core messages each core holds in its overflow queue (rings full).", labels);
    m->last_ns = reactor_clock_ns();
    r->metrics = m;
    tkv_timer_init(&m->tick, on_tick, r);
    tkv_timer_start(r, &m->tick, TICK_NS);
}

void reactor_metrics_stop(struct tkv_reactor *r)
{
    struct reactor_metrics *m = r->metrics;
    if (!m)
        return;
    tkv_timer_stop(r, &m->tick);
    publish(r);
    tkv_gauge_set(m->busy, 0);
    tkv_gauge_set(m->depth, 0);
    tkv_gauge_set(m->overflow_pending, 0);
    tkv_free(m);
    r->metrics = NULL;
    tkv_metrics_set_thread_slot(UINT32_MAX);
}
