/* codec: memcomparable bytes and MVCC keys (TINYKV-API.md 2.2 examples),
 * big-endian helpers, varints, CRC32C vectors and hw == table. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"

static void hex(char *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static void expect_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len)
{
    char g[512], w[512];
    hex(g, got, got_len);
    hex(w, want, want_len);
    cr_assert(got_len == want_len && memcmp(got, want, want_len) == 0, "got %s want %s", g, w);
}

Test(codec, encode_bytes_examples_from_the_api_doc)
{
    uint8_t out[64];
    static const uint8_t empty_want[] = {0, 0, 0, 0, 0, 0, 0, 0, 0xF7};
    size_t n = tkv_codec_encode_bytes(out, NULL, 0);
    expect_bytes(out, n, empty_want, sizeof(empty_want));

    static const uint8_t k42[] = {42};
    static const uint8_t k42_ts0[] = {0x2A, 0, 0, 0, 0, 0, 0, 0, 0xF8,
                                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    n = tkv_codec_encode_key(out, k42, 1, 0);
    expect_bytes(out, n, k42_ts0, sizeof(k42_ts0));
    cr_assert_eq(n, tkv_codec_encoded_key_len(1));

    static const uint8_t k3[] = {42, 0, 5};
    static const uint8_t k3_want[] = {0x2A, 0x00, 0x05, 0, 0, 0, 0, 0, 0xFA};
    n = tkv_codec_encode_bytes(out, k3, 3);
    expect_bytes(out, n, k3_want, sizeof(k3_want));

    /* A multiple of 8 gets an extra all-zero group marked 0xF7. */
    static const uint8_t k8_want[] = {'1', '2', '3', '4', '5', '6', '7', '8', 0xFF,
                                      0, 0, 0, 0, 0, 0, 0, 0, 0xF7};
    n = tkv_codec_encode_bytes(out, (const uint8_t *)"12345678", 8);
    expect_bytes(out, n, k8_want, sizeof(k8_want));
    cr_assert_eq(tkv_codec_encoded_bytes_len(8), 18);
    cr_assert_eq(tkv_codec_encoded_bytes_len(7), 9);
}

Test(codec, encode_key_ts_is_inverted_big_endian)
{
    uint8_t out[32];
    size_t n = tkv_codec_encode_key(out, (const uint8_t *)"k", 1, 0x0102030405060708ull);
    static const uint8_t ts_want[] = {0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF9, 0xF8, 0xF7};
    expect_bytes(out + n - 8, 8, ts_want, 8);
    cr_assert_eq(tkv_codec_key_ts(out, n), 0x0102030405060708ull);
}

static int cmp_bytes(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c)
        return c < 0 ? -1 : 1;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

Test(codec, random_keys_round_trip_and_keep_order)
{
    srand(12345);
    uint8_t a[40], b[40], ea[64], eb[64], dec[64];
    for (int iter = 0; iter < 20000; iter++) {
        size_t an = (size_t)rand() % 33, bn = (size_t)rand() % 33;
        for (size_t i = 0; i < an; i++)
            a[i] = (uint8_t)(rand() % 4); /* small alphabet: many shared prefixes and zeros */
        for (size_t i = 0; i < bn; i++)
            b[i] = (uint8_t)(rand() % 4);
        tkv_ts ta = (tkv_ts)rand() % 5, tb = (tkv_ts)rand() % 5;
        size_t ean = tkv_codec_encode_key(ea, a, an, ta);
        size_t ebn = tkv_codec_encode_key(eb, b, bn, tb);
        int want = cmp_bytes(a, an, b, bn);
        if (want == 0)
            want = ta > tb ? -1 : ta < tb ? 1 : 0; /* newer first */
        cr_assert_eq(cmp_bytes(ea, ean, eb, ebn), want, "order broken at iteration %d", iter);

        size_t dlen;
        tkv_ts dts;
        cr_assert_eq(tkv_codec_decode_key(ea, ean, dec, &dlen, &dts), 0);
        cr_assert_eq(dlen, an);
        cr_assert_eq(memcmp(dec, a, an), 0);
        cr_assert_eq(dts, ta);
    }
}

Test(codec, decode_bytes_leaves_the_suffix_and_validates)
{
    uint8_t enc[64], dec[64];
    size_t n = tkv_codec_encode_bytes(enc, (const uint8_t *)"hello world", 11);
    memcpy(enc + n, "TAIL", 4);
    size_t dlen, used;
    cr_assert_eq(tkv_codec_decode_bytes(enc, n + 4, dec, &dlen, &used), 0);
    cr_assert_eq(used, n);
    cr_assert_eq(dlen, 11);
    cr_assert_eq(memcmp(dec, "hello world", 11), 0);
    cr_assert_eq(tkv_codec_decode_bytes(enc, n + 4, NULL, &dlen, &used), 0, "measure only");

    /* Truncated. */
    for (size_t cut = 0; cut < n; cut++)
        cr_assert_eq(tkv_codec_decode_bytes(enc, cut, dec, &dlen, &used), TKV_EINVAL, "cut %zu", cut);
    /* Marker claiming 9 pad bytes. */
    uint8_t bad[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0xF6};
    cr_assert_eq(tkv_codec_decode_bytes(bad, 9, dec, &dlen, &used), TKV_EINVAL);
    /* Non-zero pad byte. */
    uint8_t badpad[9] = {'a', 0, 0, 0, 0, 0, 0, 1, 0xF8};
    cr_assert_eq(tkv_codec_decode_bytes(badpad, 9, dec, &dlen, &used), TKV_EINVAL);
    /* decode_key rejects bytes between the key and the timestamp. */
    uint8_t k[64];
    size_t kn = tkv_codec_encode_bytes(k, (const uint8_t *)"a", 1);
    memset(k + kn, 0, 9);
    tkv_ts ts;
    cr_assert_eq(tkv_codec_decode_key(k, kn + 9, dec, &dlen, &ts), TKV_EINVAL);
    cr_assert_eq(tkv_codec_decode_key(k, kn + 8, dec, &dlen, &ts), 0);
    cr_assert_eq(tkv_codec_decode_key(k, 7, dec, &dlen, &ts), TKV_EINVAL);
}

Test(codec, big_endian_helpers)
{
    uint8_t b[8];
    tkv_codec_put_u64be(b, 0x0102030405060708ull);
    static const uint8_t want[] = {1, 2, 3, 4, 5, 6, 7, 8};
    expect_bytes(b, 8, want, 8);
    cr_assert_eq(tkv_codec_get_u64be(b), 0x0102030405060708ull);
    tkv_codec_put_u32be(b, 0xA1B2C3D4u);
    cr_assert(b[0] == 0xA1 && b[3] == 0xD4);
    cr_assert_eq(tkv_codec_get_u32be(b), 0xA1B2C3D4u);
}

Test(codec, varints)
{
    static const struct {
        uint64_t v;
        size_t len;
    } cases[] = {{0, 1}, {1, 1}, {127, 1}, {128, 2}, {300, 2}, {16383, 2}, {16384, 3},
                 {(1ull << 63) - 1, 9}, {1ull << 63, 10}, {UINT64_MAX, 10}};
    uint8_t b[16];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = tkv_codec_put_uvarint(b, cases[i].v);
        cr_assert_eq(n, cases[i].len, "len of %llu", (unsigned long long)cases[i].v);
        cr_assert_eq(tkv_codec_uvarint_len(cases[i].v), n);
        uint64_t v;
        cr_assert_eq(tkv_codec_get_uvarint(b, n, &v), (int)n);
        cr_assert_eq(v, cases[i].v);
        if (n > 1)
            cr_assert_eq(tkv_codec_get_uvarint(b, n - 1, &v), TKV_EINVAL, "truncated");
    }
    static const uint8_t v300[] = {0xAC, 0x02};
    uint64_t v;
    cr_assert_eq(tkv_codec_get_uvarint(v300, 2, &v), 2);
    cr_assert_eq(v, 300);
    /* 11 bytes, and a 10th byte overflowing 64 bits. */
    uint8_t longv[11];
    memset(longv, 0x80, 10);
    longv[10] = 0;
    cr_assert_eq(tkv_codec_get_uvarint(longv, 11, &v), TKV_EINVAL);
    uint8_t over[10];
    memset(over, 0xFF, 9);
    over[9] = 0x02;
    cr_assert_eq(tkv_codec_get_uvarint(over, 10, &v), TKV_EINVAL);

    static const int64_t s[] = {0, -1, 1, -64, 63, -65, INT64_MIN, INT64_MAX};
    static const uint64_t z[] = {0, 1, 2, 127, 126, 129, UINT64_MAX, UINT64_MAX - 1};
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        size_t n = tkv_codec_put_varint(b, s[i]);
        uint64_t zz;
        tkv_codec_get_uvarint(b, n, &zz);
        cr_assert_eq(zz, z[i], "zigzag of %lld", (long long)s[i]);
        int64_t back;
        cr_assert_eq(tkv_codec_get_varint(b, n, &back), (int)n);
        cr_assert_eq(back, s[i]);
    }
}

Test(codec, crc32c_vectors)
{
    cr_assert_eq(tkv_codec_crc32c(0, "123456789", 9), 0xE3069283u);
    cr_assert_eq(tkv_codec_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    cr_assert_eq(tkv_codec_crc32c(0, "", 0), 0);
    /* RFC 3720 B.4: 32 bytes of zeros, of 0xFF, and ascending. */
    uint8_t b[32];
    memset(b, 0, 32);
    cr_assert_eq(tkv_codec_crc32c_sw(0, b, 32), 0x8A9136AAu);
    memset(b, 0xFF, 32);
    cr_assert_eq(tkv_codec_crc32c_sw(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    cr_assert_eq(tkv_codec_crc32c_sw(0, b, 32), 0x46DD794Eu);
    cr_assert_eq(tkv_codec_crc32c(0, b, 32), 0x46DD794Eu);
    /* Incremental == one shot. */
    uint32_t c = tkv_codec_crc32c(0, "1234", 4);
    cr_assert_eq(tkv_codec_crc32c(c, "56789", 5), 0xE3069283u);
}

Test(codec, crc32c_hw_equals_table_on_random_buffers)
{
    if (!tkv_codec_crc32c_hw_available())
        cr_skip_test("CPU without SSE4.2");
    srand(777);
    static uint8_t buf[70000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rand();
    for (int iter = 0; iter < 2000; iter++) {
        size_t off = (size_t)rand() % 64;
        size_t len = iter < 100 ? (size_t)iter : (size_t)rand() % (sizeof(buf) - 64);
        uint32_t seed = iter % 3 ? 0 : (uint32_t)rand();
        uint32_t hw = tkv_codec_crc32c_hw(seed, buf + off, len);
        uint32_t sw = tkv_codec_crc32c_sw(seed, buf + off, len);
        cr_assert_eq(hw, sw, "off %zu len %zu seed %08x: hw %08x table %08x", off, len, seed, hw, sw);
    }
}
