/* The raft log engine: one append-only, group-committed, crash-safe log per
 * store (per core) shared by all of its regions, holding raft entries and hard
 * state (ARCHITECTURE.md "Durability"; TiKV's raft-engine is the model). */
#ifndef TKV_RAFTLOG_H
#define TKV_RAFTLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"

/* Model
 * -----
 * Every mutating call (append, truncate, compact, remove, sync) is STAGED:
 * it is validated against the staged view, encoded into the current batch and
 * returns at once. All calls staged during one loop turn are written as ONE
 * batch with ONE linked write+fdatasync (tkv_reactor_write_sync) from a
 * before-sleep hook, so raft messages released later in the same turn never
 * overtake the sync they depend on. Up to two batches are in flight (the
 * next turn's write+fdatasync is submitted while the previous one's runs,
 * both in the same segment and together at most max_batch_bytes); calls
 * staged beyond that form the next batch (batches grow under load).
 *
 * Batches complete strictly in submission order, whatever order the kernel
 * reports them in: when a batch's sync has completed AND every earlier
 * batch has completed, its records are applied to the index in staging
 * order and then every callback of the batch fires in staging order with 0.
 * So a callback (a tkv_raftlog_sync barrier's too) never fires before
 * everything staged before it is durable, and a failed batch fails every
 * later staged or in-flight call with it. Reads (tkv_raftlog_term, _read, _first_index, _last_index,
 * _hardstate) see DURABLE state only: what has been synced. Entries not yet
 * synced live in raft's own unstable log (etcd's Storage contract).
 *
 * Failure policy (RELIABILITY.md section 4, items 7-9):
 *   - a failed write or fdatasync (EIO, a short write, anything but ENOSPC)
 *     is fatal: the log enters the failed state, every staged and in-flight
 *     callback fires with TKV_EIOFATAL, every later call returns TKV_EIOFATAL.
 *     Nothing is retried (fsyncgate). The store must stop (tkv_panic or exit)
 *     and recover from its log and its peers.
 *   - disk full (ENOSPC while creating a segment or writing) fails the batch:
 *     its callbacks fire with TKV_ENOSPACE, nothing of it becomes visible, the
 *     staged view rolls back to the durable view, and the write position is
 *     unchanged. Later calls are accepted and succeed once space is freed.
 *   - at open, a record that fails its check at the tail of the newest
 *     segment (within one batch of the end) is a torn write and is cut off; a
 *     bad record anywhere else is corruption: open fails with TKV_ECORRUPT and
 *     reports the file and offset. The server then exits with
 *     TKV_RAFTLOG_EXIT_CORRUPT and never silently drops entries.
 *
 * Threading: a log belongs to the core whose reactor it was opened with; every
 * call and every callback happens on that core. Opened without a reactor
 * (synchronous mode: tests, tools, recovery at start-up) it belongs to the
 * opening thread and batches are written by tkv_raftlog_flush().
 *
 * Indexes: a region's entries are contiguous [first_index, last_index]. An
 * empty region has last_index == first_index - 1. */

struct tkv_reactor;
struct tkv_raftlog;
struct tkv_raftlog_memdisk;

/* Exit status of a server that refused to start on a corrupt log
 * (sysexits.h EX_DATAERR). */
#define TKV_RAFTLOG_EXIT_CORRUPT 65

/* One raft entry as raftlog sees it; type is opaque (raft's entry type). */
struct tkv_raftlog_entry {
    tkv_index index;
    tkv_term term;
    uint32_t type;
    struct tkv_slice data;
};

/* Raft's hard state (Raft paper Figure 2 persistent state plus commit). */
struct tkv_raftlog_hardstate {
    tkv_term term;
    uint64_t vote;
    tkv_index commit;
};

/* Completion of a staged call: rv is 0 once its batch is durable and applied,
 * TKV_ENOSPACE (disk full; nothing of the call happened), TKV_EIOFATAL (the
 * log failed; the store must stop) or TKV_ESHUTDOWN (closed before it was
 * written). Runs on the log's core. It may stage new calls on the same log
 * but must not close it. */
typedef void (*tkv_raftlog_done_fn)(void *arg, int rv);

/* The "safe to drop" hook: the highest index of `region` that nothing needs
 * for replay any more (the engine's applied index captured by its last
 * completed checkpoint). Segment purge never deletes a record of a region at
 * or above safe+1. Return UINT64_MAX when the region needs nothing (for
 * example it is unknown to the engine). Runs on the log's core during
 * tkv_raftlog_purge(). */
typedef tkv_index (*tkv_raftlog_safe_fn)(void *arg, tkv_region_id region);

struct tkv_raftlog_config {
    /* Directory of the segment files; created (one level) if missing. Unused
     * by the in-memory implementation. */
    const char *dir;
    /* The owning core's reactor, or NULL for synchronous mode. With a reactor
     * the log registers a before-sleep hook that flushes the staged batch. */
    struct tkv_reactor *reactor;
    /* Segment file size, preallocated at creation; 0 = 64 MiB. A segment is
     * sealed when the next batch does not fit. Minimum 16 KiB. */
    uint64_t segment_size;
    /* Maximum bytes of one batch write; 0 = 1 MiB (capped at segment_size -
     * header). Larger staged batches are written in several rounds. This is
     * also the window in which recovery treats damage as a torn write. */
    uint32_t max_batch_bytes;
    /* Leave a new segment's preallocated space as the file system's
     * unwritten extents instead of writing zeros over it before use. The
     * default (false) zero-fills every new segment before it is renamed into
     * place (io_uring, off the loop, in reactor mode), so appends overwrite
     * already-written blocks and their fdatasync does not also convert
     * extents and commit the journal. Costs one write of segment_size per
     * segment. No effect on the in-memory implementation. */
    bool skip_zero_fill;
};

/* Where open found corruption. */
struct tkv_raftlog_corruption {
    char path[512];
    uint64_t offset;
    char reason[96];
};

/* Open (or create) the on-disk log in cfg->dir and recover it: replay every
 * segment into the index, cut a torn tail of the newest segment off (durably),
 * delete leftovers of an interrupted segment creation or purge. Recovery reads
 * with plain pread/mmap: call it before the loop serves anything.
 * @param cfg        borrowed for the call (dir is copied).
 * @param log_out    the new log on success.
 * @param where_out  optional; filled with file, offset and reason when the
 *                   result is TKV_ECORRUPT.
 * Errors: TKV_EINVAL (bad config), TKV_ECORRUPT (bad record not at the tail,
 *         bad segment header, a hole in the batch sequence), TKV_EBUSY (the
 *         directory is open by another log: flock), -errno from the file
 *         system. Call on the core that will own the log. */
int tkv_raftlog_open(const struct tkv_raftlog_config *cfg, struct tkv_raftlog **log_out,
                     struct tkv_raftlog_corruption *where_out);

/* The in-memory implementation (simulations): same contract, segments live
 * in `disk`, which outlives the log so a "restart" reopens the same disk and
 * runs the same recovery. cfg->dir is ignored. The log borrows disk until
 * tkv_raftlog_close. Errors as tkv_raftlog_open. */
int tkv_raftlog_open_mem(const struct tkv_raftlog_config *cfg, struct tkv_raftlog_memdisk *disk,
                         struct tkv_raftlog **log_out, struct tkv_raftlog_corruption *where_out);

/* A simulated disk for tkv_raftlog_open_mem. Aborts on out-of-memory
 * (tkv_xmalloc). _free requires that no log uses it. */
struct tkv_raftlog_memdisk *tkv_raftlog_memdisk_new(void);
void tkv_raftlog_memdisk_free(struct tkv_raftlog_memdisk *disk);
/* Test hooks: the number of segments, and raw access to one segment's bytes
 * (index i in id order; returned pointer valid until the next call on the
 * disk or a log using it) to tear or flip bytes between a close and an open.
 * Setting a byte limit makes later segment creations and writes past it fail
 * with -ENOSPC (0 = no limit). */
size_t tkv_raftlog_memdisk_segments(const struct tkv_raftlog_memdisk *disk);
uint8_t *tkv_raftlog_memdisk_segment(struct tkv_raftlog_memdisk *disk, size_t i, size_t *len_out);
void tkv_raftlog_memdisk_set_limit(struct tkv_raftlog_memdisk *disk, uint64_t bytes);
/* Test hooks for the pipeline's ordering: while hold is on, a batch's write
 * reaches the disk at once but its sync completion is held (also in
 * synchronous mode, where tkv_raftlog_flush then returns with up to the
 * pipeline's depth of batches in flight) until the test releases it with
 * _release: held[i] (0 = oldest still held) completes with res (0 = synced,
 * -errno = the write+fdatasync failed). Releases may come in any order; the
 * log still completes batches in submission order. Call on the log's
 * thread; every held completion must be released before close. */
void tkv_raftlog_memdisk_hold(struct tkv_raftlog_memdisk *disk, bool on);
size_t tkv_raftlog_memdisk_held(const struct tkv_raftlog_memdisk *disk);
void tkv_raftlog_memdisk_release(struct tkv_raftlog_memdisk *disk, size_t i, int res);

/* Close the log. Staged calls not yet written fire with TKV_ESHUTDOWN (a
 * crash loses them the same way). Requires that no batch is in flight
 * (tkv_raftlog_idle); in synchronous mode that always holds. NULL is a
 * no-op. */
void tkv_raftlog_close(struct tkv_raftlog *log);

/* True when no batch write is in flight. */
bool tkv_raftlog_idle(const struct tkv_raftlog *log);

/* Install the safe-to-drop hook (see tkv_raftlog_safe_fn); fn NULL removes
 * it (then only compaction bounds the purge). */
void tkv_raftlog_set_safe_fn(struct tkv_raftlog *log, tkv_raftlog_safe_fn fn, void *arg);

/* ---- staged mutations (see Model); cb may be NULL ---- */

/* Append entries[0..n) of region, and its hard state when hs != NULL (n may
 * be 0 to persist only a hard state). Indexes must be consecutive. When
 * entries[0].index <= the staged last index, the staged suffix from there is
 * replaced (raft's conflict rule, Raft paper section 5.3). An empty region
 * accepts any first index >= its first_index.
 * Copies entries and their data: borrows them for the call only.
 * Errors (nothing staged, cb not called): TKV_EINVAL (non-consecutive, gap
 * after the last index, index below first_index), TKV_ETOOBIG (the record
 * cannot fit one batch), TKV_EIOFATAL (the log failed). */
int tkv_raftlog_append(struct tkv_raftlog *log, tkv_region_id region,
                       const struct tkv_raftlog_entry *entries, size_t n,
                       const struct tkv_raftlog_hardstate *hs, tkv_raftlog_done_fn cb, void *arg);

/* Drop the region's entries with index >= from (no-op above the last).
 * Errors: TKV_EINVAL (from below first_index), TKV_EIOFATAL. */
int tkv_raftlog_truncate(struct tkv_raftlog *log, tkv_region_id region, tkv_index from,
                         tkv_raftlog_done_fn cb, void *arg);

/* Drop the region's entries with index <= upto; first_index becomes upto+1,
 * also when upto is past the last index (installing a snapshot: the next
 * append then starts at upto+1). `term` is the term of entry upto (the
 * snapshot's term), kept so that term(first_index - 1) answers as raft's
 * storage contract requires; 0 = look it up in the durable log (unknown if
 * the entry is not there). Reads below first_index fail with TKV_ECOMPACTED.
 * Log GC never cuts below what the engine still needs for replay: with a
 * safe-to-drop hook installed, upto is clamped to the hook's index (unless
 * the call drops the whole log, i.e. a snapshot), and the rest of the
 * request is applied by later tkv_raftlog_purge calls as the index advances.
 * Errors: TKV_EIOFATAL. No-op (still staged, cb fires) when upto < first. */
int tkv_raftlog_compact(struct tkv_raftlog *log, tkv_region_id region, tkv_index upto,
                        tkv_term term, tkv_raftlog_done_fn cb, void *arg);

/* Forget the region entirely: entries, hard state, index memory. A later
 * append re-creates it from scratch. Errors: TKV_EIOFATAL. */
int tkv_raftlog_remove_region(struct tkv_raftlog *log, tkv_region_id region,
                              tkv_raftlog_done_fn cb, void *arg);

/* Barrier: cb fires once everything staged before it is durable. */
int tkv_raftlog_sync(struct tkv_raftlog *log, tkv_raftlog_done_fn cb, void *arg);

/* Write the staged batch now. Synchronous mode: write+fdatasync every staged
 * call, fire the callbacks, return 0 or the batch's error (TKV_ENOSPACE,
 * TKV_EIOFATAL). Reactor mode: submit staged batches while the pipeline has
 * room (the before-sleep hook does this anyway) and return 0. */
int tkv_raftlog_flush(struct tkv_raftlog *log);

/* Delete every sealed segment whose records are all below what their regions
 * still need: min(first_index, safe+1), and which holds no region's latest
 * hard state. Segments go oldest first, so the log stays a contiguous
 * sequence. Idle regions that pin the oldest segment are rewritten to the
 * head (their entries and hard state), so a later purge can drop it.
 * Compactions held back by the safe-to-drop hook are applied here. Runs
 * after every segment switch; call it also after each engine checkpoint.
 * Returns the number of segments deleted (>= 0), TKV_EIOFATAL, or -errno
 * (unlink failure; nothing is lost). */
int tkv_raftlog_purge(struct tkv_raftlog *log);

/* ---- reads (durable view) ---- */

/* First and last index of the region (an unknown region reads as empty:
 * first 1, last 0). */
tkv_index tkv_raftlog_first_index(const struct tkv_raftlog *log, tkv_region_id region);
tkv_index tkv_raftlog_last_index(const struct tkv_raftlog *log, tkv_region_id region);

/* Term of entry `index`, for first_index - 1 <= index <= last_index (the
 * term at first_index - 1 is the compaction point's; term(0) is 0).
 * Errors: TKV_ECOMPACTED (below, or at first_index - 1 when its term is
 * unknown), TKV_EUNAVAILABLE (above last_index; unknown region). */
int tkv_raftlog_term(const struct tkv_raftlog *log, tkv_region_id region, tkv_index index,
                     tkv_term *term_out);

/* The region's persisted hard state. Errors: TKV_ENOTFOUND (none stored). */
int tkv_raftlog_hardstate(const struct tkv_raftlog *log, tkv_region_id region,
                          struct tkv_raftlog_hardstate *hs_out);

/* Read entries [lo, hi) of region, stopping early (but after at least one
 * entry) once max_bytes of data would be exceeded (0 = no limit). On success
 * *entries_out is ONE allocation holding the array and the data (the caller
 * owns it and frees it with tkv_free) and *n_out its length (0 when lo == hi,
 * with *entries_out NULL). May block on a page-cache miss (pread).
 * Errors: TKV_ECOMPACTED (lo < first_index), TKV_EUNAVAILABLE (hi > last+1
 * or unknown region), TKV_EINVAL (lo > hi), TKV_ENOMEM, TKV_ECORRUPT (a record
 * changed on disk), -errno. */
int tkv_raftlog_read(struct tkv_raftlog *log, tkv_region_id region, tkv_index lo, tkv_index hi,
                     size_t max_bytes, struct tkv_raftlog_entry **entries_out, size_t *n_out);

/* Call fn for every region that has durable state (entries, a compaction
 * point or a hard state), in no particular order. fn must not mutate the log. */
void tkv_raftlog_foreach_region(const struct tkv_raftlog *log,
                                void (*fn)(void *arg, tkv_region_id region), void *arg);

struct tkv_raftlog_stats {
    uint64_t n_regions;      /* regions in the index */
    uint64_t n_segments;     /* segment files (sealed + active) */
    uint64_t active_segment; /* id of the segment being appended to */
    uint64_t index_bytes;    /* heap held by the index (regions + entry arrays) */
    uint64_t batches;        /* batches written (= syncs) since open */
    uint64_t records;        /* records written since open */
    uint64_t bytes_written;  /* batch bytes written since open */
    uint64_t segments_purged;
    uint64_t pipelined;      /* batches submitted while an older one was in flight */
    uint64_t segments_created; /* segment switches since open */
    /* segment files created or deleted with blocking syscalls on the
     * log's thread after open: 0 in reactor mode on disk, where the next
     * segment is prepared ahead and purged ones deleted on io_uring */
    uint64_t blocking_file_ops;
    /* zeros written over new segments (skip_zero_fill unset) since open, and
     * how many fills were cut short (a switch needed the spare first, or the
     * loop was stopping): the rest of such a segment stays unwritten extents */
    uint64_t zero_filled_bytes;
    uint64_t zero_fills_cut;
    bool failed;             /* fail-stopped after a write/sync error */
};
void tkv_raftlog_stats(const struct tkv_raftlog *log, struct tkv_raftlog_stats *out);

#endif
