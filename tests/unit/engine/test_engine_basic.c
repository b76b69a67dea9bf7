/* The shared engine suite, part 1: column families, point reads, write
 * batches (atomicity), range delete, iterators and bounds, binary keys. */
#include "engine_fixture.h"
#include "../../../src/engine/engine_private.h"

/* Collect the keys an iterator yields from seek_first to the end, joined as
 * "k1,k2,..." (printable test keys only). */
static void scan_keys(enum tkv_cf cf, struct tkv_slice lower, struct tkv_slice upper, char *out,
                      size_t cap)
{
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    must(tkv_engine_snap_open(fx.s, &snap));
    must(tkv_engine_iter_open(snap, cf, lower, upper, &it));
    out[0] = '\0';
    size_t n = 0;
    for (must(tkv_engine_iter_seek_first(it)); tkv_engine_iter_valid(it);
         must(tkv_engine_iter_next(it))) {
        struct tkv_slice k = tkv_engine_iter_key(it);
        cr_assert(n + k.len + 2 < cap);
        if (n)
            out[n++] = ',';
        memcpy(out + n, k.ptr, k.len);
        n += k.len;
        out[n] = '\0';
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
}

ENGINE_TEST(cf_names)
{
    enum tkv_cf cf = TKV_CF_META;
    must(tkv_engine_cf_from_name(S(""), &cf));
    cr_assert_eq(cf, TKV_CF_DEFAULT);
    must(tkv_engine_cf_from_name(S("default"), &cf));
    cr_assert_eq(cf, TKV_CF_DEFAULT);
    must(tkv_engine_cf_from_name(S("lock"), &cf));
    cr_assert_eq(cf, TKV_CF_LOCK);
    must(tkv_engine_cf_from_name(S("write"), &cf));
    cr_assert_eq(cf, TKV_CF_WRITE);
    cr_assert_eq(tkv_engine_cf_from_name(S("meta"), &cf), TKV_ECF, "meta must be internal");
    cr_assert_eq(tkv_engine_cf_from_name(S("writes"), &cf), TKV_ECF);
    cr_assert_eq(tkv_engine_cf_from_name(S("Default"), &cf), TKV_ECF);
    cr_assert_str_eq(tkv_engine_cf_name(TKV_CF_WRITE), "write");
    cr_assert_str_eq(tkv_engine_cf_name((enum tkv_cf)9), "?");
}

ENGINE_TEST(unknown_cf_is_an_error)
{
    enum tkv_cf bad = (enum tkv_cf)TKV_CF_COUNT;
    struct tkv_slice v;
    struct tkv_engine_batch b;
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    tkv_engine_batch_init(&b);
    cr_assert_eq(tkv_engine_get(fx.s, bad, S("k"), &v), TKV_ECF);
    cr_assert_eq(tkv_engine_put(fx.s, bad, S("k"), S("v")), TKV_ECF);
    cr_assert_eq(tkv_engine_delete(fx.s, (enum tkv_cf) - 1, S("k")), TKV_ECF);
    cr_assert_eq(tkv_engine_batch_put(&b, bad, S("k"), S("v")), TKV_ECF);
    cr_assert_eq(b.n_ops, 0, "a rejected op must leave the batch unchanged");
    cr_assert_eq(tkv_engine_batch_delete_range(&b, bad, S("a"), S("b")), TKV_ECF);
    must(tkv_engine_snap_open(fx.s, &snap));
    cr_assert_eq(tkv_engine_snap_get(snap, bad, S("k"), &v), TKV_ECF);
    cr_assert_eq(tkv_engine_iter_open(snap, bad, NOS, NOS, &it), TKV_ECF);
    tkv_engine_snap_close(snap);
    tkv_engine_batch_close(&b);
}

ENGINE_TEST(cfs_are_isolated)
{
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("k"), S("in-default")));
    must(tkv_engine_put(fx.s, TKV_CF_LOCK, S("k"), S("in-lock")));
    must(tkv_engine_put(fx.s, TKV_CF_WRITE, S("k"), S("in-write")));
    must(tkv_engine_put(fx.s, TKV_CF_META, S("k"), S("in-meta")));
    must(tkv_engine_put(fx.s, TKV_CF_LOCK, S("only-lock"), S("x")));
    expect_get(TKV_CF_DEFAULT, S("k"), S("in-default"));
    expect_get(TKV_CF_LOCK, S("k"), S("in-lock"));
    expect_get(TKV_CF_WRITE, S("k"), S("in-write"));
    expect_get(TKV_CF_META, S("k"), S("in-meta"));
    expect_get(TKV_CF_DEFAULT, S("only-lock"), NOS);
    expect_get(TKV_CF_WRITE, S("only-lock"), NOS);

    must(tkv_engine_delete(fx.s, TKV_CF_WRITE, S("k")));
    expect_get(TKV_CF_WRITE, S("k"), NOS);
    expect_get(TKV_CF_DEFAULT, S("k"), S("in-default"));
    expect_get(TKV_CF_LOCK, S("k"), S("in-lock"));

    must(tkv_engine_delete_range(fx.s, TKV_CF_LOCK, NOS, NOS));
    expect_get(TKV_CF_LOCK, S("k"), NOS);
    expect_get(TKV_CF_LOCK, S("only-lock"), NOS);
    expect_get(TKV_CF_DEFAULT, S("k"), S("in-default"));
    expect_get(TKV_CF_META, S("k"), S("in-meta"));

    char buf[256];
    scan_keys(TKV_CF_DEFAULT, NOS, NOS, buf, sizeof(buf));
    cr_assert_str_eq(buf, "k");
    scan_keys(TKV_CF_LOCK, NOS, NOS, buf, sizeof(buf));
    cr_assert_str_eq(buf, "");
}

ENGINE_TEST(point_reads)
{
    expect_get(TKV_CF_DEFAULT, S("missing"), NOS);
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("1")));
    expect_get(TKV_CF_DEFAULT, S("a"), S("1"));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("22")));
    expect_get(TKV_CF_DEFAULT, S("a"), S("22"));
    /* a key that is a prefix / extension of an existing one is distinct */
    expect_get(TKV_CF_DEFAULT, S("aa"), NOS);
    expect_get(TKV_CF_DEFAULT, TKV_SLICE("a\0", 2), NOS);
    /* empty value is a value, not absence */
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("empty"), S("")));
    expect_get(TKV_CF_DEFAULT, S("empty"), S(""));
    /* empty keys cannot be written and are never found */
    cr_assert_eq(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S(""), S("empty-key")), TKV_EINVAL);
    cr_assert_eq(tkv_engine_delete(fx.s, TKV_CF_DEFAULT, S("")), TKV_EINVAL);
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    cr_assert_eq(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, S(""), S("v")), TKV_EINVAL);
    cr_assert_eq(tkv_engine_batch_delete(&b, TKV_CF_DEFAULT, S("")), TKV_EINVAL);
    cr_assert_eq(b.n_ops, 0);
    tkv_engine_batch_close(&b);
    expect_get(TKV_CF_DEFAULT, S(""), NOS);
    must(tkv_engine_delete(fx.s, TKV_CF_DEFAULT, S("a")));
    expect_get(TKV_CF_DEFAULT, S("a"), NOS);
    must(tkv_engine_delete(fx.s, TKV_CF_DEFAULT, S("never-there")));
    expect_get(TKV_CF_DEFAULT, S("empty"), S(""));
}

ENGINE_TEST(get_result_survives_until_next_call)
{
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("value-a")));
    struct tkv_slice v;
    must(tkv_engine_get(fx.s, TKV_CF_DEFAULT, S("a"), &v));
    char copy[16];
    memcpy(copy, v.ptr, v.len);
    /* another session overwrites; the returned bytes must not change */
    struct tkv_engine_session *s2;
    must(tkv_engine_session_open(fx.e, &s2));
    must(tkv_engine_put(s2, TKV_CF_DEFAULT, S("a"), S("VALUE-B")));
    cr_assert(v.len == 7 && memcmp(v.ptr, copy, 7) == 0);
    tkv_engine_session_close(s2);
    expect_get(TKV_CF_DEFAULT, S("a"), S("VALUE-B"));
}

ENGINE_TEST(batch_is_atomic_and_ordered)
{
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("old"), S("o")));
    must(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, S("d1"), S("v1")));
    must(tkv_engine_batch_put(&b, TKV_CF_LOCK, S("l1"), S("lv")));
    must(tkv_engine_batch_put(&b, TKV_CF_WRITE, S("w1"), S("wv")));
    must(tkv_engine_batch_put(&b, TKV_CF_META, S("applied"), S("7")));
    must(tkv_engine_batch_delete(&b, TKV_CF_DEFAULT, S("old")));
    /* later ops on the same key win */
    must(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, S("x"), S("first")));
    must(tkv_engine_batch_delete(&b, TKV_CF_DEFAULT, S("x")));
    must(tkv_engine_batch_delete(&b, TKV_CF_DEFAULT, S("y")));
    must(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, S("y"), S("second")));
    cr_assert_eq(b.n_ops, 9);

    struct tkv_engine_snap *before;
    must(tkv_engine_snap_open(fx.s, &before));
    must(tkv_engine_write(fx.s, &b));
    expect_get(TKV_CF_DEFAULT, S("d1"), S("v1"));
    expect_get(TKV_CF_LOCK, S("l1"), S("lv"));
    expect_get(TKV_CF_WRITE, S("w1"), S("wv"));
    expect_get(TKV_CF_META, S("applied"), S("7"));
    expect_get(TKV_CF_DEFAULT, S("old"), NOS);
    expect_get(TKV_CF_DEFAULT, S("x"), NOS);
    expect_get(TKV_CF_DEFAULT, S("y"), S("second"));
    /* a snapshot from before sees none of it */
    struct tkv_slice v;
    cr_assert_eq(tkv_engine_snap_get(before, TKV_CF_DEFAULT, S("d1"), &v), TKV_ENOTFOUND);
    cr_assert_eq(tkv_engine_snap_get(before, TKV_CF_META, S("applied"), &v), TKV_ENOTFOUND);
    must(tkv_engine_snap_get(before, TKV_CF_DEFAULT, S("old"), &v));
    tkv_engine_snap_close(before);

    /* clear + reuse; an empty batch is a no-op */
    tkv_engine_batch_clear(&b);
    cr_assert_eq(b.n_ops, 0);
    must(tkv_engine_write(fx.s, &b));
    tkv_engine_batch_close(&b);
    tkv_engine_batch_close(&b); /* idempotent */
}

ENGINE_TEST(failed_batch_leaves_nothing)
{
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("before")));
    must(tkv_engine_put(fx.s, TKV_CF_WRITE, S("r1"), S("x")));
    must(tkv_engine_put(fx.s, TKV_CF_WRITE, S("r2"), S("x")));
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    must(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, S("a"), S("after")));
    must(tkv_engine_batch_put(&b, TKV_CF_LOCK, S("new"), S("n")));
    must(tkv_engine_batch_delete_range(&b, TKV_CF_WRITE, S("r"), S("s")));
    must(tkv_engine_batch_put(&b, TKV_CF_META, S("applied"), S("9")));
    /* fail just before the 4th op: three ops already ran in the txn */
    atomic_store(&engine_test_fail_write_at, 4);
    cr_assert_eq(tkv_engine_write(fx.s, &b), TKV_EENGINE);
    expect_get(TKV_CF_DEFAULT, S("a"), S("before"));
    expect_get(TKV_CF_LOCK, S("new"), NOS);
    expect_get(TKV_CF_WRITE, S("r1"), S("x"));
    expect_get(TKV_CF_WRITE, S("r2"), S("x"));
    expect_get(TKV_CF_META, S("applied"), NOS);
    /* the same batch applies cleanly afterwards (the hook disarmed) */
    must(tkv_engine_write(fx.s, &b));
    expect_get(TKV_CF_DEFAULT, S("a"), S("after"));
    expect_get(TKV_CF_WRITE, S("r1"), NOS);
    expect_get(TKV_CF_META, S("applied"), S("9"));
    tkv_engine_batch_close(&b);
}

ENGINE_TEST(too_big_is_rejected)
{
    static const uint8_t small[1];
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    /* lengths are checked before anything is read */
    cr_assert_eq(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, S("k"),
                                      TKV_SLICE(small, TKV_ENGINE_VALUE_MAX + 1)),
                 TKV_ETOOBIG);
    cr_assert_eq(
        tkv_engine_batch_put(&b, TKV_CF_DEFAULT, TKV_SLICE(small, TKV_ENGINE_KEY_MAX + 1), S("v")),
        TKV_ETOOBIG);
    cr_assert_eq(
        tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("k"), TKV_SLICE(small, TKV_ENGINE_VALUE_MAX + 1)),
        TKV_ETOOBIG);
    cr_assert_eq(b.n_ops, 0);
    tkv_engine_batch_close(&b);
}

ENGINE_TEST(range_delete)
{
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    char k[16];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "k%02d", i);
        must(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, TKV_SLICE(k, 3), S("v")));
        must(tkv_engine_batch_put(&b, TKV_CF_WRITE, TKV_SLICE(k, 3), S("w")));
    }
    must(tkv_engine_write(fx.s, &b));
    tkv_engine_batch_close(&b);

    struct tkv_engine_snap *before;
    must(tkv_engine_snap_open(fx.s, &before));
    must(tkv_engine_delete_range(fx.s, TKV_CF_DEFAULT, S("k10"), S("k20")));
    expect_get(TKV_CF_DEFAULT, S("k09"), S("v"));
    for (int i = 10; i < 20; i++) {
        snprintf(k, sizeof(k), "k%02d", i);
        expect_get(TKV_CF_DEFAULT, TKV_SLICE(k, 3), NOS);
    }
    expect_get(TKV_CF_DEFAULT, S("k20"), S("v"));
    expect_get(TKV_CF_WRITE, S("k15"), S("w"));
    /* start between keys, end between keys */
    must(tkv_engine_delete_range(fx.s, TKV_CF_DEFAULT, S("k295"), S("k315")));
    expect_get(TKV_CF_DEFAULT, S("k29"), S("v"));
    expect_get(TKV_CF_DEFAULT, S("k30"), NOS);
    expect_get(TKV_CF_DEFAULT, S("k31"), NOS);
    expect_get(TKV_CF_DEFAULT, S("k32"), S("v"));
    /* empty and inverted ranges delete nothing */
    must(tkv_engine_delete_range(fx.s, TKV_CF_DEFAULT, S("k40"), S("k40")));
    must(tkv_engine_delete_range(fx.s, TKV_CF_DEFAULT, S("k50"), S("k41")));
    expect_get(TKV_CF_DEFAULT, S("k40"), S("v"));
    expect_get(TKV_CF_DEFAULT, S("k45"), S("v"));
    /* unbounded end */
    must(tkv_engine_delete_range(fx.s, TKV_CF_DEFAULT, S("k90"), NOS));
    expect_get(TKV_CF_DEFAULT, S("k89"), S("v"));
    expect_get(TKV_CF_DEFAULT, S("k90"), NOS);
    expect_get(TKV_CF_DEFAULT, S("k99"), NOS);
    char buf[1024];
    scan_keys(TKV_CF_DEFAULT, S("k08"), S("k33"), buf, sizeof(buf));
    cr_assert_str_eq(buf, "k08,k09,k20,k21,k22,k23,k24,k25,k26,k27,k28,k29,k32");
    /* the snapshot from before still sees everything */
    struct tkv_slice v;
    must(tkv_engine_snap_get(before, TKV_CF_DEFAULT, S("k15"), &v));
    must(tkv_engine_snap_get(before, TKV_CF_DEFAULT, S("k99"), &v));
    tkv_engine_snap_close(before);
}

ENGINE_TEST(iterator_bounds)
{
    const char *keys[] = {"a", "b", "c", "d", "e"};
    for (size_t i = 0; i < 5; i++)
        must(tkv_engine_put(fx.s, TKV_CF_WRITE, TKV_SLICE(keys[i], 1), TKV_SLICE(keys[i], 1)));
    char buf[256];
    scan_keys(TKV_CF_WRITE, NOS, NOS, buf, sizeof(buf));
    cr_assert_str_eq(buf, "a,b,c,d,e");
    scan_keys(TKV_CF_WRITE, S("b"), S("d"), buf, sizeof(buf));
    cr_assert_str_eq(buf, "b,c");
    scan_keys(TKV_CF_WRITE, S("bb"), S("dd"), buf, sizeof(buf));
    cr_assert_str_eq(buf, "c,d");
    scan_keys(TKV_CF_WRITE, S("c"), S("c"), buf, sizeof(buf));
    cr_assert_str_eq(buf, "", "empty range");
    scan_keys(TKV_CF_WRITE, S("d"), S("b"), buf, sizeof(buf));
    cr_assert_str_eq(buf, "", "inverted range");
    scan_keys(TKV_CF_WRITE, S("f"), NOS, buf, sizeof(buf));
    cr_assert_str_eq(buf, "", "past the end");
    scan_keys(TKV_CF_LOCK, NOS, NOS, buf, sizeof(buf));
    cr_assert_str_eq(buf, "", "empty CF");

    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    must(tkv_engine_snap_open(fx.s, &snap));
    must(tkv_engine_iter_open(snap, TKV_CF_WRITE, S("b"), S("e"), &it));
    cr_assert_not(tkv_engine_iter_valid(it), "not positioned before a seek");
    /* seek below lower clamps to lower; seek at/after upper is invalid */
    must(tkv_engine_iter_seek(it, S("a")));
    cr_assert(tkv_engine_iter_valid(it));
    cr_assert_eq(tkv_engine_iter_key(it).ptr[0], 'b');
    cr_assert_eq(tkv_engine_iter_value(it).ptr[0], 'b');
    must(tkv_engine_iter_seek(it, S("cc")));
    cr_assert_eq(tkv_engine_iter_key(it).ptr[0], 'd');
    must(tkv_engine_iter_seek(it, S("e")));
    cr_assert_not(tkv_engine_iter_valid(it));
    /* last and backwards */
    must(tkv_engine_iter_seek_last(it));
    cr_assert(tkv_engine_iter_valid(it));
    cr_assert_eq(tkv_engine_iter_key(it).ptr[0], 'd');
    must(tkv_engine_iter_prev(it));
    cr_assert_eq(tkv_engine_iter_key(it).ptr[0], 'c');
    must(tkv_engine_iter_next(it));
    cr_assert_eq(tkv_engine_iter_key(it).ptr[0], 'd');
    must(tkv_engine_iter_next(it));
    cr_assert_not(tkv_engine_iter_valid(it), "stepped off upper");
    must(tkv_engine_iter_seek_first(it));
    must(tkv_engine_iter_prev(it));
    cr_assert_not(tkv_engine_iter_valid(it), "stepped off lower");
    tkv_engine_iter_close(it);

    /* unbounded seek_last, and two iterators on one snapshot */
    struct tkv_engine_iter *a, *b2;
    must(tkv_engine_iter_open(snap, TKV_CF_WRITE, NOS, NOS, &a));
    must(tkv_engine_iter_open(snap, TKV_CF_WRITE, NOS, NOS, &b2));
    must(tkv_engine_iter_seek_last(a));
    must(tkv_engine_iter_seek_first(b2));
    cr_assert_eq(tkv_engine_iter_key(a).ptr[0], 'e');
    cr_assert_eq(tkv_engine_iter_key(b2).ptr[0], 'a');
    must(tkv_engine_iter_prev(a));
    must(tkv_engine_iter_next(b2));
    cr_assert_eq(tkv_engine_iter_key(a).ptr[0], 'd');
    cr_assert_eq(tkv_engine_iter_key(b2).ptr[0], 'b');
    tkv_engine_iter_close(a);
    tkv_engine_iter_close(b2);
    tkv_engine_snap_close(snap);
}

/* 0x00 and 0xFF bytes, prefixes, the empty key: memcmp order, shorter first. */
ENGINE_TEST(binary_keys_memcmp_order)
{
    static const struct {
        const char *p;
        size_t n;
    } sorted[] = {
        {"\x00", 1}, {"\x00\x00", 2}, {"\x00\xff", 2},  {"\x01", 1},
        {"a", 1},    {"a\x00", 2},    {"a\x00\x00", 3}, {"a\x01", 2},
        {"ab", 2},   {"\x7f", 1},     {"\x80", 1},      {"\xfe\xff", 2},
        {"\xff", 1}, {"\xff\x00", 2}, {"\xff\xff", 2},  {"\xff\xff\xff", 3},
    };
    size_t n = TKV_ARRAY_LEN(sorted);
    /* insert in a scrambled order */
    for (size_t i = 0; i < n; i++) {
        size_t j = (i * 7) % n;
        must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, TKV_SLICE(sorted[j].p, sorted[j].n),
                            TKV_SLICE(&j, sizeof(j))));
    }
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    must(tkv_engine_snap_open(fx.s, &snap));
    must(tkv_engine_iter_open(snap, TKV_CF_DEFAULT, NOS, NOS, &it));
    size_t i = 0;
    for (must(tkv_engine_iter_seek_first(it)); tkv_engine_iter_valid(it);
         must(tkv_engine_iter_next(it)), i++) {
        cr_assert_lt(i, n);
        struct tkv_slice k = tkv_engine_iter_key(it), v = tkv_engine_iter_value(it);
        cr_assert(k.len == sorted[i].n && memcmp(k.ptr, sorted[i].p, k.len) == 0,
                  "position %zu holds the wrong key (len %zu)", i, k.len);
        size_t j;
        memcpy(&j, v.ptr, sizeof(j));
        cr_assert_eq(j, i);
    }
    cr_assert_eq(i, n);
    /* backwards too */
    for (must(tkv_engine_iter_seek_last(it)); tkv_engine_iter_valid(it);
         must(tkv_engine_iter_prev(it))) {
        i--;
        struct tkv_slice k = tkv_engine_iter_key(it);
        cr_assert(k.len == sorted[i].n && memcmp(k.ptr, sorted[i].p, k.len) == 0);
    }
    cr_assert_eq(i, 0);
    tkv_engine_iter_close(it);
    /* bounds with binary bytes: [\x00\xff, \xff) */
    must(tkv_engine_iter_open(snap, TKV_CF_DEFAULT, TKV_SLICE("\x00\xff", 2), S("\xff"), &it));
    size_t count = 0;
    for (must(tkv_engine_iter_seek_first(it)); tkv_engine_iter_valid(it);
         must(tkv_engine_iter_next(it)))
        count++;
    cr_assert_eq(count, 10, "expected keys 2..11, got %zu", count);
    must(tkv_engine_iter_seek_last(it));
    cr_assert(tkv_engine_iter_key(it).len == 2 && tkv_engine_iter_key(it).ptr[0] == 0xfe);
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
}
