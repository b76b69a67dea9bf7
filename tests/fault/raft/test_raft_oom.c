/* Failing-allocator sweeps (canonical/raft heap fault, nghttp2 failmalloc):
 * fail the k-th allocation (once, or a burst) during election,
 * replication, reads, snapshot catch-up, membership change and leader
 * transfer. Nothing may crash or leak, every safety invariant must hold,
 * and once memory is back the group must make progress. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heap_fault.h"
#include "raft_fixture.h"
#include "tkv/err.h"

static struct rf_opts opts(void)
{
    struct rf_opts o = rf_default_opts();
    o.tick_interval = 10;
    o.net_min = 1;
    o.net_max = 3;
    o.disk_max = 1;
    o.pre_vote = true;
    o.check_quorum = true;
    o.max_inflight = 4;
    o.bootstrap_snapshot = true;
    return o;
}

static uint64_t wait_leader(struct rf_cluster *c, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        rf_run(c, 10);
        uint64_t l = rf_leader(c);
        if (l)
            return l;
    }
    return 0;
}

static void scenario(struct rf_cluster *c)
{
    uint64_t l = wait_leader(c, 100);
    for (uint64_t i = 0; i < 20 && l; i++) {
        rf_propose(c, l, &i, sizeof(i));
        rf_run(c, 5);
    }
    rf_run(c, 30);
    l = rf_leader(c);
    if (l) {
        rf_read(c, l, NULL);
        rf_read(c, l % 3 + 1, NULL);
    }
    rf_isolate(c, 3);
    for (uint64_t i = 100; i < 120 && l; i++)
        rf_propose(c, l, &i, sizeof(i));
    rf_run(c, 30);
    if ((l = rf_leader(c)) != 0)
        rf_compact(c, l);
    rf_heal(c);
    rf_run(c, 60);
    if ((l = rf_leader(c)) != 0)
        rf_propose_conf(c, l, TKV_RAFT_CONF_ADD_NODE, 4);
    rf_run(c, 80);
    if ((l = rf_leader(c)) != 0) {
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TRANSFER_LEADER, .u.target = l % 3 + 1};
        rf_node_step(c, l, &ev);
    }
    rf_run(c, 80);
}

/* With memory back, a fresh proposal must reach every voter. */
static bool progress(struct rf_cluster *c)
{
    rf_heal(c);
    for (uint64_t id = 1; id <= c->n; id++)
        if (rf_node(c, id)->exists && !rf_node(c, id)->alive)
            rf_restart(c, id);
    tkv_index target = 0;
    uint64_t tl = 0;
    for (int round = 0; round < 200 && !c->failed; round++) {
        rf_run(c, 50);
        uint64_t l = rf_leader(c);
        if (!l)
            continue;
        struct tkv_raft_status s;
        tkv_raft_status(rf_raft(c, l), &s);
        if (!target || l != tl) {
            uint64_t v = 0xabcdef;
            if (rf_propose(c, l, &v, sizeof(v)) == 0) {
                target = s.last_index + 1;
                tl = l;
            }
            continue;
        }
        bool all = true;
        for (uint32_t i = 0; i < s.conf.n_voters; i++) {
            struct rf_node *nd = rf_node(c, s.conf.voters[i]);
            all = all && nd->alive && nd->applied >= target;
        }
        if (all)
            return true;
    }
    return false;
}

static uint64_t count_allocs(void)
{
    struct rf_cluster c;
    struct rf_opts o = opts();
    rf_init(&c, 3, &o, 42);
    tkv_heap_fault_install();
    scenario(&c);
    uint64_t n = tkv_heap_fault_calls();
    tkv_heap_fault_uninstall();
    if (getenv("OOM_DEBUG"))
        fprintf(stderr, "max_commit %llu leader %llu n3 snap %llu n4 applied %llu\n",
                (unsigned long long)c.max_commit, (unsigned long long)rf_leader(&c),
                (unsigned long long)rf_node(&c, 3)->ms.snap.index,
                (unsigned long long)rf_node(&c, 4)->applied);
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
    return n;
}

static void sweep(int repeat)
{
    uint64_t total = count_allocs();
    cr_assert_gt(total, 100, "scenario allocates only %llu times?", (unsigned long long)total);
    uint64_t stride = total / 300 + 1;
    if (getenv("OOM_DEBUG"))
        fprintf(stderr, "total allocations %llu\n", (unsigned long long)total);
    uint64_t failed_runs = 0;
    for (uint64_t k = 0; k < total; k += stride) {
        struct rf_cluster c;
        struct rf_opts o = opts();
        rf_init(&c, 3, &o, 42);
        tkv_heap_fault_install();
        tkv_heap_fault_config((int)k, repeat);
        scenario(&c);
        if (tkv_heap_fault_failures())
            failed_runs++;
        tkv_heap_fault_pause();
        bool ok = !c.failed && progress(&c);
        tkv_heap_fault_uninstall();
        cr_assert(!c.failed, "allocation %llu failing (x%d): %s", (unsigned long long)k, repeat,
                  c.err);
        cr_assert(ok, "allocation %llu failing (x%d): no progress once memory came back",
                  (unsigned long long)k, repeat);
        rf_close(&c);
    }
    cr_assert_gt(failed_runs, 0, "no allocation was ever failed");
}

Test(raft_oom, fail_one_allocation_sweep, .timeout = 160)
{
    sweep(1);
}

Test(raft_oom, fail_burst_of_allocations_sweep, .timeout = 160)
{
    sweep(25);
}

Test(raft_oom, init_fails_cleanly)
{
    struct raft_memstore ms;
    raft_memstore_init(&ms);
    uint64_t peers[] = {1, 2, 3};
    struct tkv_raft_config cfg = {.id = 1, .election_tick = 10, .heartbeat_tick = 1,
                                  .storage = raft_memstore_storage(&ms), .peers = peers,
                                  .n_peers = 3};
    tkv_heap_fault_install();
    tkv_heap_fault_config(0, 1);
    struct tkv_raft *r = NULL;
    cr_assert_eq(tkv_raft_init(&cfg, &r), TKV_ENOMEM);
    cr_assert_eq(tkv_raft_init(&cfg, &r), 0);
    tkv_heap_fault_uninstall();
    tkv_raft_close(r);
    raft_memstore_free(&ms);
}

Test(raft_oom, failed_proposal_leaves_log_unchanged)
{
    struct rf_cluster c;
    struct rf_opts o = rf_default_opts();
    rf_init(&c, 1, &o, 1);
    rf_campaign(&c, 1);
    struct tkv_raft_status before, after;
    tkv_raft_status(rf_raft(&c, 1), &before);
    struct tkv_raft_buf *b = rf_buf("x", 1);
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE};
    ev.u.propose.data = &b;
    ev.u.propose.n = 1;
    /* fail each allocation of the propose path in turn until it succeeds */
    int rv = TKV_ENOMEM;
    int k;
    for (k = 0; k < 50 && rv == TKV_ENOMEM; k++) {
        tkv_heap_fault_install();
        tkv_heap_fault_config(k, 1);
        struct tkv_raft_update up;
        rv = tkv_raft_step(rf_raft(&c, 1), &ev, &up);
        tkv_heap_fault_uninstall();
        while (up.flags) /* this test looks only at the log */
            tkv_raft_advance(rf_raft(&c, 1), &up);
        tkv_raft_status(rf_raft(&c, 1), &after);
        if (rv == TKV_ENOMEM)
            cr_assert_eq(after.last_index, before.last_index, "ENOMEM but the entry was appended");
        else
            cr_assert_eq(rv, 0);
    }
    cr_assert_eq(rv, 0);
    cr_assert_eq(after.last_index, before.last_index + 1);
    tkv_raft_buf_unref(b);
    rf_close(&c);
}
