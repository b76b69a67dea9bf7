/* TinyKV 4A (mvcc/transaction_test.go) and latches_test.go, same inputs and
 * bytes: EncodeKey/DecodeKey vectors, each MVCC write as one exact modify,
 * visibility of versions, CurrentWrite and MostRecentWrite. */
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"
#include "txn_fixture.h"

static struct tb b;
static struct tkv_engine_snap *snap;
static struct tkv_txn_mvcc txn;

static void setup(void)
{
    tb_open(&b);
    snap = NULL;
}

static void teardown(void)
{
    tkv_engine_snap_close(snap);
    tb_close(&b);
}

TestSuite(txn_mvcc, .init = setup, .fini = teardown);

/* testTxn: a txn at start_ts over whatever the test stored. */
static void test_txn(uint64_t start_ts)
{
    tkv_engine_snap_close(snap);
    cr_assert_eq(tkv_engine_snap_open(b.s, &snap), 0);
    tkv_txn_mvcc_init(&txn, snap, &b.arena, start_ts);
}

static void raw_set(enum tkv_cf cf, struct tkv_slice key, struct tkv_slice value)
{
    cr_assert_eq(tkv_engine_put(b.s, cf, key, value), 0);
}

static struct tkv_slice enc(struct tkv_slice key, uint64_t ts)
{
    return tkv_txn_encode_key(&b.arena, key, ts);
}

static struct tkv_slice write_bytes(uint8_t kind, uint64_t start_ts)
{
    uint8_t *p = tkv_arena_alloc(&b.arena, TKV_TXN_WRITE_LEN);
    tkv_txn_write_encode(&(struct tkv_txn_write){.kind = kind, .start_ts = start_ts}, p);
    return TKV_SLICE(p, TKV_TXN_WRITE_LEN);
}

static void assert_one_modify(enum tkv_cf cf, bool is_delete, struct tkv_slice key,
                              struct tkv_slice value)
{
    cr_assert_eq(txn.writes.n, 1, "want exactly one modify, got %zu", txn.writes.n);
    cr_assert_eq(txn.writes.items[0].cf, cf, "modify in the wrong CF");
    cr_assert_eq(txn.writes.items[0].is_delete, is_delete, "put/delete mixed up");
    assert_bytes(txn.writes.items[0].key, key, "modify key");
    if (!is_delete)
        assert_bytes(txn.writes.items[0].value, value, "modify value");
}

Test(txn_mvcc, TestEncodeKey)
{
    assert_bytes(enc(NIL, 0),
                 B(0, 0, 0, 0, 0, 0, 0, 0, 247, 255, 255, 255, 255, 255, 255, 255, 255),
                 "EncodeKey([], 0)");
    assert_bytes(enc(B(42), 0),
                 B(42, 0, 0, 0, 0, 0, 0, 0, 248, 255, 255, 255, 255, 255, 255, 255, 255),
                 "EncodeKey([42], 0)");
    assert_bytes(enc(B(42, 0, 5), 0),
                 B(42, 0, 5, 0, 0, 0, 0, 0, 250, 255, 255, 255, 255, 255, 255, 255, 255),
                 "EncodeKey([42,0,5], 0)");
    assert_bytes(enc(B(42), ~(uint64_t)43543258743295),
                 B(42, 0, 0, 0, 0, 0, 0, 0, 248, 0, 0, 39, 154, 52, 120, 65, 255),
                 "EncodeKey([42], ^43543258743295)");
    assert_bytes(enc(B(42, 0, 5), ~(uint64_t)98753868),
                 B(42, 0, 5, 0, 0, 0, 0, 0, 250, 0, 0, 0, 0, 5, 226, 221, 76),
                 "EncodeKey([42,0,5], ^98753868)");
    /* encoded keys order like their user keys */
    struct tkv_slice a = enc(B(42), 238), z = enc(B(200), 0), a0 = enc(B(42, 0), 0);
    cr_assert_lt(memcmp(a.ptr, z.ptr, TKV_MIN(a.len, z.len)), 0, "[42]@238 must sort before [200]");
    cr_assert_lt(memcmp(a.ptr, a0.ptr, TKV_MIN(a.len, a0.len)), 0,
                 "[42]@238 must sort before [42,0]");
}

static void roundtrip(struct tkv_slice key, uint64_t ts)
{
    struct tkv_slice got;
    tkv_ts got_ts;
    cr_assert_eq(tkv_txn_decode_key(&b.arena, enc(key, ts), &got, &got_ts), 0);
    assert_bytes(got, key, "DecodeUserKey(EncodeKey(k, ts))");
    cr_assert_eq(got_ts, ts);
}

Test(txn_mvcc, TestDecodeKey)
{
    roundtrip(NIL, 0);
    roundtrip(B(42), 0);
    roundtrip(B(42, 0, 5), 0);
    roundtrip(B(42), 2342342355436234);
    roundtrip(B(42, 0, 5), 234234);
    struct tkv_slice k;
    tkv_ts ts;
    cr_assert_eq(tkv_txn_decode_key(
                     &b.arena, B(42, 0, 5, 0, 0, 0, 0, 9, 250, 0, 0, 0, 0, 0, 0, 0, 0), &k, &ts),
                 TKV_ECORRUPT, "non-zero pad byte must be refused");
}

static const struct tkv_txn_lock lock16 = {
    .primary = {(const uint8_t[]){16}, 1},
    .ts = 100,
    .ttl = 100000,
    .kind = TKV_TXN_KIND_ROLLBACK,
};

Test(txn_mvcc, TestPutLock4A)
{
    test_txn(42);
    tkv_txn_put_lock(&txn, B(1), &lock16);
    assert_one_modify(LCK, false, B(1),
                      B(16, 3, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 1, 134, 160));
}

Test(txn_mvcc, TestPutWrite4A)
{
    test_txn(0);
    tkv_txn_put_write(&txn, B(16, 240), 0,
                      &(struct tkv_txn_write){.kind = TKV_TXN_KIND_DELETE, .start_ts = 100});
    assert_one_modify(WRT, false, enc(B(16, 240), 0), B(2, 0, 0, 0, 0, 0, 0, 0, 100));
}

Test(txn_mvcc, TestPutValue4A)
{
    test_txn(453325345);
    tkv_txn_put_value(&txn, B(32), B(1, 1, 2, 3, 5, 8, 13));
    assert_one_modify(DEF, false, enc(B(32), 453325345), B(1, 1, 2, 3, 5, 8, 13));
}

Test(txn_mvcc, TestGetLock4A)
{
    raw_set(LCK, B(1), tkv_txn_lock_encode(&b.arena, &lock16));
    test_txn(42);
    struct tkv_txn_lock got;
    bool found;
    cr_assert_eq(tkv_txn_get_lock(&txn, B(1), &got, &found), 0);
    cr_assert(found, "the stored lock must be found");
    assert_bytes(got.primary, B(16), "primary");
    cr_assert(got.ts == 100 && got.ttl == 100000 && got.kind == TKV_TXN_KIND_ROLLBACK,
              "lock fields: ts %llu ttl %llu kind %u", (unsigned long long)got.ts,
              (unsigned long long)got.ttl, got.kind);
    cr_assert_eq(tkv_txn_get_lock(&txn, B(2), &got, &found), 0);
    cr_assert(!found, "no lock on [2]");
}

Test(txn_mvcc, TestDeleteLock4A)
{
    test_txn(42);
    tkv_txn_delete_lock(&txn, B(1));
    assert_one_modify(LCK, true, B(1), NIL);
}

Test(txn_mvcc, TestDeleteValue4A)
{
    test_txn(63454245);
    tkv_txn_delete_value(&txn, B(17, 255, 0));
    assert_one_modify(DEF, true, enc(B(17, 255, 0), 63454245), NIL);
}

static void single_entry(void)
{
    raw_set(DEF, enc(B(16, 240), 40), B(1, 2, 3));
    raw_set(WRT, enc(B(16, 240), 42), write_bytes(TKV_TXN_KIND_PUT, 40));
}

static void two_entries(void)
{
    single_entry();
    raw_set(DEF, enc(B(16, 240), 50), B(255, 0, 255));
    raw_set(WRT, enc(B(16, 240), 52), write_bytes(TKV_TXN_KIND_PUT, 50));
}

static void deleted(void)
{
    single_entry();
    raw_set(WRT, enc(B(16, 240), 52), write_bytes(TKV_TXN_KIND_DELETE, 50));
}

static void expect_value(struct tkv_slice key, const struct tkv_slice *want)
{
    struct tkv_slice v = {0};
    bool found;
    cr_assert_eq(tkv_txn_get_value(&txn, key, &v, &found), 0);
    if (!want) {
        cr_assert(!found, "no value should be visible at %llu", (unsigned long long)txn.start_ts);
        return;
    }
    cr_assert(found, "a value should be visible at %llu", (unsigned long long)txn.start_ts);
    assert_bytes(v, *want, "visible value");
}

Test(txn_mvcc, TestGetValueSimple4A)
{
    single_entry();
    test_txn(43);
    expect_value(B(16, 240), &B(1, 2, 3));
}

Test(txn_mvcc, TestGetValueMissing4A)
{
    single_entry();
    test_txn(43);
    expect_value(B(16, 241), NULL);
}

Test(txn_mvcc, TestGetValueTooEarly4A)
{
    single_entry();
    test_txn(41);
    expect_value(B(16, 240), NULL);
}

Test(txn_mvcc, TestGetValueOverwritten4A)
{
    two_entries();
    test_txn(52);
    expect_value(B(16, 240), &B(255, 0, 255));
}

Test(txn_mvcc, TestGetValueNotOverwritten4A)
{
    two_entries();
    test_txn(50);
    expect_value(B(16, 240), &B(1, 2, 3));
}

Test(txn_mvcc, TestGetValueDeleted4A)
{
    deleted();
    test_txn(500);
    expect_value(B(16, 240), NULL);
}

Test(txn_mvcc, TestGetValueNotDeleted4A)
{
    deleted();
    test_txn(45);
    expect_value(B(16, 240), &B(1, 2, 3));
}

static void expect_write(int (*fn)(struct tkv_txn_mvcc *, struct tkv_slice, struct tkv_txn_write *,
                                   tkv_ts *, bool *),
                         struct tkv_slice key, bool want_found, uint8_t kind, uint64_t start_ts,
                         uint64_t commit_ts)
{
    struct tkv_txn_write w;
    tkv_ts cts = 0;
    bool found;
    cr_assert_eq(fn(&txn, key, &w, &cts, &found), 0);
    cr_assert_eq(found, want_found, "write found=%d, want %d (txn ts %llu)", found, want_found,
                 (unsigned long long)txn.start_ts);
    if (want_found)
        cr_assert(w.kind == kind && w.start_ts == start_ts && cts == commit_ts,
                  "write kind %u start %llu commit %llu, want %u %llu %llu", w.kind,
                  (unsigned long long)w.start_ts, (unsigned long long)cts, kind,
                  (unsigned long long)start_ts, (unsigned long long)commit_ts);
}

Test(txn_mvcc, TestCurrentWrite4A)
{
    two_entries();
    test_txn(50);
    expect_write(tkv_txn_current_write, B(16, 240), true, TKV_TXN_KIND_PUT, 50, 52);
    txn.start_ts = 40;
    expect_write(tkv_txn_current_write, B(16, 240), true, TKV_TXN_KIND_PUT, 40, 42);
    txn.start_ts = 41;
    expect_write(tkv_txn_current_write, B(16, 240), false, 0, 0, 0);
}

Test(txn_mvcc, TestMostRecentWrite4A)
{
    test_txn(50); /* empty DB */
    expect_write(tkv_txn_most_recent_write, B(16, 240), false, 0, 0, 0);
    two_entries();
    test_txn(50);
    expect_write(tkv_txn_most_recent_write, B(16, 240), true, TKV_TXN_KIND_PUT, 50, 52);
    expect_write(tkv_txn_most_recent_write, B(16), false, 0, 0, 0); /* other keys: none */
    test_txn(5000);                                                 /* independent of the txn ts */
    expect_write(tkv_txn_most_recent_write, B(16, 240), true, TKV_TXN_KIND_PUT, 50, 52);
    test_txn(1);
    expect_write(tkv_txn_most_recent_write, B(16, 240), true, TKV_TXN_KIND_PUT, 50, 52);
}

Test(txn_mvcc, TestMostRecentWriteDeleted4A)
{
    deleted();
    test_txn(50);
    expect_write(tkv_txn_most_recent_write, B(16, 240), true, TKV_TXN_KIND_DELETE, 50, 52);
}

Test(txn_mvcc, lock_record_bytes_and_corrupt_records)
{
    /* TINYKV-API.md 2.6: primary [1], Put, ts 100, ttl 1000 */
    struct tkv_txn_lock l = {.primary = B(1), .kind = TKV_TXN_KIND_PUT, .ts = 100, .ttl = 1000};
    assert_bytes(tkv_txn_lock_encode(&b.arena, &l),
                 B(1, 1, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 3, 232), "lock record");
    struct tkv_txn_lock got;
    cr_assert_eq(tkv_txn_lock_decode(B(1, 2, 3), &got), TKV_ECORRUPT, "short lock record");
    cr_assert_eq(tkv_txn_lock_decode(B(9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), &got),
                 TKV_ECORRUPT, "unknown kind byte");
    struct tkv_txn_write w;
    cr_assert_eq(tkv_txn_write_decode(B(1, 0, 0), &w), TKV_ECORRUPT, "short write record");
    /* a corrupt write record is reported, not trusted */
    raw_set(WRT, enc(B(7), 10), B(1, 2));
    test_txn(20);
    struct tkv_slice v;
    bool found;
    cr_assert_eq(tkv_txn_get_value(&txn, B(7), &v, &found), TKV_ECORRUPT);
}

/* ---- latches_test.go TestAcquireLatches, with parked requests ---- */

static int n_ready;
static void on_ready(struct tkv_txn_latch_req *r)
{
    (void)r;
    n_ready++;
}

static void req_init(struct tkv_txn_latch_req *r, const struct tkv_slice *keys, size_t n)
{
    tkv_txn_latch_req_init(r, &b.arena, keys, n);
    r->on_ready = on_ready;
}

Test(txn_mvcc, TestAcquireLatches)
{
    struct tkv_txn_latches *l = tkv_txn_latches_new();
    struct tkv_txn_latch_req a, e1, e2, d, f;
    n_ready = 0;
    /* Acquiring a new latch is ok. */
    req_init(&a, (struct tkv_slice[]){NIL, B(3), B(3, 0, 42)}, 3);
    cr_assert(tkv_txn_latches_acquire(l, &a), "fresh keys must be granted");
    /* Can only acquire once. */
    req_init(&e1, (struct tkv_slice[]){NIL}, 1);
    cr_assert(!tkv_txn_latches_acquire(l, &e1), "[] is held: must wait");
    req_init(&e2, (struct tkv_slice[]){B(3, 0, 42)}, 1);
    cr_assert(!tkv_txn_latches_acquire(l, &e2), "[3,0,42] is held: must wait");
    /* Release: both waiters get their latch, in order. */
    tkv_txn_latches_release(l, &a);
    cr_assert_eq(n_ready, 2, "both parked requests must be resumed");
    /* Then acquire is ok for a free key, not for one now held by e2. */
    req_init(&d, (struct tkv_slice[]){B(3)}, 1);
    cr_assert(tkv_txn_latches_acquire(l, &d));
    req_init(&f, (struct tkv_slice[]){B(3, 0, 42)}, 1);
    cr_assert(!tkv_txn_latches_acquire(l, &f), "e2 holds [3,0,42] now");
    tkv_txn_latches_release(l, &e1);
    tkv_txn_latches_release(l, &e2);
    cr_assert_eq(n_ready, 3);
    tkv_txn_latches_release(l, &f);
    tkv_txn_latches_release(l, &d);
    cr_assert_eq(tkv_txn_latches_held(l), 0, "every latch must be free at the end");
    tkv_txn_latches_free(l);
}

Test(txn_mvcc, latches_all_or_wait_fifo_no_deadlock)
{
    struct tkv_txn_latches *l = tkv_txn_latches_new();
    struct tkv_txn_latch_req x, y, z;
    n_ready = 0;
    /* x holds {1,2}; y wants {2,1} (sorted: same order) and z wants {1,3}:
     * both wait; y queued first on key 1 so y runs before z. */
    req_init(&x, (struct tkv_slice[]){B(1), B(2)}, 2);
    req_init(&y, (struct tkv_slice[]){B(2), B(1), B(2)}, 3);
    cr_assert_eq(y.n_keys, 2, "duplicate keys are latched once");
    req_init(&z, (struct tkv_slice[]){B(3), B(1)}, 2);
    cr_assert(tkv_txn_latches_acquire(l, &x));
    cr_assert(!tkv_txn_latches_acquire(l, &y));
    cr_assert(!tkv_txn_latches_acquire(l, &z));
    tkv_txn_latches_release(l, &x);
    cr_assert_eq(n_ready, 1, "only y may run: z still waits for key 1");
    cr_assert_eq(y.n_held, 2);
    cr_assert_eq(z.n_held, 0, "z must not hold any key while it waits on its first");
    tkv_txn_latches_release(l, &y);
    cr_assert_eq(n_ready, 2);
    tkv_txn_latches_release(l, &z);
    cr_assert_eq(tkv_txn_latches_held(l), 0);
    tkv_txn_latches_free(l);
}
