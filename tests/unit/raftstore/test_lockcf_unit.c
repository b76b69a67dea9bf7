/* The LOCK CF rule of a region (src/raftstore/rs_lockcf.c): a key belongs to
 * a region in raw form or in EncodeBytes form, and the raw scan bounds hold
 * every such key. Checked exhaustively over short keys of an alphabet that
 * hits the EncodeBytes corner cases (0x00 padding, markers 0xF7..0xFF), for
 * bounds that are EncodeBytes(user key) (the transactional split rule),
 * raw keys (the raw split rule) and arbitrary bytes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "rs_private.h"
#include "tkv/codec.h"

static const uint8_t alphabet[] = {0x00, 0x01, 'a', 'k', 0xF7, 0xF8, 0xFE, 0xFF};
#define N_ALPHA (sizeof(alphabet))

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int raw_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (al > bl) - (al < bl);
}

/* A random bound: EncodeBytes of a random key, a random raw key, or random
 * bytes of random length (possibly with complete 0xFF groups). */
static uint32_t random_bound(uint8_t *out)
{
    uint8_t k[24];
    size_t n = rnd() % 2 ? rnd() % 4 : rnd() % 20; /* short ones: keys of the set */
    for (size_t i = 0; i < n; i++)
        k[i] = alphabet[rnd() % N_ALPHA];
    switch (rnd() % 3) {
    case 0:
        return (uint32_t)tkv_codec_encode_bytes(out, k, n);
    case 1:
        memcpy(out, k, n);
        return (uint32_t)n;
    default: {
        size_t m = tkv_codec_encode_bytes(out, k, n);
        size_t cut = m ? rnd() % (m + 1) : 0; /* a prefix of an encoding */
        return (uint32_t)cut;
    }
    }
}

/* Every key up to 3 symbols, and EncodeBytes-interesting longer ones. */
static size_t all_keys(uint8_t keys[][20], size_t *lens, size_t cap)
{
    size_t n = 0;
    keys[n][0] = 0;
    lens[n++] = 0;
    for (size_t len = 1; len <= 3; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++)
            total *= N_ALPHA;
        for (size_t x = 0; x < total && n < cap; x++) {
            size_t v = x;
            for (size_t i = 0; i < len; i++) {
                keys[n][i] = alphabet[v % N_ALPHA];
                v /= N_ALPHA;
            }
            lens[n++] = len;
        }
    }
    for (size_t i = 0; i < 3000 && n < cap; i++) { /* around the 8-byte groups */
        size_t len = 6 + rnd() % 12;
        for (size_t j = 0; j < len; j++)
            keys[n][j] = alphabet[rnd() % N_ALPHA];
        lens[n++] = len;
    }
    return n;
}

Test(lockcf, scan_bounds_hold_every_key_of_the_region)
{
    static uint8_t keys[8000][20];
    static size_t lens[8000];
    size_t n_keys = all_keys(keys, lens, 8000);
    size_t n_in = 0, n_enc_only = 0;
    for (int round = 0; round < 1000; round++) {
        struct tkv_rs_region rg;
        memset(&rg, 0, sizeof(rg));
        rg.start_len = rnd() % 8 ? random_bound(rg.start) : 0;
        rg.end_len = rnd() % 8 ? random_bound(rg.end) : 0;
        if (rg.end_len && raw_cmp(rg.start, rg.start_len, rg.end, rg.end_len) >= 0)
            continue;
        struct rs_lock_bounds bd;
        rs_lock_scan_bounds(&rg, &bd);
        for (size_t i = 0; i < n_keys; i++) {
            struct tkv_slice k = TKV_SLICE(keys[i], lens[i]);
            bool in = rs_lock_key_in_region(&rg, k);
            bool raw = rs_key_in_region(&rg, k);
            cr_assert_eq(in, raw || tkv_rs_region_contains_txn_key(&rg, k));
            if (!in)
                continue;
            n_in++;
            n_enc_only += !raw;
            cr_assert(raw_cmp(keys[i], lens[i], bd.lo, bd.lo_len) >= 0,
                      "round %d: key %zu (len %zu) of the region below the scan's lower bound",
                      round, i, lens[i]);
            cr_assert(bd.hi_len == 0 || raw_cmp(keys[i], lens[i], bd.hi, bd.hi_len) < 0,
                      "round %d: key %zu (len %zu) of the region at/after the scan's upper bound",
                      round, i, lens[i]);
        }
    }
    /* the corner the rule exists for must have been exercised */
    cr_assert_gt(n_enc_only, 100, "only %zu keys held in EncodeBytes form only (of %zu)",
                 n_enc_only, n_in);
}

/* The transactional split: EncodeBytes("k05") starts the right region; the
 * lock of "k05" (raw "k05" < EncodeBytes("k05")) is the right region's and
 * also in the left one's raw range (the ambiguity the store resolves in
 * favour of the EncodeBytes holder, rs_lock_managed_elsewhere). */
Test(lockcf, first_key_of_a_split_region)
{
    struct tkv_rs_region left, right;
    memset(&left, 0, sizeof(left));
    memset(&right, 0, sizeof(right));
    uint32_t n = (uint32_t)tkv_codec_encode_bytes(right.start, (const uint8_t *)"k05", 3);
    right.start_len = n;
    memcpy(left.end, right.start, n);
    left.end_len = n;
    struct tkv_slice k05 = TKV_SLICE("k05", 3), k04 = TKV_SLICE("k04", 3);
    cr_assert(rs_lock_key_in_region(&right, k05));
    cr_assert(!rs_key_in_region(&right, k05), "raw k05 sorts before the right region's start");
    cr_assert(rs_lock_key_in_region(&left, k05), "and is in the left one's raw range");
    cr_assert(!tkv_rs_region_contains_txn_key(&left, k05));
    cr_assert(rs_lock_key_in_region(&left, k04));
    cr_assert(!rs_lock_key_in_region(&right, k04));
    struct rs_lock_bounds bd;
    rs_lock_scan_bounds(&right, &bd);
    cr_assert(bd.lo_len <= 3 && memcmp(bd.lo, "k05", bd.lo_len) == 0, "lower bound reaches k05");
}
