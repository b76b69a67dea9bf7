/* The pure Raft library: one event in, one update out (tkv_raft_step).
 * No I/O, no clock, no hidden randomness, no threads: the caller persists,
 * sends, applies and ticks. See src/raft/README.md for the tour. */
#ifndef TKV_RAFT_H
#define TKV_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"

/*
 * CONTRACT (read this first)
 * --------------------------
 * A struct tkv_raft is one member of one Raft group. It belongs to exactly
 * one core: every function below must be called from the core that created
 * it, and none of them blocks or sleeps.
 *
 * The caller drives it with tkv_raft_step(r, event, update) and
 * tkv_raft_advance(r, update):
 *
 *     tkv_raft_step(r, &ev, &up);
 *     while (up.flags) {          // an update is outstanding
 *         handle(&up);            // steps a-e below; may call tkv_raft_step
 *         tkv_raft_advance(r, &up); // release it, take what accumulated
 *     }
 *
 *   1. Feed an event (tick, received message, proposal, ...).
 *   2. Handle the update it produced, IN THIS ORDER:
 *      a. Persist, in one ordered stream per group (updates are persisted in
 *         the order they were produced):
 *           - install `snapshot` (it replaces the whole stored log),
 *           - truncate the stored log after entries[0].index - 1 and append
 *             `entries`,
 *           - write `hard_state`,
 *         the entries before (or atomically with) the hard state. The
 *         snapshot need NOT be atomic with the hard state: a crash between
 *         them leaves hard_state.commit below the snapshot index, and
 *         tkv_raft_init repairs that (the snapshot index is committed; a
 *         term older than the snapshot's is raised to it, without a vote)
 *         and the first update rewrites the repaired hard state.
 *      b. PERSIST BEFORE YOU SEND WHAT DEPENDS ON IT: the `msgs` of an update
 *         may go on the wire only after (a) of the same update and of every
 *         earlier update is durable, because a vote or an append
 *         acknowledgement promises that the state is on disk. (A leader's
 *         MSG_APPEND may be sent before its own copy is durable, Raft thesis
 *         10.2.1, but the simple rule is always safe.)
 *      c. When (a) is durable, report it: first
 *         TKV_RAFT_EV_SNAPSHOT_PERSISTED with the snapshot index (if the
 *         update had one), then TKV_RAFT_EV_LOG_PERSISTED with the last
 *         index and term of the persisted `entries` (if any). The leader
 *         counts its own copy toward commit only after this report; a
 *         report for entries overwritten since is recognised and ignored.
 *         The report may come later (after a group commit), while this or
 *         a later update is outstanding.
 *      d. Apply `committed` entries in order (they are always durable
 *         locally already; at most 4096 per update, the rest follow in
 *         later updates). For a committed TKV_RAFT_ENTRY_CONF_CHANGE entry,
 *         decode your payload and feed TKV_RAFT_EV_APPLY_CONF_CHANGE.
 *         Report progress with TKV_RAFT_EV_APPLIED, entry by entry if you
 *         like: stepping while an update is outstanding is safe.
 *      e. Hand `read_states` to the waiting readers: a read with context ctx
 *         is linearizable once the local applied index reaches its index.
 *   UPDATE LIFETIME. Everything an update points to (arrays, messages,
 *   entries, the snapshot) is owned by the raft and stays valid until the
 *   caller calls tkv_raft_advance() (or tkv_raft_close()), whatever events
 *   are stepped meanwhile. While an update is outstanding, tkv_raft_step()
 *   hands out an EMPTY update (flags 0) and keeps what the event produced
 *   for the update tkv_raft_advance() returns, so nothing is lost or
 *   reordered; a caller that never advances sees nothing more. An update
 *   with flags 0 is not outstanding. To keep a payload beyond the advance,
 *   take a reference with tkv_raft_buf_ref(). Copying the update struct is
 *   fine; the caller never frees anything in it.
 *
 * GENESIS AND NEW MEMBERS (TinyKV's way). A group is born by writing the
 * same state into every initial voter's storage, as if it had installed a
 * snapshot: snapshot point TKV_RAFT_INIT_INDEX / TKV_RAFT_INIT_TERM (no
 * entries), conf state = the initial voters, hard state {term
 * TKV_RAFT_INIT_TERM, vote 0, commit TKV_RAFT_INIT_INDEX}. A member added
 * later starts UNINITIALIZED: empty storage (first 1, last 0), empty conf
 * state, no cfg.peers. It is not a voter in its own view, so it never
 * campaigns; the leader's first append does not match (its log starts at
 * INIT_INDEX + 1, which is compacted for the leader), so the leader sends a
 * snapshot, which brings the conf state. Never give cfg.peers to a member
 * that joins later: it would replay conf changes from index 1 without the
 * initial voters and could elect itself alone. cfg.peers (a log starting at
 * index 1) exists for the etcd/TinyKV catalog tests, where every member is
 * created at once with the same list.
 *
 * CONF STATE ON RESTART. initial_state must return a conf state that
 * includes every conf change up to at least cfg.applied (TinyKV: the
 * region's peers, written in the same engine transaction as the applied
 * index). Committed entries after cfg.applied are handed out again and
 * re-applying an ADD of a voter or a REMOVE of a non-voter is a no-op, so
 * a conf state newer than cfg.applied is also fine; an older one is not.
 *
 * The durable log is reached through struct tkv_raft_storage, which must
 * reflect exactly what the caller has persisted and reported (plus the
 * snapshot the caller compacted to). Raft keeps the not-yet-reported tail
 * ("unstable" entries) in memory itself.
 *
 * Memory: everything comes from tkv_malloc (include/tkv/mem.h). Allocation
 * failure never crashes: tkv_raft_step returns TKV_ENOMEM, the state stays
 * consistent and the event had no effect beyond what a lost message could
 * cause (a received message counts as lost; a proposal was not appended; a
 * tick may have reset the election timer without campaigning). The update
 * is still valid and must be handled. Failing to allocate an outgoing
 * message after the state changed just drops that message, as a lossy
 * network would; Raft retransmits (counted in tkv_raft_stats).
 *
 * Reads: a READ_INDEX request is answered by a read state (possibly in a
 * later update) or silently dropped when leadership changes; callers time
 * out and retry, as for proposals.
 */

/* ---- payloads shared by reference count ---- */

/* An immutable byte payload (entry data, snapshot data). Reference counted
 * without atomics: only the owning core may ref/unref it. */
struct tkv_raft_buf {
    uint32_t refs;
    size_t len;
    uint8_t *data; /* points at inline[] unless wrapped */
    void (*free_fn)(void *ctx, uint8_t *data);
    void *free_ctx;
    uint8_t inline_data[];
};

/* Allocate a buffer of len bytes (contents uninitialised) with one
 * reference owned by the caller. Errors: TKV_ENOMEM. Any core. */
int tkv_raft_buf_new(size_t len, struct tkv_raft_buf **buf_out);

/* Copy len bytes at p into a new buffer (one reference). Errors: TKV_ENOMEM. */
int tkv_raft_buf_copy(const void *p, size_t len, struct tkv_raft_buf **buf_out);

/* Wrap caller memory without copying; free_fn(free_ctx, data) runs when the
 * last reference drops (may be NULL). Takes ownership of data on success;
 * on error the caller still owns data. Errors: TKV_ENOMEM. */
int tkv_raft_buf_wrap(uint8_t *data, size_t len, void (*free_fn)(void *ctx, uint8_t *data),
                      void *free_ctx, struct tkv_raft_buf **buf_out);

/* Take / drop one reference (NULL is a no-op). */
struct tkv_raft_buf *tkv_raft_buf_ref(struct tkv_raft_buf *buf);
void tkv_raft_buf_unref(struct tkv_raft_buf *buf);

/* ---- log entries, snapshots, messages (mirror eraftpb 1:1) ---- */

enum tkv_raft_entry_type {
    TKV_RAFT_ENTRY_NORMAL = 0,      /* eraftpb EntryNormal */
    TKV_RAFT_ENTRY_CONF_CHANGE = 1, /* eraftpb EntryConfChange; data = marshalled ConfChange */
};

struct tkv_raft_entry {
    tkv_term term;
    tkv_index index;
    uint32_t type;             /* enum tkv_raft_entry_type */
    struct tkv_raft_buf *data; /* NULL = empty (the leader's no-op) */
};

/* Genesis point of a group (see GENESIS in the CONTRACT), as TinyKV's
 * RaftInitLogIndex / RaftInitLogTerm. */
#define TKV_RAFT_INIT_INDEX 5
#define TKV_RAFT_INIT_TERM 5

/* Upper bound of voters in one group (regions use 3-5). */
#define TKV_RAFT_MAX_VOTERS 16

struct tkv_raft_conf_state {
    uint32_t n_voters;
    uint64_t voters[TKV_RAFT_MAX_VOTERS]; /* eraftpb ConfState.nodes */
};

struct tkv_raft_snapshot {
    tkv_index index; /* SnapshotMetadata.index; 0 = no snapshot */
    tkv_term term;   /* SnapshotMetadata.term */
    struct tkv_raft_conf_state conf_state;
    struct tkv_raft_buf *data; /* opaque to raft; may be NULL */
};

struct tkv_raft_hard_state {
    tkv_term term;
    uint64_t vote;
    tkv_index commit;
};

/* Numbering follows eraftpb.MessageType (10 unused); 13.. are ours. */
enum tkv_raft_msg_type {
    TKV_RAFT_MSG_HUP = 0,  /* local: campaign now */
    TKV_RAFT_MSG_BEAT = 1, /* local: leader broadcasts heartbeats now */
    TKV_RAFT_MSG_PROPOSE = 2,
    TKV_RAFT_MSG_APPEND = 3,
    TKV_RAFT_MSG_APPEND_RESP = 4,
    TKV_RAFT_MSG_VOTE = 5,
    TKV_RAFT_MSG_VOTE_RESP = 6,
    TKV_RAFT_MSG_SNAPSHOT = 7,
    TKV_RAFT_MSG_HEARTBEAT = 8,
    TKV_RAFT_MSG_HEARTBEAT_RESP = 9,
    TKV_RAFT_MSG_TRANSFER_LEADER = 11, /* from = transferee (TinyKV convention) */
    TKV_RAFT_MSG_TIMEOUT_NOW = 12,
    TKV_RAFT_MSG_PRE_VOTE = 13,
    TKV_RAFT_MSG_PRE_VOTE_RESP = 14,
    TKV_RAFT_MSG_READ_INDEX = 15,      /* follower -> leader, ctx = reader's */
    TKV_RAFT_MSG_READ_INDEX_RESP = 16, /* leader -> follower, index = read index */
};

/* ctx value of a MSG_VOTE / MSG_PRE_VOTE sent because of MSG_TIMEOUT_NOW:
 * voters grant it even inside a leader lease. */
#define TKV_RAFT_CTX_TRANSFER 1

struct tkv_raft_msg {
    uint32_t type; /* enum tkv_raft_msg_type */
    uint64_t to;
    uint64_t from;
    tkv_term term;
    tkv_term log_term; /* APPEND: prev term; VOTE: last term; rejecting
                          APPEND_RESP: term at reject_hint */
    tkv_index index;   /* APPEND: prev index; VOTE: last index; APPEND_RESP:
                          last matching index (or rejected prev index) */
    tkv_index commit;
    bool reject;
    tkv_index reject_hint; /* ours: fast back-off, follower's probe point */
    uint64_t ctx;          /* ours: heartbeat / read-index context */
    struct tkv_raft_entry *entries;
    size_t n_entries;
    struct tkv_raft_snapshot *snapshot; /* MSG_SNAPSHOT only */
};

/* ---- storage (the caller's durable log) ---- */

/* All callbacks are synchronous and called on the raft's core. Entries
 * handed out carry one reference each that raft drops. The stored log is
 * the snapshot point (index first-1, term from term()) plus entries
 * [first, last]. An empty fresh log has first = 1, last = 0, term(0) = 0. */
struct tkv_raft_storage {
    void *ctx;
    /* Hard state and conf state as persisted. */
    int (*initial_state)(void *ctx, struct tkv_raft_hard_state *hs_out,
                         struct tkv_raft_conf_state *cs_out);
    /* Term of entry i for first-1 <= i <= last. Errors: TKV_ECOMPACTED
     * (i < first-1), TKV_EUNAVAILABLE (i > last). */
    int (*term)(void *ctx, tkv_index i, tkv_term *term_out);
    /* Entries [lo, hi) up to max_bytes of payload (at least one). out has
     * room for hi-lo. Errors: TKV_ECOMPACTED, TKV_EUNAVAILABLE, TKV_ENOMEM. */
    int (*entries)(void *ctx, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                   struct tkv_raft_entry *out, size_t *n_out);
    tkv_index (*first_index)(void *ctx);
    tkv_index (*last_index)(void *ctx);
    /* The latest snapshot (data referenced, raft unrefs). Errors:
     * TKV_EUNAVAILABLE while one is being generated (raft retries later). */
    int (*snapshot)(void *ctx, struct tkv_raft_snapshot *snap_out);
};

/* ---- configuration ---- */

struct tkv_raft_config {
    uint64_t id; /* this member's id, nonzero */
    /* Election timeout in ticks; the randomised timeout is drawn from
     * [election_tick, 2 * election_tick). Must exceed heartbeat_tick. */
    uint32_t election_tick;
    uint32_t heartbeat_tick;
    struct tkv_raft_storage storage;
    /* Bootstrap voters, used only when the storage's conf state is empty:
     * catalog tests only, see GENESIS in the CONTRACT. */
    const uint64_t *peers;
    size_t n_peers;
    tkv_index applied; /* last index applied by the caller before restart */
    uint64_t seed;     /* PRNG seed (election timeouts) */
    uint64_t max_msg_bytes;     /* payload bytes per MSG_APPEND (0: unlimited) */
    uint32_t max_inflight_msgs; /* unacknowledged MSG_APPENDs per follower (0: 256) */
    uint64_t max_committed_bytes; /* committed payload per update (0: unlimited) */
    bool pre_vote;                /* Raft thesis 9.6 */
    bool check_quorum;            /* leader steps down without a quorum */
    /* Serve reads from the leader lease without a heartbeat round. Needs
     * check_quorum, and assumes all members tick at the same rate. */
    bool lease_read;
};

/* ---- events ---- */

enum tkv_raft_event_type {
    TKV_RAFT_EV_TICK = 1,
    TKV_RAFT_EV_RECEIVE,           /* msg (also local HUP / BEAT) */
    TKV_RAFT_EV_PROPOSE,           /* entries: data of n normal entries */
    TKV_RAFT_EV_PROPOSE_CONF_CHANGE, /* conf_change_data */
    TKV_RAFT_EV_TRANSFER_LEADER,   /* target */
    TKV_RAFT_EV_READ_INDEX,        /* ctx */
    TKV_RAFT_EV_LOG_PERSISTED,     /* index, term */
    TKV_RAFT_EV_SNAPSHOT_PERSISTED, /* index */
    TKV_RAFT_EV_APPLIED,           /* index */
    TKV_RAFT_EV_APPLY_CONF_CHANGE, /* change_type, node_id */
    /* Transport feedback (leader only; ignored elsewhere). */
    TKV_RAFT_EV_REPORT_UNREACHABLE, /* report.node: sending to it failed */
    TKV_RAFT_EV_REPORT_SNAPSHOT,    /* report.node, report.failed: stream outcome */
};

enum tkv_raft_conf_change_type {
    TKV_RAFT_CONF_ADD_NODE = 0,    /* eraftpb AddNode */
    TKV_RAFT_CONF_REMOVE_NODE = 1, /* eraftpb RemoveNode */
};

struct tkv_raft_event {
    uint32_t type; /* enum tkv_raft_event_type */
    union {
        const struct tkv_raft_msg *msg; /* RECEIVE: borrowed for the call */
        struct {
            /* PROPOSE: borrowed array; raft takes its own references. NULL
             * elements make empty entries. */
            struct tkv_raft_buf *const *data;
            size_t n;
        } propose;
        struct tkv_raft_buf *conf_change_data; /* borrowed; raft refs it */
        uint64_t target;                      /* TRANSFER_LEADER */
        uint64_t ctx;                         /* READ_INDEX */
        struct {
            tkv_index index;
            tkv_term term;
        } persisted; /* LOG_PERSISTED / SNAPSHOT_PERSISTED (index only) */
        tkv_index applied;
        struct {
            uint32_t change_type; /* enum tkv_raft_conf_change_type */
            uint64_t node_id;
        } conf_change;
        struct {
            uint64_t node;
            bool failed;
        } report;
    } u;
};

/* ---- update ---- */

enum tkv_raft_role {
    TKV_RAFT_FOLLOWER = 0,
    TKV_RAFT_CANDIDATE = 1,
    TKV_RAFT_LEADER = 2,
    TKV_RAFT_PRE_CANDIDATE = 3,
};

struct tkv_raft_soft_state {
    uint64_t leader; /* 0 = unknown */
    uint32_t role;   /* enum tkv_raft_role */
};

struct tkv_raft_read_state {
    tkv_index index; /* read is linearizable once applied >= index */
    uint64_t ctx;
};

#define TKV_RAFT_UPDATE_HARD_STATE (1u << 0)
#define TKV_RAFT_UPDATE_ENTRIES (1u << 1)
#define TKV_RAFT_UPDATE_SNAPSHOT (1u << 2)
#define TKV_RAFT_UPDATE_MESSAGES (1u << 3)
#define TKV_RAFT_UPDATE_COMMITTED (1u << 4)
#define TKV_RAFT_UPDATE_READ_STATES (1u << 5)
#define TKV_RAFT_UPDATE_SOFT_STATE (1u << 6)
#define TKV_RAFT_UPDATE_CONF_STATE (1u << 7) /* membership changed */

struct tkv_raft_update {
    uint32_t flags; /* TKV_RAFT_UPDATE_* bits: which parts are present */
    struct tkv_raft_hard_state hard_state;
    struct tkv_raft_soft_state soft_state;
    struct tkv_raft_conf_state conf_state;
    const struct tkv_raft_snapshot *snapshot;
    const struct tkv_raft_entry *entries;
    size_t n_entries;
    const struct tkv_raft_msg *msgs;
    size_t n_msgs;
    const struct tkv_raft_entry *committed;
    size_t n_committed;
    const struct tkv_raft_read_state *read_states;
    size_t n_read_states;
};

struct tkv_raft;

/* Create a member from cfg and the state in cfg->storage. Copies cfg (the
 * storage ctx is borrowed until tkv_raft_close). Errors: TKV_EINVAL (bad
 * config, storage inconsistent), TKV_ENOMEM, storage errors. */
int tkv_raft_init(const struct tkv_raft_config *cfg, struct tkv_raft **r_out);

/* Free everything (NULL is a no-op). Any update pointers become invalid. */
void tkv_raft_close(struct tkv_raft *r);

/* Feed one event; fill *up with what the caller must do (see CONTRACT),
 * or with an empty update while the previous one is outstanding.
 * Returns 0 or:
 *   TKV_ENOTLEADER      PROPOSE / PROPOSE_CONF_CHANGE / READ_INDEX on a
 *                       member that is not (or knows no) leader
 *   TKV_EPROPOSALDROPPED proposal refused (leader transfer in progress,
 *                       leader not yet ready to serve reads)
 *   TKV_EBUSY           a conf change is already pending
 *   TKV_EINVAL          malformed event
 *   TKV_EPROTO          RECEIVE of a message no correct peer sends
 *                       (entries not contiguous after index, terms out of
 *                       order, MSG_SNAPSHOT without a snapshot, ...);
 *                       dropped without effect
 *   TKV_ENOMEM          allocation failed (see "Memory" in the CONTRACT)
 * *up is valid (possibly empty) whatever the return value. */
int tkv_raft_step(struct tkv_raft *r, const struct tkv_raft_event *ev, struct tkv_raft_update *up);

/* Release the outstanding update (if any) and fill *up with everything
 * produced since it was built (flags 0 if nothing). */
void tkv_raft_advance(struct tkv_raft *r, struct tkv_raft_update *up);

/* Read-only introspection (tests, raftstore status). */
struct tkv_raft_status {
    uint64_t id;
    struct tkv_raft_hard_state hs;
    struct tkv_raft_soft_state ss;
    tkv_index first_index, last_index, applied, persisted;
    uint64_t lead_transferee;
    struct tkv_raft_conf_state conf;
};
void tkv_raft_status(const struct tkv_raft *r, struct tkv_raft_status *st_out);

struct tkv_raft_progress_info {
    tkv_index match, next;
    uint32_t state; /* 0 probe, 1 replicate, 2 snapshot */
    bool recent_active;
};
/* Leader's view of peer id; TKV_ENOTFOUND if not a voter. */
int tkv_raft_progress(const struct tkv_raft *r, uint64_t id, struct tkv_raft_progress_info *out);

/* Term of index i in the in-memory view of the log; TKV_ECOMPACTED /
 * TKV_EUNAVAILABLE outside it. */
int tkv_raft_term(struct tkv_raft *r, tkv_index i, tkv_term *term_out);

/* Test hook: the current randomised election timeout in ticks. */
uint32_t tkv_raft_randomized_timeout(const struct tkv_raft *r);

struct tkv_raft_stats {
    uint64_t msgs_dropped_nomem;
};
void tkv_raft_stats(const struct tkv_raft *r, struct tkv_raft_stats *out);

#endif
