/* Fuzz harnesses shared by the libFuzzer entry points (clang, TKV_FUZZ=ON)
 * and the deterministic "fuzz-lite" criterion tests (any compiler): one
 * function per target runs one input and checks the target's invariants. */
#ifndef TKV_FUZZ_HARNESS_H
#define TKV_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* One input through one target. Returns 0, or -1 when an invariant broke
 * (fuzz_why() says which). Crashes, leaks and sanitizer reports are the
 * other failures. Single-threaded: targets keep static state. */
typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

int fuzz_pb_one(const uint8_t *data, size_t size);    /* protobuf decode + re-encode */
int fuzz_h2_one(const uint8_t *data, size_t size);    /* HTTP/2 server engine */
int fuzz_toml_one(const uint8_t *data, size_t size);  /* TOML parser + config schema */
int fuzz_codec_one(const uint8_t *data, size_t size); /* memcomparable keys, varints */
int fuzz_transport_one(const uint8_t *data, size_t size); /* RaftMessage decode + validate */

/* Description of the last broken invariant (static buffer). */
const char *fuzz_why(void);
/* Record a broken invariant (printf-like); returns -1. */
int fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Valid inputs to start from (libFuzzer corpus, fuzz-lite mutations). */
struct fuzz_seed {
    uint8_t *p;
    size_t n;
};
struct fuzz_seeds {
    struct fuzz_seed *v;
    size_t n, cap;
};
void fuzz_seeds_add(struct fuzz_seeds *s, const void *p, size_t n);
void fuzz_seeds_free(struct fuzz_seeds *s);

/* Append each target's generated seeds to s (deterministic for a given
 * rng seed). */
void fuzz_pb_seeds(struct fuzz_seeds *s, uint64_t rng);
void fuzz_h2_seeds(struct fuzz_seeds *s, uint64_t rng);
void fuzz_toml_seeds(struct fuzz_seeds *s, uint64_t rng);
void fuzz_codec_seeds(struct fuzz_seeds *s, uint64_t rng);
void fuzz_transport_seeds(struct fuzz_seeds *s, uint64_t rng);

/* xorshift64* step; never returns 0 state for a non-zero start. */
uint64_t fuzz_rand(uint64_t *state);

/* The fuzz-lite driver: every seed as is, then `iters` inputs made by
 * mutating seeds (bit flips, byte sets, inserts, deletes, truncation,
 * splices) and `iters / 8` purely random inputs, through fn. Returns 0,
 * or -1 with the failing input in *bad / *bad_len (malloc'ed). */
int fuzz_lite_run(fuzz_fn fn, const struct fuzz_seeds *seeds, uint64_t rng, size_t iters,
                  uint8_t **bad, size_t *bad_len);

#endif
