/* Timers (ordering, re-arm, stop, restart), defer, before-sleep hooks and
 * the loop's turn order, on a single real core. */
#include <signal.h>
#include <unistd.h>

#include "reactor_harness.h"

struct tstate {
    struct tkv_reactor *r;
    struct tkv_timer t[8];
    int order[16];
    int n_order;
    uint64_t start_ns, fired_ns[8];
    int periodic_left, periodic_fired;
    int n_events;
    char log[64];
    int n_log;
};

static struct tstate ts;

static void record(struct tkv_timer *t)
{
    int id = (int)(intptr_t)t->data;
    ts.order[ts.n_order++] = id;
    ts.fired_ns[id] = h_mono_ns();
    CHECK(!tkv_timer_armed(t), "timer %d still armed inside its callback", id);
}

static void finish(struct tkv_timer *t)
{
    (void)t;
    tkv_reactor_group_stop(tkv_reactor_group_of(ts.r));
}

static int order_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    ts.r = r;
    ts.start_ns = h_mono_ns();
    static const uint64_t delays[] = {30 * MS, 10 * MS, 20 * MS, 0};
    for (int i = 0; i < 4; i++) {
        tkv_timer_init(&ts.t[i], record, (void *)(intptr_t)i);
        tkv_timer_start(r, &ts.t[i], delays[i]);
        CHECK(tkv_timer_armed(&ts.t[i]), "timer %d not armed after start", i);
    }
    tkv_timer_init(&ts.t[7], finish, NULL);
    tkv_timer_start(r, &ts.t[7], 60 * MS);
    return 0;
}

Test(reactor_timer, fire_in_deadline_order, .timeout = 10)
{
    cr_assert_eq(h_run(1, 0, order_init, NULL, NULL), 0);
    cr_assert_eq(ts.n_order, 4, "fired %d timers, want 4", ts.n_order);
    static const int want[] = {3, 1, 2, 0};
    static const uint64_t min_ms[] = {30, 10, 20, 0};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ts.order[i], want[i], "position %d: timer %d, want %d", i, ts.order[i],
                     want[i]);
    for (int i = 0; i < 4; i++)
        cr_assert_geq(ts.fired_ns[i] - ts.start_ns, min_ms[i] ? min_ms[i] * MS - MS : 0,
                      "timer %d fired after %llu ns, before its %llu ms delay", i,
                      (unsigned long long)(ts.fired_ns[i] - ts.start_ns),
                      (unsigned long long)min_ms[i]);
}

static void periodic(struct tkv_timer *t)
{
    ts.periodic_fired++;
    if (--ts.periodic_left > 0)
        tkv_timer_start(ts.r, t, 2 * MS);
    else
        tkv_reactor_group_stop(tkv_reactor_group_of(ts.r));
}

static void must_not_fire(struct tkv_timer *t)
{
    CHECK(false, "stopped timer %d fired", (int)(intptr_t)t->data);
}

static void restarted(struct tkv_timer *t)
{
    (void)t;
    ts.fired_ns[5] = h_mono_ns();
    ts.n_events++;
}

static int rearm_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    ts.r = r;
    ts.start_ns = h_mono_ns();
    ts.periodic_left = 5;
    tkv_timer_init(&ts.t[0], periodic, NULL);
    tkv_timer_start(r, &ts.t[0], 2 * MS);

    tkv_timer_init(&ts.t[1], must_not_fire, (void *)(intptr_t)1);
    tkv_timer_start(r, &ts.t[1], 1 * MS);
    tkv_timer_stop(r, &ts.t[1]);
    CHECK(!tkv_timer_armed(&ts.t[1]), "timer armed after stop");
    tkv_timer_stop(r, &ts.t[1]); /* stopping an idle timer is a no-op */

    /* restarting an armed timer moves its deadline; it fires once */
    tkv_timer_init(&ts.t[5], restarted, NULL);
    tkv_timer_start(r, &ts.t[5], 1 * MS);
    tkv_timer_start(r, &ts.t[5], 8 * MS);
    return 0;
}

Test(reactor_timer, rearm_stop_restart, .timeout = 10)
{
    cr_assert_eq(h_run(1, 0, rearm_init, NULL, NULL), 0);
    cr_assert_eq(ts.periodic_fired, 5, "periodic timer fired %d times, want 5", ts.periodic_fired);
    cr_assert_eq(ts.n_events, 1, "restarted timer fired %d times, want 1", ts.n_events);
    cr_assert_geq(ts.fired_ns[5] - ts.start_ns, 7 * MS, "restarted timer kept its old deadline");
}

/* ---- defer, before-sleep, turn order ---- */

static void note(void *arg)
{
    ts.log[ts.n_log++] = (char)(intptr_t)arg;
}

static void self_requeue(void *arg)
{
    (void)arg;
    ts.log[ts.n_log++] = 'R';
    if (ts.n_events++ < 2)
        tkv_reactor_defer(ts.r, self_requeue, NULL);
}

static void before_sleep(void *arg)
{
    (void)arg;
    ts.log[ts.n_log++] = '|';
    /* what a hook defers (a group commit's replies) runs in the same turn */
    if (ts.n_log < 8)
        tkv_reactor_defer(ts.r, note, (void *)(intptr_t)'h');
    if (ts.n_events == 3)
        tkv_reactor_group_stop(tkv_reactor_group_of(ts.r));
}

static void timer_note(struct tkv_timer *t)
{
    note(t->data);
}

static int defer_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    ts.r = r;
    CHECK(tkv_reactor_self() == r, "tkv_reactor_self() is not the running core");
    CHECK(tkv_core_self() == 0, "tkv_core_self() = %u", tkv_core_self());
    CHECK(tkv_reactor_n_cores(r) == 1, "n_cores");
    tkv_reactor_defer(r, note, (void *)(intptr_t)'a');
    tkv_reactor_defer(r, note, (void *)(intptr_t)'b');
    tkv_reactor_defer(r, self_requeue, NULL);
    tkv_reactor_defer(r, note, (void *)(intptr_t)'c');
    tkv_timer_init(&ts.t[0], timer_note, (void *)(intptr_t)'T');
    tkv_timer_start(r, &ts.t[0], 0);
    tkv_reactor_on_before_sleep(r, before_sleep, NULL);
    return 0;
}

Test(reactor_task, defer_fifo_and_turn_order, .timeout = 10)
{
    cr_assert_eq(tkv_core_self(), TKV_CORE_NONE);
    cr_assert_null(tkv_reactor_self());
    cr_assert_eq(h_run(1, 0, defer_init, NULL, NULL), 0);
    ts.log[ts.n_log] = '\0';
    /* turn 1: deferred a b R c, then the due timer T, then the hook, then
     * what the hook deferred (h, same turn: a reply produced by a group
     * commit must not wait for the next turn's commit); the re-deferred R
     * runs one per turn, never inside the turn that queued it */
    cr_assert(strncmp(ts.log, "abRcT|hR|R|", 11) == 0,
              "turn order log: %s (want abRcT|hR|R|: h deferred by the hook must run right after "
              "it, before the next turn)",
              ts.log);
}

#ifdef TKV_DEBUG
/* ---- debug builds catch a call from a thread that does not own the core ---- */

static _Atomic(struct tkv_reactor *) foreign_r;

static int foreign_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    atomic_store(&foreign_r, r);
    return 0;
}

Test(reactor_task, call_off_core_aborts_in_debug, .signal = SIGABRT, .timeout = 10)
{
    h_start(1, 0, foreign_init, NULL, NULL);
    while (atomic_load(&foreign_r) == NULL)
        usleep(1000);
    tkv_reactor_defer(atomic_load(&foreign_r), NULL, NULL); /* main thread: must abort */
}
#endif

/* ---- before-sleep hooks the caller owns and removes ---- */

static struct {
    struct tkv_reactor_hook a, b, c;
    char log[64];
    int n_log, turns;
} hk;

static void hook_note(void *arg)
{
    char id = (char)(intptr_t)arg;
    hk.log[hk.n_log++] = id;
    if (id == 'a' && hk.turns == 1)
        tkv_reactor_hook_remove(ts.r, &hk.b); /* a later hook, this very pass */
    if (id == 'c' && hk.turns == 2)
        tkv_reactor_hook_remove(ts.r, &hk.c); /* itself */
    if (id == 'a' && hk.turns == 2)
        tkv_reactor_hook_add(ts.r, &hk.b); /* back, at the end */
}

static void hook_turn(struct tkv_timer *t)
{
    hk.log[hk.n_log++] = '|';
    if (++hk.turns == 4) {
        tkv_reactor_hook_remove(ts.r, &hk.a);
        tkv_reactor_hook_remove(ts.r, &hk.b);
        tkv_reactor_group_stop(tkv_reactor_group_of(ts.r));
        return;
    }
    tkv_timer_start(ts.r, t, 0);
}

static int hook_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    ts.r = r;
    tkv_reactor_hook_init(&hk.a, hook_note, (void *)(intptr_t)'a');
    tkv_reactor_hook_init(&hk.b, hook_note, (void *)(intptr_t)'b');
    tkv_reactor_hook_init(&hk.c, hook_note, (void *)(intptr_t)'c');
    tkv_reactor_hook_add(r, &hk.a);
    tkv_reactor_hook_add(r, &hk.b);
    tkv_reactor_hook_add(r, &hk.c);
    tkv_reactor_hook_add(r, &hk.c); /* already linked: no-op */
    tkv_timer_init(&ts.t[0], hook_turn, NULL);
    tkv_timer_start(r, &ts.t[0], 0);
    return 0;
}

Test(reactor_task, before_sleep_hooks_add_and_remove, .timeout = 10)
{
    cr_assert_eq(h_run(1, 0, hook_init, NULL, NULL), 0);
    hk.log[hk.n_log] = '\0';
    /* Each turn: the timer ('|', step 4), then the hooks (step 5). Turn 1:
     * a removes b before it runs -> "ac"; turn 2: a re-adds b at the end
     * (it runs in the same pass, after c), c removes itself -> "acb"; turn
     * 3: "ab"; turn 4 the timer removes a and b: nothing runs again. */
    cr_assert_str_eq(hk.log, "|ac|acb|ab|", "hook log: %s", hk.log);
    cr_assert(!hk.a.linked && !hk.b.linked && !hk.c.linked);
}
