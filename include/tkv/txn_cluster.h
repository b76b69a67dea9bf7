/* The transactional commands of tkv/txn.h in cluster mode: one driver per
 * store (raftstore) runs each Kv* command on the region's leader through
 * tkv_raftstore_txn (ReadIndex, one snapshot, the command's write list as ONE
 * raft proposal applied atomically), holding the command's latches from
 * before the snapshot until the entry is applied (or the proposal failed).
 *
 * CONTRACT
 * - One driver per raftstore, on the store's core; single-threaded.
 * - Latches: one table per region, owned by the driver of the store whose
 *   peer leads the region (src/txn/README.md "Cluster"). A leader change
 *   fails the old leader's in-flight proposals (NotLeader / StaleCommand:
 *   not applied) and releases their latches; the new leader's commands
 *   re-read under their own latches after a ReadIndex, which orders them
 *   after every entry of earlier terms.
 * - tkv_txn_cluster_submit only checks and queues; tkv_txn_cluster_poll
 *   (once per loop turn, after tkv_raftstore_ready) starts what is ready.
 *   So the callback may submit again.
 * - The callback runs exactly once (also at tkv_txn_cluster_free: rv
 *   TKV_ESHUTDOWN). Free the driver after closing the raftstore (closing
 *   it answers every command in flight).
 */
#ifndef TKV_TXN_CLUSTER_H
#define TKV_TXN_CLUSTER_H

#include "tkv/arena.h"
#include "tkv/raftstore.h"
#include "tkv/txn.h"

enum tkv_txn_cmd {
    TKV_TXN_GET,              /* kvrpcpb_GetRequest -> kvrpcpb_GetResponse */
    TKV_TXN_SCAN,             /* ScanRequest -> ScanResponse */
    TKV_TXN_PREWRITE,         /* PrewriteRequest -> PrewriteResponse */
    TKV_TXN_COMMIT,           /* CommitRequest -> CommitResponse */
    TKV_TXN_CHECK_TXN_STATUS, /* CheckTxnStatusRequest -> CheckTxnStatusResponse */
    TKV_TXN_BATCH_ROLLBACK,   /* BatchRollbackRequest -> BatchRollbackResponse */
    TKV_TXN_RESOLVE_LOCK,     /* ResolveLockRequest -> ResolveLockResponse */
};

/* rv 0: *resp is the answer (KeyErrors inside it); TKV_EINVAL: bad input,
 * why says what (gRPC INVALID_ARGUMENT), nothing written; TKV_EREGION:
 * region_error (KeyNotInRegion in the EncodeBytes form, NotLeader, ...),
 * nothing written; TKV_ESHUTDOWN: outcome unknown; other: engine errors. */
struct tkv_txn_cluster_result {
    int rv;
    const char *why;
    const struct tkv_rs_region_error *region_error;
};
typedef void (*tkv_txn_cluster_cb)(void *arg, const struct tkv_txn_cluster_result *res);

struct tkv_txn_cluster;

struct tkv_txn_cluster *tkv_txn_cluster_new(struct tkv_raftstore *rs);
/* Answers queued commands TKV_ESHUTDOWN; drops the latch tables. */
void tkv_txn_cluster_free(struct tkv_txn_cluster *tc);

/* req (the decoded request) and arena must live until cb has returned; the
 * response is built in arena. KvScan answers at most scan_max_bytes. */
void tkv_txn_cluster_submit(struct tkv_txn_cluster *tc, const struct tkv_rs_header *h,
                            enum tkv_txn_cmd cmd, const void *req, void *resp,
                            struct tkv_arena *arena, tkv_txn_cluster_cb cb, void *arg);
/* Start every queued command whose latches are held. Returns how many. */
size_t tkv_txn_cluster_poll(struct tkv_txn_cluster *tc);

/* Latched keys of a region (tests). */
size_t tkv_txn_cluster_latched(const struct tkv_txn_cluster *tc, uint64_t region_id);

#endif
