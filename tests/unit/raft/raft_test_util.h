/* Helpers shared by the raft catalog tests: build clusters, inspect state,
 * craft messages. Header-only (static inline) to keep one test binary. */
#ifndef TKV_RAFT_TEST_UTIL_H
#define TKV_RAFT_TEST_UTIL_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "raft_fixture.h"
#include "tkv/err.h"
#include "tkv/raft.h"

#define FOLLOWER TKV_RAFT_FOLLOWER
#define CANDIDATE TKV_RAFT_CANDIDATE
#define LEADER TKV_RAFT_LEADER
#define PRE_CANDIDATE TKV_RAFT_PRE_CANDIDATE

static inline struct tkv_raft_status st(struct rf_cluster *c, uint64_t id)
{
    struct tkv_raft_status s;
    tkv_raft_status(rf_raft(c, id), &s);
    return s;
}

static inline uint32_t role(struct rf_cluster *c, uint64_t id)
{
    return st(c, id).ss.role;
}

static inline tkv_term term(struct rf_cluster *c, uint64_t id)
{
    return st(c, id).hs.term;
}

static inline tkv_index committed(struct rf_cluster *c, uint64_t id)
{
    return st(c, id).hs.commit;
}

static inline tkv_index last_index(struct rf_cluster *c, uint64_t id)
{
    return st(c, id).last_index;
}

static inline struct tkv_raft_progress_info prog(struct rf_cluster *c, uint64_t leader, uint64_t id)
{
    struct tkv_raft_progress_info p;
    memset(&p, 0, sizeof(p));
    cr_assert_eq(tkv_raft_progress(rf_raft(c, leader), id, &p), 0, "no progress for %llu",
                 (unsigned long long)id);
    return p;
}

/* A synchronous cluster of n nodes (ids 1..n), options tweakable. */
static inline void net_new(struct rf_cluster *c, size_t n, const struct rf_opts *o)
{
    struct rf_opts d = rf_default_opts();
    d.record_applied = true;
    rf_init(c, n, o ? o : &d, 1);
}

/* One raft (id 1) among `n` peers whose messages are captured, not sent. */
static inline void solo_new(struct rf_cluster *c, size_t n_peers, const struct rf_opts *o)
{
    struct rf_opts d = rf_default_opts();
    d.record_applied = true;
    rf_init(c, 0, o ? o : &d, 1);
    uint64_t peers[RF_MAX_NODES];
    for (size_t i = 0; i < n_peers; i++)
        peers[i] = i + 1;
    rf_add_node(c, 1, peers, n_peers);
    rf_node(c, 1)->capture = true;
    rf_node(c, 1)->auto_conf = false;
}

/* Rebuild node id from scratch with log terms[0..n) at indexes 1..n and a
 * hard state of (hs_term, vote 0, commit). */
static inline void node_reset_log(struct rf_cluster *c, uint64_t id, const tkv_term *terms,
                                  size_t n, tkv_term hs_term, tkv_index commit)
{
    struct rf_node *nd = rf_node(c, id);
    rf_crash(c, id);
    struct tkv_raft_entry e[64];
    cr_assert(n <= 64);
    for (size_t i = 0; i < n; i++)
        e[i] = (struct tkv_raft_entry){.term = terms[i], .index = i + 1};
    raft_memstore_append(&nd->ms, e, n);
    nd->ms.hs = (struct tkv_raft_hard_state){.term = hs_term, .commit = commit};
    rf_restart(c, id);
}

static inline size_t drain(struct rf_cluster *c, uint64_t id, struct tkv_raft_msg **out)
{
    rf_settle(c);
    return rf_take_msgs(c, id, out);
}

static inline void drop_msgs(struct rf_cluster *c, uint64_t id)
{
    struct tkv_raft_msg *m;
    size_t n = drain(c, id, &m);
    rf_msgs_free(m, n);
}

static inline struct tkv_raft_msg mk(uint32_t type, uint64_t from, uint64_t to, tkv_term t)
{
    return (struct tkv_raft_msg){.type = type, .from = from, .to = to, .term = t};
}

/* Make captured node 1 leader by faking a vote from 2 (solo clusters). */
static inline void solo_make_leader(struct rf_cluster *c)
{
    rf_campaign(c, 1);
    for (uint64_t p = 2; p <= st(c, 1).conf.n_voters && role(c, 1) != LEADER; p++) {
        struct tkv_raft_msg v = mk(TKV_RAFT_MSG_VOTE_RESP, p, 1, term(c, 1));
        rf_send(c, &v);
    }
    cr_assert_eq(role(c, 1), LEADER);
    drop_msgs(c, 1);
}

/* Leader 1 (solo): acknowledge everything up to its last index from all
 * peers so the no-op commits. */
static inline void solo_commit_noop(struct rf_cluster *c, size_t n_peers)
{
    tkv_index li = last_index(c, 1);
    for (uint64_t p = 2; p <= n_peers; p++) {
        struct tkv_raft_msg r = mk(TKV_RAFT_MSG_APPEND_RESP, p, 1, term(c, 1));
        r.index = li;
        rf_send(c, &r);
    }
    drop_msgs(c, 1);
}

static inline int propose_str(struct rf_cluster *c, uint64_t id, const char *s)
{
    return rf_propose(c, id, s, strlen(s));
}

static inline bool data_is(const struct tkv_raft_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (!b)
        return n == 0;
    return b->len == n && memcmp(b->data, s, n) == 0;
}

static inline struct tkv_raft_event ev_tick(void)
{
    return (struct tkv_raft_event){.type = TKV_RAFT_EV_TICK};
}

#endif
