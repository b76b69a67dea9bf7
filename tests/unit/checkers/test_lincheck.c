/* The linearizability checker (tests/lib/lincheck.h) on synthetic histories:
 * it must reject each injected bug shape (stale read, lost acknowledged
 * write, value never written, read from the future, an indeterminate write
 * undone) with a short counterexample that names the cause, and accept
 * correct concurrent histories, including indeterminate writes that took
 * effect late and random histories of thousands of operations, within its
 * budget. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

#define K "k"

static size_t put(struct lc_history *h, uint32_t c, const char *key, const char *v, uint64_t call, uint64_t ret)
{
    size_t id = lc_invoke(h, c, LC_PUT, key, strlen(key), v, strlen(v), call);
    lc_complete_ok(h, id, ret);
    return id;
}

static size_t del(struct lc_history *h, uint32_t c, const char *key, uint64_t call, uint64_t ret)
{
    size_t id = lc_invoke(h, c, LC_DELETE, key, strlen(key), NULL, 0, call);
    lc_complete_ok(h, id, ret);
    return id;
}

static size_t app(struct lc_history *h, uint32_t c, const char *key, const char *v, uint64_t call, uint64_t ret)
{
    size_t id = lc_invoke(h, c, LC_APPEND, key, strlen(key), v, strlen(v), call);
    lc_complete_ok(h, id, ret);
    return id;
}

/* v == NULL: not found */
static size_t get(struct lc_history *h, uint32_t c, const char *key, const char *v, uint64_t call, uint64_t ret)
{
    size_t id = lc_invoke(h, c, LC_GET, key, strlen(key), NULL, 0, call);
    lc_complete_get(h, id, ret, v != NULL, v, v ? strlen(v) : 0);
    return id;
}

static size_t put_unknown(struct lc_history *h, uint32_t c, const char *key, const char *v, uint64_t call)
{
    return lc_invoke(h, c, LC_PUT, key, strlen(key), v, strlen(v), call);
}

static enum lc_verdict check(struct lc_history *h, struct lc_result *r)
{
    return lc_check(h, NULL, r);
}

static bool bad_ops_has(const struct lc_result *r, size_t id)
{
    for (size_t i = 0; i < r->n_bad_ops; i++)
        if (r->bad_ops[i] == id)
            return true;
    return false;
}

Test(lincheck, empty_and_sequential_histories_are_linearizable)
{
    struct lc_history *h = lc_history_new();
    struct lc_result r;
    cr_expect_eq(check(h, &r), LC_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);

    get(h, 1, K, NULL, 0, 1);
    put(h, 1, K, "a", 2, 3);
    get(h, 2, K, "a", 4, 5);
    del(h, 1, K, 6, 7);
    get(h, 2, K, NULL, 8, 9);
    put(h, 1, K, "b", 10, 11);
    get(h, 2, K, "b", 12, 13);
    cr_expect_eq(check(h, &r), LC_LINEARIZABLE, "%s", r.report);
    cr_expect_eq(r.n_ops, 7);
    cr_expect_eq(r.n_keys, 1);
    lc_result_free(&r);
    lc_history_free(h);
}

Test(lincheck, catches_stale_read_of_overwritten_value)
{
    struct lc_history *h = lc_history_new();
    put(h, 1, K, "a", 0, 10);
    put(h, 1, K, "b", 20, 30);
    /* Unrelated traffic that must not be in the counterexample. */
    for (int i = 0; i < 20; i++)
        get(h, 3, K, "b", 31 + (uint64_t)i * 2, 32 + (uint64_t)i * 2);
    size_t stale = get(h, 2, K, "a", 100, 110);
    struct lc_result r;
    cr_assert_eq(check(h, &r), LC_NOT_LINEARIZABLE, "stale read accepted:\n%s", r.report);
    cr_expect(strstr(r.report, "stale read") != NULL, "reason should say stale read:\n%s", r.report);
    cr_expect(bad_ops_has(&r, stale), "counterexample lacks the stale get:\n%s", r.report);
    cr_expect_leq(r.n_bad_ops, 3, "counterexample not minimal:\n%s", r.report);
    cr_expect_eq(r.bad_key_len, 1);
    lc_result_free(&r);
    lc_history_free(h);
}

Test(lincheck, catches_lost_acknowledged_write)
{
    struct lc_history *h = lc_history_new();
    put(h, 1, K, "a", 0, 10);
    size_t lost = get(h, 2, K, NULL, 20, 30);
    struct lc_result r;
    cr_assert_eq(check(h, &r), LC_NOT_LINEARIZABLE, "lost write accepted:\n%s", r.report);
    cr_expect(strstr(r.report, "lost acknowledged write") != NULL, "%s", r.report);
    cr_expect(bad_ops_has(&r, lost), "%s", r.report);
    lc_result_free(&r);

    /* The same with a value: the later put vanished, an older value came back. */
    struct lc_history *h2 = lc_history_new();
    put(h2, 1, K, "old", 0, 10);
    put(h2, 1, K, "acked", 20, 30);
    get(h2, 2, K, "old", 40, 50);
    cr_expect_eq(check(h2, &r), LC_NOT_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);
    lc_history_free(h2);
    lc_history_free(h);
}

Test(lincheck, catches_value_never_written)
{
    struct lc_history *h = lc_history_new();
    put(h, 1, K, "a", 0, 10);
    size_t bad = get(h, 2, K, "garbage", 5, 15);
    struct lc_result r;
    cr_assert_eq(check(h, &r), LC_NOT_LINEARIZABLE, "%s", r.report);
    cr_expect(strstr(r.report, "value never written") != NULL, "%s", r.report);
    cr_expect(strstr(r.report, "garbage") != NULL, "%s", r.report);
    cr_expect(bad_ops_has(&r, bad), "%s", r.report);
    cr_expect_eq(r.n_bad_ops, 1, "a read of a never-written value is a counterexample alone:\n%s", r.report);
    lc_result_free(&r);
    lc_history_free(h);
}

Test(lincheck, catches_read_from_a_write_invoked_after_the_read_completed)
{
    struct lc_history *h = lc_history_new();
    size_t g = get(h, 2, K, "future", 0, 10);
    put(h, 1, K, "future", 20, 30);
    struct lc_result r;
    cr_assert_eq(check(h, &r), LC_NOT_LINEARIZABLE, "%s", r.report);
    cr_expect(strstr(r.report, "read from the future") != NULL, "%s", r.report);
    cr_expect(bad_ops_has(&r, g), "%s", r.report);
    lc_result_free(&r);
    lc_history_free(h);
}

Test(lincheck, a_failed_write_never_takes_effect)
{
    struct lc_history *h = lc_history_new();
    put(h, 1, K, "a", 0, 10);
    size_t f = lc_invoke(h, 1, LC_PUT, K, 1, "refused", 7, 20);
    lc_complete_failed(h, f);
    get(h, 2, K, "refused", 40, 50);
    struct lc_result r;
    cr_expect_eq(check(h, &r), LC_NOT_LINEARIZABLE, "read of a refused write accepted:\n%s", r.report);
    lc_result_free(&r);
    lc_history_free(h);
}

Test(lincheck, accepts_concurrent_overlapping_operations)
{
    struct lc_history *h = lc_history_new();
    /* Two overlapping puts; readers overlapping both may see either, but once
     * one reader saw b after both completed, later readers must see b. */
    put(h, 1, K, "a", 0, 100);
    put(h, 2, K, "b", 10, 90);
    get(h, 3, K, "b", 20, 30);
    get(h, 4, K, "a", 40, 50); /* a linearized after b: fine, still concurrent */
    get(h, 3, K, "a", 60, 95);
    get(h, 4, K, "a", 110, 120);
    /* Touching intervals count as concurrent. */
    put(h, 1, K, "c", 200, 210);
    get(h, 2, K, "c", 190, 200);
    struct lc_result r;
    cr_expect_eq(check(h, &r), LC_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);

    /* ...but a read after that flips back is not. */
    get(h, 5, K, "b", 300, 310);
    cr_expect_eq(check(h, &r), LC_NOT_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);
    lc_history_free(h);
}

Test(lincheck, indeterminate_write_may_take_effect_late_or_never)
{
    struct lc_history *h = lc_history_new();
    put(h, 1, K, "a", 0, 10);
    put_unknown(h, 2, K, "b", 5); /* server killed with this in flight */
    get(h, 3, K, "a", 100, 110);
    get(h, 3, K, "a", 200, 210);
    get(h, 3, K, "b", 1000, 1010); /* took effect very late (e.g. replayed after restart) */
    get(h, 4, K, "b", 2000, 2010);
    struct lc_result r;
    cr_expect_eq(check(h, &r), LC_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);

    /* An indeterminate write that never shows up is fine too. */
    struct lc_history *h2 = lc_history_new();
    put(h2, 1, K, "a", 0, 10);
    put_unknown(h2, 2, K, "never", 5);
    size_t g = lc_invoke(h2, 3, LC_GET, K, 1, NULL, 0, 6); /* an unanswered read: dropped */
    (void)g;
    get(h2, 3, K, "a", 100, 110);
    cr_expect_eq(check(h2, &r), LC_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);

    /* Once it took effect it cannot be undone: a -> b -> a is a stale read. */
    get(h, 4, K, "a", 3000, 3010);
    cr_expect_eq(check(h, &r), LC_NOT_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);
    lc_history_free(h2);
    lc_history_free(h);
}

Test(lincheck, append_model)
{
    struct lc_history *h = lc_history_new();
    app(h, 1, K, "1,", 0, 10);
    app(h, 2, K, "2,", 5, 30);
    app(h, 3, K, "3,", 6, 40);
    get(h, 4, K, "1,3,", 20, 35);
    get(h, 4, K, "1,3,2,", 50, 60);
    struct lc_result r;
    cr_expect_eq(check(h, &r), LC_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);
    /* A read that lost an acknowledged append. */
    get(h, 5, K, "1,2,", 70, 80);
    cr_expect_eq(check(h, &r), LC_NOT_LINEARIZABLE, "lost append accepted:\n%s", r.report);
    lc_result_free(&r);
    lc_history_free(h);
}

Test(lincheck, keys_are_checked_independently)
{
    struct lc_history *h = lc_history_new();
    put(h, 1, "x", "1", 0, 10);
    put(h, 1, "y", "1", 0, 10);
    put(h, 1, "y", "2", 20, 30);
    get(h, 2, "x", "1", 40, 50);
    get(h, 2, "y", "1", 40, 50); /* stale on y only */
    struct lc_result r;
    cr_assert_eq(check(h, &r), LC_NOT_LINEARIZABLE, "%s", r.report);
    cr_expect_eq(r.n_keys, 2);
    cr_expect_eq(r.n_keys_failed, 1);
    cr_expect(r.bad_key_len == 1 && r.bad_key[0] == 'y', "%s", r.report);
    lc_result_free(&r);
    lc_history_free(h);
}

Test(lincheck, budget_exhaustion_is_unknown_not_a_hang)
{
    struct lc_history *h = lc_history_new();
    /* Many concurrent writes and reads: more than 10 search steps. */
    for (int i = 0; i < 12; i++) {
        char v[16];
        snprintf(v, sizeof v, "v%d", i);
        put(h, (uint32_t)i, K, v, 0, 1000);
    }
    get(h, 99, K, "v7", 2000, 2001);
    struct lc_options o = {.max_steps_per_key = 10};
    struct lc_result r;
    cr_expect_eq(lc_check(h, &o, &r), LC_UNKNOWN, "%s", r.report);
    cr_expect_eq(r.n_keys_unknown, 1);
    lc_result_free(&r);
    cr_expect_eq(lc_check(h, NULL, &r), LC_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);
    lc_history_free(h);
}

/* ---- random histories from a simulated linearizable store ---- */

struct gen_op {
    uint32_t client;
    int kind;
    int key;
    uint64_t call, ret, lin;
    char val[24];
    bool found, unknown;
    char res[24];
};

static uint64_t rng_state;
static uint64_t rnd(uint64_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return n ? rng_state % n : 0;
}

static int by_lin(const void *a, const void *b)
{
    const struct gen_op *x = a, *y = b;
    return x->lin < y->lin ? -1 : x->lin > y->lin;
}

/* n_ops operations by n_clients clients on n_keys keys, each taking effect
 * at a random instant of its interval; some writes are indeterminate (they
 * still take effect, or not, at random). Results follow that order. */
static struct gen_op *generate(uint64_t seed, size_t n_ops, uint32_t n_clients, int n_keys)
{
    rng_state = seed * 2654435761ULL + 1;
    struct gen_op *ops = calloc(n_ops, sizeof(*ops));
    uint64_t *now = calloc(n_clients, sizeof(uint64_t));
    for (size_t i = 0; i < n_ops; i++) {
        struct gen_op *o = &ops[i];
        o->client = (uint32_t)rnd(n_clients);
        o->key = (int)rnd((uint64_t)n_keys);
        int r = (int)rnd(10);
        o->kind = r < 5 ? LC_GET : r < 9 ? LC_PUT : LC_DELETE;
        o->call = now[o->client] + rnd(5);
        o->ret = o->call + 1 + rnd(40);
        o->lin = o->call + rnd(o->ret - o->call + 1);
        snprintf(o->val, sizeof o->val, "c%u-%zu", o->client, i);
        if (o->kind != LC_GET && rnd(50) == 0) {
            o->unknown = true; /* the client gave up; maybe it happened */
            if (rnd(2))
                o->lin = UINT64_MAX; /* never took effect */
            else
                o->lin = o->call + rnd(400); /* took effect, possibly very late */
        }
        now[o->client] = o->ret + 1;
    }
    struct gen_op *sorted = malloc(n_ops * sizeof(*sorted));
    memcpy(sorted, ops, n_ops * sizeof(*ops));
    /* remember original positions through the value string */
    qsort(sorted, n_ops, sizeof(*sorted), by_lin);
    char (*state)[24] = calloc((size_t)n_keys, 24);
    bool *present = calloc((size_t)n_keys, sizeof(bool));
    for (size_t i = 0; i < n_ops; i++) {
        struct gen_op *o = &sorted[i];
        if (o->lin == UINT64_MAX)
            continue;
        if (o->kind == LC_GET) {
            o->found = present[o->key];
            memcpy(o->res, state[o->key], 24);
        } else if (o->kind == LC_PUT) {
            present[o->key] = true;
            memcpy(state[o->key], o->val, 24);
        } else {
            present[o->key] = false;
        }
    }
    /* Copy results back (vals are unique per op). */
    for (size_t i = 0; i < n_ops; i++)
        for (size_t j = 0; j < n_ops; j++)
            if (strcmp(sorted[i].val, ops[j].val) == 0) {
                ops[j].found = sorted[i].found;
                memcpy(ops[j].res, sorted[i].res, 24);
                break;
            }
    free(sorted);
    free(state);
    free(present);
    free(now);
    return ops;
}

static void record(struct lc_history *h, const struct gen_op *ops, size_t n, size_t *ids)
{
    for (size_t i = 0; i < n; i++) {
        const struct gen_op *o = &ops[i];
        char key[16];
        snprintf(key, sizeof key, "key%d", o->key);
        size_t id = lc_invoke(h, o->client, (enum lc_kind)o->kind, key, strlen(key), o->val, strlen(o->val), o->call);
        if (ids)
            ids[i] = id;
        if (o->unknown)
            continue;
        if (o->kind == LC_GET)
            lc_complete_get(h, id, o->ret, o->found, o->res, strlen(o->res));
        else
            lc_complete_ok(h, id, o->ret);
    }
}

Test(lincheck, random_linearizable_histories_pass, .timeout = 120)
{
    for (uint64_t seed = 1; seed <= 40; seed++) {
        size_t n = 300;
        struct gen_op *ops = generate(seed, n, 5, 3);
        struct lc_history *h = lc_history_new();
        record(h, ops, n, NULL);
        struct lc_result r;
        enum lc_verdict v = lc_check(h, NULL, &r);
        cr_expect_eq(v, LC_LINEARIZABLE, "seed %llu: %s", (unsigned long long)seed, r.report);
        lc_result_free(&r);
        lc_history_free(h);
        free(ops);
    }
}

/* Make one read stale: it returns the value of a put that a later put,
 * completed before the read was invoked, had overwritten. Returns the index
 * of the read, or n if no such read exists. */
static size_t inject_stale_read(struct gen_op *ops, size_t n)
{
    for (size_t g = n / 2; g < n; g++) {
        if (ops[g].kind != LC_GET || ops[g].unknown)
            continue;
        for (size_t p = 0; p < g; p++) {
            if (ops[p].kind != LC_PUT || ops[p].key != ops[g].key || ops[p].unknown || ops[p].ret >= ops[g].call)
                continue;
            for (size_t w = 0; w < g; w++) {
                if (ops[w].kind != LC_PUT || ops[w].key != ops[g].key || ops[w].unknown)
                    continue;
                if (ops[w].call > ops[p].ret && ops[w].ret < ops[g].call && strcmp(ops[g].res, ops[p].val) != 0) {
                    ops[g].found = true;
                    memcpy(ops[g].res, ops[p].val, 24);
                    return g;
                }
            }
        }
    }
    return n;
}

Test(lincheck, large_history_checked_within_budget_and_injected_stale_read_found, .timeout = 120)
{
    size_t n = 6000;
    struct gen_op *ops = generate(4242, n, 8, 10);
    struct lc_history *h = lc_history_new();
    record(h, ops, n, NULL);
    struct lc_result r;
    cr_expect_eq(lc_check(h, NULL, &r), LC_LINEARIZABLE, "%s", r.report);
    cr_expect_eq(r.n_keys, 10);
    lc_result_free(&r);
    lc_history_free(h);

    size_t g = inject_stale_read(ops, n);
    cr_assert_lt(g, n, "generator made no history with an overwritten put");
    size_t *ids = malloc(n * sizeof(size_t));
    h = lc_history_new();
    record(h, ops, n, ids);
    cr_assert_eq(lc_check(h, NULL, &r), LC_NOT_LINEARIZABLE, "injected stale read (op %zu) missed:\n%s", ids[g],
                 r.report);
    cr_expect(bad_ops_has(&r, ids[g]), "counterexample misses the injected read %zu:\n%s", ids[g], r.report);
    cr_expect_leq(r.n_bad_ops, 6, "counterexample of %zu ops:\n%s", r.n_bad_ops, r.report);
    lc_result_free(&r);
    lc_history_free(h);
    free(ids);
    free(ops);
}

Test(lincheck, one_hot_key_with_thousands_of_operations, .timeout = 120)
{
    size_t n = 3000;
    struct gen_op *ops = generate(77, n, 6, 1);
    struct lc_history *h = lc_history_new();
    record(h, ops, n, NULL);
    struct lc_result r;
    cr_expect_eq(lc_check(h, NULL, &r), LC_LINEARIZABLE, "%s", r.report);
    lc_result_free(&r);
    lc_history_free(h);
    free(ops);
}
