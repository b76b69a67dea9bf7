/* Percolator transactions (TinyKV project 4, TINYKV-API.md 2.2, 2.5, 2.6):
 * the MVCC encoding over the default/lock/write column families, readers
 * that find the version visible at a timestamp, per-key latches, and the
 * seven Kv commands as pure functions from a read view to (writes,
 * response). See src/txn/README.md. */
#ifndef TKV_TXN_H
#define TKV_TXN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvrpcpb.pb.h"
#include "tkv/arena.h"
#include "tkv/common.h"
#include "tkv/engine.h"

/* Contract (read this first)
 * --------------------------
 * - Everything here is single-threaded and synchronous: a command runs on
 *   the thread that owns the engine snapshot it reads. Nothing blocks except
 *   the engine reads themselves.
 * - A command never writes. It reads ONE consistent engine snapshot and
 *   returns the list of modifications (struct tkv_txn_writes) plus the
 *   response. The caller applies the list atomically (standalone: one
 *   tkv_engine_write; cluster: one raft proposal whose entry carries the
 *   same list) and answers the response only once the list is durable.
 * - The caller holds the latches of the command's keys (tkv_txn_latches)
 *   from before the snapshot is opened until the writes are durable; that
 *   is what makes "read, decide, write" atomic per key.
 * - Memory: every slice in a response or a write list lives in the arena
 *   passed in (owned by the caller; valid until it is reset). */

/* ---- timestamps (TSO: physical_ms << 18 | logical) ---- */
#define TKV_TXN_TS_MAX UINT64_MAX
#define TKV_TXN_PHYSICAL_SHIFT 18
static inline uint64_t tkv_txn_physical_ms(tkv_ts ts)
{
    return ts >> TKV_TXN_PHYSICAL_SHIFT;
}

/* ---- limits for untrusted requests (INVALID_ARGUMENT beyond them) ---- */
/* Longest user key: its write-CF form (EncodeKey) must fit the engine. */
#define TKV_TXN_KEY_MAX (32u * 1024u)
/* Keys or mutations in one command: bounds latch and write-list work. */
#define TKV_TXN_KEYS_MAX 65536u
/* Lock TTL in physical milliseconds; longer is an absurd TTL (a lock that
 * outlives its client by a day blocks every reader of the key). */
#define TKV_TXN_LOCK_TTL_MAX (24ull * 3600ull * 1000ull)

/* ---- records (TINYKV-API.md 2.2) ---- */

/* Storage kind byte of write records and locks. PUT/DELETE/ROLLBACK are
 * TinyKV's WriteKind. LOCK ('L', TiKV's byte) is ours: an Op_Lock mutation
 * locks the key without a value and commits a LOCK record that readers
 * skip like a rollback (the key keeps its previous value). */
enum tkv_txn_kind {
    TKV_TXN_KIND_PUT = 1,
    TKV_TXN_KIND_DELETE = 2,
    TKV_TXN_KIND_ROLLBACK = 3,
    TKV_TXN_KIND_LOCK = 'L',
};

/* lock CF record: primary ‖ kind(1) ‖ start_ts(BE64) ‖ ttl(BE64). */
struct tkv_txn_lock {
    struct tkv_slice primary;
    uint8_t kind; /* enum tkv_txn_kind */
    tkv_ts ts;    /* start_ts of the owning txn */
    uint64_t ttl; /* milliseconds of physical time */
};
#define TKV_TXN_LOCK_FIXED 17u

/* write CF record: kind(1) ‖ start_ts(BE64). */
struct tkv_txn_write {
    uint8_t kind;
    tkv_ts start_ts;
};
#define TKV_TXN_WRITE_LEN 9u

bool tkv_txn_kind_valid(uint8_t kind);
/* Encode into arena memory. */
struct tkv_slice tkv_txn_lock_encode(struct tkv_arena *arena, const struct tkv_txn_lock *lock);
/* Parse (primary borrows in). Errors: TKV_ECORRUPT (short, unknown kind). */
int tkv_txn_lock_decode(struct tkv_slice in, struct tkv_txn_lock *lock_out);
void tkv_txn_write_encode(const struct tkv_txn_write *w, uint8_t out[TKV_TXN_WRITE_LEN]);
int tkv_txn_write_decode(struct tkv_slice in, struct tkv_txn_write *w_out);

/* EncodeKey(key, ts) into the arena. */
struct tkv_slice tkv_txn_encode_key(struct tkv_arena *arena, struct tkv_slice key, tkv_ts ts);
/* User key of an EncodeKey()d key (into the arena) and its ts.
 * Errors: TKV_ECORRUPT. */
int tkv_txn_decode_key(struct tkv_arena *arena, struct tkv_slice enc, struct tkv_slice *key_out,
                       tkv_ts *ts_out);

/* ---- the write list: what a command wants applied atomically ----
 * A plain list of puts and deletes per CF, in order (a later op on the same
 * key wins). Standalone mode appends it to an engine batch; cluster mode
 * serialises exactly these ops into one raft proposal (TinyKV's
 * raft_cmdpb Put/Delete requests carry cf, key, value: a 1:1 mapping). */
struct tkv_txn_modify {
    enum tkv_cf cf;
    bool is_delete;
    struct tkv_slice key;   /* storage key (encoded for default/write) */
    struct tkv_slice value; /* empty for deletes */
};

struct tkv_txn_writes {
    struct tkv_txn_modify *items; /* arena memory */
    size_t n, cap;
};

/* Append every op to b. Errors: those of tkv_engine_batch_put/_delete
 * (TKV_ETOOBIG ...); on error b may hold a prefix: clear it. */
int tkv_txn_writes_to_batch(const struct tkv_txn_writes *w, struct tkv_engine_batch *b);

/* ---- MVCC transaction: reads through one snapshot, collects writes ---- */
struct tkv_txn_mvcc {
    struct tkv_engine_snap *snap; /* borrowed read view */
    struct tkv_arena *arena;      /* read copies, encoded keys, the write list */
    tkv_ts start_ts;
    struct tkv_txn_writes writes;
};

void tkv_txn_mvcc_init(struct tkv_txn_mvcc *m, struct tkv_engine_snap *snap,
                       struct tkv_arena *arena, tkv_ts start_ts);

/* Writes (collected, not applied). */
void tkv_txn_put_lock(struct tkv_txn_mvcc *m, struct tkv_slice key, const struct tkv_txn_lock *l);
void tkv_txn_delete_lock(struct tkv_txn_mvcc *m, struct tkv_slice key);
void tkv_txn_put_value(struct tkv_txn_mvcc *m, struct tkv_slice key, struct tkv_slice value);
void tkv_txn_delete_value(struct tkv_txn_mvcc *m, struct tkv_slice key);
void tkv_txn_put_write(struct tkv_txn_mvcc *m, struct tkv_slice key, tkv_ts commit_ts,
                       const struct tkv_txn_write *w);

/* Reads through the snapshot (never see the collected writes).
 * get_lock: 0 and *found; primary copied into the arena.
 * get_value: the value visible at m->start_ts (commit_ts <= start_ts), or
 *   *found = false (absent, deleted).
 * current_write: the write whose start_ts == m->start_ts (commit_ts_out =
 *   its commit ts), scanning newest to oldest down to start_ts.
 * most_recent_write: the newest write of the key of any kind.
 * Errors: TKV_ECORRUPT (undecodable record, missing default value for a
 * committed put), engine errors. */
int tkv_txn_get_lock(struct tkv_txn_mvcc *m, struct tkv_slice key, struct tkv_txn_lock *lock_out,
                     bool *found);
int tkv_txn_get_value(struct tkv_txn_mvcc *m, struct tkv_slice key, struct tkv_slice *value_out,
                      bool *found);
int tkv_txn_current_write(struct tkv_txn_mvcc *m, struct tkv_slice key, struct tkv_txn_write *w_out,
                          tkv_ts *commit_ts_out, bool *found);
int tkv_txn_most_recent_write(struct tkv_txn_mvcc *m, struct tkv_slice key,
                              struct tkv_txn_write *w_out, tkv_ts *commit_ts_out, bool *found);

/* ---- commands (TINYKV-API.md 2.6) ----
 * Each takes a decoded request, reads `snap`, fills *resp (zeroed by the
 * function; slices in arena) and, for writing commands, *writes (empty when
 * nothing must change; always empty when the response carries a KeyError:
 * a command is all or nothing).
 * Returns 0 (the response says what happened, including KeyErrors),
 * TKV_EINVAL with *why set (a static string) for bad input: the caller
 * answers gRPC INVALID_ARGUMENT and writes nothing,
 * TKV_ETOOBIG (scan response over max_bytes), TKV_ECORRUPT / engine errors.
 *
 * Cluster seam: region checks (epoch, leadership, the key range compared in
 * EncodeBytes form) happen before these run; `region` bounds are passed to
 * scans and the key checks (NULL in standalone mode = the whole key space).
 */
struct tkv_txn_region {
    struct tkv_slice start; /* EncodeBytes(user key) form; empty = -inf */
    struct tkv_slice end;   /* empty = +inf */
};

/* Whether user key lies in region (NULL region: always). */
bool tkv_txn_region_contains(const struct tkv_txn_region *region, struct tkv_slice key);

struct tkv_txn_ctx {
    struct tkv_engine_snap *snap;
    struct tkv_arena *arena;
    const struct tkv_txn_region *region; /* NULL in standalone mode */
    const char *why;                     /* set with TKV_EINVAL */
};

int tkv_txn_kv_get(struct tkv_txn_ctx *c, const kvrpcpb_GetRequest *req, kvrpcpb_GetResponse *resp);
int tkv_txn_kv_scan(struct tkv_txn_ctx *c, const kvrpcpb_ScanRequest *req, size_t max_bytes,
                    kvrpcpb_ScanResponse *resp);
int tkv_txn_kv_prewrite(struct tkv_txn_ctx *c, const kvrpcpb_PrewriteRequest *req,
                        kvrpcpb_PrewriteResponse *resp, struct tkv_txn_writes *writes);
int tkv_txn_kv_commit(struct tkv_txn_ctx *c, const kvrpcpb_CommitRequest *req,
                      kvrpcpb_CommitResponse *resp, struct tkv_txn_writes *writes);
int tkv_txn_kv_check_txn_status(struct tkv_txn_ctx *c, const kvrpcpb_CheckTxnStatusRequest *req,
                                kvrpcpb_CheckTxnStatusResponse *resp,
                                struct tkv_txn_writes *writes);
int tkv_txn_kv_batch_rollback(struct tkv_txn_ctx *c, const kvrpcpb_BatchRollbackRequest *req,
                              kvrpcpb_BatchRollbackResponse *resp, struct tkv_txn_writes *writes);
/* keys: the lock-CF keys found by tkv_txn_resolve_scan (before latching);
 * each is re-checked under the latch, so a lock gone meanwhile is skipped. */
int tkv_txn_kv_resolve_lock(struct tkv_txn_ctx *c, const kvrpcpb_ResolveLockRequest *req,
                            const struct tkv_slice *keys, size_t n_keys,
                            kvrpcpb_ResolveLockResponse *resp, struct tkv_txn_writes *writes);

/* Request checks without reading anything (the caller runs them before it
 * latches): TKV_EINVAL with *why, else 0. */
int tkv_txn_check_prewrite(const kvrpcpb_PrewriteRequest *req, const char **why);
int tkv_txn_check_commit(const kvrpcpb_CommitRequest *req, const char **why);
int tkv_txn_check_rollback(const kvrpcpb_BatchRollbackRequest *req, const char **why);
int tkv_txn_check_check_txn_status(const kvrpcpb_CheckTxnStatusRequest *req, const char **why);
int tkv_txn_check_resolve_lock(const kvrpcpb_ResolveLockRequest *req, const char **why);

/* ResolveLock's key set: every lock-CF key whose lock has ts == start_ts
 * (copied into arena, ascending), at most TKV_TXN_KEYS_MAX (more: the rest
 * is left for the client's next ResolveLock; *truncated says so). */
int tkv_txn_resolve_scan(struct tkv_engine_snap *snap, struct tkv_arena *arena, tkv_ts start_ts,
                         const struct tkv_txn_region *region, struct tkv_slice **keys_out,
                         size_t *n_out, bool *truncated);

/* ---- latches (TINYKV-API.md 2.5) ----
 * One latch per user key (exact bytes, all CFs). A command gets every key of
 * its set or waits; keys are taken in sorted order, waiting FIFO behind the
 * holder of the first busy key while keeping the ones before it, so two
 * commands never deadlock and none starves. Single-threaded: the table
 * belongs to one core (in standalone mode the core that executes writing
 * commands; in cluster mode each region's leader core). */
struct tkv_txn_latches;

struct tkv_txn_latch_req {
    /* Set by tkv_txn_latch_req_init: sorted unique keys (arena). */
    struct tkv_slice *keys;
    size_t n_keys;
    size_t n_held; /* keys[0..n_held) are ours */
    /* Called (from inside tkv_txn_latches_release of another request) when
     * a parked request got its last latch. Must not re-enter the table:
     * defer the work. */
    void (*on_ready)(struct tkv_txn_latch_req *req);
    void *data;
    struct tkv_txn_latch_req *next_waiter; /* internal */
};

/* Sort and dedup keys (copied into arena). */
void tkv_txn_latch_req_init(struct tkv_txn_latch_req *req, struct tkv_arena *arena,
                            const struct tkv_slice *keys, size_t n_keys);
struct tkv_txn_latches *tkv_txn_latches_new(void);
/* Free the table, dropping any latch still held or waited for (shutdown:
 * the requests are not touched and no on_ready fires). NULL is a no-op. */
void tkv_txn_latches_free(struct tkv_txn_latches *l);
/* true: every key is held, run now. false: parked; on_ready fires later. */
bool tkv_txn_latches_acquire(struct tkv_txn_latches *l, struct tkv_txn_latch_req *req);
/* Release what req holds (all of it: call only after it ran). Waiters that
 * complete their set get on_ready, synchronously, in FIFO order. */
void tkv_txn_latches_release(struct tkv_txn_latches *l, struct tkv_txn_latch_req *req);
/* Number of keys currently latched (tests, stats). */
size_t tkv_txn_latches_held(const struct tkv_txn_latches *l);
/* Whether key is latched by req (tests: latch validation). */
bool tkv_txn_latch_req_covers(const struct tkv_txn_latch_req *req, struct tkv_slice key);

#endif
