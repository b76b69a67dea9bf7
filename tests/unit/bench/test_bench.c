/* tinykv-bench building blocks: histogram accuracy and key distributions. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench_hist.h"
#include "bench_keys.h"

Test(bench_hist, bucket_edges_cover_every_value)
{
    /* Every value lands in a bucket whose high edge is >= it and within 1/64. */
    struct bench_rng r;
    bench_rng_seed(&r, 7);
    for (int i = 0; i < 200000; i++) {
        uint64_t v = bench_rng_next(&r) >> (bench_rng_next(&r) % 64);
        size_t idx = bench_hist_index(v);
        cr_assert_lt(idx, (size_t)BENCH_HIST_BUCKETS, "value %llu index %zu out of range",
                     (unsigned long long)v, idx);
        uint64_t hi = bench_hist_bucket_high(idx);
        cr_assert_geq(hi, v, "bucket high %llu below value %llu", (unsigned long long)hi,
                      (unsigned long long)v);
        cr_assert_leq((double)(hi - v), (double)v / 64.0 + 1.0,
                      "bucket too wide for %llu (high %llu)", (unsigned long long)v,
                      (unsigned long long)hi);
    }
}

Test(bench_hist, quantiles_of_a_known_distribution)
{
    struct bench_hist h;
    bench_hist_init(&h);
    for (uint64_t v = 1; v <= 100000; v++)
        bench_hist_record(&h, v * 1000); /* 1 us .. 100 ms */
    cr_assert_eq(h.count, 100000u);
    double expect[][2] = {{0.5, 50e6}, {0.9, 90e6}, {0.99, 99e6}, {0.999, 99.9e6}};
    for (size_t i = 0; i < 4; i++) {
        double got = (double)bench_hist_quantile(&h, expect[i][0]);
        cr_assert(fabs(got - expect[i][1]) / expect[i][1] < 0.02,
                  "p%g = %.0f, expected about %.0f", expect[i][0] * 100, got, expect[i][1]);
    }
    cr_assert_eq(bench_hist_quantile(&h, 1.0), 100000u * 1000u);
    cr_assert_eq(bench_hist_quantile(&h, 0.0), 1000u);
}

Test(bench_hist, merge_equals_recording_everything_once)
{
    struct bench_hist a, b, all;
    bench_hist_init(&a);
    bench_hist_init(&b);
    bench_hist_init(&all);
    for (uint64_t v = 0; v < 5000; v++) {
        bench_hist_record(v % 2 ? &a : &b, v * 37);
        bench_hist_record(&all, v * 37);
    }
    bench_hist_merge(&a, &b);
    cr_assert_eq(a.count, all.count);
    cr_assert_eq(a.min, all.min);
    cr_assert_eq(a.max, all.max);
    cr_assert_eq(memcmp(a.buckets, all.buckets, sizeof(a.buckets)), 0);
}

Test(bench_hist, empty_histogram_reports_zero)
{
    struct bench_hist h;
    bench_hist_init(&h);
    cr_assert_eq(bench_hist_quantile(&h, 0.99), 0u);
}

Test(bench_keys, uniform_stays_in_range_and_spreads)
{
    struct bench_keys k;
    bench_keys_init(&k, BENCH_DIST_UNIFORM, 100, 0, 1);
    unsigned seen[100] = {0};
    for (int i = 0; i < 100000; i++) {
        uint64_t x = bench_keys_next(&k);
        cr_assert_lt(x, 100u);
        seen[x]++;
    }
    for (int i = 0; i < 100; i++)
        cr_assert(seen[i] > 800 && seen[i] < 1200, "key %d drawn %u times of ~1000", i, seen[i]);
}

Test(bench_keys, zipfian_is_skewed_and_deterministic)
{
    struct bench_keys k1, k2;
    bench_keys_init(&k1, BENCH_DIST_ZIPFIAN, 10000, 0.99, 42);
    k2 = k1;
    unsigned *seen = calloc(10000, sizeof(unsigned));
    for (int i = 0; i < 200000; i++) {
        uint64_t x = bench_keys_next(&k1);
        cr_assert_eq(x, bench_keys_next(&k2), "same seed diverged at draw %d", i);
        cr_assert_lt(x, 10000u);
        seen[x]++;
    }
    unsigned top = 0;
    for (int i = 0; i < 10000; i++)
        if (seen[i] > top)
            top = seen[i];
    /* With theta 0.99 over 10k keys the hottest key takes ~10 % of draws; a
     * uniform chooser would give ~20 per key. */
    cr_assert_gt(top, 10000u, "hottest key drawn only %u times: not zipfian", top);
    free(seen);
}

Test(bench_keys, key_format_is_fixed_width_and_sorted)
{
    char a[17], b[17];
    cr_assert_eq(bench_key_format(a, 9), 16u);
    cr_assert_eq(bench_key_format(b, 10), 16u);
    cr_assert_str_eq(a, "user000000000009");
    cr_assert_lt(strcmp(a, b), 0);
}
