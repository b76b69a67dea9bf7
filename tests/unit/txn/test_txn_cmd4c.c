/* TinyKV 4C (commands4c_test.go): KvBatchRollback, KvCheckTxnStatus,
 * KvResolveLock and KvScan with the same inputs and expected bytes. */
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"
#include "txn_fixture.h"

static struct tb b;
static void setup(void)
{
    tb_open(&b);
}
static void teardown(void)
{
    tb_close(&b);
}
TestSuite(txn_4c, .init = setup, .fini = teardown);

#define W(kind, ts) B(kind, 0, 0, 0, 0, 0, 0, 0, ts)
#define LOCK_P1(kind, ts) B(1, kind, 0, 0, 0, 0, 0, 0, 0, ts, 0, 0, 0, 0, 0, 0, 0, 0)
#define LOCK_P0(ts) B(1, 0, 0, 0, 0, 0, 0, 0, ts, 0, 0, 0, 0, 0, 0, 0, 0) /* empty primary */

static kvrpcpb_BatchRollbackResponse rollback(const kvrpcpb_BatchRollbackRequest *cmd)
{
    kvrpcpb_BatchRollbackResponse resp;
    cr_assert_eq(tb_rollback(&b, cmd, &resp), 0);
    return resp;
}

Test(txn_4c, TestEmptyRollback4C)
{
    kvrpcpb_BatchRollbackRequest cmd = tb_rollback_req(&b, NULL, 0);
    cr_assert(!rollback(&cmd).has_error);
    tb_assert_lens(&b, 0, 0, 0);
}

Test(txn_4c, TestRollback4C)
{
    kvrpcpb_BatchRollbackRequest cmd = tb_rollback_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(DEF, B(3), 0, B(42)), KV(LCK, B(3), 0, LOCK_P1(1, tb_ts(&b))));
    cr_assert(!rollback(&cmd).has_error);
    tb_assert_lens(&b, 0, 0, 1);
    TB_ASSERT(&b, KV(WRT, B(3), 0, W(3, tb_ts(&b))));
}

Test(txn_4c, TestRollbackDuplicateKeys4C)
{
    kvrpcpb_BatchRollbackRequest cmd =
        tb_rollback_req(&b, (struct tkv_slice[]){B(3), B(15), B(3)}, 3);
    TB_INIT(&b, KV(DEF, B(3), 0, B(42)), KV(LCK, B(3), 0, LOCK_P1(1, tb_ts(&b))),
            KV(DEF, B(15), 0, B(0)), KV(LCK, B(15), 0, LOCK_P1(1, tb_ts(&b))));
    cr_assert(!rollback(&cmd).has_error);
    tb_assert_lens(&b, 0, 0, 2);
    TB_ASSERT(&b, KV(WRT, B(3), 0, W(3, tb_ts(&b))), KV(WRT, B(15), 0, W(3, tb_ts(&b))));
}

Test(txn_4c, TestRollbackMissingPrewrite4C)
{
    kvrpcpb_BatchRollbackRequest cmd = tb_rollback_req(&b, (struct tkv_slice[]){B(3)}, 1);
    cr_assert(!rollback(&cmd).has_error);
    tb_assert_lens(&b, 0, 0, 1);
    TB_ASSERT(&b, KV(WRT, B(3), 0, W(3, tb_ts(&b))));
}

Test(txn_4c, TestRollbackCommitted4C)
{
    kvrpcpb_BatchRollbackRequest cmd = tb_rollback_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(DEF, B(3), 0, B(42)), KV(WRT, B(3), 110, W(1, tb_ts(&b))));
    kvrpcpb_BatchRollbackResponse resp = rollback(&cmd);
    cr_assert(resp.has_error && resp.error.abort.len > 0, "rolling back a commit: abort");
    tb_assert_lens(&b, 1, 0, 1);
    TB_ASSERT(&b, KVU(DEF, B(3), 0), KVU(WRT, B(3), 110));
}

Test(txn_4c, TestRollbackDuplicate4C)
{
    kvrpcpb_BatchRollbackRequest cmd = tb_rollback_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(WRT, B(3), 100, W(3, tb_ts(&b))));
    cr_assert(!rollback(&cmd).has_error);
    tb_assert_lens(&b, 0, 0, 1);
    TB_ASSERT(&b, KVU(WRT, B(3), 100));
}

Test(txn_4c, TestRollbackOtherTxn4C)
{
    kvrpcpb_BatchRollbackRequest cmd = tb_rollback_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(DEF, B(3), 80, B(42)), KV(LCK, B(3), 0, LOCK_P1(1, 80)));
    cr_assert(!rollback(&cmd).has_error);
    tb_assert_lens(&b, 1, 1, 1);
    TB_ASSERT(&b, KVU(DEF, B(3), 80), KVU(LCK, B(3), 0), KV(WRT, B(3), 100, W(3, tb_ts(&b))));
}

static kvrpcpb_CheckTxnStatusResponse check(const kvrpcpb_CheckTxnStatusRequest *cmd)
{
    kvrpcpb_CheckTxnStatusResponse resp;
    cr_assert_eq(tb_check(&b, cmd, &resp), 0);
    return resp;
}

Test(txn_4c, TestCheckTxnStatusTtlExpired4C)
{
    kvrpcpb_CheckTxnStatusRequest cmd = tb_check_req(&b, B(3));
    TB_INIT(&b, KV(DEF, B(3), cmd.lock_ts, B(42)),
            KV(LCK, B(3), 0, B(3, 1, 0, 0, 5, 0, 0, 0, 0, tb_ts(&b), 0, 0, 0, 0, 0, 0, 0, 8)));
    kvrpcpb_CheckTxnStatusResponse resp = check(&cmd);
    cr_assert_eq(resp.action, kvrpcpb_Action_TTLExpireRollback);
    cr_assert(resp.lock_ttl == 0 && resp.commit_version == 0);
    tb_assert_lens(&b, 0, 0, 1);
    TB_ASSERT(&b, KV(WRT, B(3), cmd.lock_ts, B(3, 0, 0, 5, 0, 0, 0, 0, tb_ts(&b))));
}

Test(txn_4c, TestCheckTxnStatusTtlNotExpired4C)
{
    kvrpcpb_CheckTxnStatusRequest cmd = tb_check_req(&b, B(3));
    TB_INIT(&b, KV(DEF, B(3), cmd.lock_ts, B(42)),
            KV(LCK, B(3), 0, B(3, 1, 0, 0, 5, 0, 0, 0, 0, tb_ts(&b), 0, 0, 0, 1, 0, 0, 0, 8)));
    kvrpcpb_CheckTxnStatusResponse resp = check(&cmd);
    cr_assert_eq(resp.action, kvrpcpb_Action_NoAction);
    cr_assert_eq(resp.lock_ttl, (1ull << 32) + 8, "lock_ttl reports the live lock's TTL");
    tb_assert_lens(&b, 1, 1, 0);
    TB_ASSERT(&b, KVU(DEF, B(3), cmd.lock_ts), KVU(LCK, B(3), 0));
}

Test(txn_4c, TestCheckTxnStatusRolledBack4C)
{
    kvrpcpb_CheckTxnStatusRequest cmd = tb_check_req(&b, B(3));
    TB_INIT(&b, KV(DEF, B(3), cmd.lock_ts, B(42)),
            KV(WRT, B(3), cmd.lock_ts, B(3, 0, 0, 5, 0, 0, 0, 0, tb_ts(&b))),
            KV(LCK, B(3), 0, B(3, 1, 0, 0, 8, 0, 0, 0, 0, tb_ts(&b), 0, 0, 0, 0, 0, 0, 0, 8)));
    kvrpcpb_CheckTxnStatusResponse resp = check(&cmd);
    cr_assert_eq(resp.action, kvrpcpb_Action_NoAction);
    cr_assert_eq(resp.commit_version, 0);
    tb_assert_lens(&b, 1, 1, 1);
    TB_ASSERT(&b, KVU(DEF, B(3), cmd.lock_ts), KVU(WRT, B(3), cmd.lock_ts), KVU(LCK, B(3), 0));
}

Test(txn_4c, TestCheckTxnStatusCommitted4C)
{
    kvrpcpb_CheckTxnStatusRequest cmd = tb_check_req(&b, B(3));
    TB_INIT(&b, KV(DEF, B(3), cmd.lock_ts, B(42)),
            KV(WRT, B(3), cmd.lock_ts, B(1, 0, 0, 5, 0, 0, 0, 0, tb_ts(&b))));
    kvrpcpb_CheckTxnStatusResponse resp = check(&cmd);
    cr_assert_eq(resp.action, kvrpcpb_Action_NoAction);
    cr_assert_eq(resp.commit_version,
                 tkv_codec_get_u64be((const uint8_t[]){0, 0, 5, 0, 0, 0, 0, tb_ts(&b)}));
    tb_assert_lens(&b, 1, 0, 1);
    TB_ASSERT(&b, KVU(DEF, B(3), cmd.lock_ts), KVU(WRT, B(3), cmd.lock_ts));
}

Test(txn_4c, TestCheckTxnStatusNoLockNoWrite4C)
{
    kvrpcpb_CheckTxnStatusRequest cmd = tb_check_req(&b, B(3));
    kvrpcpb_CheckTxnStatusResponse resp = check(&cmd);
    cr_assert_eq(resp.action, kvrpcpb_Action_LockNotExistRollback);
    tb_assert_lens(&b, 0, 0, 1);
    TB_ASSERT(&b, KV(WRT, B(3), cmd.lock_ts, B(3, 0, 0, 5, 0, 0, 0, 0, tb_ts(&b))));
}

static kvrpcpb_ResolveLockResponse resolve(uint64_t start, uint64_t commit)
{
    kvrpcpb_ResolveLockRequest req = {.start_version = start, .commit_version = commit};
    kvrpcpb_ResolveLockResponse resp;
    cr_assert_eq(tb_resolve(&b, &req, &resp), 0);
    return resp;
}

Test(txn_4c, TestEmptyResolve4C)
{
    cr_assert(!resolve(0, 0).has_error);
    tb_assert_lens(&b, 0, 0, 0);
}

static void init_resolve(void)
{
    TB_INIT(&b, KV(DEF, B(3), 100, B(42)), KV(LCK, B(3), 0, LOCK_P0(100)),
            KV(DEF, B(7), 100, B(43)), KV(LCK, B(7), 0, LOCK_P0(100)), KV(DEF, B(200), 110, B(44)),
            KV(LCK, B(200), 0, LOCK_P0(110)));
}

Test(txn_4c, TestResolveCommit4C)
{
    init_resolve();
    cr_assert(!resolve(100, 120).has_error);
    tb_assert_lens(&b, 3, 1, 2);
    TB_ASSERT(&b, KVU(DEF, B(3), 100), KV(WRT, B(3), 120, W(1, 100)), KVU(DEF, B(7), 100),
              KV(WRT, B(7), 120, W(1, 100)), KVU(DEF, B(200), 110), KVU(LCK, B(200), 0));
}

Test(txn_4c, TestResolveRollback4C)
{
    init_resolve();
    cr_assert(!resolve(100, 0).has_error);
    tb_assert_lens(&b, 1, 1, 2);
    TB_ASSERT(&b, KV(WRT, B(3), 100, W(3, 100)), KV(WRT, B(7), 100, W(3, 100)),
              KVU(DEF, B(200), 110), KVU(LCK, B(200), 0));
}

static void init_resolve_written(void)
{
    TB_INIT(&b, KV(DEF, B(3), 100, B(42)), KV(WRT, B(201), 120, W(1, 100)),
            KV(DEF, B(7), 100, B(43)), KV(WRT, B(201), 100, W(3, 100)), KV(DEF, B(200), 110, B(44)),
            KV(LCK, B(200), 0, LOCK_P0(110)));
}

Test(txn_4c, TestResolveCommitWritten4C)
{
    init_resolve_written();
    cr_assert(!resolve(100, 120).has_error);
    tb_assert_lens(&b, 3, 1, 2);
    TB_ASSERT(&b, KVU(DEF, B(3), 100), KVU(WRT, B(201), 120), KVU(DEF, B(7), 100),
              KVU(WRT, B(201), 100), KVU(DEF, B(200), 110), KVU(LCK, B(200), 0));
}

Test(txn_4c, TestResolveRollbackWritten4C)
{
    init_resolve_written();
    cr_assert(!resolve(100, 0).has_error);
    tb_assert_lens(&b, 3, 1, 2);
    TB_ASSERT(&b, KVU(DEF, B(3), 100), KVU(WRT, B(201), 120), KVU(DEF, B(7), 100),
              KVU(WRT, B(201), 100), KVU(DEF, B(200), 110), KVU(LCK, B(200), 0));
}

/* builderForScan */
static void init_scan(void)
{
    TB_INIT(&b, KV(DEF, B(1), 80, B(50)), KV(WRT, B(1), 99, W(1, 80)), KV(DEF, B(1, 23), 80, B(55)),
            KV(WRT, B(1, 23), 99, W(1, 80)), KV(DEF, B(3), 80, B(51)), KV(WRT, B(3), 99, W(1, 80)),
            KV(DEF, B(3, 45), 80, B(56)), KV(WRT, B(3, 45), 99, W(1, 80)),
            KV(DEF, B(3, 46), 80, B(57)), KV(WRT, B(3, 46), 99, W(1, 80)),
            KV(DEF, B(3, 47), 80, B(58)), KV(WRT, B(3, 47), 99, W(1, 80)),
            KV(DEF, B(3, 48), 80, B(59)), KV(WRT, B(3, 48), 99, W(1, 80)), KV(DEF, B(4), 80, B(52)),
            KV(WRT, B(4), 99, W(1, 80)), KV(DEF, B(120), 80, B(53)), KV(WRT, B(120), 99, W(1, 80)),
            KV(DEF, B(199), 80, B(54)), KV(WRT, B(199), 99, W(1, 80)),
            KV(DEF, B(4, 45), 110, B(58)), KV(WRT, B(4, 45), 116, W(1, 110)),
            KV(DEF, B(4, 46), 110, B(57)), KV(WRT, B(4, 46), 116, W(1, 110)),
            KV(DEF, B(4, 47), 110, B(58)), KV(WRT, B(4, 47), 116, W(1, 110)),
            KV(DEF, B(4, 48), 110, B(59)), KV(WRT, B(4, 48), 116, W(1, 110)),
            KV(DEF, B(5, 45), 97, B(60)), KV(WRT, B(5, 45), 101, W(1, 97)),
            KV(DEF, B(5, 46), 97, B(61)), KV(WRT, B(5, 46), 101, W(1, 97)),
            KV(DEF, B(5, 47), 97, B(62)), KV(WRT, B(5, 47), 101, W(1, 97)),
            KV(DEF, B(5, 48), 97, B(63)), KV(WRT, B(5, 48), 101, W(1, 97)),
            KV(DEF, B(150), 80, B(42)), KV(WRT, B(150), 99, W(1, 80)),
            KV(WRT, B(150), 101, W(2, 97)), KV(DEF, B(150), 110, B(64)),
            KV(WRT, B(150), 116, W(1, 110)));
}

static kvrpcpb_ScanResponse scan(const kvrpcpb_ScanRequest *req)
{
    kvrpcpb_ScanResponse resp;
    cr_assert_eq(tb_scan(&b, req, &resp), 0);
    for (size_t i = 0; i < resp.pairs.n; i++)
        cr_assert(!resp.pairs.items[i].has_error, "pair %zu: unexpected KeyError", i);
    return resp;
}

static void assert_pair(const kvrpcpb_ScanResponse *r, size_t i, struct tkv_slice key,
                        struct tkv_slice value)
{
    cr_assert_lt(i, r->pairs.n);
    assert_bytes(r->pairs.items[i].key, key, "pair key");
    assert_bytes(r->pairs.items[i].value, value, "pair value");
}

Test(txn_4c, TestScanEmpty4C)
{
    init_scan();
    kvrpcpb_ScanRequest cmd = tb_scan_req(&b, B(200), 10000);
    cr_assert_eq(scan(&cmd).pairs.n, 0);
}

Test(txn_4c, TestScanLimitZero4C)
{
    init_scan();
    kvrpcpb_ScanRequest cmd = tb_scan_req(&b, B(3), 0);
    cr_assert_eq(scan(&cmd).pairs.n, 0);
}

Test(txn_4c, TestScanAll4C)
{
    init_scan();
    kvrpcpb_ScanRequest cmd = tb_scan_req(&b, B(0), 10000);
    kvrpcpb_ScanResponse r = scan(&cmd);
    cr_assert_eq(r.pairs.n, 11, "want 11 pairs at version 100, got %zu", r.pairs.n);
    assert_pair(&r, 0, B(1), B(50));
    assert_pair(&r, 10, B(199), B(54));
}

Test(txn_4c, TestScanLimit4C)
{
    init_scan();
    kvrpcpb_ScanRequest cmd = tb_scan_req(&b, B(2), 6);
    kvrpcpb_ScanResponse r = scan(&cmd);
    cr_assert_eq(r.pairs.n, 6);
    assert_pair(&r, 0, B(3), B(51));
    assert_pair(&r, 5, B(4), B(52));
}

Test(txn_4c, TestScanDeleted4C)
{
    init_scan();
    kvrpcpb_ScanRequest r1 = tb_scan_req(&b, B(100), 10000);
    r1.version = 100;
    kvrpcpb_ScanRequest r2 = tb_scan_req(&b, B(100), 10000);
    r2.version = 105;
    kvrpcpb_ScanRequest r3 = tb_scan_req(&b, B(100), 10000);
    r3.version = 120;
    kvrpcpb_ScanResponse s1 = scan(&r1), s2 = scan(&r2), s3 = scan(&r3);
    cr_assert_eq(s1.pairs.n, 3);
    assert_pair(&s1, 1, B(150), B(42));
    cr_assert_eq(s2.pairs.n, 2, "deleted at 101: hidden at 105");
    assert_bytes(s2.pairs.items[0].key, B(120), "first key at 105");
    assert_bytes(s2.pairs.items[1].key, B(199), "second key at 105");
    cr_assert_eq(s3.pairs.n, 3);
    assert_pair(&s3, 1, B(150), B(64));
}
