/* fuzz-lite: the libFuzzer harness of one target (FUZZ_TARGET) run by
 * criterion on generated seeds and seeded mutations of them, so every
 * build (gcc, ASan/UBSan) exercises it. TKV_SEED=<n> picks another run,
 * TKV_FUZZ_ITERS=<n> changes its length. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_harness.h"

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define STR2(a) #a
#define STR(a) STR2(a)

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : dflt;
}

Test(fuzz_lite, FUZZ_TARGET, .timeout = 60)
{
    struct fuzz_seeds seeds = {0};
    uint64_t seed = env_u64("TKV_SEED", 20261123);
    size_t iters = (size_t)env_u64("TKV_FUZZ_ITERS", FUZZ_LITE_ITERS);
    uint8_t *bad = NULL;
    size_t bad_len = 0;
    CAT(FUZZ_TARGET, _seeds)(&seeds, seed);
    cr_assert_gt(seeds.n, 0, "no seeds generated");
    int rv = fuzz_lite_run(CAT(FUZZ_TARGET, _one), &seeds, seed, iters, &bad, &bad_len);
    if (rv != 0) {
        char hex[2 * 256 + 1];
        size_t n = bad_len < 256 ? bad_len : 256;
        for (size_t i = 0; i < n; i++)
            snprintf(hex + 2 * i, 3, "%02x", bad[i]);
        hex[2 * n] = 0;
        fuzz_seeds_free(&seeds);
        free(bad);
        cr_assert_fail("%s (seed %llu): %s\ninput (%zu bytes, first %zu hex): %s", STR(FUZZ_TARGET),
                 (unsigned long long)seed, fuzz_why(), bad_len, n, hex);
    }
    fuzz_seeds_free(&seeds);
}
