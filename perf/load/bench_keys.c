/* Key choosers (see bench_keys.h). */
#include "bench_keys.h"

#include <math.h>
#include <stdio.h>

void bench_rng_seed(struct bench_rng *r, uint64_t seed)
{
    r->s = seed ? seed : 0x9E3779B97F4A7C15ull;
}

/* splitmix64: tiny, fast, good enough for load generation. */
uint64_t bench_rng_next(struct bench_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double bench_rng_unit(struct bench_rng *r)
{
    return (double)(bench_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static double zeta(uint64_t n, double theta)
{
    double sum = 0;
    for (uint64_t i = 1; i <= n; i++)
        sum += 1.0 / pow((double)i, theta);
    return sum;
}

void bench_keys_init(struct bench_keys *k, enum bench_dist dist, uint64_t n, double theta,
                     uint64_t seed)
{
    k->dist = dist;
    k->n = n ? n : 1;
    k->theta = theta;
    bench_rng_seed(&k->rng, seed);
    if (dist != BENCH_DIST_ZIPFIAN || k->n < 2)
        return;
    k->zetan = zeta(k->n, theta);
    double zeta2 = zeta(2, theta);
    k->alpha = 1.0 / (1.0 - theta);
    k->eta = (1.0 - pow(2.0 / (double)k->n, 1.0 - theta)) / (1.0 - zeta2 / k->zetan);
    k->half_pow_theta = 1.0 + pow(0.5, theta);
}

void bench_keys_reseed(struct bench_keys *k, uint64_t seed)
{
    bench_rng_seed(&k->rng, seed);
}

static uint64_t fnv1a64(uint64_t x)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (int i = 0; i < 8; i++) {
        h ^= x & 0xff;
        h *= 0x100000001B3ull;
        x >>= 8;
    }
    return h;
}

uint64_t bench_keys_next(struct bench_keys *k)
{
    if (k->dist == BENCH_DIST_UNIFORM || k->n < 2)
        return bench_rng_next(&k->rng) % k->n;
    double u = bench_rng_unit(&k->rng);
    double uz = u * k->zetan;
    uint64_t rank;
    if (uz < 1.0)
        rank = 0;
    else if (uz < k->half_pow_theta)
        rank = 1;
    else
        rank = (uint64_t)((double)k->n * pow(k->eta * u - k->eta + 1.0, k->alpha));
    if (rank >= k->n)
        rank = k->n - 1;
    return fnv1a64(rank) % k->n;
}

size_t bench_key_format(char *buf, uint64_t i)
{
    return (size_t)snprintf(buf, 17, "user%012llu", (unsigned long long)(i % 1000000000000ull));
}
