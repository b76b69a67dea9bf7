/* Log-linear histogram (see bench_hist.h). */
#include "bench_hist.h"

#include <string.h>

void bench_hist_init(struct bench_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

size_t bench_hist_index(uint64_t value)
{
    if (value < BENCH_HIST_SUB)
        return (size_t)value;
    /* Octave o >= 1 holds [SUB << (o-1), SUB << o); keep the top SUB_BITS+1
     * bits: the leading one picks the octave, the next SUB_BITS the slot. */
    unsigned msb = 63u - (unsigned)__builtin_clzll(value);
    unsigned octave = msb - BENCH_HIST_SUB_BITS + 1;
    unsigned slot = (unsigned)(value >> (msb - BENCH_HIST_SUB_BITS)) - BENCH_HIST_SUB;
    return (size_t)octave * BENCH_HIST_SUB + slot;
}

uint64_t bench_hist_bucket_high(size_t index)
{
    if (index < BENCH_HIST_SUB)
        return index;
    unsigned octave = (unsigned)(index / BENCH_HIST_SUB);
    uint64_t slot = index % BENCH_HIST_SUB;
    unsigned shift = octave - 1;
    uint64_t low = (BENCH_HIST_SUB + slot) << shift;
    uint64_t width = (uint64_t)1 << shift;
    return low + (width - 1);
}

void bench_hist_record(struct bench_hist *h, uint64_t value)
{
    h->buckets[bench_hist_index(value)]++;
    h->count++;
    h->sum += value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++; /* ceil */
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = bench_hist_bucket_high(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}
