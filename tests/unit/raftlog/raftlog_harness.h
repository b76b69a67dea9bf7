/* Test harness for raftlog: one API over the disk and memory implementations,
 * a reference model of a region, and helpers to damage segments. */
#ifndef RAFTLOG_HARNESS_H
#define RAFTLOG_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/raftlog.h"

struct h {
    bool mem;
    char dir[128];
    struct tkv_raftlog_memdisk *disk;
    struct tkv_raftlog *log;
    struct tkv_raftlog_config cfg;
    struct tkv_raftlog_corruption where;
};

/* base: directory prefix for disk logs (NULL = /tmp). */
void h_init(struct h *h, bool mem, const char *base, uint64_t seg_size, uint32_t max_batch);
int h_open(struct h *h);
void h_close(struct h *h);
void h_fini(struct h *h);
size_t h_nsegs(struct h *h);
/* Whole segment i (id order) into a malloc'ed buffer; write it back. */
uint8_t *h_seg_load(struct h *h, size_t i, size_t *len_out);
void h_seg_store(struct h *h, size_t i, const uint8_t *buf, size_t len);
/* Offset just past the last non-zero byte of segment i. */
size_t h_seg_data_end(struct h *h, size_t i);

/* Deterministic entry payload: length 0..max-1, bytes from (region, index, term). */
size_t h_data(uint64_t region, uint64_t index, uint64_t term, uint8_t *buf, size_t max);

/* Reference model of one region. */
struct m_region {
    uint64_t id;
    uint64_t first;
    uint64_t n;
    uint64_t *terms; /* terms[i] of index first+i */
    size_t cap;
    bool has_hs;
    struct tkv_raftlog_hardstate hs;
    uint64_t snap_index, snap_term; /* latest compaction point */
};
void m_append(struct m_region *m, uint64_t start, uint64_t n, uint64_t term);
void m_truncate(struct m_region *m, uint64_t from);
/* term 0: the model's own term of entry upto (as the log looks it up). */
void m_compact(struct m_region *m, uint64_t upto, uint64_t term);
/* Term of entry i in the model, 0 when not present. */
uint64_t m_term(const struct m_region *m, uint64_t i);
void m_remove(struct m_region *m);
/* Compare the log's durable view with the model; returns NULL or a message. */
const char *m_check(struct tkv_raftlog *log, const struct m_region *m, char *buf, size_t cap);
/* Stage an append to both log and model with generated payloads. */
int h_append(struct tkv_raftlog *log, struct m_region *m, uint64_t start, uint64_t n,
             uint64_t term, const struct tkv_raftlog_hardstate *hs, tkv_raftlog_done_fn cb,
             void *arg);

uint64_t h_rand(uint64_t *s);

#endif
