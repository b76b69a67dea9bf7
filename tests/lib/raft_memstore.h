/* In-memory implementation of struct tkv_raft_storage for tests and the
 * benchmark: what a node has persisted (hard state, snapshot, entries). */
#ifndef TKV_TEST_RAFT_MEMSTORE_H
#define TKV_TEST_RAFT_MEMSTORE_H

#include "tkv/raft.h"

struct raft_memstore {
    struct tkv_raft_hard_state hs;
    struct tkv_raft_snapshot snap; /* index 0 = none; data referenced */
    struct tkv_raft_entry *ents;   /* ents[k].index == snap.index + 1 + k */
    size_t n, cap;
    bool snap_unavailable;         /* snapshot() says "being generated" */
};

void raft_memstore_init(struct raft_memstore *ms);
void raft_memstore_free(struct raft_memstore *ms);
/* Deep copy (shares payload references). */
void raft_memstore_clone(struct raft_memstore *dst, const struct raft_memstore *src);
/* Truncate after ents[0].index - 1 and append (takes references). */
void raft_memstore_append(struct raft_memstore *ms, const struct tkv_raft_entry *e, size_t n);
/* Replace everything with snapshot s (takes a reference to its data). */
void raft_memstore_apply_snapshot(struct raft_memstore *ms, const struct tkv_raft_snapshot *s);
/* Drop entries <= index, making (index, term(index), cs, data) the snapshot.
 * Returns 0, or TKV_ECOMPACTED / TKV_EUNAVAILABLE. */
int raft_memstore_compact(struct raft_memstore *ms, tkv_index index,
                          const struct tkv_raft_conf_state *cs, struct tkv_raft_buf *data);
tkv_index raft_memstore_last(const struct raft_memstore *ms);
struct tkv_raft_storage raft_memstore_storage(struct raft_memstore *ms);

#endif
