/* Recovery: replay every segment, batch by batch, into the index. Damage at
 * the tail of the newest segment (within one batch write of the end) is a
 * torn write and is cut off; damage anywhere else is corruption. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "raftlog_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

struct scan {
    struct tkv_raftlog *log;
    struct rl_seg *seg;
    const uint8_t *p;
    size_t len;
    bool newest;
    uint32_t max_batch;
    struct tkv_raftlog_corruption *where;
};

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static size_t last_nonzero_end(const uint8_t *p, size_t from, size_t len)
{
    size_t z = len;
    while (z > from && p[z - 1] == 0)
        z--;
    return z;
}

static int corrupt(struct scan *sc, uint64_t off, const char *reason)
{
    char name[600];
    if (sc->log->dir)
        snprintf(name, sizeof(name), "%s/%016" PRIx64 ".rlog", sc->log->dir, sc->seg->id);
    else
        snprintf(name, sizeof(name), "mem:%016" PRIx64 ".rlog", sc->seg->id);
    TKV_LOG_ERROR("raft log corrupted: refusing to start", TKV_LF_STR("file", name),
                  TKV_LF_U64("offset", off), TKV_LF_STR("reason", reason));
    if (sc->where) {
        size_t nl = TKV_MIN(strlen(name), sizeof(sc->where->path) - 1);
        memcpy(sc->where->path, name, nl);
        sc->where->path[nl] = '\0';
        sc->where->offset = off;
        snprintf(sc->where->reason, sizeof(sc->where->reason), "%s", reason);
    }
    return TKV_ECORRUPT;
}

/* Damage found in the batch starting at `start` (first bad byte at `bad`).
 * Torn iff this is the newest segment and nothing non-zero lies beyond one
 * batch write from `start`: only the last, unacknowledged write can be
 * incomplete, since a batch is written only after the previous one synced. */
static int damage(struct scan *sc, uint64_t start, uint64_t bad, const char *reason)
{
    if (sc->newest) {
        size_t z = last_nonzero_end(sc->p, (size_t)start, sc->len);
        if (z <= start + sc->max_batch) {
            TKV_LOG_WARN("raft log: torn write at the tail cut off",
                         TKV_LF_STR("dir", sc->log->dir ? sc->log->dir : "(memory)"),
                         TKV_LF_U64("segment", sc->seg->id), TKV_LF_U64("offset", start),
                         TKV_LF_U64("bytes", z - start), TKV_LF_STR("reason", reason));
            if (z > start) {
                int rv = raftlog_io_zero(sc->log, sc->seg, start, z - start);
                if (rv < 0)
                    return rv;
            }
            sc->seg->end = start;
            return 1;
        }
    }
    return corrupt(sc, bad, reason);
}

static bool rec_ok(const uint8_t *h, size_t avail)
{
    if (avail < RL_REC_HDR)
        return false;
    uint32_t len = rl_get32(h + 4);
    if (len > avail - RL_REC_HDR)
        return false;
    return rl_get32(h) == tkv_codec_crc32c(0, h + 4, RL_REC_HDR - 4 + len);
}

static int scan_segment(struct scan *sc)
{
    const uint8_t *p = sc->p;
    struct tkv_raftlog *log = sc->log;
    if (sc->len < RL_SEG_HDR || memcmp(p, RL_MAGIC, 8) != 0 ||
        rl_get32(p + 60) != tkv_codec_crc32c(0, p, 60))
        return corrupt(sc, 0, "bad segment header");
    if (rl_get32(p + 8) != RL_VERSION)
        return corrupt(sc, 8, "unsupported segment version");
    if (rl_get64(p + 16) != sc->seg->id)
        return corrupt(sc, 16, "segment id does not match its name");
    sc->max_batch = rl_get32(p + 32);
    uint64_t off = RL_SEG_HDR;
    for (;;) {
        if (off + RL_REC_HDR > sc->len || all_zero(p + off, RL_REC_HDR)) {
            /* Clean end: the rest must be preallocated zeros. */
            if (off < sc->len && !all_zero(p + off, sc->len - (size_t)off))
                return damage(sc, off, off, "data after the end of the log");
            break;
        }
        const uint8_t *h = p + off;
        if (!rec_ok(h, sc->len - (size_t)off) || h[8] != RL_REC_BATCH ||
            rl_get32(h + 4) != RL_BATCH_PAYLOAD)
            return damage(sc, off, off, "bad batch header");
        uint64_t seq = rl_get64(h + RL_REC_HDR);
        uint32_t body = rl_get32(h + RL_REC_HDR + 8);
        uint32_t n_rec = rl_get32(h + RL_REC_HDR + 12);
        if (log->next_seq != 0 && seq != log->next_seq)
            return damage(sc, off, off, "batch out of sequence");
        if (body > sc->len - off - RL_BATCH_HDR)
            return damage(sc, off, off, "batch past end of segment");
        /* Validate every record before applying any: a batch is atomic. */
        uint64_t pos = off + RL_BATCH_HDR, end = pos + body;
        uint32_t k = 0;
        while (pos < end) {
            const uint8_t *r = p + pos;
            if (!rec_ok(r, (size_t)(end - pos)))
                return damage(sc, off, pos, "bad record checksum or length");
            if (r[8] < RL_REC_APPEND || r[8] > RL_REC_REMOVE)
                return damage(sc, off, pos, "bad record type");
            pos += RL_REC_HDR + rl_get32(r + 4);
            k++;
        }
        if (k != n_rec)
            return damage(sc, off, off, "record count mismatch");
        for (pos = off + RL_BATCH_HDR; pos < end;) {
            int rv = raftlog_apply_record(log, (uint32_t)sc->seg->id, pos, p + pos, false);
            if (rv < 0)
                return corrupt(sc, pos, "malformed record payload");
            pos += RL_REC_HDR + rl_get32(p + pos + 4);
        }
        log->next_seq = seq + 1;
        off = end;
    }
    sc->seg->end = off;
    return 0;
}

int raftlog_recover(struct tkv_raftlog *log, struct tkv_raftlog_corruption *where)
{
    uint64_t *ids = NULL;
    size_t n = 0;
    int rv = raftlog_io_list(log, &ids, &n);
    if (rv < 0)
        return rv;
    /* Purge deletes oldest first and syncs the directory, so a live log is
     * a contiguous id range; a hole means a lost segment: corruption (never
     * guess which side is stale). */
    for (size_t i = 1; i < n; i++) {
        if (ids[i] != ids[i - 1] + 1) {
            struct rl_seg fake = {.id = ids[i]};
            struct scan sc = {.log = log, .seg = &fake, .where = where};
            rv = corrupt(&sc, 0, "segment missing before this one");
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        rv = raftlog_io_attach(log, ids[i]);
        if (rv < 0)
            goto out;
        struct scan sc = {.log = log, .seg = &log->segs[log->n_segs - 1],
                          .newest = (i + 1 == n), .where = where};
        rv = raftlog_io_map(log, sc.seg, &sc.p, &sc.len);
        if (rv < 0)
            goto out;
        rv = scan_segment(&sc);
        raftlog_io_unmap(log, sc.p, sc.len);
        if (rv < 0)
            goto out;
        /* The tail may be a batch written but never synced before a crash
         * of the process (the page cache kept it). Raft will treat what it
         * reads here as persisted, so make it so. */
        if (sc.newest && (rv = raftlog_io_datasync(log, sc.seg)) < 0)
            goto out;
    }
    if (log->n_segs == 0) {
        rv = raftlog_io_create(log, 1);
        if (rv < 0)
            goto out;
    }
    if (log->next_seq == 0)
        log->next_seq = 1;
    rv = 0;
out:
    tkv_free(ids);
    return rv;
}
