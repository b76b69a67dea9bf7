/* Test builder for the txn commands, after TinyKV's commands_test.go: an
 * in-memory engine, timestamps from 100 (next_ts), init/assert of raw CF
 * contents, and latch validation of every command's writes. */
#ifndef TKV_TXN_FIXTURE_H
#define TKV_TXN_FIXTURE_H

#include <criterion/criterion.h>

#include "tkv/engine.h"
#include "tkv/txn.h"

/* A byte string literal: B(1, 2, 3). */
#define B(...) TKV_SLICE(((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__}))
#define NIL TKV_SLICE("", 0)

/* One raw record: cf, user key, ts (0 = the builder's latest), value. */
struct kv {
    enum tkv_cf cf;
    struct tkv_slice key;
    uint64_t ts;
    struct tkv_slice value;
    bool has_value; /* false in asserts: "unchanged since init" */
};
#define KV(cf, key, ts, value) ((struct kv){(cf), (key), (ts), (value), true})
#define KVU(cf, key, ts) ((struct kv){(cf), (key), (ts), NIL, false})
#define DEF TKV_CF_DEFAULT
#define LCK TKV_CF_LOCK
#define WRT TKV_CF_WRITE

struct tb {
    struct tkv_engine *e;
    struct tkv_engine_session *s;
    struct tkv_arena arena;
    uint64_t prev_ts;
    struct kv inits[128];
    size_t n_inits;
};

void tb_open(struct tb *b);
void tb_close(struct tb *b);
uint64_t tb_next_ts(struct tb *b);
uint8_t tb_ts(const struct tb *b); /* low byte of the latest ts */
void tb_init(struct tb *b, const struct kv *kvs, size_t n);
void tb_assert(struct tb *b, const struct kv *kvs, size_t n);
void tb_assert_lens(struct tb *b, size_t def, size_t lock, size_t write);
#define TB_INIT(b, ...)                                                                            \
    tb_init((b), (const struct kv[]){__VA_ARGS__},                                                 \
            sizeof((const struct kv[]){__VA_ARGS__}) / sizeof(struct kv))
#define TB_ASSERT(b, ...)                                                                          \
    tb_assert((b), (const struct kv[]){__VA_ARGS__},                                               \
              sizeof((const struct kv[]){__VA_ARGS__}) / sizeof(struct kv))

/* Request builders as in commands_test.go. */
kvrpcpb_PrewriteRequest tb_prewrite_req(struct tb *b, const kvrpcpb_Mutation *muts, size_t n);
kvrpcpb_Mutation mutation(uint8_t key, struct tkv_slice value, kvrpcpb_Op op);
kvrpcpb_CommitRequest tb_commit_req(struct tb *b, const struct tkv_slice *keys, size_t n);
kvrpcpb_BatchRollbackRequest tb_rollback_req(struct tb *b, const struct tkv_slice *keys, size_t n);
kvrpcpb_CheckTxnStatusRequest tb_check_req(struct tb *b, struct tkv_slice key);
kvrpcpb_ScanRequest tb_scan_req(struct tb *b, struct tkv_slice start, uint32_t limit);

/* Run a command on a fresh snapshot, validate its writes against its latch
 * set and apply them. Return the command's rv (0 expected for all the
 * TinyKV cases). */
int tb_get(struct tb *b, const kvrpcpb_GetRequest *req, kvrpcpb_GetResponse *resp);
int tb_scan(struct tb *b, const kvrpcpb_ScanRequest *req, kvrpcpb_ScanResponse *resp);
int tb_prewrite(struct tb *b, const kvrpcpb_PrewriteRequest *req, kvrpcpb_PrewriteResponse *resp);
int tb_commit(struct tb *b, const kvrpcpb_CommitRequest *req, kvrpcpb_CommitResponse *resp);
int tb_rollback(struct tb *b, const kvrpcpb_BatchRollbackRequest *req,
                kvrpcpb_BatchRollbackResponse *resp);
int tb_check(struct tb *b, const kvrpcpb_CheckTxnStatusRequest *req,
             kvrpcpb_CheckTxnStatusResponse *resp);
int tb_resolve(struct tb *b, const kvrpcpb_ResolveLockRequest *req,
               kvrpcpb_ResolveLockResponse *resp);
/* The why of the last TKV_EINVAL. */
extern const char *tb_why;

void assert_bytes(struct tkv_slice got, struct tkv_slice want, const char *what);

#endif
