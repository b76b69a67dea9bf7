/* The raftstore: one store (one core) holding replicated region peers, each
 * a Raft group member (tkv/raft.h) whose log lives in the store's raft log
 * (tkv/raftlog.h) and whose state machine is the store's engine
 * (tkv/engine.h). See src/raftstore/README.md for the design. */
#ifndef TKV_RAFTSTORE_H
#define TKV_RAFTSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"
#include "tkv/engine.h"
#include "tkv/raft.h"

/*
 * CONTRACT (read this first)
 * --------------------------
 * A struct tkv_raftstore is one store: it belongs to one core (thread) and
 * every call below happens on that core; nothing blocks except the engine
 * calls the engine contract allows. Long work is cut into bounded steps
 * per Ready turn (snapshot generation: cfg.snap_gen_budget bytes; the split
 * checker's scan); tkv_raftstore_ready() then answers true (come back
 * without sleeping).
 *
 * It reaches the world ONLY through the env seam (struct tkv_raftstore_env):
 * the clock, sending a message to another store, the store's raft log (a
 * struct tkv_raftlog opened by the host, reactor mode or synchronous mode)
 * and the store's engine. The host (the server's core loop, or the
 * simulator) drives it:
 *   - tkv_raftstore_receive() for each RaftMessage from another store,
 *   - tkv_raftstore_put/_delete/_get() for client requests,
 *   - tkv_raftstore_tick() every cfg.tick_ms,
 *   - tkv_raftstore_ready() ONCE PER LOOP TURN after the events of the turn:
 *     each region's commands of the turn are proposed together (one raft
 *     proposal: a write is not proposed before the Ready of its turn);
 *     every region's entries and hard state are staged into the raft log
 *     and one sync barrier is staged after them (ONE group commit per
 *     turn); a leader's messages leave (env.send) at once, everyone
 *     else's only when that barrier completes (votes and acknowledgements
 *     promise durable state; a leader's own entries count toward the
 *     commit only once persisted); committed entries are applied (data and the region's
 *     RaftApplyState in one engine batch); clients are answered after the
 *     apply (writes) or once the read index is applied (reads).
 *   - tkv_raftstore_checkpoint_begin()/_done() around an engine checkpoint:
 *     the applied index captured by a completed checkpoint is what the raft
 *     log may drop below (its safe-to-drop hook) and where a restart
 *     replays from.
 *
 * Every request callback is called exactly once: synchronously from the
 * request call when the request is refused up front, otherwise from a later
 * ready/receive/tick/close. A request not answered when the store closes is
 * answered with TKV_ESHUTDOWN (the outcome of a write is then unknown).
 *
 * Crash model (what the simulator reproduces): the raft log loses what was
 * not synced, the engine loses every write after the last checkpoint; on
 * open, each region resumes from its applied index in the engine and raft
 * replays the committed entries after it from the raft log.
 */

/* Region boundaries are kept inline; longer keys are refused (TKV_ETOOBIG). */
#define TKV_RS_BOUND_MAX 256
#define TKV_RS_MAX_PEERS TKV_RAFT_MAX_VOTERS

struct tkv_rs_peer {
    uint64_t id;
    uint64_t store_id;
};

struct tkv_rs_epoch {
    uint64_t conf_ver; /* bumped by each conf change */
    uint64_t version;  /* bumped by each split / merge */
};

/* metapb.Region. end_len == 0 means +infinity. */
struct tkv_rs_region {
    uint64_t id;
    struct tkv_rs_epoch epoch;
    uint32_t start_len, end_len;
    uint8_t start[TKV_RS_BOUND_MAX];
    uint8_t end[TKV_RS_BOUND_MAX];
    uint32_t n_peers;
    struct tkv_rs_peer peers[TKV_RS_MAX_PEERS];
};

/* raft_serverpb.RaftMessage: one raft message with its routing envelope. */
struct tkv_rs_msg {
    uint64_t region_id;
    struct tkv_rs_peer from, to;
    struct tkv_rs_epoch epoch;
    bool is_tombstone;
    struct tkv_raft_msg msg; /* entries / snapshot data referenced */
};

/* Deep copy for a transport that keeps a message past the call (takes
 * references on payloads; allocation failure aborts), and its release. */
void tkv_rs_msg_clone(struct tkv_rs_msg *dst, const struct tkv_rs_msg *src);
void tkv_rs_msg_release(struct tkv_rs_msg *m);

/* errorpb.Error, the region errors of TINYKV-API.md 2.4. */
enum tkv_rs_error_kind {
    TKV_RS_OK = 0,
    TKV_RS_NOT_LEADER,        /* leader: hint (id 0 = unknown) */
    TKV_RS_EPOCH_NOT_MATCH,   /* current[0..n_current) */
    TKV_RS_KEY_NOT_IN_REGION, /* key, current[0] = the region */
    TKV_RS_REGION_NOT_FOUND,  /* region_id */
    TKV_RS_STALE_COMMAND,     /* retry: the proposal was overwritten / term moved on */
    TKV_RS_STORE_NOT_MATCH,   /* request addressed to another store */
    TKV_RS_SERVER_BUSY,       /* too many requests in flight on the region */
    TKV_RS_PEER_NOT_MATCH,    /* the header names another peer id than this store's peer of
                               * the region (removed and re-added since the client cached
                               * it): a message-only errorpb.Error, as TinyKV's CheckPeerID;
                               * clients refresh the region and retry */
};

struct tkv_rs_region_error {
    uint32_t kind; /* enum tkv_rs_error_kind */
    uint64_t region_id;
    struct tkv_rs_peer leader;
    uint32_t n_current;
    struct tkv_rs_region current[2];
    uint32_t key_len;
    uint8_t key[TKV_RS_BOUND_MAX]; /* KeyNotInRegion: the key (truncated) */
};

/* kvrpcpb.Context as the raftstore needs it. */
struct tkv_rs_header {
    uint64_t region_id;
    struct tkv_rs_peer peer;
    struct tkv_rs_epoch epoch;
    uint64_t term; /* 0 = do not check */
};

/* The answer to a request. rv: 0; TKV_ENOTFOUND (get: no such key);
 * TKV_EREGION with region_error filled (a TinyKV region error); TKV_EINVAL
 * / TKV_ETOOBIG / TKV_ECF (bad request); TKV_ESHUTDOWN (store closed,
 * outcome unknown); TKV_EENGINE. value is valid during the callback only. */
struct tkv_rs_kv {
    struct tkv_slice key, value;
};

struct tkv_rs_result {
    int rv;
    struct tkv_rs_region_error region_error;
    struct tkv_slice value;
    /* scan: the pairs, valid during the callback only */
    const struct tkv_rs_kv *kvs;
    size_t n_kvs;
};

/* Largest scan limit accepted (larger is TKV_EINVAL): bounds one read's
 * work on the core. */
#define TKV_RS_SCAN_LIMIT_MAX 100000u
typedef void (*tkv_rs_done_fn)(void *arg, const struct tkv_rs_result *res);

/* The env seam. */
struct tkv_raftlog;
struct tkv_raftstore_env {
    void *ctx;
    uint64_t (*now_ms)(void *ctx);
    /* Send m to store to_store. m is borrowed for the call: a transport that
     * queues it clones it (tkv_rs_msg_clone). Sending never fails: an
     * undeliverable message is dropped (and counted by the transport). */
    void (*send)(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m);
    struct tkv_raftlog *raftlog;  /* the store's raft log, owned by the host */
    struct tkv_engine *engine;    /* the store's engine (sync = false), owned by the host */
    /* Multi-raft hooks (issue 10; each may be NULL = not wanted). Called
     * from inside tkv_raftstore_tick/_ready on the store's core; they must
     * not call back into the raftstore synchronously (defer to a later
     * turn).
     * ask_split: the split checker of a region this store leads found
     *   that it should split at split_key (a key of the region's form:
     *   raw key, or EncodeBytes form for transactional data). The host asks
     *   the scheduler for ids (AskSplit) and then calls tkv_raftstore_split.
     * region_changed: a region of this store changed its epoch or
     *   membership or was created (split, snapshot) or removed (tombstone):
     *   the host heartbeats it at once (and ReportSplit with left/right
     *   after a split: `right` non-NULL only then). */
    void (*ask_split)(void *ctx, const struct tkv_rs_region *region, struct tkv_slice split_key);
    void (*region_changed)(void *ctx, const struct tkv_rs_region *region,
                           const struct tkv_rs_region *right, bool removed);
    /* request_checkpoint (may be NULL): the store has raft log work waiting
     * for an engine checkpoint that begins after now (a snapshot applied, a
     * peer destroyed: README "Durability"); the host should run one soon
     * instead of at its regular interval (tkv_raftstore_checkpoint_begin,
     * the engine checkpoint off the core, then _done). Same rules as the
     * hooks above: no synchronous call back into the raftstore. */
    void (*request_checkpoint)(void *ctx);
};

struct tkv_raftstore_config {
    uint64_t store_id;
    uint32_t election_tick;  /* in ticks (TinyKV 10) */
    uint32_t heartbeat_tick; /* in ticks (TinyKV 2) */
    /* Raft log GC (TINYKV-API.md 2.9): every gc_tick_interval ticks the
     * leader proposes CompactLog once applied - first_index >= limit. */
    uint32_t raft_log_gc_tick;
    uint64_t raft_log_gc_count_limit;
    uint32_t max_pending_per_region; /* 0: 4096 */
    uint64_t seed;                   /* raft PRNG seed base */
    /* Split check (TINYKV-API.md 2.13; 0 = defaults): a region whose
     * approximate size passes region_max_size is split at the key where
     * region_split_size is reached; checked every split_check_tick ticks. */
    uint64_t region_max_size, region_split_size;
    uint32_t split_check_tick;
    /* Snapshot generation (TINYKV-API.md 2.10): bytes of region data read
     * into a snapshot per Ready turn (a pair counts key + value + 8, at
     * least 64; one pair per turn at least). 0: 1 MiB. At most one
     * generation runs per store; see README "Log GC and snapshots". */
    uint64_t snap_gen_budget;
};

struct tkv_raftstore;

/* Open the store: load every region of this store from the engine (region
 * and apply state) and create its peer from the raft log. The env and its
 * raftlog/engine must outlive the store. Errors: TKV_EINVAL, TKV_ECORRUPT
 * (unreadable region/apply state), TKV_EENGINE, raft init errors. */
int tkv_raftstore_open(const struct tkv_raftstore_config *cfg, const struct tkv_raftstore_env *env,
                       struct tkv_raftstore **out);

/* Answer every pending request with TKV_ESHUTDOWN and free the store. The
 * raft log and engine stay the host's. NULL is a no-op. */
void tkv_raftstore_close(struct tkv_raftstore *s);

/* Write the genesis state of `region` for this store (TinyKV bootstrap:
 * region and apply state at TKV_RAFT_INIT_INDEX/TERM in the engine, hard
 * state and compaction point in the raft log), make it durable (raft log
 * flush in synchronous mode, engine checkpoint) before returning. Call
 * before tkv_raftstore_open, once per store. The store must be one of the
 * region's peers. Errors: TKV_EINVAL, engine / raft log errors. */
int tkv_raftstore_bootstrap(struct tkv_raftlog *log, struct tkv_engine *engine, uint64_t store_id,
                            const struct tkv_rs_region *region);

/* Feed one message from another store (borrowed for the call). Malformed,
 * misaddressed or unroutable messages are dropped and counted. */
void tkv_raftstore_receive(struct tkv_raftstore *s, const struct tkv_rs_msg *m);

/* Transport feedback (TINYKV-API.md 2.10, raft.h REPORT_*), borrowed by
 * the leader of region_id on this store: sending to peer to_peer_id failed
 * (its store is unreachable: the leader stops streaming appends to it and
 * probes), or the snapshot stream to it ended (failed = the snapshot did
 * not arrive: the leader may send another). An unknown region or a
 * non-leader ignores it. Not from inside env.send (the transport reports
 * from its own later callback). */
void tkv_raftstore_report_unreachable(struct tkv_raftstore *s, uint64_t region_id,
                                      uint64_t to_peer_id);
void tkv_raftstore_report_snapshot(struct tkv_raftstore *s, uint64_t region_id, uint64_t to_peer_id,
                                   bool failed);

/* Advance every region's logical clock by one tick. */
void tkv_raftstore_tick(struct tkv_raftstore *s);

/* The Ready loop of one turn (see CONTRACT). Returns true when more work
 * is ready right away (call again in the same or the next turn). */
bool tkv_raftstore_ready(struct tkv_raftstore *s);

/* Checkpoint protocol: _begin captures each region's applied index (the
 * engine writes up to it are committed); after the engine checkpoint that
 * started after _begin completes, _done makes those indexes durable, lets
 * the raft log drop below them and purges the raft log. _done also runs
 * the raft log work that waited for a checkpoint covering an engine write
 * (every engine write made before the last _begin): the compaction to an
 * applied snapshot (the peer's update is held until then), the removal of
 * a destroyed peer's region. The store itself never calls
 * tkv_engine_checkpoint (no stall on the core): a checkpoint that failed is
 * simply not followed by _done; the next _begin covers everything. */
void tkv_raftstore_checkpoint_begin(struct tkv_raftstore *s);
void tkv_raftstore_checkpoint_done(struct tkv_raftstore *s);

/* Requests (TinyKV Raw*): cf is a client CF (DEFAULT, LOCK, WRITE). */
void tkv_raftstore_put(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                       struct tkv_slice key, struct tkv_slice value, tkv_rs_done_fn cb, void *arg);
void tkv_raftstore_delete(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                          struct tkv_slice key, tkv_rs_done_fn cb, void *arg);
/* Linearizable read by ReadIndex (or the leader lease), no log append. */
void tkv_raftstore_get(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                       struct tkv_slice key, tkv_rs_done_fn cb, void *arg);

/* RawScan: keys >= start (start must be in the region) up to the region's
 * end, at most limit pairs, ascending, from one engine snapshot taken once
 * the read index is applied (linearizable like get). */
void tkv_raftstore_scan(struct tkv_raftstore *s, const struct tkv_rs_header *h, enum tkv_cf cf,
                        struct tkv_slice start, uint32_t limit, tkv_rs_done_fn cb, void *arg);

/* Leadership transfer (TINYKV-API.md 2.12: not replicated): the leader
 * catches to_peer's log up, then hands over (TimeoutNow); writes are
 * refused meanwhile. Returns 0 when started (the host sees the outcome in
 * the region's leader), TKV_EREGION (no such region), TKV_EINVAL (not a
 * member), or raft's refusal. A follower forwards it to its leader. */
int tkv_raftstore_transfer_leader(struct tkv_raftstore *s, uint64_t region_id, uint64_t to_peer);

/* ---- Transactional commands (cluster mode of tkv/txn.h) ----
 * A command runs on the leader as: region checks -> ReadIndex -> one engine
 * snapshot once the read index is applied -> run() computes the response
 * and a write list -> the list is proposed as ONE raft entry, applied as one
 * engine batch (all or nothing) -> done(). The caller (txn's cluster driver,
 * tkv/txn_cluster.h) holds the command's latches around the whole call.
 * Keys here are TRANSACTIONAL: user keys are checked against the region in
 * their EncodeBytes form (ARCHITECTURE.md "Keys"); in the write list, LOCK
 * CF keys are user keys (encoded for the apply-time range check) and
 * DEFAULT / WRITE CF keys are EncodeKey(user key, ts) (compared as they
 * are). */
struct tkv_rs_modify {
    enum tkv_cf cf; /* DEFAULT, LOCK or WRITE */
    bool is_delete;
    struct tkv_slice key, value;
};

/* Called once, on the leader, with a snapshot at or after the read index
 * (valid during the call only) and the region as it is then. Returns 0 with
 * *mods / *n_mods set (caller memory, valid until done() is called; n 0 =
 * nothing to write: done() follows with rv 0), or an error that done()
 * then reports (no write). Must not call into the raftstore. */
typedef int (*tkv_rs_txn_run_fn)(void *arg, struct tkv_engine_snap *snap,
                                 const struct tkv_rs_region *region,
                                 const struct tkv_rs_modify **mods, size_t *n_mods);

/* keys[0..n_keys): the command's user keys for the up-front region check
 * (KeyNotInRegion names the first one outside); n_keys 0 checks nothing
 * (a scan from the region's start). done() is called exactly once: rv 0
 * once the writes are applied on the leader (or right after run() when it
 * wrote nothing), run()'s error, or a region error (nothing written; for
 * StaleCommand / NotLeader after the proposal the entry did not and will
 * not apply) or TKV_ESHUTDOWN (outcome unknown). */
void tkv_raftstore_txn(struct tkv_raftstore *s, const struct tkv_rs_header *h,
                       const struct tkv_slice *keys, size_t n_keys, tkv_rs_txn_run_fn run,
                       tkv_rs_done_fn done, void *arg);

/* ---- Multi-raft admin (TINYKV-API.md 2.11-2.13; issue 10) ----
 * Both are proposals on the region's leader, checked like requests
 * (RegionNotFound, NotLeader, EpochNotMatch against epoch), answered once
 * applied (rv 0) or with a region error / TKV_EINVAL.
 * change_peer: ADD (peer.id new, peer.store_id without a peer of the
 *   region) or REMOVE (peer present) as a raft conf change; a duplicate
 *   (already added / already removed) answers 0 without proposing; epoch
 *   (may be NULL) is checked on conf_ver only (TinyKV); ServerIsBusy while
 *   another conf change is not applied. A leader of TWO peers asked to
 *   remove itself transfers leadership to the other and answers NotLeader
 *   (hint: the other peer): retry there. When this store's own peer is
 *   removed, its pending reads are answered RegionNotFound and its pending
 *   writes TKV_ESHUTDOWN (outcome unknown); env.region_changed follows every
 *   applied membership change (removed = true for our own removal). Our
 *   own removal from a region of TWO is held until the other peer knows it
 *   is committed (src/raftstore/README.md "Held removal"): it applies, and
 *   the peer goes, up to about an election timeout later.
 * split: split_key strictly inside the region (not its start); the new
 *   region gets new_region_id, the range [split_key, old end) and one peer
 *   per existing peer, new_peer_ids[i] on the store of the region's
 *   peers[i] (n_new_peers must equal the region's peer count). */
enum tkv_rs_change_type { TKV_RS_ADD_PEER = 0, TKV_RS_REMOVE_PEER = 1 };
void tkv_raftstore_change_peer(struct tkv_raftstore *s, uint64_t region_id,
                               const struct tkv_rs_epoch *epoch, uint32_t change_type,
                               struct tkv_rs_peer peer, tkv_rs_done_fn cb, void *arg);
void tkv_raftstore_split(struct tkv_raftstore *s, uint64_t region_id,
                         const struct tkv_rs_epoch *epoch, struct tkv_slice split_key,
                         uint64_t new_region_id, const uint64_t *new_peer_ids,
                         size_t n_new_peers, tkv_rs_done_fn cb, void *arg);

/* Whether user key (EncodeBytes form compared) lies in region. */
bool tkv_rs_region_contains_txn_key(const struct tkv_rs_region *rg, struct tkv_slice user_key);

/* Start an election in region_id now (a local HUP), instead of waiting
 * for the election timeout: the host calls it for a region whose only
 * voter is this store (TiKV's campaign of a single-peer region at start),
 * which can always elect itself. TKV_EREGION: no such region;
 * TKV_EINVAL: the peer is not initialized. */
int tkv_raftstore_campaign(struct tkv_raftstore *s, uint64_t region_id);

/* Ids of this store's regions (peers), the first cap of them in ids;
 * returns how many there are. For heartbeats and status. */
size_t tkv_raftstore_region_ids(const struct tkv_raftstore *s, uint64_t *ids, size_t cap);

/* Introspection (tests, status, heartbeats). */
struct tkv_rs_region_status {
    bool exists;
    bool is_leader;
    uint64_t peer_id, leader_peer_id;
    tkv_term term;
    tkv_index applied, commit, first_index, last_index;
    tkv_index truncated_index, durable_applied;
    struct tkv_rs_region region;
    /* leader only: peers still catching up (log below the truncated
     * index: waiting for a snapshot), TinyKV's pending_peers */
    uint32_t n_pending;
    struct tkv_rs_peer pending[TKV_RS_MAX_PEERS];
};
void tkv_raftstore_region_status(const struct tkv_raftstore *s, uint64_t region_id,
                                 struct tkv_rs_region_status *out);

struct tkv_raftstore_stats {
    uint64_t msgs_sent, msgs_received;
    uint64_t msgs_dropped; /* malformed, misaddressed, unroutable, no peer */
    uint64_t proposals, applied_entries, snapshots_generated, snapshots_applied;
    uint64_t compact_logs, ready_turns;
    /* hard states of a region's only voter that moved only the commit
     * index, not written on their own (they ride with its next append) */
    uint64_t commit_only_deferred;
    uint64_t peers_destroyed; /* removed by a conf change, a gc message or a newer peer */
    uint64_t gc_msgs_sent;    /* is_tombstone answers to stale senders */
    /* Raft log work waiting for an engine checkpoint (README
     * "Durability"): env.request_checkpoint calls, and the snapshot
     * compactions / region removals run from _done once covered. */
    uint64_t ckpt_requests, ckpt_waits_done;
    /* Snapshot generation: started / abandoned (region changed, peer gone,
     * leadership lost) / completed is snapshots_generated; turns that read
     * data, bytes read (budget units) and the most one turn read; the
     * region and applied index of the last generation started. */
    uint64_t snap_gen_started, snap_gen_abandoned, snap_gen_turns, snap_gen_bytes;
    uint64_t snap_gen_max_turn_bytes;
    uint64_t snap_gen_last_region;
    tkv_index snap_gen_last_index;
};
void tkv_raftstore_stats(const struct tkv_raftstore *s, struct tkv_raftstore_stats *out);

#endif
