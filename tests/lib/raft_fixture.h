/* Deterministic in-memory Raft cluster (modelled on canonical/raft's
 * raft_fixture): virtual time, a message queue with latency, drop,
 * duplicate, reorder, partitions and isolation, per-node disks that lose
 * what was not reported persisted on crash, and safety invariants checked
 * after every event. Single-threaded; seeded; replayable. */
#ifndef TKV_TEST_RAFT_FIXTURE_H
#define TKV_TEST_RAFT_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "raft_memstore.h"
#include "tkv/raft.h"

#define RF_MAX_NODES 12

struct rf_write; /* a pending disk write (hard state, entries, snapshot, msgs) */

struct rf_applied {
    tkv_index index;
    tkv_term term;
    uint32_t type;
    struct tkv_raft_buf *data;
};

struct rf_node {
    uint64_t id;
    bool exists, alive;
    bool capture;   /* keep outgoing messages in outbox instead of sending */
    bool auto_conf; /* apply committed conf changes automatically */
    struct tkv_raft *r;
    struct raft_memstore ms;
    struct tkv_raft_config cfg;
    uint64_t peers[TKV_RAFT_MAX_VOTERS];
    struct rf_write *writes;
    size_t n_writes, cap_writes;
    struct tkv_raft_msg *outbox;
    size_t n_outbox, cap_outbox;
    /* state machine */
    tkv_index applied;
    uint64_t sm_hash;
    struct tkv_raft_entry *aq; /* committed, not yet applied (in order) */
    size_t n_aq, cap_aq;
    bool applying;
    struct rf_applied *applied_log; /* when the cluster records it */
    size_t n_applied_log, cap_applied_log;
    struct tkv_raft_read_state *reads;
    size_t n_reads, cap_reads;
    /* mirror of the node's log: prefix hashes of [mirror_base, ...] */
    uint64_t *mirror;
    tkv_index mirror_base;
    size_t n_mirror, cap_mirror;
    uint64_t next_tick;
    bool was_leader;
};

struct rf_opts {
    uint32_t election_tick, heartbeat_tick;
    bool pre_vote, check_quorum, lease_read;
    uint64_t max_msg_bytes;
    uint32_t max_inflight;
    /* virtual time: 0 latencies = synchronous mode (catalog tests) */
    uint32_t tick_interval;
    uint32_t net_min, net_max, disk_min, disk_max;
    uint32_t drop_pct, dup_pct;
    bool bootstrap_snapshot; /* start from a snapshot at index 5 (TinyKV) */
    bool record_applied;
    bool report_transport; /* REPORT_UNREACHABLE / REPORT_SNAPSHOT feedback */
};

struct rf_inflight;
struct rf_hash;

struct rf_cluster {
    struct rf_opts o;
    uint64_t seed, rng, now, seq;
    size_t n; /* node ids 1..n are slots 0..n-1 */
    struct rf_node nodes[RF_MAX_NODES];
    bool cut[RF_MAX_NODES + 1][RF_MAX_NODES + 1];
    uint32_t drop_link[RF_MAX_NODES + 1][RF_MAX_NODES + 1]; /* percent */
    uint32_t ignore_types; /* bitmask of message types dropped */
    struct rf_inflight *q;
    size_t n_q, cap_q;
    /* invariants */
    uint64_t *leader_of_term;
    size_t n_leader_of_term;
    struct rf_hash *chain; /* (index, term) -> prefix hash */
    uint64_t *commit_hash;    /* committed prefix hash per index */
    uint64_t *commit_minterm; /* lowest term that reported it committed */
    size_t n_commit;
    tkv_index max_commit;
    struct { uint64_t ctx, node; tkv_index min_index; bool done; } *rd;
    size_t n_rd, cap_rd;
    uint64_t next_ctx, next_payload;
    bool failed;
    char err[512];
    uint64_t n_events, n_delivered, n_dropped;
};

struct rf_opts rf_default_opts(void);
/* nodes 1..n are members; extra spare slots up to RF_MAX_NODES can join. */
void rf_init(struct rf_cluster *c, size_t n, const struct rf_opts *o, uint64_t seed);
/* Create node id with an empty log (bootstrapping with peers if given). */
void rf_add_node(struct rf_cluster *c, uint64_t id, const uint64_t *peers, size_t n_peers);
void rf_close(struct rf_cluster *c);
struct rf_node *rf_node(struct rf_cluster *c, uint64_t id);
struct tkv_raft *rf_raft(struct rf_cluster *c, uint64_t id);

/* Feed one event to node id and handle the update; returns step's rv. */
int rf_node_step(struct rf_cluster *c, uint64_t id, const struct tkv_raft_event *ev);
/* Deliver m to m->to now (local messages too), then run to quiescence
 * (synchronous mode). */
int rf_send(struct rf_cluster *c, const struct tkv_raft_msg *m);
/* Process every event due now (synchronous mode). */
void rf_settle(struct rf_cluster *c);
/* Hup / propose / tick helpers (settle afterwards). */
void rf_campaign(struct rf_cluster *c, uint64_t id);
int rf_propose(struct rf_cluster *c, uint64_t id, const void *data, size_t len);
int rf_propose_conf(struct rf_cluster *c, uint64_t id, uint32_t type, uint64_t node);
void rf_tick(struct rf_cluster *c, uint64_t id, int times);
int rf_read(struct rf_cluster *c, uint64_t id, uint64_t *ctx_out);

/* Network control. */
void rf_isolate(struct rf_cluster *c, uint64_t id);
void rf_cut(struct rf_cluster *c, uint64_t a, uint64_t b);
void rf_heal(struct rf_cluster *c);
void rf_drop(struct rf_cluster *c, uint64_t from, uint64_t to, uint32_t pct);
void rf_ignore(struct rf_cluster *c, uint32_t msg_type);
/* Crash: lose unpersisted writes and unsent messages. */
void rf_crash(struct rf_cluster *c, uint64_t id);
void rf_restart(struct rf_cluster *c, uint64_t id);
/* Compact node id's storage up to its applied index. */
int rf_compact(struct rf_cluster *c, uint64_t id);

/* Virtual time: process the next event (tick, disk, message). */
void rf_step(struct rf_cluster *c);
/* Run until time >= now + duration. */
void rf_run(struct rf_cluster *c, uint64_t duration);

uint64_t rf_leader(struct rf_cluster *c); /* a live leader with the highest term, 0 if none */
uint64_t rf_rand(struct rf_cluster *c);
/* Take node id's captured messages (caller frees with rf_msgs_free). */
size_t rf_take_msgs(struct rf_cluster *c, uint64_t id, struct tkv_raft_msg **out);
void rf_msgs_free(struct tkv_raft_msg *m, size_t n);
/* Build a buffer from bytes (aborts on OOM unless allow_fail). */
struct tkv_raft_buf *rf_buf(const void *p, size_t len);
void rf_fail(struct rf_cluster *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
