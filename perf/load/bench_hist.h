/* Log-linear latency histogram for tinykv-bench: constant relative error
 * (about 1.6 % with 64 sub-buckets per power of two), fixed memory, O(1)
 * record, mergeable across client threads. Single-threaded object. */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_HIST_SUB_BITS 6
#define BENCH_HIST_SUB (1u << BENCH_HIST_SUB_BITS)
/* Values below BENCH_HIST_SUB are exact; above, 64 sub-buckets per octave. */
#define BENCH_HIST_BUCKETS ((64 - BENCH_HIST_SUB_BITS + 1) * BENCH_HIST_SUB)

struct bench_hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min, max;
    uint64_t buckets[BENCH_HIST_BUCKETS];
};

void bench_hist_init(struct bench_hist *h);
void bench_hist_record(struct bench_hist *h, uint64_t value);
/* Add every sample of src into dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* The value at quantile q in [0, 1]: the upper edge of the bucket holding the
 * ceil(q * count)-th smallest sample (clamped to the observed max); 0 when
 * empty. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);

/* Bucket index of a value and the largest value in a bucket (exposed for
 * tests). */
size_t bench_hist_index(uint64_t value);
uint64_t bench_hist_bucket_high(size_t index);

#endif
