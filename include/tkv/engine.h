/* The KV engine contract: one store's data in column families, behind two
 * implementations (WiredTiger on disk, an ordered in-memory engine for
 * simulations) that pass one shared test suite. See src/engine/README.md. */
#ifndef TKV_ENGINE_H
#define TKV_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"

/* Threading model (read this first)
 * ---------------------------------
 * - struct tkv_engine is shared: one per store directory (WiredTiger) or per
 *   simulated store (mem). tkv_engine_open/close and tkv_engine_checkpoint
 *   may be called from any thread; open/close must not race with anything
 *   else on the same engine.
 * - struct tkv_engine_session is a single-thread object: each core (thread)
 *   that touches the engine opens its own with tkv_engine_session_open().
 *   In standalone mode all cores of a node share one engine and each has a
 *   session; WiredTiger serialises concurrent writers itself (a conflicting
 *   concurrent batch on the same key is retried internally), the mem engine
 *   takes a short mutex.
 *   Debug builds bind a session to the thread of its first data call and
 *   assert on later calls from any other thread.
 * - Snapshots and iterators belong to the session they were opened from and
 *   are used only on that session's thread. Close order: iterators, then
 *   their snapshot, then the session, then the engine (asserted).
 * - Every call is synchronous. A WiredTiger call may block on I/O (a cache
 *   miss, an fsync in sync mode); that is the one blocking exception on a
 *   core (ARCHITECTURE.md "A core is a store").
 *
 * Keys and values are arbitrary bytes, ordered by memcmp (shorter key first
 * on a common prefix). Values may be empty; keys may not (WiredTiger refuses
 * empty keys, and TiKV rejects them at its API too): writing an empty key is
 * TKV_EINVAL, reading one is TKV_ENOTFOUND. Empty bounds mean "unbounded". */

/* Column families. META is internal (applied index, store ident, region
 * state): it is never reachable from a client-supplied CF name. */
enum tkv_cf {
    TKV_CF_DEFAULT = 0,
    TKV_CF_LOCK = 1,
    TKV_CF_WRITE = 2,
    TKV_CF_META = 3,
};
#define TKV_CF_COUNT 4

/* Limits; larger keys or values are rejected with TKV_ETOOBIG when added to
 * a batch. The value limit leaves room above gRPC's 16 MiB message cap. */
#define TKV_ENGINE_KEY_MAX (64u * 1024u)
#define TKV_ENGINE_VALUE_MAX (32u * 1024u * 1024u)

enum tkv_engine_kind {
    TKV_ENGINE_WT = 0,  /* WiredTiger in opts.path */
    TKV_ENGINE_MEM = 1, /* ordered in-memory engine, deterministic */
};

struct tkv_engine_opts {
    enum tkv_engine_kind kind;
    /* WT: the store's data directory; created (one level) if missing.
     * MEM: ignored, may be NULL. */
    const char *path;
    /* Durability mode, fixed for the life of the open engine:
     *   true  (standalone server, no raft): WiredTiger's log is on and every
     *         tkv_engine_write() is durable (fsync'ed) when it returns;
     *         concurrent commits share an fsync (WiredTiger group commit).
     *   false (raft mode): the log is off; writes become durable only when a
     *         later tkv_engine_checkpoint() completes. After a crash the
     *         engine reopens at its last checkpoint and raft replays from
     *         the applied index stored in TKV_CF_META.
     * MEM: sync=true makes every write "durable"; sync=false makes only
     * checkpointed state survive tkv_engine_mem_crash(). */
    bool sync;
    /* WT cache size in bytes; 0 means 256 MiB. Ignored by MEM. */
    size_t cache_bytes;
    /* Extra wiredtiger_open configuration appended last (tuning, tests);
     * NULL for none. Ignored by MEM. */
    const char *wt_config;
    /* Disk budget of a WT engine (0 = the default in brackets); the server
     * scales them down on a small filesystem (src/server, disk full) so the
     * space WiredTiger still needs after writes stop stays small. Ignored by
     * MEM. Sync mode only: log_file_max (64 MiB) is the size of one log file,
     * checkpoint_log_size (256 MiB) the log volume that triggers a checkpoint
     * (after which older log files are removed). Both modes: max_dirty_bytes
     * (20 % of the cache) bounds the dirty data in cache, which eviction and
     * the next checkpoint will write to the table files. */
    uint64_t log_file_max;
    uint64_t checkpoint_log_size;
    uint64_t max_dirty_bytes;
};

/* Bytes the engine opened with opts may still write to its directory after
 * the last accepted write: evicting and checkpointing its dirty data,
 * finishing and switching log files, and at a restart after a crash
 * replaying the log and checkpointing the result (see src/engine/README.md,
 * "Disk space"). A node must stop accepting writes while less than this
 * (plus its own reserve) is free, or WiredTiger hits ENOSPC in a place it
 * cannot recover from (its log writer and eviction panic). MEM: 0. */
uint64_t tkv_engine_disk_headroom(const struct tkv_engine_opts *opts);

/* Free bytes the engine opened with opts needs to open after a crash:
 * recovery replays the log written since the last checkpoint (at most
 * checkpoint_log_size plus the log file being written) into the cache and
 * checkpoints it, then starts a new log file. A part of
 * tkv_engine_disk_headroom; the server's space placeholder is at least this
 * big so that deleting it lets a node start on a disk filled to the last
 * byte. MEM: 0. */
uint64_t tkv_engine_restart_space(const struct tkv_engine_opts *opts);

struct tkv_engine;
struct tkv_engine_session;
struct tkv_engine_snap;
struct tkv_engine_iter;

/* A write batch: puts, deletes and range deletes across CFs, applied
 * atomically by tkv_engine_write(). Caller storage; engine-independent (build
 * it anywhere, apply it to any engine). Copies keys and values in, so the
 * caller's buffers may be reused as soon as each call returns. Fields are
 * private; read only n_ops / data_bytes. Allocation failure aborts
 * (tkv_xmalloc: the engine is a server layer). Single-thread object. */
struct tkv_engine_batch {
    uint8_t *buf;
    size_t len;
    size_t cap;
    size_t n_ops;
    size_t data_bytes; /* sum of key and value lengths, for size limits */
};

/* ---- engine lifecycle -------------------------------------------------- */

/* Open (creating if needed) an engine with all four CFs.
 * @param opts   borrowed for the call only.
 * @param e_out  written on success; free with tkv_engine_close().
 * Errors: TKV_EINVAL (bad opts, e.g. WT without path), -errno (mkdir),
 * TKV_EENGINE (WiredTiger refused to open; logged), TKV_ECORRUPT (WT asks
 * for salvage). Any thread. */
int tkv_engine_open(const struct tkv_engine_opts *opts, struct tkv_engine **e_out);

/* Close the engine. Every session must already be closed (asserted). WT
 * takes a final checkpoint, so a clean close is durable in both modes.
 * NULL is a no-op. Any thread, once. */
void tkv_engine_close(struct tkv_engine *e);

/* Make every write committed before this call durable (WT: a checkpoint of
 * all tables; MEM: records the current state as the crash image). Writes
 * committed by other threads while it runs may or may not be included, so a
 * raft store takes the applied index it read *before* the call as the
 * durable one. Blocks for as long as the checkpoint takes (WT: up to
 * seconds), so call it from a non-core thread or accept the stall.
 * Thread-safe; uses an internal session. Errors: TKV_EENGINE, -errno. */
int tkv_engine_checkpoint(struct tkv_engine *e);

/* The implementation kind and durability mode the engine was opened with. */
enum tkv_engine_kind tkv_engine_kind_of(const struct tkv_engine *e);
bool tkv_engine_is_sync(const struct tkv_engine *e);

/* MEM only, for simulations: forget every write not covered by the last
 * tkv_engine_checkpoint() (sync=false engines), as a power loss would. Open
 * sessions are not allowed (asserted). Errors: TKV_EUNIMPL on WT. */
int tkv_engine_mem_crash(struct tkv_engine *e);

/* ---- sessions (one per core) ------------------------------------------ */

/* Open a session for the calling thread.
 * Errors: TKV_EENGINE (WT session limit or failure). Any thread; the session
 * is then used only by that thread. */
int tkv_engine_session_open(struct tkv_engine *e, struct tkv_engine_session **s_out);

/* Close a session; its snapshots must be closed already (asserted). NULL is
 * a no-op. Owner thread. */
void tkv_engine_session_close(struct tkv_engine_session *s);

/* ---- column families ---------------------------------------------------- */

/* Map a client CF name to a CF: "" and "default" -> DEFAULT, "lock",
 * "write". Anything else (including "meta") -> TKV_ECF. Any thread. */
int tkv_engine_cf_from_name(struct tkv_slice name, enum tkv_cf *cf_out);

/* Static name of a CF ("default", "lock", "write", "meta"), "?" if invalid. */
const char *tkv_engine_cf_name(enum tkv_cf cf);

/* ---- point reads --------------------------------------------------------- */

/* Read the latest committed value of key in cf.
 * @param value_out  on success points at engine-owned bytes; returned pointer
 *                   valid until the next call on this session (any engine
 *                   call taking s, including opening a snapshot).
 * Returns 0 (found), TKV_ENOTFOUND (absent: a normal result, not logged),
 * TKV_ECF, TKV_EENGINE. Owner thread of s. */
int tkv_engine_get(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice key,
                   struct tkv_slice *value_out);

/* ---- writes ---------------------------------------------------------------- */

void tkv_engine_batch_init(struct tkv_engine_batch *b);
/* Releases the batch's memory; safe on a zeroed or already-closed batch. */
void tkv_engine_batch_close(struct tkv_engine_batch *b);
/* Empty the batch, keeping its buffer for reuse. */
void tkv_engine_batch_clear(struct tkv_engine_batch *b);

/* Append an operation (copies key/value). Ops apply in order, so a later op
 * on the same key wins. Errors: TKV_ECF, TKV_EINVAL (empty key), TKV_ETOOBIG
 * (key or value over the limits); on error the batch is unchanged. */
int tkv_engine_batch_put(struct tkv_engine_batch *b, enum tkv_cf cf, struct tkv_slice key,
                         struct tkv_slice value);
/* Deleting an absent key is not an error. */
int tkv_engine_batch_delete(struct tkv_engine_batch *b, enum tkv_cf cf, struct tkv_slice key);
/* Delete every key k of cf with start <= k < end; end.len == 0 means "to the
 * end of the CF". An empty or inverted range deletes nothing. Cost is linear
 * in the number of keys deleted (they are deleted one by one inside the
 * batch's transaction, so the range delete is atomic with the rest). */
int tkv_engine_batch_delete_range(struct tkv_engine_batch *b, enum tkv_cf cf,
                                  struct tkv_slice start, struct tkv_slice end);

/* Apply the batch atomically: afterwards either every op is visible to new
 * reads and snapshots or (on error) none is. In sync mode the batch is
 * durable when 0 is returned. An empty batch is a no-op returning 0.
 * @param b  borrowed for the call; not modified.
 * Errors: TKV_EBUSY (WT write conflicts persisted through internal retries),
 * TKV_EENGINE, TKV_ENOSPACE, TKV_EIOFATAL (WT panic: stop the store),
 * -errno. Owner thread of s. */
int tkv_engine_write(struct tkv_engine_session *s, const struct tkv_engine_batch *b);

/* One-op conveniences, same semantics and errors as a one-op batch (no
 * copy). */
int tkv_engine_put(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice key,
                   struct tkv_slice value);
int tkv_engine_delete(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice key);
int tkv_engine_delete_range(struct tkv_engine_session *s, enum tkv_cf cf, struct tkv_slice start,
                            struct tkv_slice end);

/* ---- snapshots --------------------------------------------------------------- */

/* Open a read view of all CFs as of now: reads and iterators through it
 * never see writes committed later (from this or any other session), nor
 * miss keys deleted later. WT: a snapshot-isolation transaction on its own
 * WT_SESSION taken from a small per-session pool (WiredTiger allows one
 * transaction per session, and the core's session must stay free for
 * writes), so a core may hold several snapshots and still write. Keep
 * snapshots short: an open snapshot pins old versions in the WT cache.
 * MEM: O(1), shares the immutable tree. Several may be open per session.
 * Errors: TKV_EENGINE. Owner thread of s; the snapshot stays on it. */
int tkv_engine_snap_open(struct tkv_engine_session *s, struct tkv_engine_snap **snap_out);

/* Close a snapshot; its iterators must be closed already (asserted). NULL
 * is a no-op. */
void tkv_engine_snap_close(struct tkv_engine_snap *snap);

/* Point read through a snapshot. value_out: returned pointer valid until the
 * next tkv_engine_snap_get() on this snapshot or its close.
 * Returns 0, TKV_ENOTFOUND, TKV_ECF, TKV_EENGINE. */
int tkv_engine_snap_get(struct tkv_engine_snap *snap, enum tkv_cf cf, struct tkv_slice key,
                        struct tkv_slice *value_out);

/* ---- iterators (always over a snapshot) ------------------------------------ */

/* Open an iterator over cf in the snapshot, limited to lower <= key < upper.
 * lower.len == 0: from the first key; upper.len == 0: to the last key.
 * Bounds are copied. The new iterator is not positioned (valid() is false)
 * until a seek. Several iterators, on the same or different CFs, may be open
 * on one snapshot. Errors: TKV_ECF, TKV_EENGINE. */
int tkv_engine_iter_open(struct tkv_engine_snap *snap, enum tkv_cf cf, struct tkv_slice lower,
                         struct tkv_slice upper, struct tkv_engine_iter **it_out);
void tkv_engine_iter_close(struct tkv_engine_iter *it);

/* Position at the first key >= max(key, lower) (and < upper). Returns 0
 * whether or not such a key exists (check valid()), or TKV_EENGINE. */
int tkv_engine_iter_seek(struct tkv_engine_iter *it, struct tkv_slice key);
/* Position at the first key in bounds. */
int tkv_engine_iter_seek_first(struct tkv_engine_iter *it);
/* Position at the last key in bounds (the largest key < upper). */
int tkv_engine_iter_seek_last(struct tkv_engine_iter *it);
/* Step forward / backward; the iterator must be valid (asserted). Stepping
 * off either bound makes it invalid. Returns 0 or TKV_EENGINE (then invalid). */
int tkv_engine_iter_next(struct tkv_engine_iter *it);
int tkv_engine_iter_prev(struct tkv_engine_iter *it);

bool tkv_engine_iter_valid(const struct tkv_engine_iter *it);
/* Current key / value; the iterator must be valid. Returned pointers valid
 * until the next seek/next/prev/close of this iterator. */
struct tkv_slice tkv_engine_iter_key(const struct tkv_engine_iter *it);
struct tkv_slice tkv_engine_iter_value(const struct tkv_engine_iter *it);

#endif
