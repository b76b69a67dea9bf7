/* Internals shared by the raftstore's files. */
#ifndef TKV_RS_PRIVATE_H
#define TKV_RS_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tkv/engine.h"
#include "tkv/mem.h"
#include "tkv/raftstore.h"

/* Test builds (TKV_SANITIZE: FIU_ENABLE with libfiu) can switch on known
 * bugs by name (fiu_enable("raftstore/...")) so the simulator's checks are
 * shown to catch them (tests/cluster/raftstore/test_confchange.c). Release
 * builds compile every RS_BUG to false. */
#ifdef FIU_ENABLE
#include <fiu.h>
#define RS_BUG(name) (fiu_fail("raftstore/" name) != 0)
#else
#define RS_BUG(name) false
#endif

/* Order of region bounds and raw keys: bytes, then length (a prefix sorts
 * first; "" is the smallest). An empty end bound means +infinity: callers
 * test for it before comparing. */
static inline int rs_bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0; /* a or b may be NULL when empty */
    return c ? c : (al > bl) - (al < bl);
}

/* Growable byte buffer (aborts on OOM: server layer). */
struct rs_buf {
    uint8_t *p;
    size_t len, cap;
};
void rs_buf_reserve(struct rs_buf *b, size_t more);
void rs_buf_bytes(struct rs_buf *b, const void *p, size_t n);
void rs_buf_u8(struct rs_buf *b, uint8_t v);
void rs_buf_u32(struct rs_buf *b, uint32_t v);
void rs_buf_u64(struct rs_buf *b, uint64_t v);
void rs_buf_slice(struct rs_buf *b, struct tkv_slice s);
void rs_buf_free(struct rs_buf *b);

/* Bounds-checked reader. */
struct rs_rd {
    const uint8_t *p;
    size_t len, off;
};
bool rs_rd_u8(struct rs_rd *r, uint8_t *v);
bool rs_rd_u32(struct rs_rd *r, uint32_t *v);
bool rs_rd_u64(struct rs_rd *r, uint64_t *v);
bool rs_rd_slice(struct rs_rd *r, size_t max, struct tkv_slice *s);

void rs_encode_region(struct rs_buf *b, const struct tkv_rs_region *rg);
bool rs_decode_region(struct rs_rd *r, struct tkv_rs_region *rg);

/* RaftApplyState. */
struct rs_apply_state {
    tkv_index applied;
    tkv_index truncated_index;
    tkv_term truncated_term;
};
#define RS_META_KEY_LEN 11
size_t rs_key_apply_state(uint8_t out[RS_META_KEY_LEN], uint64_t region_id);
size_t rs_key_region_state(uint8_t out[RS_META_KEY_LEN], uint64_t region_id);
void rs_encode_apply_state(struct rs_buf *b, const struct rs_apply_state *a);
bool rs_decode_apply_state(struct tkv_slice v, struct rs_apply_state *a);

/* Region state value: u8 state (0 normal, 1 tombstone) + region. */
enum { RS_REGION_NORMAL = 0, RS_REGION_TOMBSTONE = 1 };

extern const enum tkv_cf rs_data_cfs[3];
/* The payload in pieces (the generator, rs_snapgen.c, writes it over many
 * turns): header, then per data CF a u64 count followed by the pairs, then
 * the checksum. */
void rs_snapshot_begin(struct rs_buf *b, const struct tkv_rs_region *rg);
void rs_snapshot_pair(struct rs_buf *b, struct tkv_slice k, struct tkv_slice v);
void rs_snapshot_finish(struct rs_buf *b);
/* The whole payload of region rg from one engine snapshot opened now, in
 * one call: what a generation must produce (the simulator's oracle). */
int rs_snapshot_build(struct tkv_engine_session *sess, const struct tkv_rs_region *rg,
                      struct rs_buf *b);
/* Verify checksum and framing; the region it carries and where the body
 * starts. Errors: TKV_ECORRUPT. */
int rs_snapshot_check(struct tkv_slice data, struct tkv_rs_region *rg_out, size_t *body_off);
/* skip_lock (may be NULL): LOCK CF keys of the snapshot not to write (held
 * by another region of the store, rs_lock_managed_elsewhere). */
int rs_snapshot_to_batch(struct tkv_slice data, size_t body_off, struct tkv_engine_batch *batch,
                         bool (*skip_lock)(void *ctx, struct tkv_slice key), void *ctx);

/* ---- the LOCK CF and region bounds (rs_lockcf.c, README) ----
 * A region takes the LOCK CF keys it holds raw (raw writes) or in
 * EncodeBytes form (transactional locks); rs_lock_scan_bounds gives a raw
 * range [lo, hi) (hi_len 0: +infinity) holding every such key. */
bool rs_lock_key_in_region(const struct tkv_rs_region *rg, struct tkv_slice k);
struct rs_lock_bounds {
    uint8_t lo[TKV_RS_BOUND_MAX], hi[TKV_RS_BOUND_MAX];
    uint32_t lo_len, hi_len;
};
void rs_lock_scan_bounds(const struct tkv_rs_region *rg, struct rs_lock_bounds *out);
struct tkv_raftstore;
/* Whether an initialized region of the store other than region_id holds
 * EncodeBytes(k) (then that region manages the key on this store). */
bool rs_lock_managed_elsewhere(const struct tkv_raftstore *s, uint64_t region_id,
                               struct tkv_slice k);
/* An iterator over the keys of data CF cf that rg's snapshot takes: the
 * raw range, or for the LOCK CF the rule's scan bounds, and then *filter is
 * set: each key must also pass rs_lock_key_in_region. */
int rs_snapshot_iter_open(struct tkv_engine_snap *snap, enum tkv_cf cf,
                          const struct tkv_rs_region *rg, struct tkv_engine_iter **it,
                          bool *filter);
/* Stage into b the deletion of the LOCK CF keys rg manages on this store. */
int rs_delete_region_locks(struct tkv_raftstore *s, const struct tkv_rs_region *rg,
                           struct tkv_engine_batch *b);

enum {
    RS_CMD_WRITE = 1,
    RS_CMD_COMPACT_LOG = 2,
    /* a transactional command's write list: as RS_CMD_WRITE, but LOCK CF
     * keys are user keys checked in EncodeBytes form (tkv_raftstore_txn) */
    RS_CMD_TXN_WRITE = 5,
    /* ChangePeer, the payload of a raft CONF_CHANGE entry (rs_confchange.c):
     * header + u8 change type + u64 peer id + u64 store id */
    RS_CMD_CHANGE_PEER = 3,
    /* split (rs_split.c): body slice split_key | u64 new_region_id | u32 n
     * | n x u64 new peer id (peers[i] of the new region on the store of
     * the parent's peers[i]); checked against both epoch numbers */
    RS_CMD_SPLIT = 4,
};
enum { RS_OP_PUT = 1, RS_OP_DELETE = 2 };
void rs_cmd_header(struct rs_buf *b, uint8_t kind, const struct tkv_rs_region *rg);
bool rs_cmd_decode_header(struct rs_rd *r, uint8_t *kind, uint64_t *region_id,
                          struct tkv_rs_epoch *ep);

/* ---- The store and its peers (raftstore.c; shared with the files of
 * multi-raft admin: conf change, split). All of it lives on the store's
 * core; nothing here is thread-safe. */
struct rs_proposal {
    tkv_index index;
    tkv_term term;
    tkv_rs_done_fn cb;
    void *arg;
};

/* A command waiting for this turn's Ready: a turn's commands go to raft as
 * ONE proposal, so each follower gets one append per turn, not one per
 * command (tkv_raftstore_ready, flush_proposals). */
struct rs_pending_prop {
    struct tkv_raft_buf *data;
    tkv_rs_done_fn cb;
    void *arg;
};

struct rs_read {
    uint64_t ctx;
    tkv_index index; /* 0 until the read state arrived */
    enum tkv_cf cf;
    uint8_t *key; /* get: the key; scan: the start key */
    size_t key_len;
    bool scan;
    uint32_t limit;
    tkv_rs_txn_run_fn run; /* a transactional command (tkv_raftstore_txn) */
    tkv_rs_done_fn cb;
    void *arg;
    uint64_t version; /* region version when started: a split meanwhile answers EpochNotMatch */
};

/* Split checker state of a peer (rs_split.c). */
struct rs_split_check {
    uint64_t size_diff;   /* bytes put by applied entries since the last scan began */
    uint64_t approx_size; /* size found by the last complete scan */
    bool size_known;
    /* an incremental scan of the DEFAULT CF in progress (bounded per tick) */
    bool scanning;
    struct tkv_rs_epoch scan_epoch; /* a change meanwhile abandons the scan */
    struct rs_buf resume;           /* the next scan turn reads keys >= resume */
    uint64_t scan_sum;
    bool have_key;
    struct rs_buf split_key;
    /* ask_split sent for this epoch at this tick (asked_tick 0: none) */
    struct tkv_rs_epoch asked_epoch;
    uint64_t asked_tick;
};

struct rs_peer {
    struct tkv_raftstore *s;
    uint64_t serial; /* tells incarnations apart in completions */
    struct tkv_rs_region region;
    uint64_t peer_id;
    bool initialized; /* has a region state (bootstrapped or from a snapshot) */
    struct tkv_raft *raft;
    struct tkv_raft_update up;
    bool has_up;
    struct rs_apply_state apply;
    tkv_index ckpt_applied, durable_applied;
    uint64_t leader_peer_id;
    bool is_leader;
    struct rs_proposal *props;
    size_t n_props, cap_props;
    struct rs_pending_prop *pend;
    size_t n_pend, cap_pend;
    struct rs_read *reads;
    size_t n_reads, cap_reads;
    /* what this turn staged in the raft log, reported when it is synced */
    bool staged_entries, staged_snap;
    tkv_index staged_last;
    tkv_term staged_last_term;
    tkv_index staged_snap_index;
    /* term of the hard state staged this turn (0: none), and the highest
     * term known durable in the raft log: a leader sends before its own
     * sync only in a term it has persisted (rs_queue_msg) */
    tkv_term staged_term, synced_term;
    /* A snapshot of the outstanding update is in the engine (one batch,
     * not durable yet); the rest of the update (the raft log compaction to
     * it, entries, hard state, messages) is held, not advanced, until a
     * checkpoint that began after that write completes: _done releases it
     * once the store's ckpt_begun reached ckpt_wait_seq (rs_ckpt_wait_begin). A
     * crash meanwhile finds the engine and the raft log as before the
     * snapshot. snap_in_engine: the write is done (the update's second
     * pass stages the compaction). */
    bool snap_in_engine, ckpt_wait;
    uint64_t ckpt_wait_seq;
    /* set when this peer applied its own removal: the Ready loop destroys
     * it once the update is handled (rs_peer_destroy) */
    bool destroy_pending;
    /* A committed removal of this peer from a region of two, held (not
     * applied, nothing after it applied) until the other peer provably
     * knows it is committed: raft's commit passed held_last (a later
     * leader committed in its own term) or a gc message came. A leader
     * holding it hands leadership over first. See README "Conf change".
     * 0: none. */
    tkv_index held_removal, held_last;
    uint64_t held_probe_tick; /* next store tick to probe the other peer */
    /* Senders outside our region view with a newer conf_ver than ours
     * (TiKV's peer cache): a follower that missed the conf change adding
     * a peer must still answer that peer (its votes, its appends when it
     * leads), or it never catches up (no answer, no probe, no snapshot).
     * Senders with an older conf_ver are removed peers: not remembered.
     * A small ring, only for addressing replies. */
    struct tkv_rs_peer senders[4];
    uint32_t n_senders, next_sender;
    /* the last generated snapshot (rs_snapgen.c), handed to raft while
     * usable: same epoch, and the log still holds the entries after it */
    struct tkv_raft_buf *snap_data;
    tkv_index snap_index;
    tkv_term snap_term;
    struct tkv_rs_epoch snap_epoch;
    struct tkv_raft_conf_state snap_conf;
    /* raft asked for a snapshot that is not ready: the store's request
     * sequence number when it first asked (0: not waiting); the oldest
     * waiting peer is generated next */
    uint64_t snap_wanted;
    /* A peer created by a split (rs_split.c): its raft log starts at the
     * genesis point TKV_RAFT_INIT_INDEX/TERM, staged in the raft log but
     * maybe not yet synced, so storage answers from this floor until it
     * is; boot_hs is the least hard state raft starts from (an
     * uninitialized peer's live term and vote carried over). */
    tkv_index log_floor;
    struct tkv_raft_hard_state boot_hs;
    struct rs_split_check split;
    /* The term and vote of the newest hard state staged in the raft log
     * (hs_known), and a commit index raft reported since that nobody has
     * written yet (lazy_commit, 0: none). When this peer is its region's
     * only voter, a hard state that moves only the commit index is not
     * staged on its own: the peer recomputes its commit alone after a
     * restart (st_initial_state takes at least the applied index), so it
     * rides with the region's next append instead of costing a write +
     * fdatasync of its own (one per put otherwise). */
    bool hs_known;
    tkv_term hs_term;
    uint64_t hs_vote;
    tkv_index lazy_commit;
};

struct rs_persist {
    uint64_t region_id, serial;
    bool entries, snap;
    tkv_index last, snap_index;
    tkv_term last_term, hs_term;
};

/* One turn's group commit: what becomes true / may leave once it is synced. */
struct rs_turn {
    struct tkv_raftstore *s; /* NULL once the store closed */
    struct rs_turn *next;
    struct tkv_rs_msg *msgs;
    size_t n_msgs;
    struct rs_persist *persist;
    size_t n_persist;
};

struct tkv_raftstore {
    struct tkv_raftstore_config cfg;
    struct tkv_raftstore_env env;
    struct tkv_engine_session *sess;
    struct rs_peer **peers;
    size_t n_peers, cap_peers;
    uint64_t next_serial, next_ctx, ticks;
    /* the current turn's outgoing messages and persistence marks */
    struct tkv_rs_msg *out;
    size_t n_out, cap_out;
    struct rs_turn *inflight; /* turns staged, not yet synced */
    bool dirty;
    struct tkv_raftstore_stats stats;
    /* splits applied in the current apply batch, notified after its write */
    struct rs_split_note *split_notes;
    size_t n_split_notes, cap_split_notes;
    uint64_t split_scan_budget; /* bytes the split checker may still read this tick */
    /* Checkpoints: _begin calls so far; the engine writes made before the
     * latest _begin are what a _done covers. */
    uint64_t ckpt_begun;
    /* destroyed peers whose raft log region removal waits for a covering
     * checkpoint (rs_confchange.c) */
    struct rs_removal *removals;
    size_t n_removals, cap_removals;
    /* the one snapshot generation in flight (rs_snapgen.c), NULL if none */
    struct rs_snapgen *gen;
    uint64_t snap_req_seq;
};

/* A destroyed initialized peer: its Tombstone is in the engine, its raft
 * log region stays until a checkpoint that began after that write (seq:
 * the store's ckpt_begun then) completes; meanwhile the raft log keeps what
 * a crash (which brings the live region back) replays from, and no new
 * peer of the region is created. */
struct rs_removal {
    uint64_t region_id;
    uint64_t seq;
    tkv_index durable_applied; /* the safe-to-drop answer meanwhile */
};

/* ---- helpers of raftstore.c used by the multi-raft files ---- */
/* Raft log work for an engine write made now waits for the checkpoint
 * after the next _begin: returns the ckpt_begun value that _done must find
 * reached, and asks the host for that checkpoint (env.request_checkpoint). */
uint64_t rs_ckpt_wait_begin(struct tkv_raftstore *s);
/* The pending removal of region_id, NULL if none. */
struct rs_removal *rs_removal_get(const struct tkv_raftstore *s, uint64_t region_id);
struct rs_peer *rs_peer_get(const struct tkv_raftstore *s, uint64_t region_id);
const struct tkv_rs_peer *rs_region_peer_by_id(const struct tkv_rs_region *rg, uint64_t id);
const struct tkv_rs_peer *rs_region_peer_on_store(const struct tkv_rs_region *rg,
                                                  uint64_t store_id);
bool rs_key_in_region(const struct tkv_rs_region *rg, struct tkv_slice k);
void rs_answer(tkv_rs_done_fn cb, void *arg, int rv);
void rs_answer_region_error(tkv_rs_done_fn cb, void *arg, const struct tkv_rs_region_error *e);
void rs_rerr_init(struct tkv_rs_region_error *e, uint32_t kind, uint64_t region_id);
/* A region error of `kind` with p's leader hint / current region filled. */
void rs_answer_kind(tkv_rs_done_fn cb, void *arg, uint32_t kind, const struct rs_peer *p,
                    uint64_t region_id);
/* Step p's raft; a non-empty update is kept for the next Ready. */
int rs_peer_step(struct rs_peer *p, const struct tkv_raft_event *ev);
struct rs_peer *rs_peer_new(struct tkv_raftstore *s, const struct tkv_rs_region *rg,
                            uint64_t peer_id, bool initialized);
int rs_peer_start_raft(struct rs_peer *p);
void rs_store_add_peer(struct tkv_raftstore *s, struct rs_peer *p);
/* Answers everything pending with TKV_ESHUTDOWN, closes raft, frees p
 * (the caller has taken p out of s->peers). */
void rs_peer_free(struct rs_peer *p);
void rs_write_apply_state(struct rs_peer *p, struct tkv_engine_batch *b);
void rs_write_region_state(struct rs_peer *p, struct tkv_engine_batch *b);
/* An engine write of committed state failed: fail-stop. */
void rs_fatal_engine(int rv) __attribute__((noreturn));
/* Answer the proposals up to index (the one at index/term with rv or
 * rerr; older ones StaleCommand). */
void rs_answer_proposals(struct rs_peer *p, tkv_index index, tkv_term term, int rv,
                         const struct tkv_rs_region_error *rerr);
/* Queue one raft message of p for this turn's group commit. */
void rs_queue_msg(struct rs_peer *p, const struct tkv_raft_msg *m);

/* What one applied entry answers. */
struct rs_apply_result {
    tkv_index index;
    tkv_term term;
    int rv;
    bool has_rerr;
    struct tkv_rs_region_error rerr;
};

/* ---- conf change and peer lifecycle (rs_confchange.c) ---- */
/* Apply a committed CONF_CHANGE entry (ChangePeer): region edit + state in
 * batch b, APPLY_CONF_CHANGE to raft; removing ourselves sets
 * p->destroy_pending (the rest of the committed entries are not applied). */
void rs_apply_conf_change(struct rs_peer *p, const struct tkv_raft_entry *e,
                          struct tkv_engine_batch *b, struct rs_apply_result *res);
/* Destroy p (taken out of s->peers here): its data range (what no other
 * region of the store owns), apply state, raft log; a Tombstone region
 * state; pending requests answered RegionNotFound; env.region_changed. */
void rs_peer_destroy(struct rs_peer *p);
/* Once per Ready turn for a peer holding its removal (p->held_removal):
 * lead -> hand leadership to the other peer; commit past held_last ->
 * apply the removal to the region and set p->destroy_pending; else every
 * election timeout a pre-vote probe to the other peer (a peer that
 * applied our removal answers it with a gc message). */
void rs_held_removal_step(struct rs_peer *p);
/* TINYKV-API.md 2.14 on receive: gc (is_tombstone) messages, stale senders,
 * tombstoned regions, newer peer ids. Returns the peer to step the message
 * into (created if needed), or NULL when the message was consumed or
 * dropped (counted). */
struct rs_peer *rs_route_msg(struct tkv_raftstore *s, const struct tkv_rs_msg *m);
/* At open: a tombstoned region whose raft log removal was not synced
 * before a crash is removed again. */
void rs_tombstone_cleanup(struct tkv_raftstore *s, uint64_t region_id);
/* env.region_changed, when the host set it. */
void rs_region_changed(struct tkv_raftstore *s, const struct tkv_rs_region *rg, bool removed);

/* propose encoded command b (freed) and answer cb when it applies */
void rs_propose_cmd(struct rs_peer *p, struct rs_buf *b, tkv_rs_done_fn cb, void *arg);

/* ---- split (rs_split.c) ---- */
/* What the split checker reads per tick over all regions of the store
 * (bytes; a key counts at least 64): bounds its time on the core. */
#define RS_SPLIT_SCAN_BUDGET (4u << 20)
struct rs_split_note {
    struct tkv_rs_region left, right;
    bool campaign; /* the parent was led here: the new region campaigns at once */
};
/* The region on this store that starts where rg ends (EpochNotMatch's
 * second region), NULL if none. */
const struct tkv_rs_region *rs_region_after(const struct tkv_raftstore *s,
                                            const struct tkv_rs_region *rg);
/* Fill an EpochNotMatch error with p's region and the one after it. */
void rs_epoch_not_match(const struct rs_peer *p, struct tkv_rs_region_error *e);
/* Apply a committed RS_CMD_SPLIT (body in r) into batch b; sets *rv or
 * *rerr (has_rerr). Runs in apply_committed before the batch is written. */
void rs_split_apply(struct rs_peer *p, struct rs_rd *r, const struct tkv_rs_epoch *ep,
                    struct tkv_engine_batch *b, int *rv, bool *has_rerr,
                    struct tkv_rs_region_error *rerr);
/* After the batch of apply_committed is written: notify env.region_changed
 * of the splits applied and let the new regions campaign. */
void rs_split_after_write(struct tkv_raftstore *s);
/* Applied bytes of data written (the checker's size-diff hint). */
void rs_split_note_write(struct rs_peer *p, size_t bytes);
/* Per tick on every peer: the split checker (leaders only). */
void rs_split_tick(struct rs_peer *p);
/* A snapshot for region rg would overlap another initialized region of
 * this store (TINYKV-API.md 2.14: refused until the split applies here). */
bool rs_range_overlaps_other(const struct tkv_raftstore *s, const struct tkv_rs_region *rg);
void rs_split_peer_free(struct rs_peer *p);

/* ---- snapshot generation (rs_snapgen.c) ----
 * At most one generation per store, advanced a bounded number of bytes per
 * Ready turn over ONE engine snapshot opened at the region's applied index;
 * raft is answered TKV_EUNAVAILABLE until it is done (raft retries). */
#define RS_SNAP_GEN_BUDGET_DEFAULT (1u << 20)
/* A pair counts at least this many bytes against the budget (bounds the
 * keys read per turn when they are tiny). */
#define RS_SNAP_GEN_PAIR_MIN 64u
/* storage.snapshot() of raft: the cached snapshot if usable, else the
 * request is queued and TKV_EUNAVAILABLE answered. */
int rs_snapgen_storage_snapshot(struct rs_peer *p, struct tkv_raft_snapshot *out);
/* Once per Ready turn, after every peer's update (the engine then holds
 * exactly each region's applied state): check, start, advance. */
void rs_snapgen_turn(struct tkv_raftstore *s);
/* Per tick: drop a cached snapshot that can no longer be used. */
void rs_snapgen_tick(struct rs_peer *p);
/* p is freed: abandon its generation, drop its cache. */
void rs_snapgen_peer_free(struct rs_peer *p);
/* The store closes: abandon the generation in flight. */
void rs_snapgen_close(struct tkv_raftstore *s);

#define GROW(arr, n, cap)                                                      \
    do {                                                                       \
        if ((n) == (cap)) {                                                    \
            (cap) = (cap) ? (cap) * 2 : 8;                                     \
            (arr) = tkv_xrealloc((arr), (cap) * sizeof(*(arr)));               \
        }                                                                      \
    } while (0)

#endif
