/* The snapshot-isolation checkers (tests/lib/sicheck.h) on synthetic
 * histories: one hand-made history per anomaly class that must be flagged
 * as exactly that class, SI histories that must pass (including write
 * skew, which SI allows and the checker lists only as G2 information),
 * thousands of random transactions from a simulated SI store that must
 * pass, the same with one injected stale snapshot that must fail, and the
 * bank invariant. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sicheck.h"

/* Tiny DSL: "a x 1" appends 1 to x, "r x 1 2" reads x as [1 2], "r x" reads
 * x as []; micro-ops separated by ';'. */
static size_t txn(struct si_history *h, uint32_t client, enum si_status st, uint64_t start, uint64_t end,
                  const char *ops)
{
    size_t t = si_txn_begin(h, client, start);
    char *copy = strdup(ops), *save = NULL;
    for (char *mop = strtok_r(copy, ";", &save); mop; mop = strtok_r(NULL, ";", &save)) {
        char *s2 = NULL;
        char *f = strtok_r(mop, " ", &s2);
        char *key = strtok_r(NULL, " ", &s2);
        cr_assert(f && key, "bad micro-op %s", ops);
        uint64_t vals[64];
        size_t n = 0;
        for (char *v = strtok_r(NULL, " ", &s2); v; v = strtok_r(NULL, " ", &s2))
            vals[n++] = strtoull(v, NULL, 10);
        if (f[0] == 'a')
            si_txn_append(h, t, key, strlen(key), vals[0]);
        else
            si_txn_read(h, t, key, strlen(key), vals, n);
    }
    free(copy);
    if (st != SI_UNKNOWN)
        si_txn_end(h, t, st, end);
    return t;
}

#define C SI_COMMITTED

static struct si_result run(struct si_history *h, bool realtime)
{
    struct si_options o = {.realtime = realtime};
    struct si_result r;
    si_check_append(h, &o, &r);
    return r;
}

/* Only the anomaly `a` (and possibly `also`) may be reported. */
static void expect_only(const struct si_result *r, enum si_anomaly a, enum si_anomaly also)
{
    cr_expect(!r->ok, "%s not flagged:\n%s", si_anomaly_name(a), r->report);
    cr_expect_gt(r->count[a], 0, "%s not counted:\n%s", si_anomaly_name(a), r->report);
    for (int x = 0; x < SI_N_ANOMALIES; x++)
        if (x != (int)a && x != (int)also && x != SI_G2)
            cr_expect_eq(r->count[x], 0, "unexpected %s:\n%s", si_anomaly_name((enum si_anomaly)x), r->report);
}

Test(sicheck, serial_history_passes)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1");
    txn(h, 2, C, 2, 3, "r x 1;a x 2;r x 1 2");
    txn(h, 1, C, 4, 5, "r x 1 2;r y");
    txn(h, 3, SI_ABORTED, 6, 7, "a x 3");
    txn(h, 2, C, 8, 9, "r x 1 2;a y 1");
    struct si_result r = run(h, true);
    cr_expect(r.ok, "%s", r.report);
    cr_expect_eq(r.n_committed, 4);
    cr_expect_eq(r.n_aborted, 1);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, g0_write_cycle)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 10, "a x 1;a y 1");
    txn(h, 2, C, 0, 10, "a x 2;a y 2");
    txn(h, 3, C, 20, 30, "r x 1 2;r y 2 1");
    struct si_result r = run(h, false);
    expect_only(&r, SI_G0, SI_G1C);
    cr_expect(strstr(r.report, "-ww(\"x\")->") && strstr(r.report, "-ww(\"y\")->"), "%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, g1a_aborted_read)
{
    struct si_history *h = si_history_new();
    size_t a = txn(h, 1, SI_ABORTED, 0, 10, "a x 1");
    txn(h, 2, C, 20, 30, "r x 1");
    struct si_result r = run(h, false);
    expect_only(&r, SI_G1A, SI_G1A);
    char want[32];
    snprintf(want, sizeof want, "aborted T%zu", a);
    cr_expect(strstr(r.report, want), "report should name the aborted writer:\n%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, g1b_intermediate_read)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 10, "a x 1;a x 2");
    txn(h, 2, C, 5, 30, "r x 1");
    txn(h, 3, C, 40, 50, "r x 1 2");
    struct si_result r = run(h, false);
    expect_only(&r, SI_G1B, SI_G_SINGLE);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, g1c_circular_information_flow)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 10, "a x 1;r y 1");
    txn(h, 2, C, 0, 10, "a y 1;r x 1");
    struct si_result r = run(h, false);
    expect_only(&r, SI_G1C, SI_G1C);
    cr_expect(strstr(r.report, "-wr(\"x\")->") && strstr(r.report, "-wr(\"y\")->"), "%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, g_single_read_skew)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 10, "a x 1;a y 1");
    /* Saw T1's y but not its x: a fractured snapshot. */
    txn(h, 2, C, 0, 20, "r x;r y 1");
    txn(h, 3, C, 30, 40, "r x 1;r y 1");
    struct si_result r = run(h, false);
    expect_only(&r, SI_G_SINGLE, SI_G_SINGLE);
    cr_expect(strstr(r.report, "-rw(\"x\")->"), "%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, lost_update)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1");
    txn(h, 2, C, 2, 10, "r x 1;a x 2");
    txn(h, 3, C, 2, 10, "r x 1;a x 3");
    txn(h, 4, C, 20, 30, "r x 1 2 3");
    struct si_result r = run(h, true);
    /* Also a G-single cycle: T3 -rw-> T2 -ww-> T3. */
    expect_only(&r, SI_LOST_UPDATE, SI_G_SINGLE);
    cr_expect(strstr(r.report, "both read version #1"), "%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, nonrepeatable_read_and_missing_own_write)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1");
    txn(h, 2, C, 2, 20, "r x 1;r x 1 2");
    txn(h, 3, C, 3, 4, "a x 2");
    txn(h, 4, C, 30, 40, "r x 1 2");
    struct si_result r = run(h, false);
    expect_only(&r, SI_NONREPEATABLE_READ, SI_G_SINGLE);
    si_result_free(&r);
    si_history_free(h);

    h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1");
    txn(h, 2, C, 2, 20, "a x 7;r x 1");
    r = run(h, false);
    expect_only(&r, SI_NONREPEATABLE_READ, SI_NONREPEATABLE_READ);
    cr_expect(strstr(r.report, "own"), "%s", r.report);
    si_result_free(&r);
    si_history_free(h);

    /* Own appends on top of the snapshot are fine. */
    h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1");
    txn(h, 2, C, 2, 20, "r x 1;a x 7;r x 1 7;a x 8;r x 1 7 8");
    r = run(h, true);
    cr_expect(r.ok, "%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, garbage_read_and_incompatible_order)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1");
    txn(h, 2, C, 2, 3, "r x 1 99");
    struct si_result r = run(h, false);
    expect_only(&r, SI_GARBAGE_READ, SI_GARBAGE_READ);
    si_result_free(&r);
    si_history_free(h);

    /* An append done as read-modify-write and overwritten: [1 2] then [1 3]. */
    h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1");
    txn(h, 2, C, 2, 3, "a x 2");
    txn(h, 3, C, 2, 4, "a x 3");
    txn(h, 4, C, 5, 6, "r x 1 2");
    txn(h, 5, C, 7, 8, "r x 1 3");
    r = run(h, false);
    expect_only(&r, SI_INCOMPATIBLE_ORDER, SI_INCOMPATIBLE_ORDER);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, lost_write_is_a_realtime_check)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 10, "a x 1");
    txn(h, 2, C, 20, 30, "r x");
    struct si_result r = run(h, true);
    expect_only(&r, SI_LOST_WRITE, SI_LOST_WRITE);
    si_result_free(&r);
    r = run(h, false); /* plain SI allows reading an older snapshot */
    cr_expect(r.ok, "%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, write_skew_is_allowed_under_si)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1;a y 1");
    txn(h, 2, C, 2, 10, "r x 1;r y 1;a x 2");
    txn(h, 3, C, 2, 10, "r x 1;r y 1;a y 2");
    txn(h, 4, C, 20, 30, "r x 1 2;r y 1 2");
    struct si_result r = run(h, true);
    cr_expect(r.ok, "write skew must pass SI:\n%s", r.report);
    cr_expect_eq(r.count[SI_G2], 1, "write skew should be listed as G2:\n%s", r.report);
    cr_expect_eq(r.count[SI_G_SINGLE], 0, "%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

Test(sicheck, unknown_outcomes)
{
    struct si_history *h = si_history_new();
    txn(h, 1, C, 0, 1, "a x 1");
    txn(h, 2, SI_UNKNOWN, 2, 0, "a x 2;a y 5"); /* client killed mid-commit */
    txn(h, 3, SI_UNKNOWN, 2, 0, "a x 3");       /* never took effect */
    txn(h, 4, C, 10, 11, "r x 1 2;r y 5");     /* it committed after all */
    struct si_result r = run(h, true);
    cr_expect(r.ok, "%s", r.report);
    si_result_free(&r);
    /* Seeing only half of it is a fractured read. */
    txn(h, 5, C, 12, 13, "r x 1 2;r y");
    r = run(h, false);
    cr_expect(!r.ok && r.count[SI_G_SINGLE] > 0, "%s", r.report);
    si_result_free(&r);
    si_history_free(h);
}

/* ---- a simulated SI store ---- */

#define NKEYS 6
#define MAXV 4096

struct sim {
    uint64_t rng;
    uint64_t list[NKEYS][MAXV];
    size_t len[NKEYS];
    uint64_t next_val[NKEYS];
};

static uint64_t srnd(struct sim *s, uint64_t n)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return n ? s->rng % n : 0;
}

struct active {
    size_t id;
    size_t snap[NKEYS];
    int nw;
    int wkeys[4];
    uint64_t wvals[4];
};

/* n_txns transactions, up to 6 running at once, each reading at its start
 * snapshot and appending; first committer wins. If `stale_at` is set, that
 * transaction's reads use a snapshot one version behind on one key. */
static void simulate(struct si_history *h, uint64_t seed, size_t n_txns, size_t stale_at)
{
    struct sim *s = calloc(1, sizeof(*s));
    s->rng = seed * 0x9e3779b97f4a7c15ULL + 7;
    struct active act[6];
    size_t n_act = 0, begun = 0;
    bool injected = false;
    uint64_t now = 0;
    char key[4] = "k0";
    while (begun < n_txns || n_act) {
        now++;
        if (begun < n_txns && n_act < 6 && (n_act == 0 || srnd(s, 2))) {
            struct active *a = &act[n_act++];
            a->id = si_txn_begin(h, (uint32_t)(begun % 6), now);
            memcpy(a->snap, s->len, sizeof a->snap);
            a->nw = 0;
            if (!injected && a->id >= stale_at) {
                /* A read-only transaction (it commits) whose snapshot of
                 * one key misses the newest version: the injected bug. */
                int stale_key = -1;
                for (int k = 0; k < NKEYS; k++) {
                    key[1] = (char)('0' + k);
                    size_t n = a->snap[k];
                    if (stale_key < 0 && n > 0) {
                        stale_key = k;
                        n--;
                    }
                    si_txn_read(h, a->id, key, 2, s->list[k], n);
                }
                injected = stale_key >= 0;
                begun++;
                continue;
            }
            int n_mops = 1 + (int)srnd(s, 4);
            for (int i = 0; i < n_mops; i++) {
                int k = (int)srnd(s, NKEYS);
                key[1] = (char)('0' + k);
                if (srnd(s, 2) && a->nw < 4 && s->next_val[k] < MAXV - 8) {
                    uint64_t v = ++s->next_val[k];
                    si_txn_append(h, a->id, key, 2, v);
                    a->wkeys[a->nw] = k;
                    a->wvals[a->nw] = v;
                    a->nw++;
                } else {
                    uint64_t vals[MAXV + 8];
                    size_t n = a->snap[k];
                    memcpy(vals, s->list[k], n * sizeof(uint64_t));
                    for (int w = 0; w < a->nw; w++)
                        if (a->wkeys[w] == k)
                            vals[n++] = a->wvals[w];
                    si_txn_read(h, a->id, key, 2, vals, n);
                }
            }
            begun++;
        } else if (n_act) {
            size_t i = (size_t)srnd(s, n_act);
            struct active *a = &act[i];
            bool conflict = false;
            for (int w = 0; w < a->nw; w++)
                if (s->len[a->wkeys[w]] != a->snap[a->wkeys[w]])
                    conflict = true;
            if (conflict) {
                si_txn_end(h, a->id, SI_ABORTED, now);
            } else {
                for (int w = 0; w < a->nw; w++)
                    s->list[a->wkeys[w]][s->len[a->wkeys[w]]++] = a->wvals[w];
                si_txn_end(h, a->id, SI_COMMITTED, now);
            }
            act[i] = act[--n_act];
        }
    }
    /* A final read of everything. */
    size_t t = si_txn_begin(h, 99, ++now);
    for (int k = 0; k < NKEYS; k++) {
        key[1] = (char)('0' + k);
        si_txn_read(h, t, key, 2, s->list[k], s->len[k]);
    }
    si_txn_end(h, t, SI_COMMITTED, ++now);
    free(s);
}

Test(sicheck, random_si_histories_pass, .timeout = 120)
{
    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct si_history *h = si_history_new();
        simulate(h, seed, 300, SIZE_MAX);
        struct si_result r = run(h, true);
        cr_expect(r.ok, "seed %llu:\n%s", (unsigned long long)seed, r.report);
        cr_expect_gt(r.n_edges[2], 0, "no rw edges: the history tests nothing");
        si_result_free(&r);
        si_history_free(h);
    }
}

Test(sicheck, large_si_history_and_an_injected_stale_snapshot, .timeout = 120)
{
    struct si_history *h = si_history_new();
    simulate(h, 42, 3000, SIZE_MAX);
    struct si_result r = run(h, true);
    cr_expect(r.ok, "%s", r.report);
    cr_expect_gt(r.n_committed, 1000, "%s", r.report);
    si_result_free(&r);
    si_history_free(h);

    /* One read-only transaction whose snapshot misses the newest version of
     * one key, injected at 10 places: a lost write each time (it began
     * after that version committed); read skew too when the missing
     * version's transaction also wrote a key read fresh. */
    size_t caught = 0, skew = 0;
    for (size_t at = 500; at < 3000; at += 250) {
        h = si_history_new();
        simulate(h, 42, 3000, at);
        r = run(h, true);
        caught += !r.ok && r.count[SI_LOST_WRITE] > 0;
        si_result_free(&r);
        r = run(h, false);
        skew += r.count[SI_G_SINGLE] > 0;
        si_result_free(&r);
        si_history_free(h);
    }
    cr_expect_eq(caught, 10, "only %zu of 10 stale snapshots caught", caught);
    cr_expect_gt(skew, 0, "no stale snapshot showed as read skew without the realtime check");
}

Test(sicheck, bank_total_and_negative_balances)
{
    struct si_bank *b = si_bank_new(3, 300, true);
    si_bank_read(b, 1, 10, (int64_t[]){100, 100, 100}, 3);
    si_bank_read(b, 2, 20, (int64_t[]){50, 150, 100}, 3);
    struct si_bank_result r;
    cr_expect(si_bank_check(b, 0, &r), "%s", r.report);
    cr_expect_eq(r.n_reads, 2);
    si_bank_result_free(&r);

    si_bank_read(b, 3, 30, (int64_t[]){50, 150, 90}, 3); /* half a transfer seen */
    si_bank_read(b, 3, 40, (int64_t[]){-10, 210, 100}, 3);
    si_bank_read(b, 3, 50, (int64_t[]){300}, 1);
    cr_expect(!si_bank_check(b, 0, &r), "%s", r.report);
    cr_expect_eq(r.n_bad_total, 1, "%s", r.report);
    cr_expect_eq(r.n_bad_negative, 1, "%s", r.report);
    cr_expect_eq(r.n_bad_shape, 1, "%s", r.report);
    cr_expect(strstr(r.report, "sum 290"), "%s", r.report);
    si_bank_result_free(&r);
    si_bank_free(b);
}
