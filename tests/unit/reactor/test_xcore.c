/* Cross-core posts between two real cores: a windowless burst through a
 * tiny ring (overflow path) with per-pair order and "messages return home",
 * strict ping-pong round trips, and a sleeping core woken by a post. */
#include <stdlib.h>

#include "reactor_harness.h"

struct msg {
    uint64_t seq;
    uint32_t from;
    uint32_t handled_on;
};

struct xstate {
    struct tkv_reactor *r[2];
    uint64_t n_msgs;
    uint64_t next_expect[2]; /* at the receiver, per sender */
    uint64_t returned[2];    /* back at home, per sender */
    uint64_t next_return[2];
    _Atomic int ready;
    struct tkv_reactor_stats st[2];
};
static struct xstate X;

static void stop_all(void)
{
    tkv_reactor_group_stop(tkv_reactor_group_of(tkv_reactor_self()));
}

static void back_home(void *arg)
{
    struct msg *m = arg;
    uint32_t me = tkv_core_self();
    CHECK(m->from == me, "message of core %u returned to core %u", m->from, me);
    CHECK(m->seq == X.next_return[me], "core %u: reply %llu returned, want %llu", me,
          (unsigned long long)m->seq, (unsigned long long)X.next_return[me]);
    CHECK(m->handled_on == 1 - me, "message handled on core %u", m->handled_on);
    X.next_return[me] = m->seq + 1;
    free(m); /* freed by the core that allocated it */
    if (++X.returned[me] == X.n_msgs && X.returned[1 - me] == X.n_msgs)
        stop_all();
}

static void at_peer(void *arg)
{
    struct msg *m = arg;
    uint32_t me = tkv_core_self();
    CHECK(m->seq == X.next_expect[m->from], "core %u got seq %llu from %u, want %llu", me,
          (unsigned long long)m->seq, m->from, (unsigned long long)X.next_expect[m->from]);
    X.next_expect[m->from] = m->seq + 1;
    m->handled_on = me;
    tkv_reactor_post(tkv_reactor_self(), m->from, back_home, m);
}

static void burst(void *arg)
{
    (void)arg;
    uint32_t me = tkv_core_self();
    for (uint64_t i = 0; i < X.n_msgs; i++) {
        struct msg *m = malloc(sizeof(*m));
        *m = (struct msg){.seq = i, .from = me};
        tkv_reactor_post(tkv_reactor_self(), 1 - me, at_peer, m);
    }
}

static int burst_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    X.r[core] = r;
    CHECK(tkv_reactor_n_cores(r) == 2, "n_cores");
    /* both cores fire at once, so both directions overflow concurrently */
    tkv_reactor_defer(r, burst, NULL);
    return 0;
}

static void stats_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    tkv_reactor_get_stats(r, &X.st[core]);
}

Test(reactor_xcore, burst_through_tiny_ring_overflows_in_order, .timeout = 60)
{
    X.n_msgs = 100000;
    cr_assert_eq(h_run(2, 16, burst_init, stats_fini, NULL), 0);
    for (int c = 0; c < 2; c++) {
        cr_assert_eq(X.next_expect[c], X.n_msgs, "core %d's messages: %llu arrived of %llu", c,
                     (unsigned long long)X.next_expect[c], (unsigned long long)X.n_msgs);
        cr_assert_eq(X.returned[c], X.n_msgs, "core %d: %llu returned home", c,
                     (unsigned long long)X.returned[c]);
    }
}

/* ---- strict ping-pong: every round trip needs a wake-up of a core that
 * had nothing else to do ---- */

static uint64_t pp_rounds, pp_done;

static void pong(void *arg);

static void ping(void *arg)
{
    struct msg *m = arg;
    CHECK(tkv_core_self() == 1, "ping ran on core %u", tkv_core_self());
    CHECK(m->seq == pp_done, "ping %llu, want %llu", (unsigned long long)m->seq,
          (unsigned long long)pp_done);
    tkv_reactor_post(tkv_reactor_self(), 0, pong, m);
}

static void pong(void *arg)
{
    struct msg *m = arg;
    if (++pp_done == pp_rounds) {
        free(m);
        stop_all();
        return;
    }
    m->seq = pp_done;
    tkv_reactor_post(tkv_reactor_self(), 1, ping, m);
}

static int pp_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    if (core == 0) {
        struct msg *m = calloc(1, sizeof(*m));
        tkv_reactor_post(r, 1, ping, m);
    }
    return 0;
}

Test(reactor_xcore, ping_pong_round_trips, .timeout = 60)
{
    pp_rounds = 20000;
    cr_assert_eq(h_run(2, 0, pp_init, NULL, NULL), 0);
    cr_assert_eq(pp_done, pp_rounds, "%llu round trips of %llu", (unsigned long long)pp_done,
                 (unsigned long long)pp_rounds);
}

/* ---- a core asleep in its wait (no timers, no I/O) is woken by a post ---- */

static uint64_t post_at, seen_at;
static struct tkv_timer post_timer, fallback_timer;

static void woken(void *arg)
{
    (void)arg;
    seen_at = h_mono_ns();
    stop_all();
}

static void do_post(struct tkv_timer *t)
{
    (void)t;
    post_at = h_mono_ns();
    tkv_reactor_post(tkv_reactor_self(), 1, woken, NULL);
}

static void fallback(struct tkv_timer *t)
{
    (void)t;
    stop_all(); /* the post was slept through: the test fails below */
}

static int sleep_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    if (core == 0) {
        /* long enough for core 1 to be blocked in io_uring_wait */
        tkv_timer_init(&post_timer, do_post, NULL);
        tkv_timer_start(r, &post_timer, 100 * MS);
        tkv_timer_init(&fallback_timer, fallback, NULL);
        tkv_timer_start(r, &fallback_timer, 5000 * MS);
    }
    return 0;
}

Test(reactor_xcore, sleeping_core_is_woken_by_post, .timeout = 20)
{
    cr_assert_eq(h_run(2, 0, sleep_init, stats_fini, NULL), 0);
    cr_assert_gt(X.st[0].wakeups_sent, 0, "core 1 was never asleep when posted to");
    cr_assert_gt(X.st[1].sleeps, 0);
    cr_assert_neq(seen_at, 0, "core 1 never ran the posted function");
    cr_assert_lt(seen_at - post_at, 1000 * MS, "post took %llu ms to run",
                 (unsigned long long)((seen_at - post_at) / MS));
}
