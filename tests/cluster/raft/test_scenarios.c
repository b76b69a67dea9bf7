/* Named scenarios for what tinykv adds beyond TinyKV's raft: pre-vote,
 * check-quorum, ReadIndex and lease reads (no stale read from a deposed
 * leader), removing the leader, removed nodes, flow control. Virtual time. */
#include <criterion/criterion.h>
#include <string.h>

#include "raft_fixture.h"
#include "tkv/err.h"

static struct rf_opts vt_opts(void)
{
    struct rf_opts o = rf_default_opts();
    o.tick_interval = 10;
    o.net_min = 1;
    o.net_max = 3;
    o.disk_min = 0;
    o.disk_max = 1;
    return o;
}

static struct tkv_raft_status stat_of(struct rf_cluster *c, uint64_t id)
{
    struct tkv_raft_status s;
    tkv_raft_status(rf_raft(c, id), &s);
    return s;
}

static uint64_t run_until_leader(struct rf_cluster *c)
{
    for (int i = 0; i < 200 && !c->failed; i++) {
        rf_run(c, 10);
        uint64_t l = rf_leader(c);
        if (l && stat_of(c, l).hs.commit > 0)
            return l;
    }
    cr_assert(!c->failed, "%s", c->err);
    cr_assert_fail("no leader elected");
    return 0;
}

static uint64_t other_than(uint64_t a, uint64_t b, size_t n)
{
    for (uint64_t i = 1; i <= n; i++)
        if (i != a && i != b)
            return i;
    return 0;
}

static void propose_u64(struct rf_cluster *c, uint64_t id, uint64_t v)
{
    cr_assert_eq(rf_propose(c, id, &v, sizeof(v)), 0);
}

static void rejoin(bool pre_vote, bool *deposed)
{
    struct rf_opts o = vt_opts();
    o.pre_vote = pre_vote;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 11);
    uint64_t l = run_until_leader(&c);
    tkv_term t = stat_of(&c, l).hs.term;
    uint64_t f = other_than(l, 0, 3);
    rf_isolate(&c, f);
    rf_run(&c, 10 * 100); /* 100 ticks: many election timeouts */
    if (pre_vote)
        cr_assert_eq(stat_of(&c, f).hs.term, t, "pre-vote must not bump the isolated term");
    rf_heal(&c);
    rf_run(&c, 10 * 30);
    *deposed = rf_leader(&c) != l || stat_of(&c, l).hs.term != t;
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft_prevote, partitioned_node_rejoining_does_not_depose_leader)
{
    bool deposed;
    rejoin(true, &deposed);
    cr_assert(!deposed, "healthy leader deposed by a rejoining node despite pre-vote");
}

/* The control: without pre-vote the same schedule does depose the leader,
 * so the test above can fail. */
Test(raft_prevote, without_prevote_rejoining_node_disrupts)
{
    bool deposed;
    rejoin(false, &deposed);
    cr_assert(deposed, "expected the disruption pre-vote prevents");
}

Test(raft_check_quorum, leader_without_quorum_steps_down)
{
    struct rf_opts o = vt_opts();
    o.check_quorum = true;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 5);
    uint64_t l = run_until_leader(&c);
    rf_isolate(&c, l);
    rf_run(&c, 10 * 25); /* > 2 election timeouts */
    cr_assert_neq(stat_of(&c, l).ss.role, TKV_RAFT_LEADER, "isolated leader still leads");
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft_check_quorum, leader_with_quorum_stays)
{
    struct rf_opts o = vt_opts();
    o.check_quorum = true;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 5);
    uint64_t l = run_until_leader(&c);
    tkv_term t = stat_of(&c, l).hs.term;
    rf_isolate(&c, other_than(l, 0, 3));
    rf_run(&c, 10 * 50);
    cr_assert_eq(rf_leader(&c), l);
    cr_assert_eq(stat_of(&c, l).hs.term, t);
    rf_close(&c);
}

Test(raft_check_quorum, follower_in_lease_ignores_vote_request)
{
    struct rf_opts o = vt_opts();
    o.check_quorum = true;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 5);
    uint64_t l = run_until_leader(&c);
    uint64_t f = other_than(l, 0, 3);
    tkv_term t = stat_of(&c, f).hs.term;
    struct tkv_raft_msg v = {.type = TKV_RAFT_MSG_VOTE, .from = other_than(l, f, 3), .to = f,
                             .term = t + 5, .index = 1000, .log_term = t + 5};
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &v};
    rf_node_step(&c, f, &ev);
    cr_assert_eq(stat_of(&c, f).hs.term, t, "vote inside the lease changed the term");
    cr_assert_eq(stat_of(&c, f).hs.vote, stat_of(&c, f).hs.vote);
    rf_close(&c);
}

static bool read_done(struct rf_cluster *c, uint64_t node, uint64_t ctx, tkv_index *idx)
{
    struct rf_node *nd = rf_node(c, node);
    for (size_t i = 0; i < nd->n_reads; i++)
        if (nd->reads[i].ctx == ctx) {
            if (idx)
                *idx = nd->reads[i].index;
            return true;
        }
    return false;
}

Test(raft_read_index, leader_confirms_with_a_heartbeat_round)
{
    struct rf_opts o = vt_opts();
    struct rf_cluster c;
    rf_init(&c, 3, &o, 3);
    uint64_t l = run_until_leader(&c);
    propose_u64(&c, l, 1);
    rf_run(&c, 30);
    uint64_t ctx;
    tkv_index want = stat_of(&c, l).hs.commit;
    cr_assert_eq(rf_read(&c, l, &ctx), 0);
    cr_assert(!read_done(&c, l, ctx, NULL), "answered before a quorum confirmed");
    rf_run(&c, 20);
    tkv_index idx;
    cr_assert(read_done(&c, l, ctx, &idx), "read never confirmed");
    cr_assert_geq(idx, want);
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft_read_index, follower_forwards_to_leader)
{
    struct rf_opts o = vt_opts();
    struct rf_cluster c;
    rf_init(&c, 3, &o, 3);
    uint64_t l = run_until_leader(&c);
    propose_u64(&c, l, 1);
    rf_run(&c, 30);
    uint64_t f = other_than(l, 0, 3), ctx;
    cr_assert_eq(rf_read(&c, f, &ctx), 0);
    rf_run(&c, 40);
    tkv_index idx;
    cr_assert(read_done(&c, f, ctx, &idx), "forwarded read never answered");
    cr_assert_geq(idx, stat_of(&c, l).hs.commit - 0);
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

static void deposed_leader_read(bool check_quorum, bool lease)
{
    struct rf_opts o = vt_opts();
    o.check_quorum = check_quorum;
    o.lease_read = lease;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 9);
    uint64_t old = run_until_leader(&c);
    rf_isolate(&c, old);
    uint64_t nl = 0;
    for (int i = 0; i < 300 && !nl; i++) {
        rf_run(&c, 10);
        for (uint64_t id = 1; id <= 3; id++)
            if (id != old && stat_of(&c, id).ss.role == TKV_RAFT_LEADER)
                nl = id;
    }
    cr_assert(nl, "no new leader");
    propose_u64(&c, nl, 42);
    rf_run(&c, 50);
    cr_assert(c.max_commit > stat_of(&c, old).hs.commit, "the new leader committed nothing new");
    /* a read on the deposed leader must not return its stale commit */
    uint64_t ctx;
    rf_read(&c, old, &ctx);
    rf_run(&c, 200);
    tkv_index idx = 0;
    if (read_done(&c, old, ctx, &idx))
        cr_assert_geq(idx, c.max_commit, "stale read from a deposed leader");
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft_read_index, no_stale_read_from_deposed_leader)
{
    deposed_leader_read(false, false);
}

Test(raft_lease_read, no_stale_read_from_deposed_leader)
{
    deposed_leader_read(true, true);
}

Test(raft_lease_read, healthy_leader_answers_without_a_round_trip)
{
    struct rf_opts o = vt_opts();
    o.check_quorum = true;
    o.lease_read = true;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 3);
    uint64_t l = run_until_leader(&c);
    rf_run(&c, 50); /* heartbeats acknowledged: lease established */
    uint64_t ctx;
    cr_assert_eq(rf_read(&c, l, &ctx), 0);
    cr_assert(read_done(&c, l, ctx, NULL), "lease read needed a round trip");
    rf_close(&c);
}

Test(raft_membership, one_pending_conf_change_at_a_time)
{
    struct rf_opts o = vt_opts();
    struct rf_cluster c;
    rf_init(&c, 3, &o, 3);
    uint64_t l = run_until_leader(&c);
    rf_run(&c, 30);
    cr_assert_eq(rf_propose_conf(&c, l, TKV_RAFT_CONF_ADD_NODE, 4), 0);
    cr_assert_eq(rf_propose_conf(&c, l, TKV_RAFT_CONF_ADD_NODE, 5), TKV_EBUSY);
    rf_run(&c, 100);
    cr_assert_eq(stat_of(&c, l).conf.n_voters, 4);
    cr_assert_eq(rf_propose_conf(&c, l, TKV_RAFT_CONF_ADD_NODE, 5), 0);
    rf_run(&c, 200);
    cr_assert_eq(stat_of(&c, l).conf.n_voters, 5);
    cr_assert(rf_node(&c, 5)->applied >= stat_of(&c, l).hs.commit - 1, "new node caught up");
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

/* Contract (c): genesis at TKV_RAFT_INIT_INDEX (as if from a snapshot);
 * a joiner is created uninitialized (empty storage, no peers): it never
 * campaigns on its own and is filled by the leader's snapshot, which
 * brings the whole membership. */
Test(raft_membership, uninitialized_joiner_waits_for_the_snapshot)
{
    struct rf_opts o = vt_opts();
    o.bootstrap_snapshot = true;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 5);
    rf_add_node(&c, 4, NULL, 0);
    struct tkv_raft_status s4 = stat_of(&c, 4);
    cr_assert_eq(s4.conf.n_voters, 0, "joiner starts without a configuration");
    cr_assert_eq(s4.last_index, 0);
    uint64_t l = run_until_leader(&c);
    cr_assert_geq(stat_of(&c, l).first_index, TKV_RAFT_INIT_INDEX + 1, "genesis is a snapshot point");
    rf_run(&c, 10 * 100); /* many election timeouts */
    s4 = stat_of(&c, 4);
    cr_assert_eq(s4.hs.term, 0, "uninitialized peer campaigned");
    cr_assert_eq(s4.ss.role, TKV_RAFT_FOLLOWER);
    l = rf_leader(&c);
    cr_assert_eq(rf_propose_conf(&c, l, TKV_RAFT_CONF_ADD_NODE, 4), 0);
    rf_run(&c, 300);
    l = rf_leader(&c);
    s4 = stat_of(&c, 4);
    cr_assert_eq(s4.conf.n_voters, 4, "the snapshot brought the membership (%u voters)",
                 s4.conf.n_voters);
    cr_assert_geq(s4.first_index, TKV_RAFT_INIT_INDEX + 1, "filled by a snapshot, not from index 1");
    cr_assert_eq(rf_node(&c, 4)->applied, stat_of(&c, l).hs.commit, "joiner caught up");
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft_membership, removing_the_leader_hands_over)
{
    struct rf_opts o = vt_opts();
    struct rf_cluster c;
    rf_init(&c, 3, &o, 3);
    uint64_t l = run_until_leader(&c);
    rf_run(&c, 30);
    cr_assert_eq(rf_propose_conf(&c, l, TKV_RAFT_CONF_REMOVE_NODE, l), 0);
    rf_run(&c, 60); /* well under an election timeout */
    uint64_t nl = rf_leader(&c);
    cr_assert(nl && nl != l, "no handover after removing the leader");
    cr_assert_eq(stat_of(&c, nl).conf.n_voters, 2);
    propose_u64(&c, nl, 7);
    rf_run(&c, 50);
    cr_assert_eq(stat_of(&c, nl).hs.commit, stat_of(&c, nl).last_index);
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft_membership, removed_node_does_not_disturb)
{
    struct rf_opts o = vt_opts();
    o.pre_vote = true;
    o.check_quorum = true;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 3);
    uint64_t l = run_until_leader(&c);
    uint64_t victim = other_than(l, 0, 3);
    rf_crash(&c, victim); /* it will never learn of its removal */
    cr_assert_eq(rf_propose_conf(&c, l, TKV_RAFT_CONF_REMOVE_NODE, victim), 0);
    rf_run(&c, 100);
    tkv_term t = stat_of(&c, l).hs.term;
    rf_restart(&c, victim);
    rf_run(&c, 10 * 200);
    cr_assert_eq(rf_leader(&c), l, "leader changed");
    cr_assert_eq(stat_of(&c, l).hs.term, t, "term bumped by a removed node");
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft_flow_control, inflight_window_limits_appends)
{
    struct rf_opts o = vt_opts();
    o.max_inflight = 2;
    struct rf_cluster c;
    rf_init(&c, 2, &o, 3);
    uint64_t l = run_until_leader(&c);
    rf_run(&c, 30);
    uint64_t f = other_than(l, 0, 2);
    rf_node(&c, l)->capture = true;
    rf_settle(&c);
    struct tkv_raft_msg *m;
    size_t n = rf_take_msgs(&c, l, &m);
    rf_msgs_free(m, n);
    for (int i = 0; i < 10; i++) {
        uint64_t v = (uint64_t)i;
        struct tkv_raft_buf *b = rf_buf(&v, 8);
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE};
        ev.u.propose.data = &b;
        ev.u.propose.n = 1;
        cr_assert_eq(rf_node_step(&c, l, &ev), 0);
        tkv_raft_buf_unref(b);
    }
    rf_run(&c, 5); /* let the writes finish; nothing is delivered back */
    n = rf_take_msgs(&c, l, &m);
    size_t appends = 0;
    for (size_t i = 0; i < n; i++)
        if (m[i].type == TKV_RAFT_MSG_APPEND && m[i].to == f && m[i].n_entries)
            appends++;
    rf_msgs_free(m, n);
    cr_assert_eq(appends, 2, "%zu appends in flight, window is 2", appends);
    rf_close(&c);
}

Test(raft_flow_control, max_msg_bytes_splits_appends)
{
    struct rf_opts o = vt_opts();
    o.max_msg_bytes = 100;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 3);
    uint64_t l = run_until_leader(&c);
    rf_run(&c, 30);
    uint64_t f = other_than(l, 0, 3);
    rf_isolate(&c, f);
    for (int i = 0; i < 20; i++) {
        char buf[40];
        memset(buf, 'a' + i, sizeof(buf));
        cr_assert_eq(rf_propose(&c, l, buf, sizeof(buf)), 0);
        rf_run(&c, 3);
    }
    rf_node(&c, l)->capture = true;
    rf_heal(&c);
    for (int i = 0; i < 30; i++) {
        rf_run(&c, 10);
        struct tkv_raft_msg *m;
        size_t n = rf_take_msgs(&c, l, &m);
        for (size_t k = 0; k < n; k++) {
            size_t bytes = 0;
            for (size_t e = 0; e < m[k].n_entries; e++)
                bytes += m[k].entries[e].data ? m[k].entries[e].data->len : 0;
            cr_assert(m[k].n_entries <= 1 || bytes <= 100, "append of %zu bytes", bytes);
        }
        /* deliver them normally from now on */
        for (size_t k = 0; k < n; k++) {
            struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &m[k]};
            rf_node_step(&c, m[k].to, &ev);
        }
        rf_msgs_free(m, n);
    }
    rf_node(&c, l)->capture = false;
    rf_run(&c, 200);
    cr_assert_eq(stat_of(&c, f).hs.commit, stat_of(&c, l).hs.commit);
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

/* TimeoutNow lets the target campaign through everyone's lease, so once a
 * leader has sent it, this term's lease can no longer be trusted, even
 * after the transfer is aborted. */
Test(raft_lease_read, no_lease_reads_after_timeout_now)
{
    struct rf_opts o = vt_opts();
    o.check_quorum = true;
    o.lease_read = true;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 3);
    uint64_t l = run_until_leader(&c);
    rf_run(&c, 50);
    rf_ignore(&c, TKV_RAFT_MSG_TIMEOUT_NOW);
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TRANSFER_LEADER,
                                .u.target = other_than(l, 0, 3)};
    rf_node_step(&c, l, &ev);
    rf_run(&c, 10 * 15); /* the transfer aborts after an election timeout */
    cr_assert_eq(rf_leader(&c), l);
    cr_assert_eq(stat_of(&c, l).lead_transferee, 0);
    uint64_t ctx;
    cr_assert_eq(rf_read(&c, l, &ctx), 0);
    cr_assert(!read_done(&c, l, ctx, NULL), "lease read served after TimeoutNow was sent");
    rf_run(&c, 20);
    cr_assert(read_done(&c, l, ctx, NULL), "ReadIndex round should still answer");
    rf_close(&c);
}
