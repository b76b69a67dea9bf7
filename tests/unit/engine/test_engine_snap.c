/* The shared engine suite, part 2: snapshot read views (TinyKV's
 * TestIterWithRawDelete1), large values, many-key ordering against a sorted
 * model, and several sessions on several threads. */
#include <pthread.h>

#include "engine_fixture.h"

ENGINE_TEST(snapshot_ignores_later_writes)
{
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("a1")));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("b"), S("b1")));
    struct tkv_engine_snap *snap;
    must(tkv_engine_snap_open(fx.s, &snap));
    /* writes right after the open, before the snapshot has read anything */
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("a2")));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("c"), S("c2")));
    must(tkv_engine_delete(fx.s, TKV_CF_DEFAULT, S("b")));
    must(tkv_engine_put(fx.s, TKV_CF_LOCK, S("a"), S("lock")));

    struct tkv_slice v;
    must(tkv_engine_snap_get(snap, TKV_CF_DEFAULT, S("a"), &v));
    cr_assert(v.len == 2 && memcmp(v.ptr, "a1", 2) == 0, "snapshot saw a later overwrite");
    must(tkv_engine_snap_get(snap, TKV_CF_DEFAULT, S("b"), &v));
    cr_assert(v.len == 2 && memcmp(v.ptr, "b1", 2) == 0, "snapshot lost a later-deleted key");
    cr_assert_eq(tkv_engine_snap_get(snap, TKV_CF_DEFAULT, S("c"), &v), TKV_ENOTFOUND);
    cr_assert_eq(tkv_engine_snap_get(snap, TKV_CF_LOCK, S("a"), &v), TKV_ENOTFOUND);

    /* a second snapshot on the same session sees the new state */
    struct tkv_engine_snap *snap2;
    must(tkv_engine_snap_open(fx.s, &snap2));
    must(tkv_engine_snap_get(snap2, TKV_CF_DEFAULT, S("a"), &v));
    cr_assert(v.len == 2 && memcmp(v.ptr, "a2", 2) == 0);
    cr_assert_eq(tkv_engine_snap_get(snap2, TKV_CF_DEFAULT, S("b"), &v), TKV_ENOTFOUND);

    /* iterators opened late on the old snapshot still see the old view */
    struct tkv_engine_iter *it;
    must(tkv_engine_iter_open(snap, TKV_CF_DEFAULT, NOS, NOS, &it));
    must(tkv_engine_iter_seek_first(it));
    cr_assert(tkv_engine_iter_valid(it));
    cr_assert(tkv_engine_iter_value(it).len == 2 &&
              memcmp(tkv_engine_iter_value(it).ptr, "a1", 2) == 0);
    must(tkv_engine_iter_next(it));
    cr_assert(tkv_engine_iter_key(it).ptr[0] == 'b');
    must(tkv_engine_iter_next(it));
    cr_assert_not(tkv_engine_iter_valid(it), "snapshot iterator saw key c written later");
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap2);
    tkv_engine_snap_close(snap);
    expect_get(TKV_CF_DEFAULT, S("a"), S("a2"));
}

/* TinyKV kv/server/server_test.go TestIterWithRawDelete1: a reader opened
 * before a delete still iterates the deleted key. */
ENGINE_TEST(iter_with_raw_delete)
{
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("1"), S("v1")));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("2"), S("v2")));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("3"), S("v3")));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("4"), S("v4")));
    struct tkv_engine_snap *reader;
    struct tkv_engine_iter *it;
    must(tkv_engine_snap_open(fx.s, &reader));
    must(tkv_engine_iter_open(reader, TKV_CF_DEFAULT, NOS, NOS, &it));
    must(tkv_engine_iter_seek(it, S("2")));
    cr_assert(tkv_engine_iter_valid(it));
    cr_assert_eq(tkv_engine_iter_key(it).ptr[0], '2');
    must(tkv_engine_delete(fx.s, TKV_CF_DEFAULT, S("3")));
    must(tkv_engine_iter_next(it));
    cr_assert(tkv_engine_iter_valid(it));
    cr_assert_eq(tkv_engine_iter_key(it).ptr[0], '3', "reader must still see the deleted key");
    cr_assert_eq(tkv_engine_iter_value(it).ptr[1], '3');
    must(tkv_engine_iter_next(it));
    cr_assert_eq(tkv_engine_iter_key(it).ptr[0], '4');
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(reader);
    expect_get(TKV_CF_DEFAULT, S("3"), NOS);
}

ENGINE_TEST(many_snapshots_and_reuse)
{
    /* more snapshots than the WT pool keeps, opened and closed repeatedly */
    struct tkv_engine_snap *snaps[10];
    char k[16], v[16];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 10; i++) {
            snprintf(k, sizeof(k), "k%d", i);
            snprintf(v, sizeof(v), "r%d", round);
            must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)),
                                TKV_SLICE(v, strlen(v))));
            must(tkv_engine_snap_open(fx.s, &snaps[i]));
        }
        for (int i = 0; i < 10; i++) {
            /* snapshot i saw keys k0..ki of this round, k(i+1).. of the previous */
            for (int j = 0; j < 10; j++) {
                struct tkv_slice got;
                snprintf(k, sizeof(k), "k%d", j);
                int rv =
                    tkv_engine_snap_get(snaps[i], TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), &got);
                int want_round = j <= i ? round : round - 1;
                if (want_round < 0) {
                    cr_assert_eq(rv, TKV_ENOTFOUND, "round %d snap %d key %d", round, i, j);
                } else {
                    snprintf(v, sizeof(v), "r%d", want_round);
                    cr_assert_eq(rv, 0);
                    cr_assert(got.len == strlen(v) && memcmp(got.ptr, v, got.len) == 0,
                              "round %d snap %d key %d", round, i, j);
                }
            }
        }
        for (int i = 0; i < 10; i++)
            tkv_engine_snap_close(snaps[i]);
    }
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

ENGINE_TEST(large_values)
{
    static const size_t sizes[] = {1u << 20, (1u << 20) + 7, 4u << 20, 16u << 20};
    uint8_t *vals[4];
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    for (int i = 0; i < 4; i++) {
        vals[i] = pattern(sizes[i], (unsigned)i + 1);
        char k[8] = {'b', 'i', 'g', (char)('0' + i)};
        must(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, TKV_SLICE(k, 4),
                                  TKV_SLICE(vals[i], sizes[i])));
    }
    must(tkv_engine_write(fx.s, &b));
    tkv_engine_batch_close(&b);
    for (int i = 0; i < 4; i++) {
        char k[8] = {'b', 'i', 'g', (char)('0' + i)};
        expect_get(TKV_CF_DEFAULT, TKV_SLICE(k, 4), TKV_SLICE(vals[i], sizes[i]));
    }
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    must(tkv_engine_snap_open(fx.s, &snap));
    must(tkv_engine_iter_open(snap, TKV_CF_DEFAULT, NOS, NOS, &it));
    int i = 0;
    for (must(tkv_engine_iter_seek_first(it)); tkv_engine_iter_valid(it);
         must(tkv_engine_iter_next(it)), i++) {
        struct tkv_slice v = tkv_engine_iter_value(it);
        cr_assert(v.len == sizes[i] && memcmp(v.ptr, vals[i], v.len) == 0, "value %d differs", i);
    }
    cr_assert_eq(i, 4);
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    for (i = 0; i < 4; i++)
        free(vals[i]);
}

/* ---- many keys against a sorted model ------------------------------------ */

struct mkey {
    uint8_t k[12];
    size_t n;
    bool live;
};

static int mkey_cmp(const void *a, const void *b)
{
    const struct mkey *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->k, y->k, n);
    return c ? c : (x->n < y->n ? -1 : x->n > y->n);
}

static uint64_t test_seed(void)
{
    const char *e = getenv("TKV_SEED");
    return e ? strtoull(e, NULL, 0) : 0x7e57;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

ENGINE_TEST(many_keys_ordered)
{
    enum { N = 3000 };
    uint64_t seed = test_seed(), st = seed;
    struct mkey *m = calloc(N, sizeof(*m));
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    size_t n = 0;
    while (n < N) {
        struct mkey x = {.n = 1 + rnd(&st) % 10, .live = true};
        for (size_t j = 0; j < x.n; j++) {
            uint64_t r = rnd(&st) % 8;
            /* plenty of 0x00 and 0xFF bytes */
            x.k[j] = r == 0 ? 0x00 : r == 1 ? 0xff : (uint8_t)rnd(&st);
        }
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++)
            dup = mkey_cmp(&m[j], &x) == 0;
        if (dup)
            continue;
        m[n++] = x;
        must(tkv_engine_batch_put(&b, TKV_CF_WRITE, TKV_SLICE(x.k, x.n), TKV_SLICE(&n, sizeof(n))));
        if (b.n_ops == 500) {
            must(tkv_engine_write(fx.s, &b));
            tkv_engine_batch_clear(&b);
        }
    }
    /* delete every third key */
    for (size_t j = 0; j < N; j += 3) {
        m[j].live = false;
        must(tkv_engine_batch_delete(&b, TKV_CF_WRITE, TKV_SLICE(m[j].k, m[j].n)));
    }
    must(tkv_engine_write(fx.s, &b));
    tkv_engine_batch_close(&b);
    qsort(m, N, sizeof(*m), mkey_cmp);

    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    must(tkv_engine_snap_open(fx.s, &snap));
    must(tkv_engine_iter_open(snap, TKV_CF_WRITE, NOS, NOS, &it));
    size_t j = 0, seen = 0;
    for (must(tkv_engine_iter_seek_first(it)); tkv_engine_iter_valid(it);
         must(tkv_engine_iter_next(it)), j++, seen++) {
        while (j < N && !m[j].live)
            j++;
        cr_assert_lt(j, N, "seed %llu: more keys than the model", (unsigned long long)seed);
        struct tkv_slice k = tkv_engine_iter_key(it);
        cr_assert(k.len == m[j].n && memcmp(k.ptr, m[j].k, k.len) == 0,
                  "seed %llu: key %zu out of order", (unsigned long long)seed, seen);
    }
    size_t live = 0;
    for (j = 0; j < N; j++)
        live += m[j].live;
    cr_assert_eq(seen, live, "seed %llu: %zu keys seen, %zu live", (unsigned long long)seed, seen,
                 live);
    /* reverse walk, and seeks to every model key (live or not) */
    size_t back = 0;
    for (must(tkv_engine_iter_seek_last(it)); tkv_engine_iter_valid(it);
         must(tkv_engine_iter_prev(it)))
        back++;
    cr_assert_eq(back, live, "seed %llu: reverse walk", (unsigned long long)seed);
    for (j = 0; j < N; j++) {
        size_t want = j;
        while (want < N && !m[want].live)
            want++;
        must(tkv_engine_iter_seek(it, TKV_SLICE(m[j].k, m[j].n)));
        if (want == N) {
            cr_assert_not(tkv_engine_iter_valid(it));
        } else {
            cr_assert(tkv_engine_iter_valid(it));
            struct tkv_slice k = tkv_engine_iter_key(it);
            cr_assert(k.len == m[want].n && memcmp(k.ptr, m[want].k, k.len) == 0,
                      "seed %llu: seek %zu landed wrong", (unsigned long long)seed, j);
        }
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    free(m);
}

/* ---- several cores sharing one engine ------------------------------------- */

struct worker {
    int id;
    int rv;
};

enum { N_THREADS = 4, N_ROUNDS = 150 };

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct tkv_engine_session *s;
    w->rv = tkv_engine_session_open(fx.e, &s);
    if (w->rv)
        return NULL;
    char k[32], v[32];
    for (int i = 0; i < N_ROUNDS && w->rv == 0; i++) {
        struct tkv_engine_batch b;
        tkv_engine_batch_init(&b);
        /* own key in two CFs (atomic pair) plus a hot key every thread writes */
        int kn = snprintf(k, sizeof(k), "t%d-%04d", w->id, i);
        int vn = snprintf(v, sizeof(v), "%d:%d", w->id, i);
        tkv_engine_batch_put(&b, TKV_CF_DEFAULT, TKV_SLICE(k, (size_t)kn),
                             TKV_SLICE(v, (size_t)vn));
        tkv_engine_batch_put(&b, TKV_CF_WRITE, TKV_SLICE(k, (size_t)kn), TKV_SLICE(v, (size_t)vn));
        tkv_engine_batch_put(&b, TKV_CF_META, S("hot"), TKV_SLICE(v, (size_t)vn));
        w->rv = tkv_engine_write(s, &b);
        tkv_engine_batch_close(&b);
        if (w->rv == 0 && i % 10 == 0) {
            /* every pair is either fully there or fully absent in a snapshot */
            struct tkv_engine_snap *snap;
            w->rv = tkv_engine_snap_open(s, &snap);
            for (int j = 0; j <= i && w->rv == 0; j++) {
                struct tkv_slice x;
                kn = snprintf(k, sizeof(k), "t%d-%04d", w->id, j);
                int r1 = tkv_engine_snap_get(snap, TKV_CF_DEFAULT, TKV_SLICE(k, (size_t)kn), &x);
                int r2 = tkv_engine_snap_get(snap, TKV_CF_WRITE, TKV_SLICE(k, (size_t)kn), &x);
                if (r1 != 0 || r2 != 0)
                    w->rv = r1 ? r1 : r2;
            }
            tkv_engine_snap_close(snap);
        }
    }
    tkv_engine_session_close(s);
    return NULL;
}

ENGINE_TEST(concurrent_sessions)
{
    pthread_t th[N_THREADS];
    struct worker w[N_THREADS];
    /* the fixture's WT engine is sync; use the no-log mode for speed here */
    if (fx.kind == TKV_ENGINE_WT) {
        tkv_engine_session_close(fx.s);
        tkv_engine_close(fx.e);
        fx.s = NULL;
        fx.e = NULL;
        fx.sync = false;
        fx_reopen();
    }
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){.id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].rv, 0, "worker %d: %s", i, tkv_strerror(w[i].rv));
    }
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    must(tkv_engine_snap_open(fx.s, &snap));
    must(tkv_engine_iter_open(snap, TKV_CF_WRITE, NOS, NOS, &it));
    int count = 0;
    for (must(tkv_engine_iter_seek_first(it)); tkv_engine_iter_valid(it);
         must(tkv_engine_iter_next(it)))
        count++;
    cr_assert_eq(count, N_THREADS * N_ROUNDS);
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    struct tkv_slice hot;
    must(tkv_engine_get(fx.s, TKV_CF_META, S("hot"), &hot));
    cr_assert(hot.len >= 3 && memcmp(hot.ptr + hot.len - 3, "149", 3) == 0,
              "the hot key must hold some thread's last write");
}

#ifdef TKV_DEBUG
#include <signal.h>

static void *use_foreign_session(void *arg)
{
    (void)arg;
    struct tkv_slice v;
    (void)tkv_engine_get(fx.s, TKV_CF_DEFAULT, S("k"), &v); /* must abort */
    return NULL;
}

/* Debug builds bind a session to the thread of its first call. */
Test(engine_mem, session_is_bound_to_one_thread, .signal = SIGABRT)
{
    struct tkv_slice v;
    cr_assert_eq(tkv_engine_get(fx.s, TKV_CF_DEFAULT, S("k"), &v), TKV_ENOTFOUND);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, use_foreign_session, NULL), 0);
    pthread_join(th, NULL);
}
#endif
