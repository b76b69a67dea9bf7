/* The Raft paper scenarios of TinyKV raft/raft_paper_test.go (TINYKV-API.md
 * 3.2), one Test per original, named after it. */
#include "raft_test_util.h"

static void update_term_from_message(uint32_t state)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    if (state == CANDIDATE) {
        rf_campaign(&c, 1);
    } else if (state == LEADER) {
        solo_make_leader(&c);
    }
    drop_msgs(&c, 1);
    struct tkv_raft_msg m = mk(TKV_RAFT_MSG_APPEND, 3, 1, 2);
    rf_send(&c, &m);
    cr_assert_eq(term(&c, 1), 2);
    cr_assert_eq(role(&c, 1), FOLLOWER);
    rf_close(&c);
}

Test(raft_paper, follower_update_term_from_message)
{
    update_term_from_message(FOLLOWER);
}

Test(raft_paper, candidate_update_term_from_message)
{
    update_term_from_message(CANDIDATE);
}

Test(raft_paper, leader_update_term_from_message)
{
    update_term_from_message(LEADER);
}

Test(raft_paper, start_as_follower)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    cr_assert_eq(role(&c, 1), FOLLOWER);
    cr_assert_eq(term(&c, 1), 0);
    rf_close(&c);
}

Test(raft_paper, leader_bcast_beat)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    solo_make_leader(&c);
    for (int i = 0; i < 10; i++)
        propose_str(&c, 1, "x");
    drop_msgs(&c, 1);
    rf_tick(&c, 1, 1); /* heartbeat_tick = 1 */
    struct tkv_raft_msg *m;
    size_t n = drain(&c, 1, &m);
    cr_assert_eq(n, 2, "want 2 heartbeats, got %zu msgs", n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(m[i].type, TKV_RAFT_MSG_HEARTBEAT);
        cr_assert_eq(m[i].from, 1);
        cr_assert_eq(m[i].to, i + 2);
        cr_assert_eq(m[i].term, 1);
        cr_assert_eq(m[i].n_entries, 0);
        cr_assert_eq(m[i].index, 0);
        cr_assert_eq(m[i].log_term, 0);
        cr_assert_eq(m[i].commit, 0, "commit = min(match, committed) = 0");
    }
    rf_msgs_free(m, n);
    rf_close(&c);
}

static void start_election(uint32_t state)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    if (state == FOLLOWER) {
        struct tkv_raft_msg hb = mk(TKV_RAFT_MSG_HEARTBEAT, 2, 1, 1);
        rf_send(&c, &hb);
    } else {
        rf_campaign(&c, 1);
    }
    drop_msgs(&c, 1);
    tkv_term t0 = term(&c, 1);
    rf_tick(&c, 1, 20);
    cr_assert_eq(term(&c, 1), t0 + 1);
    cr_assert_eq(role(&c, 1), CANDIDATE);
    cr_assert_eq(st(&c, 1).hs.vote, 1);
    struct tkv_raft_msg *m;
    size_t n = drain(&c, 1, &m);
    cr_assert_eq(n, 2);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(m[i].type, TKV_RAFT_MSG_VOTE);
        cr_assert_eq(m[i].to, i + 2);
        cr_assert_eq(m[i].term, t0 + 1);
    }
    rf_msgs_free(m, n);
    rf_close(&c);
}

Test(raft_paper, follower_start_election)
{
    start_election(FOLLOWER);
}

Test(raft_paper, candidate_start_new_election)
{
    start_election(CANDIDATE);
}

Test(raft_paper, leader_election_in_one_round_rpc)
{
    struct {
        size_t size;
        int n_votes; /* votes[i] for peers 2..: 1 grant, 0 reject, -1 none */
        int votes[4];
        uint32_t want;
    } tt[] = {
        {1, 0, {0}, LEADER},
        {3, 2, {1, 1}, LEADER},
        {3, 1, {1, -1}, LEADER},
        {5, 4, {1, 1, 1, 1}, LEADER},
        {5, 3, {1, 1, 1, -1}, LEADER},
        {5, 2, {1, 1, -1, -1}, LEADER},
        {3, 2, {0, 0}, FOLLOWER},
        {5, 4, {0, 0, 0, 0}, FOLLOWER},
        {5, 4, {1, 0, 0, 0}, FOLLOWER},
        {3, 0, {-1, -1}, CANDIDATE},
        {5, 1, {1, -1, -1, -1}, CANDIDATE},
        {5, 2, {0, 0, -1, -1}, CANDIDATE},
        {5, 0, {-1, -1, -1, -1}, CANDIDATE},
    };
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        solo_new(&c, tt[k].size, NULL);
        rf_campaign(&c, 1);
        for (int v = 0; v < tt[k].n_votes; v++) {
            if (tt[k].votes[v] < 0)
                continue;
            struct tkv_raft_msg r = mk(TKV_RAFT_MSG_VOTE_RESP, (uint64_t)v + 2, 1, 1);
            r.reject = tt[k].votes[v] == 0;
            rf_send(&c, &r);
        }
        cr_assert_eq(role(&c, 1), tt[k].want, "case %zu: role %u want %u", k, role(&c, 1),
                     tt[k].want);
        cr_assert_eq(term(&c, 1), 1, "case %zu", k);
        rf_close(&c);
    }
}

Test(raft_paper, follower_vote)
{
    struct {
        uint64_t vote, nvote;
        bool wreject;
    } tt[] = {{0, 2, false}, {0, 3, false}, {2, 2, false}, {3, 3, false}, {2, 3, true}, {3, 2, true}};
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        solo_new(&c, 3, NULL);
        struct rf_node *nd = rf_node(&c, 1);
        rf_crash(&c, 1);
        nd->ms.hs = (struct tkv_raft_hard_state){.term = 1, .vote = tt[k].vote};
        rf_restart(&c, 1);
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_VOTE, tt[k].nvote, 1, 1);
        rf_send(&c, &m);
        struct tkv_raft_msg *out;
        size_t n = drain(&c, 1, &out);
        cr_assert_eq(n, 1, "case %zu", k);
        cr_assert_eq(out[0].type, TKV_RAFT_MSG_VOTE_RESP);
        cr_assert_eq(out[0].to, tt[k].nvote);
        cr_assert_eq(out[0].reject, tt[k].wreject, "case %zu", k);
        rf_msgs_free(out, n);
        rf_close(&c);
    }
}

Test(raft_paper, candidate_fallback)
{
    tkv_term terms[] = {1, 2};
    for (size_t k = 0; k < 2; k++) {
        struct rf_cluster c;
        solo_new(&c, 3, NULL);
        rf_campaign(&c, 1);
        cr_assert_eq(role(&c, 1), CANDIDATE);
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_APPEND, 2, 1, terms[k]);
        rf_send(&c, &m);
        cr_assert_eq(role(&c, 1), FOLLOWER);
        cr_assert_eq(term(&c, 1), terms[k]);
        rf_close(&c);
    }
}

/* Ticks from a reset until the node campaigns. */
static uint32_t ticks_to_campaign(struct rf_cluster *c, tkv_term reset_term)
{
    struct tkv_raft_msg hb = mk(TKV_RAFT_MSG_HEARTBEAT, 2, 1, reset_term);
    rf_send(c, &hb);
    drop_msgs(c, 1);
    uint32_t t = 0;
    while (role(c, 1) == FOLLOWER && t < 100) {
        rf_tick(c, 1, 1);
        t++;
    }
    drop_msgs(c, 1);
    return t;
}

static void election_timeout_randomized(uint32_t state)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    bool seen[21] = {false};
    for (tkv_term k = 1; k <= 500; k++) {
        if (state == CANDIDATE) {
            rf_campaign(&c, 1);
            drop_msgs(&c, 1);
            tkv_term t0 = term(&c, 1);
            uint32_t t = 0;
            while (term(&c, 1) == t0 && t < 100) {
                rf_tick(&c, 1, 1);
                t++;
            }
            drop_msgs(&c, 1);
            cr_assert(t >= 10 && t < 20, "candidate timeout %u outside [10,20)", t);
            seen[t] = true;
            struct tkv_raft_msg hb = mk(TKV_RAFT_MSG_HEARTBEAT, 2, 1, term(&c, 1) + 1);
            rf_send(&c, &hb);
            drop_msgs(&c, 1);
        } else {
            uint32_t t = ticks_to_campaign(&c, term(&c, 1) + 1);
            cr_assert(t >= 10 && t < 20, "follower timeout %u outside [10,20)", t);
            seen[t] = true;
        }
    }
    for (int t = 11; t < 20; t++)
        cr_assert(seen[t], "timeout %d never drawn", t);
    rf_close(&c);
}

Test(raft_paper, follower_election_timeout_randomized)
{
    election_timeout_randomized(FOLLOWER);
}

Test(raft_paper, candidate_election_timeout_randomized)
{
    election_timeout_randomized(CANDIDATE);
}

static void election_timeout_nonconflict(uint32_t state)
{
    struct rf_cluster c;
    struct rf_opts o = rf_default_opts();
    rf_init(&c, 5, &o, 7);
    for (uint64_t i = 1; i <= 5; i++)
        rf_node(&c, i)->capture = true;
    int conflicts = 0, rounds = 300;
    for (int k = 0; k < rounds; k++) {
        for (uint64_t i = 1; i <= 5; i++) {
            struct tkv_raft_msg m = mk(TKV_RAFT_MSG_HEARTBEAT, i == 1 ? 2 : 1, i, 0);
            if (state == CANDIDATE)
                m.type = TKV_RAFT_MSG_APPEND_RESP; /* just bump the term below */
            m.term = term(&c, i) + 1;
            m.type = TKV_RAFT_MSG_HEARTBEAT;
            rf_send(&c, &m);
            if (state == CANDIDATE)
                rf_campaign(&c, i);
            drop_msgs(&c, i);
        }
        int fired = 0;
        while (fired == 0) {
            tkv_term before[6];
            for (uint64_t i = 1; i <= 5; i++)
                before[i] = term(&c, i);
            for (uint64_t i = 1; i <= 5; i++) {
                rf_tick(&c, i, 1);
                if (term(&c, i) != before[i])
                    fired++;
                drop_msgs(&c, i);
            }
        }
        if (fired > 1)
            conflicts++;
    }
    double p = (double)conflicts / rounds;
    cr_assert(p <= 0.3, "probability of conflicts %.2f > 0.3", p);
    rf_close(&c);
}

Test(raft_paper, followers_election_timeout_nonconflict)
{
    election_timeout_nonconflict(FOLLOWER);
}

Test(raft_paper, candidates_election_timeout_nonconflict)
{
    election_timeout_nonconflict(CANDIDATE);
}

Test(raft_paper, leader_start_replication)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    solo_make_leader(&c);
    solo_commit_noop(&c, 3);
    tkv_index li = last_index(&c, 1);
    propose_str(&c, 1, "some data");
    cr_assert_eq(last_index(&c, 1), li + 1);
    cr_assert_eq(committed(&c, 1), li);
    struct tkv_raft_msg *m;
    size_t n = drain(&c, 1, &m);
    cr_assert_eq(n, 2);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(m[i].type, TKV_RAFT_MSG_APPEND);
        cr_assert_eq(m[i].to, i + 2);
        cr_assert_eq(m[i].index, li);
        cr_assert_eq(m[i].log_term, 1);
        cr_assert_eq(m[i].commit, li);
        cr_assert_eq(m[i].n_entries, 1);
        cr_assert_eq(m[i].entries[0].index, li + 1);
        cr_assert_eq(m[i].entries[0].term, 1);
        cr_assert(data_is(m[i].entries[0].data, "some data"));
    }
    rf_msgs_free(m, n);
    rf_close(&c);
}

Test(raft_paper, leader_commit_entry)
{
    struct rf_cluster c;
    solo_new(&c, 3, NULL);
    solo_make_leader(&c);
    solo_commit_noop(&c, 3);
    tkv_index li = last_index(&c, 1);
    propose_str(&c, 1, "some data");
    struct tkv_raft_msg *m;
    size_t n = drain(&c, 1, &m);
    for (size_t i = 0; i < n; i++) {
        struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, m[i].to, 1, 1);
        r.index = m[i].index + m[i].n_entries;
        rf_send(&c, &r);
    }
    rf_msgs_free(m, n);
    cr_assert_eq(committed(&c, 1), li + 1);
    struct rf_node *nd = rf_node(&c, 1);
    cr_assert(nd->n_applied_log >= 1);
    cr_assert(data_is(nd->applied_log[nd->n_applied_log - 1].data, "some data"));
    n = drain(&c, 1, &m);
    cr_assert(n >= 2);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(m[i].type, TKV_RAFT_MSG_APPEND);
        cr_assert_eq(m[i].commit, li + 1, "new commit index is broadcast");
    }
    rf_msgs_free(m, n);
    rf_close(&c);
}

Test(raft_paper, leader_acknowledge_commit)
{
    struct {
        size_t size;
        int acceptors; /* number of followers that ack */
        bool wack;
    } tt[] = {{1, 0, true}, {3, 0, false}, {3, 1, true}, {3, 2, true},
              {5, 0, false}, {5, 1, false}, {5, 2, true}, {5, 3, true}, {5, 4, true}};
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        solo_new(&c, tt[k].size, NULL);
        solo_make_leader(&c);
        solo_commit_noop(&c, tt[k].size);
        tkv_index li = last_index(&c, 1);
        propose_str(&c, 1, "some data");
        drop_msgs(&c, 1);
        for (int a = 0; a < tt[k].acceptors; a++) {
            struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, (uint64_t)a + 2, 1, 1);
            r.index = li + 1;
            rf_send(&c, &r);
        }
        cr_assert_eq(committed(&c, 1) > li, tt[k].wack, "case %zu", k);
        rf_close(&c);
    }
}

Test(raft_paper, leader_commit_preceding_entries)
{
    tkv_term logs[][3] = {{0}, {2}, {1, 2}, {1}};
    size_t lens[] = {0, 1, 2, 1};
    for (size_t k = 0; k < 4; k++) {
        struct rf_cluster c;
        solo_new(&c, 3, NULL);
        node_reset_log(&c, 1, logs[k], lens[k], 2, 0);
        solo_make_leader(&c);
        cr_assert_eq(term(&c, 1), 3);
        propose_str(&c, 1, "some data");
        drop_msgs(&c, 1);
        tkv_index li = last_index(&c, 1);
        struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, 2, 1, 3);
        r.index = li;
        rf_send(&c, &r);
        cr_assert_eq(committed(&c, 1), li, "case %zu", k);
        struct rf_node *nd = rf_node(&c, 1);
        cr_assert_eq(nd->n_applied_log, li, "every preceding entry applied");
        cr_assert(data_is(nd->applied_log[li - 1].data, "some data"));
        rf_close(&c);
    }
}

Test(raft_paper, follower_commit_entry)
{
    const char *data[][2] = {{"some data", NULL}, {"some data", "some data2"}};
    for (size_t k = 0; k < 2; k++) {
        for (tkv_index commit = 1; commit <= (k == 0 ? 1u : 2u); commit++) {
            struct rf_cluster c;
            solo_new(&c, 3, NULL);
            struct tkv_raft_msg hb = mk(TKV_RAFT_MSG_HEARTBEAT, 2, 1, 1);
            rf_send(&c, &hb);
            struct tkv_raft_entry e[2];
            size_t ne = k + 1;
            for (size_t i = 0; i < ne; i++)
                e[i] = (struct tkv_raft_entry){.term = 1, .index = i + 1,
                                               .data = rf_buf(data[k][i], strlen(data[k][i]))};
            struct tkv_raft_msg m = mk(TKV_RAFT_MSG_APPEND, 2, 1, 1);
            m.entries = e;
            m.n_entries = ne;
            m.commit = commit;
            rf_send(&c, &m);
            for (size_t i = 0; i < ne; i++)
                tkv_raft_buf_unref(e[i].data);
            cr_assert_eq(committed(&c, 1), commit);
            struct rf_node *nd = rf_node(&c, 1);
            cr_assert_eq(nd->n_applied_log, commit);
            for (size_t i = 0; i < commit; i++)
                cr_assert(data_is(nd->applied_log[i].data, data[k][i]));
            rf_close(&c);
        }
    }
}

Test(raft_paper, follower_check_message_type_msg_append)
{
    struct {
        tkv_term term;
        tkv_index index;
        bool wreject;
    } tt[] = {{0, 0, false}, {1, 1, false}, {2, 2, false}, {1, 2, true}, {3, 3, true}};
    tkv_term terms[] = {1, 2};
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        solo_new(&c, 3, NULL);
        node_reset_log(&c, 1, terms, 2, 2, 1);
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_APPEND, 2, 1, 2);
        m.log_term = tt[k].term;
        m.index = tt[k].index;
        rf_send(&c, &m);
        struct tkv_raft_msg *out;
        size_t n = drain(&c, 1, &out);
        cr_assert_eq(n, 1);
        cr_assert_eq(out[0].type, TKV_RAFT_MSG_APPEND_RESP);
        cr_assert_eq(out[0].reject, tt[k].wreject, "case %zu", k);
        rf_msgs_free(out, n);
        rf_close(&c);
    }
}

Test(raft_paper, follower_append_entries)
{
    struct {
        tkv_index index;
        tkv_term term;
        tkv_term ents[2];
        size_t n;
        tkv_term want[3];
        size_t nwant;
    } tt[] = {
        {2, 2, {3}, 1, {1, 2, 3}, 3},
        {1, 1, {3, 4}, 2, {1, 3, 4}, 3},
        {0, 0, {1}, 1, {1, 2}, 2},
        {0, 0, {3}, 1, {3}, 1},
    };
    tkv_term base[] = {1, 2};
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        solo_new(&c, 3, NULL);
        node_reset_log(&c, 1, base, 2, 0, 0);
        struct tkv_raft_entry e[2];
        for (size_t i = 0; i < tt[k].n; i++)
            e[i] = (struct tkv_raft_entry){.term = tt[k].ents[i], .index = tt[k].index + 1 + i};
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_APPEND, 2, 1, 2);
        m.log_term = tt[k].term;
        m.index = tt[k].index;
        m.entries = e;
        m.n_entries = tt[k].n;
        rf_send(&c, &m);
        cr_assert_eq(last_index(&c, 1), tt[k].nwant, "case %zu", k);
        for (size_t i = 0; i < tt[k].nwant; i++) {
            tkv_term t = 0;
            cr_assert_eq(tkv_raft_term(rf_raft(&c, 1), i + 1, &t), 0);
            cr_assert_eq(t, tt[k].want[i], "case %zu index %zu", k, i + 1);
        }
        /* the persisted log (what went through updates) matches too */
        struct raft_memstore *ms = &rf_node(&c, 1)->ms;
        cr_assert_eq(raft_memstore_last(ms), tt[k].nwant);
        for (size_t i = 0; i < tt[k].nwant; i++)
            cr_assert_eq(ms->ents[i].term, tt[k].want[i]);
        rf_close(&c);
    }
}

/* Figure 7 of the Raft paper: the leader repairs every follower log. */
Test(raft_paper, leader_sync_follower_log)
{
    tkv_term leader_log[] = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6};
    struct {
        tkv_term t[12];
        size_t n;
    } tt[] = {
        {{1, 1, 1, 4, 4, 5, 5, 6, 6}, 9},
        {{1, 1, 1, 4}, 4},
        {{1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6}, 11},
        {{1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7}, 12},
        {{1, 1, 1, 4, 4, 4, 4}, 7},
        {{1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3}, 11},
    };
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        net_new(&c, 3, NULL);
        node_reset_log(&c, 1, leader_log, 10, 8, 0);
        node_reset_log(&c, 2, tt[k].t, tt[k].n, 8, 0);
        /* node 3 votes (term 8, empty log) but stays a black hole after */
        node_reset_log(&c, 3, NULL, 0, 8, 0);
        rf_campaign(&c, 1);
        /* 2 may reject (longer log); 3 grants */
        cr_assert_eq(role(&c, 1), LEADER, "case %zu", k);
        rf_isolate(&c, 3);
        propose_str(&c, 1, "x");
        rf_heal(&c);
        struct tkv_raft_msg beat = mk(TKV_RAFT_MSG_BEAT, 1, 1, 0);
        rf_send(&c, &beat);
        tkv_index l1 = last_index(&c, 1), l2 = last_index(&c, 2);
        cr_assert_eq(l1, l2, "case %zu: last %llu vs %llu", k, (unsigned long long)l1,
                     (unsigned long long)l2);
        for (tkv_index i = 1; i <= l1; i++) {
            tkv_term a = 0, b = 0;
            tkv_raft_term(rf_raft(&c, 1), i, &a);
            tkv_raft_term(rf_raft(&c, 2), i, &b);
            cr_assert_eq(a, b, "case %zu index %llu", k, (unsigned long long)i);
        }
        cr_assert(!c.failed, "%s", c.err);
        rf_close(&c);
    }
}

Test(raft_paper, vote_request)
{
    struct {
        tkv_term ents[2];
        size_t n;
        tkv_term wterm;
    } tt[] = {{{1}, 1, 2}, {{1, 2}, 2, 3}};
    for (size_t k = 0; k < 2; k++) {
        struct rf_cluster c;
        solo_new(&c, 3, NULL);
        struct tkv_raft_entry e[2];
        for (size_t i = 0; i < tt[k].n; i++)
            e[i] = (struct tkv_raft_entry){.term = tt[k].ents[i], .index = i + 1};
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_APPEND, 2, 1, tt[k].wterm - 1);
        m.entries = e;
        m.n_entries = tt[k].n;
        rf_send(&c, &m);
        drop_msgs(&c, 1);
        rf_tick(&c, 1, 20);
        struct tkv_raft_msg *out;
        size_t n = drain(&c, 1, &out);
        cr_assert_eq(n, 2);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(out[i].type, TKV_RAFT_MSG_VOTE);
            cr_assert_eq(out[i].term, tt[k].wterm);
            cr_assert_eq(out[i].index, tt[k].n);
            cr_assert_eq(out[i].log_term, tt[k].ents[tt[k].n - 1]);
        }
        rf_msgs_free(out, n);
        rf_close(&c);
    }
}

Test(raft_paper, voter)
{
    struct {
        tkv_term ents[2];
        size_t n;
        tkv_term logterm;
        tkv_index index;
        bool wreject;
    } tt[] = {
        {{1}, 1, 1, 1, false}, {{1}, 1, 1, 2, false}, {{1, 1}, 2, 1, 1, true},
        {{1}, 1, 2, 1, false}, {{1}, 1, 2, 2, false}, {{1, 1}, 2, 2, 1, false},
        {{2}, 1, 1, 1, true},  {{2}, 1, 1, 2, true},  {{2, 1}, 2, 1, 1, true},
    };
    for (size_t k = 0; k < TKV_ARRAY_LEN(tt); k++) {
        struct rf_cluster c;
        solo_new(&c, 2, NULL);
        node_reset_log(&c, 1, tt[k].ents, tt[k].n, 0, 0);
        struct tkv_raft_msg m = mk(TKV_RAFT_MSG_VOTE, 2, 1, 3);
        m.log_term = tt[k].logterm;
        m.index = tt[k].index;
        rf_send(&c, &m);
        struct tkv_raft_msg *out;
        size_t n = drain(&c, 1, &out);
        cr_assert_eq(n, 1);
        cr_assert_eq(out[0].type, TKV_RAFT_MSG_VOTE_RESP);
        cr_assert_eq(out[0].reject, tt[k].wreject, "case %zu", k);
        rf_msgs_free(out, n);
        rf_close(&c);
    }
}

Test(raft_paper, leader_only_commits_log_from_current_term)
{
    tkv_term ents[] = {1, 2};
    struct {
        tkv_index index, wcommit;
    } tt[] = {{1, 0}, {2, 0}, {3, 3}};
    for (size_t k = 0; k < 3; k++) {
        struct rf_cluster c;
        solo_new(&c, 2, NULL);
        node_reset_log(&c, 1, ents, 2, 2, 0);
        solo_make_leader(&c); /* term 3, no-op at index 3 */
        cr_assert_eq(term(&c, 1), 3);
        struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, 2, 1, 3);
        r.index = tt[k].index;
        rf_send(&c, &r);
        cr_assert_eq(committed(&c, 1), tt[k].wcommit, "case %zu", k);
        rf_close(&c);
    }
}
