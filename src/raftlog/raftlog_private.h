/* raftlog internals shared by its files: the on-disk format, the index of
 * regions and entries, segments, batches and the two storage backends. */
#ifndef RAFTLOG_PRIVATE_H
#define RAFTLOG_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tkv/codec.h"
#include "tkv/raftlog.h"
#include "tkv/reactor.h"

/* ---- on-disk format (all integers little-endian) ----
 *
 * Segment file "<16 hex digits id>.rlog", preallocated to segment_size:
 *   [0,64)  header: magic "TKVRLOG\0", u32 version, u32 header size,
 *           u64 id, u64 segment size, u32 max batch bytes, zero padding,
 *           u32 CRC32C of bytes [0,60) at offset 60.
 *   then batches, then zeros (preallocated and, unless skip_zero_fill,
 *   written as zeros before use; never recycled).
 * Record: u32 crc, u32 payload length, u8 type, u8[3] zero, u64 region,
 *         payload. crc = CRC32C of bytes [4, 20 + length).
 * Batch: a BATCH record (region 0; payload u64 seq, u32 body bytes, u32
 *        records) followed by `records` records totalling `body bytes`. Each
 *        batch is one write followed by one fdatasync; seq grows by one per
 *        batch across segments, so a missing or repeated batch is visible.
 * APPEND payload: u64 first index, u32 n, u32 flags (bit 0: hard state
 *        follows), [u64 term, u64 vote, u64 commit], n x (u64 term, u32 type,
 *        u32 data length, data). With n == 0 the first-index field carries
 *        the region's first index instead.
 * TRUNCATE payload: u64 from, u64 region's first index.
 * COMPACT payload: u64 upto, u64 term of entry upto (0 = unknown).
 * REMOVE: empty.
 * Every record that can leave a region empty carries its first index, so
 * the latest record alone defines an empty region (older segments holding
 * the region's history can then be purged). */
#define RL_MAGIC "TKVRLOG"
#define RL_VERSION 1u
#define RL_SEG_HDR 64u
#define RL_REC_HDR 20u
#define RL_BATCH_PAYLOAD 16u
#define RL_BATCH_HDR (RL_REC_HDR + RL_BATCH_PAYLOAD)
#define RL_APPEND_FIXED 16u
#define RL_HS_BYTES 24u
#define RL_ENT_FIXED 16u
#define RL_MIN_SEGMENT (16u * 1024u)

enum rl_rec_type {
    RL_REC_BATCH = 1,
    RL_REC_APPEND = 2,
    RL_REC_TRUNCATE = 3,
    RL_REC_COMPACT = 4,
    RL_REC_REMOVE = 5,
};

static inline void rl_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void rl_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t rl_get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t rl_get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Checksums are tkv_codec_crc32c (CRC32C: SSE4.2 instruction, slicing-by-8
 * table fallback), seeded with 0. */

/* ---- index ---- */

/* Where an entry's data lives; 24 bytes per entry. */
struct rl_ent {
    uint64_t term;
    uint32_t seg; /* segment id */
    uint32_t off; /* data offset inside the segment */
    uint32_t len;
    uint32_t type;
};

struct rl_region {
    tkv_region_id id;
    /* durable view: entries [first, first+count) at ents[head .. head+count) */
    uint64_t first;
    uint64_t count;
    struct rl_ent *ents;
    size_t head, cap;
    bool has_hs;
    struct tkv_raftlog_hardstate hs;
    uint32_t hs_seg;
    uint32_t last_seg; /* segment of the latest record applied */
    uint32_t snap_seg;   /* segment of the latest applied COMPACT, 0 = none */
    uint64_t snap_index; /* that COMPACT's index and term: term(first-1) is */
    uint64_t snap_term;  /* known iff snap_index == first-1 (0 = unknown) */
    uint64_t want_compact; /* compaction asked for but held back by safe */
    /* staged view: what the next staged call is validated against */
    uint64_t s_first, s_last;
    uint32_t n_pending; /* staged records not yet applied */
};

/* A region with no durable state and nothing staged is freed at once, which
 * keeps index memory bounded as regions come and go. */
static inline bool rl_region_dead(const struct rl_region *r)
{
    return r->count == 0 && !r->has_hs && r->first <= 1 && r->n_pending == 0 &&
           r->want_compact == 0;
}

struct rl_map {
    struct rl_region **slots;
    size_t cap, n; /* cap is 0 or a power of two */
};

/* Free the region's memory (not its map slot). */
void raftlog_region_free(struct rl_region *r);
/* Staged view := durable view. */
void raftlog_region_restage(struct rl_region *r);
struct rl_region *raftlog_map_get(const struct rl_map *m, tkv_region_id id);
/* Insert a new, zeroed region (aborts on OOM: server layer). */
struct rl_region *raftlog_map_add(struct rl_map *m, tkv_region_id id);
void raftlog_map_del(struct rl_map *m, tkv_region_id id);
void raftlog_map_free(struct rl_map *m);

/* ---- segments, batches, the log ---- */

struct rl_memseg {
    uint64_t id;
    uint8_t *buf;
    size_t size;
};

struct rl_flight;

struct tkv_raftlog_memdisk {
    struct rl_memseg *segs;
    size_t n, cap;
    uint64_t limit, used;
    bool in_use;
    /* test hook (tkv_raftlog_memdisk_hold): sync completions held back, in
     * submission order, until the test releases them */
    bool hold;
    struct rl_flight **held;
    size_t n_held, cap_held;
};

struct rl_seg {
    uint64_t id;
    int fd;                /* disk: open O_RDWR, -1 for mem */
    struct rl_memseg *mem; /* mem: NULL for disk (looked up by id) */
    uint64_t end;          /* end of valid data (next write offset) */
    uint64_t dirty_end;    /* > end after a failed write left bytes there */
};

struct rl_cb {
    tkv_raftlog_done_fn fn;
    void *arg;
};

struct rl_batch {
    struct rl_batch *next; /* staged FIFO (unsubmitted batches only) */
    uint8_t *buf; /* begins with RL_BATCH_HDR reserved bytes */
    size_t len, cap;
    uint32_t n_records;
    struct rl_cb *cbs;
    size_t n_cbs, cap_cbs;
};

/* Batches written but not yet known durable. Up to RL_MAX_FLIGHTS run at
 * once (batch N+1's write+fdatasync is submitted while N's runs), all in
 * the active segment, at consecutive offsets and sequence numbers, and
 * together at most max_batch bytes, so the torn-write window of recovery
 * (damage within one max_batch of the damaged batch's start) still covers
 * everything that can be incomplete at a crash. Completions may arrive in
 * any order; they are processed strictly in submission order. */
#define RL_MAX_FLIGHTS 2

struct rl_flight {
    struct tkv_raftlog *log;
    struct rl_batch *b; /* owned while in flight (the kernel reads b->buf) */
    struct tkv_io io;
    struct iovec iov;
    uint64_t off;      /* write offset in the active segment */
    size_t len;        /* the batch's bytes */
    size_t wlen;       /* bytes written: len + zeros over a failed write's
                          leftover (dirty_end), so no stale batch survives */
    uint64_t start_ns; /* metrics: submission time */
    int res;           /* completion result once done */
    bool done;         /* completion arrived (maybe before an older one's) */
    bool orphan;       /* an older batch failed: callbacks already fired with
                          the error; only the kernel's completion is awaited */
};

/* Reactor mode on disk: the next segment is prepared ahead of need on
 * io_uring (raftlog_segment.c), so a segment switch never blocks the loop:
 * openat "<id>.rlog.tmp", fallocate, header write, zero fill (unless
 * skip_zero_fill: chunks of RL_FILL_CHUNK bytes, each a linked
 * write+fdatasync, at most RL_FILL_DEPTH in flight), fsync -> READY; the
 * switch renames it to "<id>.rlog" and fsyncs the directory, both on
 * io_uring too. A crash before the rename leaves a .tmp that recovery
 * deletes, as for an interrupted synchronous creation. */
enum rl_spare_state { RL_SPARE_NONE, RL_SPARE_BUSY, RL_SPARE_READY, RL_SPARE_FAILED };
enum rl_spare_step { RL_SP_OPEN, RL_SP_ALLOC, RL_SP_HEADER, RL_SP_FILL, RL_SP_SYNC, RL_SP_UNLINK };
enum rl_rot_step { RL_ROT_IDLE, RL_ROT_ZERO, RL_ROT_RENAME, RL_ROT_DIRSYNC };
#define RL_NAME_LEN 32
/* Zero fill: the chunk written (and fdatasynced) at once, and how many
 * chunks may be in flight. Each chunk is flushed on its own so the disk
 * never holds a whole segment of dirty zeros to write at the final fsync,
 * which would queue ahead of the log's own fdatasyncs for that long. */
#define RL_FILL_CHUNK (1u << 20)
#define RL_FILL_DEPTH 2

struct rl_spare {
    enum rl_spare_state state;
    enum rl_spare_step step;
    int err;    /* RL_SPARE_FAILED: why (-errno) */
    uint64_t id;
    int fd;
    struct tkv_io io;
    struct iovec iov;
    uint8_t hdr[RL_SEG_HDR];
    char tmp[RL_NAME_LEN], name[RL_NAME_LEN];
    /* zero fill (RL_SP_FILL): next offset to submit, chunks in flight,
     * first error, cut short (a switch waits for this spare) */
    uint64_t fill_next;
    unsigned fill_inflight;
    int fill_err;
    bool fill_cut;
    bool fill_busy[RL_FILL_DEPTH];
    struct tkv_io fill_io[RL_FILL_DEPTH];
    struct iovec fill_iov[RL_FILL_DEPTH];
    uint8_t *zeros; /* RL_FILL_CHUNK zero bytes, owned while filling */
};

struct tkv_raftlog {
    /* metrics (raftlog.c): segments counted */
    size_t segs_reported;
    char *dir;
    int dir_fd;
    /* A second open of the directory for io_uring operations: in-flight
     * operations pin their file until the ring is torn down, which after a
     * kill -9 the kernel does asynchronously; the flock lives on dir_fd's
     * own open file description, so a restart does not find it held. */
    int dir_op_fd;
    struct tkv_raftlog_memdisk *mem;
    struct tkv_reactor *reactor;
#ifdef TKV_RAFTLOG_HAVE_REACTOR
    struct tkv_reactor_hook flush_hook; /* group commit at loop step 5 */
#endif
    uint64_t segment_size;
    uint32_t max_batch;
    bool zero_fill; /* !cfg->skip_zero_fill: write zeros over new segments */

    struct rl_map regions;
    struct rl_seg *segs; /* ascending id; the last is active */
    size_t n_segs, cap_segs;

    struct rl_batch *head, *tail; /* staged FIFO, not yet submitted */
    struct rl_flight flights[RL_MAX_FLIGHTS]; /* ring, submission order */
    unsigned fl_first, fl_n;
    unsigned fl_orphans; /* flights whose batch failed with an older one */
    size_t fl_bytes;     /* bytes written by the non-orphan flights (wlen) */
    bool failed;
    bool closing;
    bool flushing; /* reentrancy guard for callbacks that stage */
    bool draining; /* reentrancy guard of completion processing */
    uint64_t next_seq; /* sequence number of the oldest flight / next batch */

    bool opened; /* open returned: later blocking creations are counted */
    struct rl_spare spare;
    enum rl_rot_step rot_step; /* segment switch in progress (async) */
    int rot_err;               /* its failure, reported by the next flush */
    struct tkv_io rot_io;
    struct iovec rot_iov;
    uint8_t *rot_zeros;
    /* purge's deletions on io_uring (reactor mode on disk): one chain at a
     * time, oldest first, then a directory fsync */
    uint64_t *del_ids;
    size_t del_n, del_next;
    bool del_busy, del_syncing;
    struct tkv_io del_io;
    char del_name[RL_NAME_LEN];

    tkv_raftlog_safe_fn safe_fn;
    void *safe_arg;

    struct tkv_raftlog_stats st;
    uint32_t owner_core; /* reactor mode: the only core allowed to call */
};

/* STYLE.md 4.6.1: Debug builds check that a reactor-mode log is used only
 * on its core. */
#ifdef TKV_DEBUG
#define RL_OWNER_CHECK(log) \
    tkv_assert((log)->reactor == NULL || tkv_core_self() == (log)->owner_core)
#else
#define RL_OWNER_CHECK(log) ((void)0)
#endif

/* Apply one decoded record found at segment `seg`, byte `rec_off` (of its
 * header) to the durable index. Shared by batch completion and recovery so
 * both give one meaning to the log. Returns 0 or TKV_ECORRUPT (malformed
 * payload). `pending` says whether the record was staged in this process. */
int raftlog_apply_record(struct tkv_raftlog *log, uint32_t seg, uint64_t rec_off,
                         const uint8_t *rec, bool pending);

/* Segment bookkeeping (raftlog.c). */
struct rl_seg *raftlog_seg_find(struct tkv_raftlog *log, uint64_t id);
struct rl_seg *raftlog_seg_push(struct tkv_raftlog *log, uint64_t id);

/* Recovery (raftlog_recover.c): scan every segment listed, rebuild index. */
int raftlog_recover(struct tkv_raftlog *log, struct tkv_raftlog_corruption *where);

/* Backend I/O (raftlog_io.c); disk when log->mem is NULL. Synchronous. */
int raftlog_io_open_dir(struct tkv_raftlog *log);
/* Segment ids present, ascending, in *ids_out (tkv_xmalloc'ed). */
int raftlog_io_list(struct tkv_raftlog *log, uint64_t **ids_out, size_t *n_out);
/* Create segment id durably (temp file, preallocate, header, zero fill
 * unless skip_zero_fill, fsync, rename, fsync dir) and append it to
 * log->segs. */
int raftlog_io_create(struct tkv_raftlog *log, uint64_t id);
/* Open an existing segment into log->segs (end unknown yet). */
int raftlog_io_attach(struct tkv_raftlog *log, uint64_t id);
/* Whole-segment view for recovery; release with raftlog_io_unmap. */
int raftlog_io_map(struct tkv_raftlog *log, struct rl_seg *s, const uint8_t **p_out,
                   size_t *len_out);
void raftlog_io_unmap(struct tkv_raftlog *log, const uint8_t *p, size_t len);
/* Write + data sync (synchronous mode and mem). */
int raftlog_io_write_sync(struct tkv_raftlog *log, struct rl_seg *s, uint64_t off,
                          const void *buf, size_t len);
int raftlog_io_datasync(struct tkv_raftlog *log, struct rl_seg *s);
int raftlog_io_read(struct tkv_raftlog *log, const struct rl_seg *s, uint64_t off, void *buf,
                    size_t len);
/* Durably zero [off, off+len). */
int raftlog_io_zero(struct tkv_raftlog *log, struct rl_seg *s, uint64_t off, size_t len);
/* Delete the segment file and close it (not removed from log->segs). */
int raftlog_io_remove(struct tkv_raftlog *log, struct rl_seg *s);
int raftlog_io_sync_dir(struct tkv_raftlog *log);
void raftlog_io_close_seg(struct tkv_raftlog *log, struct rl_seg *s);
void raftlog_io_close_dir(struct tkv_raftlog *log);

/* "<16 hex id>.rlog" or, with tmp, "<16 hex id>.rlog.tmp". */
void raftlog_seg_name(char *buf, uint64_t id, bool tmp);

/* Async segment switch (raftlog_segment.c, reactor mode on disk only).
 * _spare_start: begin preparing segment active+1 unless one is prepared or
 * being prepared. _rotate_async: called by the flush when the head batch
 * needs a new segment and nothing is in flight: returns 1 (switch under
 * way or spare not ready: the flush retries on a later turn) or -errno of a
 * failed creation or switch (the flush applies the failure policy).
 * _spare_close: release the spare at close. */
void raftlog_spare_start(struct tkv_raftlog *log);
int raftlog_rotate_async(struct tkv_raftlog *log);
void raftlog_spare_close(struct tkv_raftlog *log);
bool raftlog_spare_idle(const struct tkv_raftlog *log);
/* Purge in reactor mode on disk: segs[0..n) (already out of the index, the
 * caller drops them from log->segs) are closed and deleted on io_uring,
 * one unlinkat after the other (oldest first: a crash leaves a contiguous
 * log), then the directory is fsynced. Requires raftlog_purge_idle(). */
bool raftlog_async_files(const struct tkv_raftlog *log);
bool raftlog_purge_idle(const struct tkv_raftlog *log);
void raftlog_purge_async(struct tkv_raftlog *log, const struct rl_seg *segs, size_t n);

/* Segment header encode/decode. */
void raftlog_seg_header(uint8_t *hdr, uint64_t id, uint64_t size, uint32_t max_batch);

#endif
