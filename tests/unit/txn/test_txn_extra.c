/* Beyond TinyKV's catalogue: bad input (issue 11 item 7), Op_Lock
 * mutations, all-or-nothing prewrite, locks seen by Scan, the read-latest
 * rule, and a full prewrite/commit/read round trip. */
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
TestSuite(txn_extra, .init = setup, .fini = teardown);

static void expect_invalid(int rv, const char *what)
{
    cr_assert_eq(rv, TKV_EINVAL, "%s: want INVALID_ARGUMENT, got %d", what, rv);
    cr_assert(tb_why && tb_why[0], "%s: the error must say why", what);
    tb_assert_lens(&b, 0, 0, 0);
}

Test(txn_extra, bad_input_is_invalid_argument_and_writes_nothing)
{
    kvrpcpb_PrewriteResponse pr;
    kvrpcpb_Mutation m = mutation(3, B(1), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest p = tb_prewrite_req(&b, &m, 1);
    p.start_version = 0;
    expect_invalid(tb_prewrite(&b, &p, &pr), "prewrite start 0");
    p = tb_prewrite_req(&b, &m, 1);
    p.lock_ttl = UINT64_MAX;
    expect_invalid(tb_prewrite(&b, &p, &pr), "prewrite absurd ttl");
    p = tb_prewrite_req(&b, &m, 1);
    p.primary_lock = NIL;
    expect_invalid(tb_prewrite(&b, &p, &pr), "prewrite without primary");
    kvrpcpb_Mutation bad[] = {mutation(4, B(1), kvrpcpb_Op_Put),
                              {.op = kvrpcpb_Op_Put, .key = NIL, .value = B(1)}};
    p = tb_prewrite_req(&b, bad, 2);
    expect_invalid(tb_prewrite(&b, &p, &pr), "prewrite with an empty key");
    kvrpcpb_Mutation rb[] = {mutation(4, NIL, kvrpcpb_Op_Rollback)};
    p = tb_prewrite_req(&b, rb, 1);
    expect_invalid(tb_prewrite(&b, &p, &pr), "prewrite op Rollback");
    kvrpcpb_Mutation unknown[] = {mutation(4, NIL, (kvrpcpb_Op)77)};
    p = tb_prewrite_req(&b, unknown, 1);
    expect_invalid(tb_prewrite(&b, &p, &pr), "prewrite unknown op");
    p = tb_prewrite_req(&b, &m, 1);
    p.mutations.n = TKV_TXN_KEYS_MAX + 1;
    expect_invalid(tb_prewrite(&b, &p, &pr), "prewrite oversized batch");
    static uint8_t huge[TKV_TXN_KEY_MAX + 1];
    kvrpcpb_Mutation big = {.op = kvrpcpb_Op_Put, .key = TKV_SLICE(huge, sizeof(huge))};
    p = tb_prewrite_req(&b, &big, 1);
    expect_invalid(tb_prewrite(&b, &p, &pr), "prewrite key over the limit");

    kvrpcpb_CommitResponse cr;
    kvrpcpb_CommitRequest c = tb_commit_req(&b, (struct tkv_slice[]){B(3)}, 1);
    c.commit_version = c.start_version;
    expect_invalid(tb_commit(&b, &c, &cr), "commit_version == start_version");
    c.commit_version = c.start_version - 1;
    expect_invalid(tb_commit(&b, &c, &cr), "commit_version < start_version");
    c = tb_commit_req(&b, (struct tkv_slice[]){B(3), NIL}, 2);
    expect_invalid(tb_commit(&b, &c, &cr), "commit with an empty key");

    kvrpcpb_BatchRollbackResponse rr;
    kvrpcpb_BatchRollbackRequest r = tb_rollback_req(&b, (struct tkv_slice[]){B(3)}, 1);
    r.start_version = 0;
    expect_invalid(tb_rollback(&b, &r, &rr), "rollback start 0");

    kvrpcpb_CheckTxnStatusResponse sr;
    kvrpcpb_CheckTxnStatusRequest s = tb_check_req(&b, B(3));
    s.lock_ts = 0;
    expect_invalid(tb_check(&b, &s, &sr), "check lock_ts 0");
    s = tb_check_req(&b, NIL);
    expect_invalid(tb_check(&b, &s, &sr), "check empty primary");

    kvrpcpb_ResolveLockResponse lr;
    kvrpcpb_ResolveLockRequest l = {.start_version = 100, .commit_version = 90};
    expect_invalid(tb_resolve(&b, &l, &lr), "resolve commit < start");

    kvrpcpb_GetResponse gr;
    kvrpcpb_GetRequest g = {.key = B(3), .version = 0};
    expect_invalid(tb_get(&b, &g, &gr), "get version 0");
    g = (kvrpcpb_GetRequest){.key = NIL, .version = 5};
    expect_invalid(tb_get(&b, &g, &gr), "get empty key");
    kvrpcpb_ScanResponse scr;
    kvrpcpb_ScanRequest sc = {.start_key = B(1), .limit = 5, .version = 0};
    expect_invalid(tb_scan(&b, &sc, &scr), "scan version 0");
}

Test(txn_extra, prewrite_is_all_or_nothing)
{
    /* [5] is locked by txn 90; a prewrite of [3],[5],[7] must write
     * nothing at all, not the two free keys. */
    TB_INIT(&b, KV(LCK, B(5), 0, B(5, 1, 0, 0, 0, 0, 0, 0, 0, 90, 0, 0, 0, 0, 0, 0, 0, 0)));
    kvrpcpb_Mutation m[] = {mutation(3, B(1), kvrpcpb_Op_Put), mutation(5, B(2), kvrpcpb_Op_Put),
                            mutation(7, B(3), kvrpcpb_Op_Put)};
    kvrpcpb_PrewriteRequest p = tb_prewrite_req(&b, m, 3);
    kvrpcpb_PrewriteResponse pr;
    cr_assert_eq(tb_prewrite(&b, &p, &pr), 0);
    cr_assert_eq(pr.errors.n, 1);
    assert_bytes(pr.errors.items[0].locked.key, B(5), "the locked key is reported");
    tb_assert_lens(&b, 0, 1, 0);
}

static void must_prewrite(kvrpcpb_Mutation *m, size_t n, uint64_t start)
{
    kvrpcpb_PrewriteRequest p = tb_prewrite_req(&b, m, n);
    p.start_version = start;
    p.lock_ttl = 3000;
    kvrpcpb_PrewriteResponse pr;
    cr_assert_eq(tb_prewrite(&b, &p, &pr), 0);
    cr_assert_eq(pr.errors.n, 0, "prewrite at %llu failed", (unsigned long long)start);
}

static void must_commit(struct tkv_slice *keys, size_t n, uint64_t start, uint64_t commit)
{
    kvrpcpb_CommitRequest c = {.start_version = start, .commit_version = commit};
    c.keys.items = keys;
    c.keys.n = n;
    kvrpcpb_CommitResponse cr;
    cr_assert_eq(tb_commit(&b, &c, &cr), 0);
    cr_assert(!cr.has_error, "commit %llu failed", (unsigned long long)start);
}

static void must_get(struct tkv_slice key, uint64_t ts, const struct tkv_slice *want)
{
    kvrpcpb_GetRequest g = {.key = key, .version = ts};
    kvrpcpb_GetResponse gr;
    cr_assert_eq(tb_get(&b, &g, &gr), 0);
    cr_assert(!gr.has_error, "get at %llu: unexpected KeyError", (unsigned long long)ts);
    if (want)
        assert_bytes(gr.value, *want, "get value");
    else
        cr_assert(gr.not_found, "get at %llu: want not found", (unsigned long long)ts);
}

Test(txn_extra, op_lock_commits_a_record_readers_skip)
{
    kvrpcpb_Mutation put = mutation(3, B(42), kvrpcpb_Op_Put);
    must_prewrite(&put, 1, 10);
    must_commit((struct tkv_slice[]){B(3)}, 1, 10, 11);
    kvrpcpb_Mutation lk = mutation(3, NIL, kvrpcpb_Op_Lock);
    must_prewrite(&lk, 1, 20);
    /* the lock blocks readers like any lock */
    kvrpcpb_GetRequest g = {.key = B(3), .version = 25};
    kvrpcpb_GetResponse gr;
    cr_assert_eq(tb_get(&b, &g, &gr), 0);
    cr_assert(gr.has_error && gr.error.has_locked, "an Op_Lock lock blocks readers");
    must_commit((struct tkv_slice[]){B(3)}, 1, 20, 21);
    TB_ASSERT(&b, KV(WRT, B(3), 21, B('L', 0, 0, 0, 0, 0, 0, 0, 20)));
    tb_assert_lens(&b, 1, 0, 2);
    /* readers skip the 'L' record: the value committed at 11 stays */
    must_get(B(3), 30, &B(42));
    /* and a txn that started before 21 conflicts with it */
    kvrpcpb_Mutation late = mutation(3, B(9), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest p = tb_prewrite_req(&b, &late, 1);
    p.start_version = 15;
    kvrpcpb_PrewriteResponse pr;
    cr_assert_eq(tb_prewrite(&b, &p, &pr), 0);
    cr_assert(pr.errors.n == 1 && pr.errors.items[0].has_conflict,
              "a write (even a Lock record) after start is a conflict");
}

Test(txn_extra, round_trip_delete_and_rollback_idempotent)
{
    kvrpcpb_Mutation m[] = {mutation(1, B(10), kvrpcpb_Op_Put), mutation(2, B(20), kvrpcpb_Op_Put)};
    must_prewrite(m, 2, 100);
    must_commit((struct tkv_slice[]){B(1), B(2)}, 2, 100, 105);
    must_commit((struct tkv_slice[]){B(1), B(2)}, 2, 100, 105); /* idempotent */
    must_get(B(1), 104, NULL);
    must_get(B(1), 105, &B(10));
    kvrpcpb_Mutation d = mutation(1, NIL, kvrpcpb_Op_Del);
    must_prewrite(&d, 1, 110);
    must_commit((struct tkv_slice[]){B(1)}, 1, 110, 111);
    must_get(B(1), 111, NULL);
    must_get(B(1), 110, &B(10));
    /* rollback twice, then commit of the rolled-back txn is refused */
    kvrpcpb_Mutation p3 = mutation(3, B(30), kvrpcpb_Op_Put);
    must_prewrite(&p3, 1, 120);
    for (int i = 0; i < 2; i++) {
        kvrpcpb_BatchRollbackRequest r = {.start_version = 120};
        r.keys.items = (struct tkv_slice[]){B(3)};
        r.keys.n = 1;
        kvrpcpb_BatchRollbackResponse rr;
        cr_assert_eq(tb_rollback(&b, &r, &rr), 0);
        cr_assert(!rr.has_error, "rollback %d must succeed", i);
    }
    kvrpcpb_CommitRequest c = {.start_version = 120, .commit_version = 125};
    c.keys.items = (struct tkv_slice[]){B(3)};
    c.keys.n = 1;
    kvrpcpb_CommitResponse cr;
    cr_assert_eq(tb_commit(&b, &c, &cr), 0);
    cr_assert(cr.has_error && cr.error.abort.len > 0, "commit after rollback: KeyError");
    must_get(B(3), 200, NULL);
}

Test(txn_extra, scan_reports_locks_as_pairs_and_keeps_going)
{
    kvrpcpb_Mutation m[] = {mutation(1, B(10), kvrpcpb_Op_Put), mutation(3, B(30), kvrpcpb_Op_Put)};
    must_prewrite(m, 2, 100);
    must_commit((struct tkv_slice[]){B(1), B(3)}, 2, 100, 101);
    /* [2]: locked, never committed; [3]: committed and locked again */
    kvrpcpb_Mutation l[] = {mutation(2, B(20), kvrpcpb_Op_Put), mutation(3, B(31), kvrpcpb_Op_Put)};
    must_prewrite(l, 2, 200);
    kvrpcpb_ScanRequest s = {.start_key = B(1), .limit = 10, .version = 300};
    kvrpcpb_ScanResponse sr;
    cr_assert_eq(tb_scan(&b, &s, &sr), 0);
    cr_assert_eq(sr.pairs.n, 3, "[1] value, [2] lock, [3] lock");
    assert_bytes(sr.pairs.items[0].value, B(10), "[1]");
    cr_assert(sr.pairs.items[1].has_error && sr.pairs.items[1].error.has_locked);
    assert_bytes(sr.pairs.items[1].key, B(2), "locked pair key");
    cr_assert_eq(sr.pairs.items[1].error.locked.lock_version, 200);
    cr_assert(sr.pairs.items[2].has_error, "[3] is locked at 200 <= 300");
    /* below the lock's ts the locks do not matter */
    s.version = 150;
    cr_assert_eq(tb_scan(&b, &s, &sr), 0);
    cr_assert_eq(sr.pairs.n, 2);
    assert_bytes(sr.pairs.items[1].value, B(30), "[3] at 150");
    /* read-latest rule: TsMax ignores locks on secondaries, not the primary */
    kvrpcpb_GetRequest g = {.key = B(3), .version = TKV_TXN_TS_MAX};
    kvrpcpb_GetResponse gr;
    cr_assert_eq(tb_get(&b, &g, &gr), 0);
    cr_assert(!gr.has_error, "[3] is a secondary (primary is [1])");
    assert_bytes(gr.value, B(30), "latest committed");
}

Test(txn_extra, check_txn_status_live_ttl0_lock_reports_locked)
{
    kvrpcpb_Mutation m = mutation(3, B(1), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest p = tb_prewrite_req(&b, &m, 1);
    p.start_version = 5ull << 18;
    p.primary_lock = B(3);
    kvrpcpb_PrewriteResponse pr;
    cr_assert_eq(tb_prewrite(&b, &p, &pr), 0);
    kvrpcpb_CheckTxnStatusRequest s = {
        .primary_key = B(3), .lock_ts = 5ull << 18, .current_ts = (5ull << 18) + 3};
    kvrpcpb_CheckTxnStatusResponse sr;
    cr_assert_eq(tb_check(&b, &s, &sr), 0);
    cr_assert(sr.action == kvrpcpb_Action_NoAction && sr.lock_ttl > 0,
              "same physical ms: not expired, must not look rolled back");
    s.current_ts = 6ull << 18;
    cr_assert_eq(tb_check(&b, &s, &sr), 0);
    cr_assert_eq(sr.action, kvrpcpb_Action_TTLExpireRollback);
    tb_assert_lens(&b, 0, 0, 1);
}

Test(txn_extra, boundaries_lock_at_read_ts_and_commit_at_start_ts)
{
    /* A lock whose ts equals the read ts blocks the read (lock.ts <= ts;
     * the reference's "<" would miss it). */
    TB_INIT(&b, KV(LCK, B(9), 0, B(9, 1, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0)));
    kvrpcpb_GetRequest g = {.key = B(9), .version = 200};
    kvrpcpb_GetResponse gr;
    cr_assert_eq(tb_get(&b, &g, &gr), 0);
    cr_assert(gr.has_error && gr.error.has_locked, "a lock at the read ts must block the read");
    kvrpcpb_ScanRequest s = {.start_key = B(9), .limit = 1, .version = 200};
    kvrpcpb_ScanResponse sr;
    cr_assert_eq(tb_scan(&b, &s, &sr), 0);
    cr_assert(sr.pairs.n == 1 && sr.pairs.items[0].has_error, "scan too");
    /* A record committed exactly at our start ts is a conflict (>=). */
    TB_INIT(&b, KV(DEF, B(8), 40, B(1)), KV(WRT, B(8), 50, B(1, 0, 0, 0, 0, 0, 0, 0, 40)));
    kvrpcpb_Mutation m = mutation(8, B(2), kvrpcpb_Op_Put);
    kvrpcpb_PrewriteRequest p = tb_prewrite_req(&b, &m, 1);
    p.start_version = 50;
    kvrpcpb_PrewriteResponse pr;
    cr_assert_eq(tb_prewrite(&b, &p, &pr), 0);
    cr_assert(pr.errors.n == 1 && pr.errors.items[0].has_conflict,
              "a commit at exactly start_ts must conflict");
}
