/* Internals shared by the txn module's files: snapshot readers used by both
 * the MVCC object and the commands. */
#ifndef TKV_TXN_PRIVATE_H
#define TKV_TXN_PRIVATE_H

#include "tkv/txn.h"

/* Test builds (TKV_SANITIZE: FIU_ENABLE with libfiu) can switch on known
 * bugs by name so that the history checkers are shown to catch them
 * (tests/integration/workloads: TKV_FAILPOINTS="txn/..." in the server's
 * environment; tests/cluster/raftstore: fiu_enable). Release builds compile
 * every TXN_BUG to false. */
#ifdef FIU_ENABLE
#include <fiu.h>
#define TXN_BUG(name) (fiu_fail("txn/" name) != 0)
#else
#define TXN_BUG(name) false
#endif

/* EncodeBytes(key) ‖ FF×8 ‖ 00: the exclusive upper bound of key's versions. */
struct tkv_slice txn_versions_end(struct tkv_arena *arena, struct tkv_slice key);

/* Lock of key (primary copied into arena); *found false when absent. */
int txn_read_lock(struct tkv_engine_snap *snap, struct tkv_arena *arena, struct tkv_slice key,
                  struct tkv_txn_lock *lock_out, bool *found);

/* Value of key visible at ts (commit_ts <= ts), copied into arena. */
int txn_read_value(struct tkv_engine_snap *snap, struct tkv_arena *arena, struct tkv_slice key,
                   tkv_ts ts, struct tkv_slice *value_out, bool *found);

#endif
