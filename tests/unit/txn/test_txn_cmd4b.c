/* TinyKV 4B (commands4b_test.go): KvGet, KvPrewrite and KvCommit with the
 * same inputs and expected bytes. Each command's writes are checked against
 * its latch set (TinyKV's Latches.Validation). */
#include <string.h>

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
TestSuite(txn_4b, .init = setup, .fini = teardown);

#define W(kind, ts) B(kind, 0, 0, 0, 0, 0, 0, 0, ts)
#define LOCK_P1(kind, ts) B(1, kind, 0, 0, 0, 0, 0, 0, 0, ts, 0, 0, 0, 0, 0, 0, 0, 0)

static void get_value(uint64_t version, const struct tkv_slice *want)
{
    kvrpcpb_GetRequest req = {.key = B(99), .version = version};
    kvrpcpb_GetResponse resp;
    cr_assert_eq(tb_get(&b, &req, &resp), 0);
    cr_assert(!resp.has_region_error && !resp.has_error, "get at %llu: unexpected error",
              (unsigned long long)version);
    if (want) {
        cr_assert(!resp.not_found, "get at %llu: want a value", (unsigned long long)version);
        assert_bytes(resp.value, *want, "get value");
    } else {
        cr_assert(resp.not_found, "get at %llu: want not_found", (unsigned long long)version);
    }
}

static void init_99(void)
{
    TB_INIT(&b, KV(DEF, B(99), 50, B(42)), KV(WRT, B(99), 54, W(1, 50)));
}

Test(txn_4b, TestGetValue4B)
{
    init_99();
    get_value(TKV_TXN_TS_MAX, &B(42));
}

Test(txn_4b, TestGetValueTs4B)
{
    init_99();
    for (int i = 0; i < 3; i++)
        get_value(100, &B(42));
}

Test(txn_4b, TestGetEmpty4B)
{
    kvrpcpb_GetRequest req = {.key = B(100), .version = TKV_TXN_TS_MAX};
    kvrpcpb_GetResponse resp;
    cr_assert_eq(tb_get(&b, &req, &resp), 0);
    cr_assert(!resp.has_error && resp.not_found);
}

Test(txn_4b, TestGetNone4B)
{
    TB_INIT(&b, KV(DEF, B(99), 50, B(42)), KV(WRT, B(99), 54, W(1, 50)), KV(DEF, B(101), 50, B(42)),
            KV(WRT, B(101), 54, W(1, 50)));
    kvrpcpb_GetRequest req = {.key = B(100), .version = TKV_TXN_TS_MAX};
    kvrpcpb_GetResponse resp;
    cr_assert_eq(tb_get(&b, &req, &resp), 0);
    cr_assert(!resp.has_error && resp.not_found, "[100] lies between two keys: not found");
}

Test(txn_4b, TestGetVersions4B)
{
    TB_INIT(&b, KV(DEF, B(99), 50, B(42)), KV(WRT, B(99), 54, W(1, 50)), KV(DEF, B(99), 60, B(43)),
            KV(WRT, B(99), 66, W(1, 60)), KV(DEF, B(99), 120, B(44)),
            KV(WRT, B(99), 122, W(1, 120)));
    get_value(40, NULL);
    get_value(56, &B(42));
    get_value(60, &B(42));
    get_value(65, &B(42));
    get_value(66, &B(43));
    get_value(100, &B(43));
}

Test(txn_4b, TestGetDeleted4B)
{
    TB_INIT(&b, KV(DEF, B(99), 50, B(42)), KV(WRT, B(99), 54, W(1, 50)), KV(DEF, B(99), 60, NIL),
            KV(WRT, B(99), 66, W(2, 60)), KV(DEF, B(99), 120, B(44)),
            KV(WRT, B(99), 122, W(1, 120)));
    get_value(54, &B(42));
    get_value(60, &B(42));
    get_value(65, &B(42));
    get_value(66, NULL);
    get_value(67, NULL);
    get_value(122, &B(44));
}

Test(txn_4b, TestGetLocked4B)
{
    TB_INIT(&b, KV(DEF, B(99), 50, B(42)), KV(WRT, B(99), 54, W(1, 50)),
            KV(LCK, B(99), 0, B(99, 1, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0)));
    get_value(55, &B(42));
    kvrpcpb_GetRequest req = {.key = B(99), .version = 300};
    kvrpcpb_GetResponse resp;
    cr_assert_eq(tb_get(&b, &req, &resp), 0);
    cr_assert(resp.has_error && resp.error.has_locked, "a lock at 200 blocks a read at 300");
    assert_bytes(resp.error.locked.key, B(99), "LockInfo.key");
    assert_bytes(resp.error.locked.primary_lock, B(99), "LockInfo.primary_lock");
    cr_assert_eq(resp.error.locked.lock_version, 200);
    cr_assert_eq(resp.value.len, 0, "no value with a lock error");
}

Test(txn_4b, TestEmptyPrewrite4B)
{
    kvrpcpb_PrewriteRequest cmd = tb_prewrite_req(&b, NULL, 0);
    kvrpcpb_PrewriteResponse resp;
    cr_assert_eq(tb_prewrite(&b, &cmd, &resp), 0);
    cr_assert_eq(resp.errors.n, 0);
    tb_assert_lens(&b, 0, 0, 0);
}

Test(txn_4b, TestSinglePrewrite4B)
{
    kvrpcpb_Mutation m = mutation(3, B(42), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest cmd = tb_prewrite_req(&b, &m, 1);
    cmd.lock_ttl = 1000;
    kvrpcpb_PrewriteResponse resp;
    cr_assert_eq(tb_prewrite(&b, &cmd, &resp), 0);
    cr_assert_eq(resp.errors.n, 0);
    tb_assert_lens(&b, 1, 1, 0);
    TB_ASSERT(&b, KV(DEF, B(3), 0, B(42)),
              KV(LCK, B(3), 0, B(1, 1, 0, 0, 0, 0, 0, 0, 0, tb_ts(&b), 0, 0, 0, 0, 0, 0, 3, 232)));
}

Test(txn_4b, TestPrewriteLocked4B)
{
    kvrpcpb_Mutation m1 = mutation(3, B(42), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest cmd = tb_prewrite_req(&b, &m1, 1);
    kvrpcpb_Mutation m2 = mutation(3, B(53), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest cmd2 = tb_prewrite_req(&b, &m2, 1);
    kvrpcpb_PrewriteResponse r1, r2;
    cr_assert_eq(tb_prewrite(&b, &cmd, &r1), 0);
    cr_assert_eq(tb_prewrite(&b, &cmd2, &r2), 0);
    cr_assert_eq(r1.errors.n, 0);
    cr_assert_eq(r2.errors.n, 1, "the second txn must meet the first one's lock");
    cr_assert(r2.errors.items[0].has_locked);
    tb_assert_lens(&b, 1, 1, 0);
    TB_ASSERT(&b, KV(DEF, B(3), 100, B(42)), KV(LCK, B(3), 0, LOCK_P1(1, 100)));
}

Test(txn_4b, TestPrewriteWritten4B)
{
    kvrpcpb_Mutation m = mutation(3, B(42), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest cmd = tb_prewrite_req(&b, &m, 1);
    TB_INIT(&b, KV(DEF, B(3), 80, B(5)), KV(WRT, B(3), 101, W(1, 80)));
    kvrpcpb_PrewriteResponse resp;
    cr_assert_eq(tb_prewrite(&b, &cmd, &resp), 0);
    cr_assert_eq(resp.errors.n, 1);
    cr_assert(resp.errors.items[0].has_conflict, "a commit at 101 > start 100 is a conflict");
    cr_assert_eq(resp.errors.items[0].conflict.start_ts, 100);
    cr_assert_eq(resp.errors.items[0].conflict.conflict_ts, 101);
    tb_assert_lens(&b, 1, 0, 1);
    TB_ASSERT(&b, KV(DEF, B(3), 80, B(5)));
}

Test(txn_4b, TestPrewriteWrittenNoConflict4B)
{
    kvrpcpb_Mutation m = mutation(3, B(42), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest cmd = tb_prewrite_req(&b, &m, 1);
    TB_INIT(&b, KV(DEF, B(3), 80, B(5)), KV(WRT, B(3), 90, W(1, 80)));
    kvrpcpb_PrewriteResponse resp;
    cr_assert_eq(tb_prewrite(&b, &cmd, &resp), 0);
    cr_assert_eq(resp.errors.n, 0);
    tb_assert_lens(&b, 2, 1, 1);
    TB_ASSERT(&b, KV(DEF, B(3), 80, B(5)), KV(DEF, B(3), 0, B(42)),
              KV(LCK, B(3), 0, LOCK_P1(1, tb_ts(&b))));
}

Test(txn_4b, TestMultiplePrewrites4B)
{
    kvrpcpb_Mutation m1 = mutation(3, B(42), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest cmd = tb_prewrite_req(&b, &m1, 1);
    kvrpcpb_Mutation m2 = mutation(4, B(53), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest cmd2 = tb_prewrite_req(&b, &m2, 1);
    kvrpcpb_PrewriteResponse r1, r2;
    cr_assert_eq(tb_prewrite(&b, &cmd, &r1), 0);
    cr_assert_eq(tb_prewrite(&b, &cmd2, &r2), 0);
    cr_assert(r1.errors.n == 0 && r2.errors.n == 0);
    tb_assert_lens(&b, 2, 2, 0);
    TB_ASSERT(&b, KV(DEF, B(3), 100, B(42)), KV(LCK, B(3), 0, LOCK_P1(1, 100)),
              KV(DEF, B(4), 101, B(53)), KV(LCK, B(4), 0, LOCK_P1(1, 101)));
}

Test(txn_4b, TestPrewriteOverwrite4B)
{
    kvrpcpb_Mutation m[] = {mutation(3, B(42), kvrpcpb_Op_Put), mutation(3, B(45), kvrpcpb_Op_Put)};
    kvrpcpb_PrewriteRequest cmd = tb_prewrite_req(&b, m, 2);
    kvrpcpb_PrewriteResponse resp;
    cr_assert_eq(tb_prewrite(&b, &cmd, &resp), 0);
    cr_assert_eq(resp.errors.n, 0);
    tb_assert_lens(&b, 1, 1, 0);
    TB_ASSERT(&b, KV(DEF, B(3), 0, B(45)), KV(LCK, B(3), 0, LOCK_P1(1, tb_ts(&b))));
}

Test(txn_4b, TestPrewriteMultiple4B)
{
    kvrpcpb_Mutation m[] = {
        mutation(3, B(42), kvrpcpb_Op_Put),      mutation(4, B(43), kvrpcpb_Op_Put),
        mutation(5, B(44), kvrpcpb_Op_Put),      mutation(4, NIL, kvrpcpb_Op_Del),
        mutation(4, B(1, 3, 5), kvrpcpb_Op_Put), mutation(255, B(45), kvrpcpb_Op_Put),
    };
    kvrpcpb_PrewriteRequest cmd = tb_prewrite_req(&b, m, 6);
    kvrpcpb_PrewriteResponse resp;
    cr_assert_eq(tb_prewrite(&b, &cmd, &resp), 0);
    cr_assert_eq(resp.errors.n, 0);
    tb_assert_lens(&b, 4, 4, 0);
    TB_ASSERT(&b, KV(DEF, B(4), 0, B(1, 3, 5)));
}

Test(txn_4b, TestEmptyCommit4B)
{
    kvrpcpb_CommitRequest cmd = tb_commit_req(&b, NULL, 0);
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(!resp.has_error);
    tb_assert_lens(&b, 0, 0, 0);
}

Test(txn_4b, TestSingleCommit4B)
{
    kvrpcpb_CommitRequest cmd = tb_commit_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(DEF, B(3), 0, B(42)),
            KV(LCK, B(3), 0, B(1, 0, 0, 0, 0, 0, 0, 0, tb_ts(&b), 0, 0, 0, 0, 0, 0, 0, 0)));
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(!resp.has_error);
    tb_assert_lens(&b, 1, 0, 1);
    TB_ASSERT(&b, KV(WRT, B(3), 110, W(1, tb_ts(&b))), KVU(DEF, B(3), 0));
}

Test(txn_4b, TestCommitOverwrite4B)
{
    kvrpcpb_CommitRequest cmd = tb_commit_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(DEF, B(3), 80, B(15)), KV(WRT, B(3), 84, W(1, 80)), KV(DEF, B(3), 0, B(42)),
            KV(LCK, B(3), 0, LOCK_P1(1, tb_ts(&b))));
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(!resp.has_error);
    tb_assert_lens(&b, 2, 0, 2);
    TB_ASSERT(&b, KV(WRT, B(3), 110, W(1, tb_ts(&b))), KVU(DEF, B(3), 0));
}

Test(txn_4b, TestCommitMultipleKeys4B)
{
    kvrpcpb_CommitRequest cmd =
        tb_commit_req(&b, (struct tkv_slice[]){B(3), B(12, 4, 0), B(15)}, 3);
    uint8_t t = tb_ts(&b);
    TB_INIT(&b, KV(DEF, B(3), 0, B(42)), KV(LCK, B(3), 0, LOCK_P1(1, t)),
            KV(DEF, B(12, 4, 0), 0, B(1, 1, 0, 0, 1, 5)), KV(LCK, B(12, 4, 0), 0, LOCK_P1(1, t)),
            KV(DEF, B(15), 0, B(0)), KV(LCK, B(15), 0, LOCK_P1(1, t)), KV(DEF, B(4), 80, B(15)),
            KV(WRT, B(4), 84, W(1, 80)), KV(DEF, B(3, 0), 80, B(150)),
            KV(WRT, B(3, 0), 84, W(1, 80)), KV(DEF, B(2), 99, B(0, 0, 0, 8)),
            KV(LCK, B(2), 0, LOCK_P1(2, 99)), KV(DEF, B(43, 6), 99, B(1, 1, 0, 0, 1, 5)),
            KV(LCK, B(43, 6), 0, LOCK_P1(2, 99)));
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(!resp.has_error);
    tb_assert_lens(&b, 7, 2, 5);
    TB_ASSERT(&b, KV(WRT, B(3), 110, W(1, t)), KV(WRT, B(12, 4, 0), 110, W(1, t)),
              KV(WRT, B(15), 110, W(1, t)), KVU(DEF, B(4), 80), KVU(WRT, B(4), 84),
              KVU(DEF, B(3, 0), 80), KVU(WRT, B(3, 0), 84), KVU(DEF, B(2), 99), KVU(LCK, B(2), 0),
              KVU(DEF, B(43, 6), 99), KVU(LCK, B(43, 6), 0));
}

Test(txn_4b, TestRecommitKey4B)
{
    kvrpcpb_CommitRequest cmd = tb_commit_req(&b, (struct tkv_slice[]){B(3), B(3)}, 2);
    TB_INIT(&b, KV(DEF, B(3), 0, B(42)), KV(LCK, B(3), 0, LOCK_P1(1, tb_ts(&b))));
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(!resp.has_error);
    tb_assert_lens(&b, 1, 0, 1);
    TB_ASSERT(&b, KV(WRT, B(3), 110, W(1, tb_ts(&b))), KVU(DEF, B(3), 0));
}

Test(txn_4b, TestCommitConflictRollback4B)
{
    kvrpcpb_CommitRequest cmd = tb_commit_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(WRT, B(3), 110, W(3, tb_ts(&b))));
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(resp.has_error, "committing a rolled-back txn must be a KeyError (2024 test)");
    cr_assert_gt(resp.error.abort.len, 0, "the KeyError is an abort");
    tb_assert_lens(&b, 0, 0, 1);
    TB_ASSERT(&b, KVU(WRT, B(3), 110));
}

Test(txn_4b, TestCommitConflictRace4B)
{
    kvrpcpb_CommitRequest cmd = tb_commit_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(DEF, B(3), 90, B(110)), KV(LCK, B(3), 0, LOCK_P1(3, 90)));
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(resp.has_error && resp.error.retryable.len > 0,
              "a key locked by another txn: retryable KeyError");
    tb_assert_lens(&b, 1, 1, 0);
    TB_ASSERT(&b, KVU(LCK, B(3), 0), KVU(DEF, B(3), 90));
}

Test(txn_4b, TestCommitConflictRepeat4B)
{
    kvrpcpb_CommitRequest cmd = tb_commit_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(DEF, B(3), 0, B(42)), KV(WRT, B(3), 110, W(1, tb_ts(&b))));
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(!resp.has_error, "a repeated commit succeeds");
    tb_assert_lens(&b, 1, 0, 1);
    TB_ASSERT(&b, KVU(WRT, B(3), 110), KVU(DEF, B(3), 0));
}

Test(txn_4b, TestCommitMissingPrewrite4B)
{
    kvrpcpb_CommitRequest cmd = tb_commit_req(&b, (struct tkv_slice[]){B(3)}, 1);
    TB_INIT(&b, KV(DEF, B(4), 80, B(15)), KV(WRT, B(4), 84, W(1, 80)), KV(DEF, B(3, 0), 80, B(150)),
            KV(WRT, B(3, 0), 84, W(1, 80)));
    kvrpcpb_CommitResponse resp;
    cr_assert_eq(tb_commit(&b, &cmd, &resp), 0);
    cr_assert(!resp.has_error, "commit without prewrite: success, nothing written");
    tb_assert_lens(&b, 2, 0, 2);
    TB_ASSERT(&b, KVU(DEF, B(4), 80), KVU(WRT, B(4), 84), KVU(DEF, B(3, 0), 80),
              KVU(WRT, B(3, 0), 84));
}
