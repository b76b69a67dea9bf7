/* TinyKV raft/raft_test.go scenarios (TINYKV-API.md 3.2), one Test each,
 * named after the original. */
#include "raft_test_util.h"

Test(raft, progress_leader)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    solo_make_leader(&c);
    for (int i = 0; i < 5; i++) {
        tkv_index li = last_index(&c, 1);
        struct tkv_raft_progress_info p = prog(&c, 1, 1);
        cr_assert_eq(p.match, li, "self match %llu want %llu", (unsigned long long)p.match,
                     (unsigned long long)li);
        cr_assert_eq(p.next, li + 1);
        propose_str(&c, 1, "foo");
    }
    rf_close(&c);
}

Test(raft, leader_election)
{
    struct {
        size_t size;
        uint64_t nop[2];
        uint32_t want;
    } tt[] = {
        {3, {0, 0}, LEADER}, {3, {3, 0}, LEADER}, {3, {2, 3}, CANDIDATE},
        {4, {2, 3}, CANDIDATE}, {5, {2, 3}, LEADER},
    };
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        net_new(&c, tt[k].size, NULL);
        for (int i = 0; i < 2; i++)
            if (tt[k].nop[i])
                rf_isolate(&c, tt[k].nop[i]);
        rf_campaign(&c, 1);
        cr_assert_eq(role(&c, 1), tt[k].want, "case %zu", k);
        cr_assert_eq(term(&c, 1), 1, "case %zu", k);
        rf_close(&c);
    }
}

Test(raft, leader_cycle)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    for (uint64_t id = 1; id <= 3; id++) {
        rf_campaign(&c, id);
        for (uint64_t j = 1; j <= 3; j++)
            cr_assert_eq(role(&c, j), j == id ? LEADER : FOLLOWER, "campaign %llu node %llu",
                         (unsigned long long)id, (unsigned long long)j);
    }
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft, leader_election_overwrite_newer_logs)
{
    struct rf_cluster c;
    net_new(&c, 5, NULL);
    tkv_term l1[] = {1}, l2[] = {2};
    node_reset_log(&c, 1, l1, 1, 1, 0); /* won the first election */
    node_reset_log(&c, 2, l1, 1, 1, 0); /* got logs from node 1 */
    node_reset_log(&c, 3, l2, 1, 2, 0); /* won the second election */
    for (uint64_t i = 4; i <= 5; i++) { /* voted for 3, never got its log */
        rf_crash(&c, i);
        rf_node(&c, i)->ms.hs = (struct tkv_raft_hard_state){.term = 2, .vote = 3};
        rf_restart(&c, i);
    }
    rf_campaign(&c, 1); /* only 2 grants: term 2 lost */
    cr_assert_eq(role(&c, 1), FOLLOWER);
    cr_assert_eq(term(&c, 1), 2);
    rf_campaign(&c, 1);
    cr_assert_eq(role(&c, 1), LEADER);
    cr_assert_eq(term(&c, 1), 3);
    for (uint64_t i = 1; i <= 5; i++) {
        tkv_term t = 0;
        cr_assert_eq(tkv_raft_term(rf_raft(&c, i), 1, &t), 0);
        cr_assert_eq(t, 1, "node %llu index 1 term %llu", (unsigned long long)i,
                     (unsigned long long)t);
        cr_assert_eq(tkv_raft_term(rf_raft(&c, i), 2, &t), 0);
        cr_assert_eq(t, 3);
    }
    rf_close(&c);
}

Test(raft, vote_from_any_state)
{
    uint32_t states[] = {FOLLOWER, CANDIDATE, PRE_CANDIDATE, LEADER};
    for (size_t k = 0; k < 4; k++) {
        struct rf_opts o = rf_default_opts();
        o.pre_vote = states[k] == PRE_CANDIDATE;
        struct rf_cluster c;
        solo_new(&c, 3, &o);
        if (states[k] == CANDIDATE || states[k] == PRE_CANDIDATE)
            rf_campaign(&c, 1);
        else if (states[k] == LEADER)
            solo_make_leader(&c);
        cr_assert_eq(role(&c, 1), states[k]);
        drop_msgs(&c, 1);
        tkv_term t0 = term(&c, 1);
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_VOTE, 2, 1, t0 + 1);
        m.log_term = t0 + 1;
        m.index = 42;
        rf_send(&c, &m);
        struct tkv_raft_msg *out;
        size_t n = drain(&c, 1, &out);
        cr_assert_eq(n, 1);
        cr_assert_eq(out[0].type, TKV_RAFT_MSG_VOTE_RESP);
        cr_assert(!out[0].reject, "state %u: vote rejected", states[k]);
        rf_msgs_free(out, n);
        cr_assert_eq(role(&c, 1), FOLLOWER);
        cr_assert_eq(term(&c, 1), t0 + 1);
        cr_assert_eq(st(&c, 1).hs.vote, 2);
        rf_close(&c);
    }
}

static void assert_applied_data(struct rf_cluster *c, uint64_t id, const char **want, size_t n)
{
    struct rf_node *nd = rf_node(c, id);
    size_t k = 0;
    for (size_t i = 0; i < nd->n_applied_log; i++) {
        if (!nd->applied_log[i].data)
            continue; /* no-op */
        cr_assert(k < n, "node %llu applied too much", (unsigned long long)id);
        cr_assert(data_is(nd->applied_log[i].data, want[k]), "node %llu entry %zu",
                  (unsigned long long)id, k);
        k++;
    }
    cr_assert_eq(k, n, "node %llu applied %zu of %zu", (unsigned long long)id, k, n);
}

Test(raft, log_replication)
{
    /* case 1: propose on the leader */
    {
        struct rf_cluster c;
        net_new(&c, 3, NULL);
        rf_campaign(&c, 1);
        propose_str(&c, 1, "somedata");
        const char *want[] = {"somedata"};
        for (uint64_t i = 1; i <= 3; i++) {
            cr_assert_eq(committed(&c, i), 2);
            assert_applied_data(&c, i, want, 1);
        }
        rf_close(&c);
    }
    /* case 2: leader change between proposals */
    {
        struct rf_cluster c;
        net_new(&c, 3, NULL);
        rf_campaign(&c, 1);
        propose_str(&c, 1, "somedata");
        rf_campaign(&c, 2);
        propose_str(&c, 2, "somedata");
        const char *want[] = {"somedata", "somedata"};
        for (uint64_t i = 1; i <= 3; i++) {
            cr_assert_eq(committed(&c, i), 4);
            assert_applied_data(&c, i, want, 2);
        }
        cr_assert(!c.failed, "%s", c.err);
        rf_close(&c);
    }
}

Test(raft, single_node_commit)
{
    struct rf_cluster c;
    net_new(&c, 1, NULL);
    rf_campaign(&c, 1);
    propose_str(&c, 1, "some data");
    propose_str(&c, 1, "some data");
    cr_assert_eq(committed(&c, 1), 3);
    rf_close(&c);
}

Test(raft, commit_without_new_term_entry)
{
    struct rf_cluster c;
    net_new(&c, 5, NULL);
    rf_campaign(&c, 1);
    rf_cut(&c, 1, 3);
    rf_cut(&c, 1, 4);
    rf_cut(&c, 1, 5);
    propose_str(&c, 1, "some data");
    propose_str(&c, 1, "some data");
    cr_assert_eq(committed(&c, 1), 1);
    rf_heal(&c);
    /* 2 has the two entries; its no-op commits them */
    rf_campaign(&c, 2);
    cr_assert_eq(role(&c, 2), LEADER);
    cr_assert_eq(committed(&c, 2), 4);
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft, commit_with_heartbeat)
{
    struct rf_cluster c;
    net_new(&c, 5, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 5);
    propose_str(&c, 1, "some data");
    propose_str(&c, 1, "some data");
    cr_assert_eq(committed(&c, 5), 1);
    rf_heal(&c);
    struct tkv_raft_msg beat = mk(TKV_RAFT_MSG_BEAT, 1, 1, 0);
    rf_send(&c, &beat);
    cr_assert_eq(committed(&c, 5), 3);
    rf_close(&c);
}

Test(raft, dueling_candidates)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_cut(&c, 1, 3);
    rf_campaign(&c, 1);
    rf_campaign(&c, 3);
    cr_assert_eq(role(&c, 1), LEADER);
    cr_assert_eq(role(&c, 3), CANDIDATE);
    rf_heal(&c);
    /* 3 (term 2, short log) deposes 1 but cannot win: 2's log is longer */
    rf_campaign(&c, 3);
    uint32_t wstate[] = {FOLLOWER, FOLLOWER, FOLLOWER};
    for (uint64_t i = 1; i <= 3; i++) {
        cr_assert_eq(role(&c, i), wstate[i - 1], "node %llu", (unsigned long long)i);
        cr_assert_eq(term(&c, i), 2, "node %llu term", (unsigned long long)i);
    }
    cr_assert_eq(last_index(&c, 1), 1);
    cr_assert_eq(last_index(&c, 2), 1);
    cr_assert_eq(last_index(&c, 3), 0);
    rf_close(&c);
}

Test(raft, candidate_concede)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_isolate(&c, 1);
    rf_campaign(&c, 1);
    rf_campaign(&c, 3);
    rf_heal(&c);
    struct tkv_raft_msg beat = mk(TKV_RAFT_MSG_BEAT, 3, 3, 0);
    rf_send(&c, &beat);
    propose_str(&c, 3, "force follower");
    rf_send(&c, &beat);
    cr_assert_eq(role(&c, 1), FOLLOWER);
    cr_assert_eq(term(&c, 1), 1);
    for (uint64_t i = 1; i <= 3; i++) {
        cr_assert_eq(committed(&c, i), 2);
        cr_assert_eq(last_index(&c, i), 2);
    }
    rf_close(&c);
}

Test(raft, single_node_candidate)
{
    struct rf_cluster c;
    net_new(&c, 1, NULL);
    rf_campaign(&c, 1);
    cr_assert_eq(role(&c, 1), LEADER);
    rf_close(&c);
}

Test(raft, old_messages)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_campaign(&c, 2);
    rf_campaign(&c, 1); /* 1 leader of term 3 */
    struct tkv_raft_entry e = {.term = 2, .index = 3};
    struct tkv_raft_msg m = mk(TKV_RAFT_MSG_APPEND, 2, 1, 2);
    m.entries = &e;
    m.n_entries = 1;
    m.index = 2;
    m.log_term = 2;
    rf_send(&c, &m);
    propose_str(&c, 1, "somedata");
    for (uint64_t i = 1; i <= 3; i++) {
        cr_assert_eq(committed(&c, i), 4);
        tkv_term t = 0;
        tkv_raft_term(rf_raft(&c, i), 3, &t);
        cr_assert_eq(t, 3, "old term-2 entry must not survive");
    }
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft, proposal)
{
    struct {
        size_t size;
        uint64_t nop[2];
        bool success;
    } tt[] = {{3, {0, 0}, true}, {3, {3, 0}, true}, {3, {2, 3}, false}, {4, {2, 3}, false},
              {5, {2, 3}, true}};
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        net_new(&c, tt[k].size, NULL);
        for (int i = 0; i < 2; i++)
            if (tt[k].nop[i])
                rf_isolate(&c, tt[k].nop[i]);
        rf_campaign(&c, 1);
        int rv = propose_str(&c, 1, "somedata");
        if (tt[k].success) {
            cr_assert_eq(rv, 0);
            cr_assert_eq(committed(&c, 1), 2, "case %zu", k);
        } else {
            cr_assert_eq(rv, TKV_ENOTLEADER, "case %zu: rv %d", k, rv);
            cr_assert_eq(committed(&c, 1), 0);
        }
        rf_close(&c);
    }
}

Test(raft, handle_message_type_msg_append)
{
    struct {
        tkv_term term, log_term;
        tkv_index index, commit;
        size_t n_ents; /* entries with term e_term from index+1 */
        tkv_term e_term;
        tkv_index windex, wcommit;
        bool wreject;
    } tt[] = {
        /* ensure 1 */
        {2, 3, 2, 3, 0, 0, 2, 0, true},
        {2, 3, 3, 3, 0, 0, 2, 0, true},
        /* ensure 2 */
        {2, 1, 1, 1, 0, 0, 2, 1, false},
        {2, 0, 0, 1, 1, 2, 1, 1, false},
        {2, 2, 2, 3, 2, 2, 4, 3, false},
        {2, 2, 2, 4, 1, 2, 3, 3, false},
        {2, 1, 1, 4, 1, 2, 2, 2, false},
        /* ensure 3 */
        {1, 1, 1, 3, 0, 0, 2, 1, false},
        {1, 1, 1, 3, 1, 2, 2, 2, false},
        {2, 2, 2, 3, 0, 0, 2, 2, false},
        {2, 2, 2, 4, 0, 0, 2, 2, false},
    };
    tkv_term base[] = {1, 2};
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        solo_new(&c, 1, NULL);
        node_reset_log(&c, 1, base, 2, 0, 0);
        struct tkv_raft_entry e[2];
        for (size_t i = 0; i < tt[k].n_ents; i++)
            e[i] = (struct tkv_raft_entry){.term = tt[k].e_term, .index = tt[k].index + 1 + i};
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_APPEND, 2, 1, tt[k].term);
        m.log_term = tt[k].log_term;
        m.index = tt[k].index;
        m.commit = tt[k].commit;
        m.entries = e;
        m.n_entries = tt[k].n_ents;
        rf_send(&c, &m);
        cr_assert_eq(last_index(&c, 1), tt[k].windex, "case %zu last %llu", k,
                     (unsigned long long)last_index(&c, 1));
        cr_assert_eq(committed(&c, 1), tt[k].wcommit, "case %zu commit", k);
        struct tkv_raft_msg *out;
        size_t n = drain(&c, 1, &out);
        cr_assert_eq(n, 1);
        cr_assert_eq(out[0].reject, tt[k].wreject, "case %zu reject", k);
        rf_msgs_free(out, n);
        rf_close(&c);
    }
}

Test(raft, recv_message_type_msg_request_vote)
{
    struct {
        uint32_t state;
        tkv_index index;
        tkv_term log_term;
        uint64_t vote_for;
        bool wreject;
    } tt[] = {
        {FOLLOWER, 0, 0, 0, true},  {FOLLOWER, 0, 1, 0, true},  {FOLLOWER, 0, 2, 0, true},
        {FOLLOWER, 0, 3, 0, false}, {FOLLOWER, 1, 0, 0, true},  {FOLLOWER, 1, 1, 0, true},
        {FOLLOWER, 1, 2, 0, true},  {FOLLOWER, 1, 3, 0, false}, {FOLLOWER, 2, 0, 0, true},
        {FOLLOWER, 2, 1, 0, true},  {FOLLOWER, 2, 2, 0, false}, {FOLLOWER, 2, 3, 0, false},
        {FOLLOWER, 3, 0, 0, true},  {FOLLOWER, 3, 1, 0, true},  {FOLLOWER, 3, 2, 0, false},
        {FOLLOWER, 3, 3, 0, false}, {FOLLOWER, 3, 2, 2, false}, {FOLLOWER, 3, 2, 1, true},
        {LEADER, 3, 3, 1, true},    {CANDIDATE, 3, 3, 1, true},
    };
    tkv_term base[] = {2, 2};
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        solo_new(&c, 2, NULL);
        node_reset_log(&c, 1, base, 2, 0, 0);
        struct rf_node *nd = rf_node(&c, 1);
        rf_crash(&c, 1);
        nd->ms.hs.term = tt[k].state == FOLLOWER ? 1 : 0;
        nd->ms.hs.vote = tt[k].state == FOLLOWER ? tt[k].vote_for : 0;
        rf_restart(&c, 1);
        if (tt[k].state == CANDIDATE)
            rf_campaign(&c, 1);
        else if (tt[k].state == LEADER)
            solo_make_leader(&c);
        drop_msgs(&c, 1);
        cr_assert_eq(term(&c, 1), 1);
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_VOTE, 2, 1, 1);
        m.index = tt[k].index;
        m.log_term = tt[k].log_term;
        rf_send(&c, &m);
        struct tkv_raft_msg *out;
        size_t n = drain(&c, 1, &out);
        cr_assert_eq(n, 1, "case %zu", k);
        cr_assert_eq(out[0].type, TKV_RAFT_MSG_VOTE_RESP);
        cr_assert_eq(out[0].reject, tt[k].wreject, "case %zu", k);
        rf_msgs_free(out, n);
        rf_close(&c);
    }
}

Test(raft, all_server_stepdown)
{
    uint32_t states[] = {FOLLOWER, CANDIDATE, LEADER};
    uint32_t types[] = {TKV_RAFT_MSG_VOTE, TKV_RAFT_MSG_APPEND};
    for (size_t s = 0; s < 3; s++) {
        for (size_t k = 0; k < 2; k++) {
            struct rf_cluster c;
            solo_new(&c, 3, NULL);
            if (states[s] == CANDIDATE)
                rf_campaign(&c, 1);
            else if (states[s] == LEADER)
                solo_make_leader(&c);
            drop_msgs(&c, 1);
            tkv_term t0 = term(&c, 1);
            tkv_index li = last_index(&c, 1);
            struct tkv_raft_msg m = mk(types[k], 2, 1, 3);
            m.log_term = 3;
            m.index = types[k] == TKV_RAFT_MSG_VOTE ? 10 : 0;
            rf_send(&c, &m);
            cr_assert_eq(role(&c, 1), FOLLOWER, "state %u type %u", states[s], types[k]);
            cr_assert_eq(term(&c, 1), 3);
            cr_assert(term(&c, 1) > t0);
            cr_assert_eq(st(&c, 1).ss.leader, types[k] == TKV_RAFT_MSG_APPEND ? 2u : 0u);
            cr_assert(last_index(&c, 1) >= li || types[k] == TKV_RAFT_MSG_APPEND);
            rf_close(&c);
        }
    }
}

static void candidate_reset_term(uint32_t type)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    rf_campaign(&c, 2);
    rf_campaign(&c, 1);
    cr_assert_eq(role(&c, 1), LEADER);
    rf_tick(&c, 3, 20);
    cr_assert_eq(role(&c, 3), CANDIDATE);
    rf_heal(&c);
    struct tkv_raft_msg m = mk(type, 1, 3, term(&c, 1));
    if (type == TKV_RAFT_MSG_APPEND) {
        m.index = last_index(&c, 1);
        tkv_raft_term(rf_raft(&c, 1), m.index, &m.log_term);
    }
    rf_send(&c, &m);
    cr_assert_eq(role(&c, 3), FOLLOWER);
    cr_assert_eq(term(&c, 3), term(&c, 1));
    rf_close(&c);
}

Test(raft, candidate_reset_term_msg_heartbeat)
{
    candidate_reset_term(TKV_RAFT_MSG_HEARTBEAT);
}

Test(raft, candidate_reset_term_msg_append)
{
    candidate_reset_term(TKV_RAFT_MSG_APPEND);
}

/* Needs check-quorum (or pre-vote) so the candidate answers a stale
 * heartbeat with its higher term, as in etcd's version of this test. */
Test(raft, disruptive_follower)
{
    struct rf_opts o = rf_default_opts();
    o.check_quorum = true;
    o.record_applied = true;
    struct rf_cluster c;
    rf_init(&c, 3, &o, 1);
    /* let the cluster elect 1: tick it past its timeout (others in lease) */
    rf_campaign(&c, 1);
    cr_assert_eq(role(&c, 1), LEADER);
    /* n3 times out but its vote requests are lost */
    rf_node(&c, 3)->capture = true;
    rf_tick(&c, 3, 20);
    drop_msgs(&c, 3);
    rf_node(&c, 3)->capture = false;
    cr_assert_eq(role(&c, 3), CANDIDATE);
    tkv_term t3 = term(&c, 3);
    cr_assert(t3 > term(&c, 1));
    struct tkv_raft_msg hb = mk(TKV_RAFT_MSG_HEARTBEAT, 1, 3, term(&c, 1));
    rf_send(&c, &hb);
    cr_assert_eq(role(&c, 1), FOLLOWER);
    cr_assert_eq(term(&c, 1), t3);
    rf_close(&c);
}

Test(raft, heartbeat_update_commit)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 1);
    for (int i = 0; i < 3; i++)
        propose_str(&c, 1, "stale");
    struct tkv_raft_msg beat = mk(TKV_RAFT_MSG_BEAT, 1, 1, 0);
    rf_send(&c, &beat);
    cr_assert_eq(committed(&c, 1), 1, "isolated leader must not commit");
    rf_campaign(&c, 2);
    propose_str(&c, 2, "fresh");
    tkv_index c2 = committed(&c, 2);
    cr_assert_eq(c2, 3);
    rf_heal(&c);
    /* the old leader's heartbeats alone do not advance its commit */
    rf_send(&c, &beat);
    cr_assert(committed(&c, 1) <= 1 || role(&c, 1) == FOLLOWER);
    struct tkv_raft_msg beat2 = mk(TKV_RAFT_MSG_BEAT, 2, 2, 0);
    rf_send(&c, &beat2);
    cr_assert_eq(committed(&c, 1), c2);
    const char *want[] = {"fresh"};
    assert_applied_data(&c, 1, want, 1);
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

Test(raft, recv_message_type_msg_beat)
{
    uint32_t states[] = {FOLLOWER, CANDIDATE, LEADER};
    size_t want[] = {0, 0, 2};
    for (size_t s = 0; s < 3; s++) {
        struct rf_cluster c;
        solo_new(&c, 3, NULL);
        if (states[s] == CANDIDATE)
            rf_campaign(&c, 1);
        else if (states[s] == LEADER)
            solo_make_leader(&c);
        drop_msgs(&c, 1);
        struct tkv_raft_msg beat = mk(TKV_RAFT_MSG_BEAT, 1, 1, 0);
        rf_send(&c, &beat);
        struct tkv_raft_msg *out;
        size_t n = drain(&c, 1, &out);
        cr_assert_eq(n, want[s], "state %u", states[s]);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(out[i].type, TKV_RAFT_MSG_HEARTBEAT);
        rf_msgs_free(out, n);
        rf_close(&c);
    }
}

Test(raft, leader_increase_next)
{
    /* replicate state: next advances optimistically past what was sent */
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    solo_make_leader(&c);
    solo_commit_noop(&c, 2); /* 2 acked: probe -> replicate */
    struct tkv_raft_progress_info p = prog(&c, 1, 2);
    cr_assert_eq(p.state, 1);
    tkv_index li = last_index(&c, 1);
    propose_str(&c, 1, "somedata");
    p = prog(&c, 1, 2);
    cr_assert_eq(p.next, li + 2, "next %llu want %llu", (unsigned long long)p.next,
                 (unsigned long long)(li + 2));
    rf_close(&c);
    /* probe state: one message, then paused; next does not move */
    solo_new(&c, 2, NULL);
    solo_make_leader(&c);
    p = prog(&c, 1, 2);
    cr_assert_eq(p.state, 0);
    tkv_index next = p.next;
    propose_str(&c, 1, "somedata");
    propose_str(&c, 1, "somedata");
    cr_assert_eq(prog(&c, 1, 2).next, next);
    rf_close(&c);
}

static struct tkv_raft_snapshot mk_snap(tkv_index i, tkv_term t, const uint64_t *ids, uint32_t n)
{
    struct tkv_raft_snapshot s = {.index = i, .term = t};
    s.conf_state.n_voters = n;
    for (uint32_t k = 0; k < n; k++)
        s.conf_state.voters[k] = ids[k];
    return s;
}

Test(raft, restore_snapshot)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    uint64_t ids[] = {1, 2, 3};
    struct tkv_raft_snapshot s = mk_snap(11, 11, ids, 3);
    struct tkv_raft_msg m = mk(TKV_RAFT_MSG_SNAPSHOT, 2, 1, 11);
    m.snapshot = &s;
    rf_send(&c, &m);
    cr_assert_eq(last_index(&c, 1), 11);
    tkv_term t = 0;
    cr_assert_eq(tkv_raft_term(rf_raft(&c, 1), 11, &t), 0);
    cr_assert_eq(t, 11);
    struct tkv_raft_status s1 = st(&c, 1);
    cr_assert_eq(s1.conf.n_voters, 3);
    cr_assert_eq(s1.hs.commit, 11);
    cr_assert_eq(rf_node(&c, 1)->ms.snap.index, 11, "snapshot persisted through the update");
    rf_close(&c);
}

Test(raft, restore_ignore_snapshot)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    tkv_term base[] = {1, 1, 1};
    node_reset_log(&c, 1, base, 3, 1, 1);
    uint64_t ids[] = {1, 2};
    struct tkv_raft_snapshot s = mk_snap(1, 1, ids, 2);
    struct tkv_raft_msg m = mk(TKV_RAFT_MSG_SNAPSHOT, 2, 1, 1);
    m.snapshot = &s;
    rf_send(&c, &m);
    cr_assert_eq(committed(&c, 1), 1);
    cr_assert_eq(last_index(&c, 1), 3);
    cr_assert_eq(rf_node(&c, 1)->ms.snap.index, 0, "older snapshot ignored");
    /* matching term just fast-forwards commit */
    s.index = 2;
    rf_send(&c, &m);
    cr_assert_eq(committed(&c, 1), 2);
    cr_assert_eq(last_index(&c, 1), 3);
    rf_close(&c);
}

static void with_storage_snapshot(struct rf_cluster *c, uint64_t id, tkv_index i, tkv_term t,
                                  const uint64_t *ids, uint32_t n)
{
    struct rf_node *nd = rf_node(c, id);
    rf_crash(c, id);
    struct tkv_raft_snapshot s = mk_snap(i, t, ids, n);
    uint64_t h = 0x5eed;
    s.data = rf_buf(&h, 8);
    raft_memstore_apply_snapshot(&nd->ms, &s);
    tkv_raft_buf_unref(s.data);
    nd->ms.hs = (struct tkv_raft_hard_state){.term = t, .commit = i};
    rf_restart(c, id);
}

Test(raft, provide_snap)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    uint64_t ids[] = {1, 2};
    with_storage_snapshot(&c, 1, 11, 11, ids, 2);
    solo_make_leader(&c);
    /* 2 says it has nothing: the leader must fall back to a snapshot */
    struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, 2, 1, term(&c, 1));
    r.index = last_index(&c, 1) - 1;
    r.reject = true;
    r.reject_hint = 0;
    rf_send(&c, &r);
    struct tkv_raft_msg *out;
    size_t n = drain(&c, 1, &out);
    bool got = false;
    for (size_t i = 0; i < n; i++)
        if (out[i].type == TKV_RAFT_MSG_SNAPSHOT) {
            got = true;
            cr_assert_eq(out[i].snapshot->index, 11);
        }
    rf_msgs_free(out, n);
    cr_assert(got, "leader did not send MsgSnapshot");
    rf_close(&c);
}

Test(raft, restore_from_snap_msg)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    uint64_t ids[] = {1, 2};
    struct tkv_raft_snapshot s = mk_snap(11, 11, ids, 2);
    struct tkv_raft_msg m = mk(TKV_RAFT_MSG_SNAPSHOT, 2, 1, 2);
    m.snapshot = &s;
    rf_send(&c, &m);
    cr_assert_eq(st(&c, 1).ss.leader, 2);
    rf_close(&c);
}

Test(raft, restore_from_snap_with_overlaping_peers_msg)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    uint64_t ids[] = {2, 3, 4, 5};
    struct tkv_raft_snapshot s = mk_snap(11, 11, ids, 4);
    struct tkv_raft_msg m = mk(TKV_RAFT_MSG_SNAPSHOT, 2, 1, 2);
    m.snapshot = &s;
    rf_send(&c, &m);
    struct tkv_raft_status s1 = st(&c, 1);
    cr_assert_eq(s1.conf.n_voters, 4);
    for (uint32_t i = 0; i < 4; i++)
        cr_assert_eq(s1.conf.voters[i], ids[i]);
    rf_close(&c);
}

Test(raft, slow_node_restore)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    for (int i = 0; i < 100; i++)
        propose_str(&c, 1, "x");
    cr_assert_eq(rf_compact(&c, 1), 0);
    rf_heal(&c);
    /* heartbeats reveal the lag; appends fail; a snapshot follows */
    for (int i = 0; i < 5 && committed(&c, 3) != committed(&c, 1); i++) {
        struct tkv_raft_msg beat = mk(TKV_RAFT_MSG_BEAT, 1, 1, 0);
        rf_send(&c, &beat);
        propose_str(&c, 1, "x");
    }
    cr_assert_eq(committed(&c, 3), committed(&c, 1));
    cr_assert(rf_node(&c, 3)->ms.snap.index > 0, "node 3 caught up through a snapshot");
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

static void apply_cc(struct rf_cluster *c, uint64_t id, uint32_t type, uint64_t node)
{
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_APPLY_CONF_CHANGE};
    ev.u.conf_change.change_type = type;
    ev.u.conf_change.node_id = node;
    cr_assert_eq(rf_node_step(c, id, &ev), 0);
    rf_settle(c);
}

Test(raft, add_node)
{
    struct rf_cluster c;
    solo_new(&c, 1, NULL);
    apply_cc(&c, 1, TKV_RAFT_CONF_ADD_NODE, 2);
    struct tkv_raft_status s = st(&c, 1);
    cr_assert_eq(s.conf.n_voters, 2);
    cr_assert_eq(s.conf.voters[1], 2);
    rf_close(&c);
}

Test(raft, remove_node)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    apply_cc(&c, 1, TKV_RAFT_CONF_REMOVE_NODE, 2);
    struct tkv_raft_status s = st(&c, 1);
    cr_assert_eq(s.conf.n_voters, 1);
    cr_assert_eq(s.conf.voters[0], 1);
    /* removing every voter leaves an empty set, not a crash */
    apply_cc(&c, 1, TKV_RAFT_CONF_REMOVE_NODE, 1);
    cr_assert_eq(st(&c, 1).conf.n_voters, 0);
    rf_close(&c);
}

Test(raft, campaign_while_leader)
{
    struct rf_cluster c;
    net_new(&c, 1, NULL);
    rf_campaign(&c, 1);
    cr_assert_eq(role(&c, 1), LEADER);
    tkv_term t = term(&c, 1);
    rf_campaign(&c, 1);
    cr_assert_eq(role(&c, 1), LEADER);
    cr_assert_eq(term(&c, 1), t);
    rf_close(&c);
}

Test(raft, commit_after_remove_node)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    solo_make_leader(&c);
    solo_commit_noop(&c, 2);
    cr_assert_eq(rf_propose_conf(&c, 1, TKV_RAFT_CONF_REMOVE_NODE, 2), 0);
    tkv_index cci = last_index(&c, 1);
    drop_msgs(&c, 1);
    struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, 2, 1, 1);
    r.index = cci;
    rf_send(&c, &r);
    cr_assert_eq(committed(&c, 1), cci);
    struct rf_node *nd = rf_node(&c, 1);
    cr_assert_eq(nd->applied_log[nd->n_applied_log - 1].type, TKV_RAFT_ENTRY_CONF_CHANGE);
    propose_str(&c, 1, "hello");
    cr_assert_eq(committed(&c, 1), cci, "2 has not acked: not committed yet");
    apply_cc(&c, 1, TKV_RAFT_CONF_REMOVE_NODE, 2);
    cr_assert_eq(committed(&c, 1), cci + 1, "quorum shrank: hello commits");
    cr_assert(data_is(nd->applied_log[nd->n_applied_log - 1].data, "hello"));
    rf_close(&c);
}

/* A leader applying its own removal tells the others the commit index
 * before it hands over and steps down: the survivor of a group of two
 * otherwise never learns the removal committed and waits for our vote. */
Test(raft, removed_leader_sends_the_commit_before_stepping_down)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    solo_make_leader(&c);
    solo_commit_noop(&c, 2);
    cr_assert_eq(rf_propose_conf(&c, 1, TKV_RAFT_CONF_REMOVE_NODE, 1), 0);
    tkv_index cci = last_index(&c, 1);
    drop_msgs(&c, 1);
    struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, 2, 1, term(&c, 1));
    r.index = cci;
    rf_send(&c, &r);
    cr_assert_eq(committed(&c, 1), cci);
    drop_msgs(&c, 1);
    apply_cc(&c, 1, TKV_RAFT_CONF_REMOVE_NODE, 1);
    cr_assert_eq(role(&c, 1), FOLLOWER);
    struct tkv_raft_msg *m;
    size_t n = rf_take_msgs(&c, 1, &m);
    bool told = false, timeout_now = false;
    for (size_t i = 0; i < n; i++) {
        if (m[i].to == 2 && m[i].type == TKV_RAFT_MSG_HEARTBEAT && m[i].commit >= cci)
            told = !timeout_now;
        timeout_now |= m[i].type == TKV_RAFT_MSG_TIMEOUT_NOW;
    }
    rf_msgs_free(m, n);
    cr_assert(told, "no heartbeat carrying commit %llu to 2 before the hand-over",
              (unsigned long long)cci);
    cr_assert(timeout_now, "no hand-over to 2");
    rf_close(&c);
}

static void transfer(struct rf_cluster *c, uint64_t via, uint64_t target)
{
    struct tkv_raft_msg m = mk(TKV_RAFT_MSG_TRANSFER_LEADER, target, via, 0);
    rf_send(c, &m);
}

static void check_leader_transfer_state(struct rf_cluster *c, uint64_t id, uint32_t r, uint64_t lead)
{
    struct tkv_raft_status s = st(c, id);
    cr_assert_eq(s.ss.role, r, "node %llu role %u want %u", (unsigned long long)id, s.ss.role, r);
    cr_assert_eq(s.ss.leader, lead, "node %llu lead %llu want %llu", (unsigned long long)id,
                 (unsigned long long)s.ss.leader, (unsigned long long)lead);
    cr_assert_eq(s.lead_transferee, 0);
}

Test(raft, leader_transfer_to_up_to_date_node)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    transfer(&c, 1, 2);
    check_leader_transfer_state(&c, 1, FOLLOWER, 2);
    propose_str(&c, 2, "x");
    transfer(&c, 2, 1);
    check_leader_transfer_state(&c, 1, LEADER, 1);
    rf_close(&c);
}

Test(raft, leader_transfer_to_up_to_date_node_from_follower)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    transfer(&c, 2, 2);
    check_leader_transfer_state(&c, 1, FOLLOWER, 2);
    propose_str(&c, 2, "x");
    transfer(&c, 1, 1);
    check_leader_transfer_state(&c, 1, LEADER, 1);
    rf_close(&c);
}

Test(raft, leader_transfer_to_slow_follower)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    propose_str(&c, 1, "x");
    rf_heal(&c);
    cr_assert(last_index(&c, 3) < last_index(&c, 1));
    transfer(&c, 1, 3);
    check_leader_transfer_state(&c, 1, FOLLOWER, 3);
    rf_close(&c);
}

Test(raft, leader_transfer_after_snapshot)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    propose_str(&c, 1, "x");
    propose_str(&c, 1, "y");
    cr_assert_eq(rf_compact(&c, 1), 0);
    rf_heal(&c);
    transfer(&c, 1, 3);
    check_leader_transfer_state(&c, 1, FOLLOWER, 3);
    cr_assert(rf_node(&c, 3)->ms.snap.index > 0, "3 needed a snapshot first");
    rf_close(&c);
}

Test(raft, leader_transfer_to_self)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    transfer(&c, 1, 1);
    check_leader_transfer_state(&c, 1, LEADER, 1);
    rf_close(&c);
}

Test(raft, leader_transfer_to_non_existing_node)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    transfer(&c, 1, 4);
    check_leader_transfer_state(&c, 1, LEADER, 1);
    rf_close(&c);
}

Test(raft, leader_transfer_timeout)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    transfer(&c, 1, 3);
    cr_assert_eq(st(&c, 1).lead_transferee, 3);
    cr_assert_eq(propose_str(&c, 1, "x"), TKV_EPROPOSALDROPPED, "no proposals while transferring");
    rf_tick(&c, 1, 9);
    cr_assert_eq(st(&c, 1).lead_transferee, 3);
    rf_tick(&c, 1, 1);
    check_leader_transfer_state(&c, 1, LEADER, 1);
    rf_close(&c);
}

Test(raft, leader_transfer_receive_higher_term_vote)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    transfer(&c, 1, 3);
    cr_assert_eq(st(&c, 1).lead_transferee, 3);
    rf_campaign(&c, 2);
    check_leader_transfer_state(&c, 1, FOLLOWER, 2);
    rf_close(&c);
}

Test(raft, leader_transfer_remove_node)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_ignore(&c, TKV_RAFT_MSG_TIMEOUT_NOW);
    transfer(&c, 1, 3);
    cr_assert_eq(st(&c, 1).lead_transferee, 3);
    apply_cc(&c, 1, TKV_RAFT_CONF_REMOVE_NODE, 3);
    check_leader_transfer_state(&c, 1, LEADER, 1);
    rf_close(&c);
}

Test(raft, leader_transfer_back)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    transfer(&c, 1, 3);
    cr_assert_eq(st(&c, 1).lead_transferee, 3);
    transfer(&c, 1, 1);
    check_leader_transfer_state(&c, 1, LEADER, 1);
    rf_close(&c);
}

Test(raft, leader_transfer_second_transfer_to_another_node)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    transfer(&c, 1, 3);
    cr_assert_eq(st(&c, 1).lead_transferee, 3);
    transfer(&c, 1, 2);
    check_leader_transfer_state(&c, 1, FOLLOWER, 2);
    rf_close(&c);
}

Test(raft, leader_transfer_second_transfer_to_same_node)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    rf_campaign(&c, 1);
    rf_isolate(&c, 3);
    transfer(&c, 1, 3);
    rf_tick(&c, 1, 5);
    transfer(&c, 1, 3); /* does not restart the abort timer */
    rf_tick(&c, 1, 5);
    check_leader_transfer_state(&c, 1, LEADER, 1);
    rf_close(&c);
}

Test(raft, transfer_non_member)
{
    struct rf_cluster c;
    struct rf_opts o = rf_default_opts();
    rf_init(&c, 0, &o, 1);
    uint64_t peers[] = {2, 3, 4};
    rf_add_node(&c, 1, peers, 3);
    rf_node(&c, 1)->capture = true;
    struct tkv_raft_msg m = mk(TKV_RAFT_MSG_TIMEOUT_NOW, 2, 1, 1);
    rf_send(&c, &m);
    struct tkv_raft_msg v = mk(TKV_RAFT_MSG_VOTE_RESP, 2, 1, 1);
    rf_send(&c, &v);
    v.from = 3;
    rf_send(&c, &v);
    cr_assert_eq(role(&c, 1), FOLLOWER);
    rf_close(&c);
}

Test(raft, split_vote)
{
    struct rf_cluster c;
    net_new(&c, 3, NULL);
    /* 1 and 2 campaign in the same term, each votes for itself; 3 is cut */
    rf_isolate(&c, 3);
    rf_isolate(&c, 1);
    rf_isolate(&c, 2);
    rf_campaign(&c, 1);
    rf_campaign(&c, 2);
    cr_assert_eq(role(&c, 1), CANDIDATE);
    cr_assert_eq(role(&c, 2), CANDIDATE);
    cr_assert_eq(term(&c, 1), term(&c, 2));
    rf_heal(&c);
    /* next round: randomized timeouts pick a winner */
    for (int i = 0; i < 100 && !rf_leader(&c); i++)
        for (uint64_t id = 1; id <= 3; id++)
            rf_tick(&c, id, 1);
    uint64_t l = rf_leader(&c);
    cr_assert(l, "no leader after a split vote");
    cr_assert(term(&c, l) >= 2);
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}

static void report(struct rf_cluster *c, uint32_t type, uint64_t node, bool failed)
{
    struct tkv_raft_event ev = {.type = type};
    ev.u.report.node = node;
    ev.u.report.failed = failed;
    cr_assert_eq(rf_node_step(c, 1, &ev), 0);
    rf_settle(c);
}

/* etcd TestMsgAppRespWaitReset-style transport feedback, ours. */
Test(raft, report_snapshot_failure_retries_after_heartbeat)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    uint64_t ids[] = {1, 2};
    with_storage_snapshot(&c, 1, 11, 11, ids, 2);
    solo_make_leader(&c);
    struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, 2, 1, term(&c, 1));
    r.index = last_index(&c, 1) - 1;
    r.reject = true;
    rf_send(&c, &r);
    drop_msgs(&c, 1);
    cr_assert_eq(prog(&c, 1, 2).state, 2, "snapshot state");
    report(&c, TKV_RAFT_EV_REPORT_SNAPSHOT, 2, true);
    cr_assert_eq(prog(&c, 1, 2).state, 0, "probe after a failed snapshot");
    struct tkv_raft_msg *out;
    size_t n = drain(&c, 1, &out);
    cr_assert_eq(n, 0, "no immediate retry");
    rf_msgs_free(out, n);
    struct tkv_raft_msg hr = mk(TKV_RAFT_MSG_HEARTBEAT_RESP, 2, 1, term(&c, 1));
    rf_send(&c, &hr);
    n = drain(&c, 1, &out);
    bool snap = false;
    for (size_t i = 0; i < n; i++)
        snap |= out[i].type == TKV_RAFT_MSG_SNAPSHOT;
    rf_msgs_free(out, n);
    cr_assert(snap, "snapshot resent after the heartbeat response");
    rf_close(&c);
}

Test(raft, report_unreachable_stops_pipelining)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    solo_make_leader(&c);
    solo_commit_noop(&c, 2);
    cr_assert_eq(prog(&c, 1, 2).state, 1);
    report(&c, TKV_RAFT_EV_REPORT_UNREACHABLE, 2, false);
    cr_assert_eq(prog(&c, 1, 2).state, 0);
    propose_str(&c, 1, "a");
    propose_str(&c, 1, "b");
    struct tkv_raft_msg *out;
    size_t n = drain(&c, 1, &out);
    size_t appends = 0;
    for (size_t i = 0; i < n; i++)
        appends += out[i].type == TKV_RAFT_MSG_APPEND;
    rf_msgs_free(out, n);
    cr_assert_eq(appends, 1, "probe sends one append at a time, got %zu", appends);
    rf_close(&c);
}

Test(raft, malformed_messages_rejected_without_effect)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    struct tkv_raft_msg hb = mk(TKV_RAFT_MSG_HEARTBEAT, 2, 1, 2);
    rf_send(&c, &hb);
    drop_msgs(&c, 1);
    struct tkv_raft_status before = st(&c, 1);
    struct tkv_raft_entry gap[2] = {{.term = 2, .index = 1}, {.term = 2, .index = 3}};
    struct tkv_raft_entry back[2] = {{.term = 2, .index = 1}, {.term = 1, .index = 2}};
    struct tkv_raft_entry future[1] = {{.term = 1, .index = 1}}; /* below prev term */
    struct tkv_raft_msg bad[5];
    for (int i = 0; i < 5; i++)
        bad[i] = mk(TKV_RAFT_MSG_APPEND, 2, 1, 2);
    bad[0].entries = gap;
    bad[0].n_entries = 2;
    bad[1].entries = back;
    bad[1].n_entries = 2;
    bad[2].entries = future;
    bad[2].n_entries = 1;
    bad[2].log_term = 2;
    bad[3].type = TKV_RAFT_MSG_SNAPSHOT; /* without a snapshot */
    bad[4].type = 10;                    /* unused number */
    for (int i = 0; i < 5; i++) {
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &bad[i]};
        cr_assert_eq(rf_node_step(&c, 1, &ev), TKV_EPROTO, "case %d", i);
    }
    rf_settle(&c);
    struct tkv_raft_status after = st(&c, 1);
    cr_assert_eq(after.last_index, before.last_index);
    cr_assert_eq(after.hs.term, before.hs.term);
    struct tkv_raft_msg *out;
    size_t n = drain(&c, 1, &out);
    cr_assert_eq(n, 0, "no response to a malformed message");
    rf_msgs_free(out, n);
    rf_close(&c);
}

/* etcd's ErrSnapshotTemporarilyUnavailable: a storage still generating the
 * snapshot answers TKV_EUNAVAILABLE; the leader sends nothing, keeps
 * probing the follower, and sends the snapshot at a heartbeat response
 * after it became available (the raftstore generates over many turns). */
Test(raft, snapshot_temporarily_unavailable_retried)
{
    struct rf_cluster c;
    solo_new(&c, 2, NULL);
    uint64_t ids[] = {1, 2};
    with_storage_snapshot(&c, 1, 11, 11, ids, 2);
    solo_make_leader(&c);
    rf_node(&c, 1)->ms.snap_unavailable = true;
    struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, 2, 1, term(&c, 1));
    r.index = last_index(&c, 1) - 1;
    r.reject = true;
    rf_send(&c, &r);
    struct tkv_raft_msg *out;
    size_t n = drain(&c, 1, &out);
    for (size_t i = 0; i < n; i++)
        cr_assert_neq(out[i].type, TKV_RAFT_MSG_SNAPSHOT, "snapshot sent while unavailable");
    rf_msgs_free(out, n);
    cr_assert_eq(prog(&c, 1, 2).state, 0, "still probing while the snapshot is generated");
    /* heartbeat responses while still unavailable: no snapshot, no error */
    for (int k = 0; k < 3; k++) {
        struct tkv_raft_msg hr = mk(TKV_RAFT_MSG_HEARTBEAT_RESP, 2, 1, term(&c, 1));
        rf_send(&c, &hr);
        n = drain(&c, 1, &out);
        for (size_t i = 0; i < n; i++)
            cr_assert_neq(out[i].type, TKV_RAFT_MSG_SNAPSHOT, "snapshot sent while unavailable");
        rf_msgs_free(out, n);
    }
    cr_assert_eq(role(&c, 1), LEADER);
    rf_node(&c, 1)->ms.snap_unavailable = false;
    struct tkv_raft_msg hr = mk(TKV_RAFT_MSG_HEARTBEAT_RESP, 2, 1, term(&c, 1));
    rf_send(&c, &hr);
    n = drain(&c, 1, &out);
    bool snap = false;
    for (size_t i = 0; i < n; i++)
        if (out[i].type == TKV_RAFT_MSG_SNAPSHOT) {
            snap = true;
            cr_assert_eq(out[i].snapshot->index, 11);
        }
    rf_msgs_free(out, n);
    cr_assert(snap, "snapshot not sent once available");
    cr_assert_eq(prog(&c, 1, 2).state, 2, "snapshot state after sending it");
    cr_assert(!c.failed, "%s", c.err);
    rf_close(&c);
}
