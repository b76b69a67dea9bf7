/* Key choosers for tinykv-bench: uniform, zipfian (YCSB's Gray et al.
 * generator, theta 0.99 by default) and scrambled zipfian (hot keys spread
 * over the key space by a hash, as YCSB does). Deterministic for a seed.
 * Single-threaded object: give each client thread its own. */
#ifndef BENCH_KEYS_H
#define BENCH_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bench_dist { BENCH_DIST_UNIFORM, BENCH_DIST_ZIPFIAN };

struct bench_rng {
    uint64_t s;
};

void bench_rng_seed(struct bench_rng *r, uint64_t seed);
uint64_t bench_rng_next(struct bench_rng *r);
/* Uniform double in [0, 1). */
double bench_rng_unit(struct bench_rng *r);

struct bench_keys {
    enum bench_dist dist;
    uint64_t n;
    double theta, alpha, zetan, eta, half_pow_theta;
    struct bench_rng rng;
};

/* n >= 1 keys numbered 0..n-1. The zipfian set-up costs O(n) once; share
 * the constants by copying an initialised struct and reseeding. */
void bench_keys_init(struct bench_keys *k, enum bench_dist dist, uint64_t n, double theta,
                     uint64_t seed);
void bench_keys_reseed(struct bench_keys *k, uint64_t seed);
/* Next key number in [0, n). Zipfian is scrambled: rank 0 (the hottest) is
 * not key 0. */
uint64_t bench_keys_next(struct bench_keys *k);

/* Format key number i as the fixed-width key "user" + 12 digits (YCSB-like,
 * sortable); returns the length written (buf >= 17 bytes). */
size_t bench_key_format(char *buf, uint64_t i);

#endif
