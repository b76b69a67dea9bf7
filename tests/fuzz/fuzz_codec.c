/* Fuzz target (d): memcomparable key decoding (decode_bytes, decode_key)
 * and varints on arbitrary bytes: no overrun, outputs untouched on error,
 * and whatever decodes re-encodes to exactly the bytes consumed. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_harness.h"
#include "tkv/codec.h"
#include "tkv/err.h"

int fuzz_codec_one(const uint8_t *data, size_t size)
{
    /* Exact-size copies so ASan sees reads past the end. */
    uint8_t *in = malloc(size ? size : 1);
    size_t omax = tkv_codec_decoded_bytes_max(size);
    uint8_t *out = malloc(omax ? omax : 1);
    uint8_t *re = malloc(size + 32);
    int ret = 0;
    if (!in || !out || !re)
        abort();
    memcpy(in, data, size);

    /* decode_bytes: consumed is a multiple of 9 within in, and re-encoding
     * the key gives those bytes back (the format is canonical). */
    size_t olen = 12345, used = 54321;
    int rv = tkv_codec_decode_bytes(in, size, out, &olen, &used);
    if (rv == 0) {
        if (used % TKV_CODEC_GROUP_ENC || used > size || olen > omax)
            ret = fuzz_fail("decode_bytes: consumed %zu, key %zu of input %zu", used, olen, size);
        else if (tkv_codec_encoded_bytes_len(olen) != used ||
                 tkv_codec_encode_bytes(re, out, olen) != used || memcmp(re, in, used) != 0)
            ret = fuzz_fail("decode_bytes: re-encoding a %zu-byte key differs from the input",
                            olen);
        size_t olen2, used2;
        if (ret == 0 && (tkv_codec_decode_bytes(in, size, NULL, &olen2, &used2) != 0 ||
                         olen2 != olen || used2 != used))
            ret = fuzz_fail("decode_bytes with out=NULL disagrees");
    } else if (rv != TKV_EINVAL) {
        ret = fuzz_fail("decode_bytes returned %d", rv);
    } else if (olen != 12345 || used != 54321) {
        ret = fuzz_fail("decode_bytes wrote outputs on error");
    }

    /* decode_key: exactly one key + 8 timestamp bytes. */
    tkv_ts ts = 77;
    olen = 12345;
    rv = tkv_codec_decode_key(in, size, out, &olen, &ts);
    if (ret == 0 && rv == 0) {
        if (tkv_codec_encoded_key_len(olen) != size ||
            tkv_codec_encode_key(re, out, olen, ts) != size || memcmp(re, in, size) != 0)
            ret = fuzz_fail("decode_key: re-encoding differs from the input");
        else if (tkv_codec_key_ts(in, size) != ts)
            ret = fuzz_fail("key_ts disagrees with decode_key");
    } else if (ret == 0 && rv != TKV_EINVAL) {
        ret = fuzz_fail("decode_key returned %d", rv);
    } else if (ret == 0 && (olen != 12345 || ts != 77)) {
        ret = fuzz_fail("decode_key wrote outputs on error");
    }

    /* varints at every offset of the first bytes */
    for (size_t off = 0; ret == 0 && off < size && off < 32; off++) {
        uint64_t u = 5;
        int64_t v = 5;
        uint8_t b[TKV_CODEC_VARINT_MAX];
        int k = tkv_codec_get_uvarint(in + off, size - off, &u);
        if (k > 0) {
            if ((size_t)k > size - off || k > (int)TKV_CODEC_VARINT_MAX)
                ret = fuzz_fail("get_uvarint consumed %d of %zu", k, size - off);
            else if (tkv_codec_put_uvarint(b, u) != tkv_codec_uvarint_len(u) ||
                     tkv_codec_get_uvarint(b, TKV_CODEC_VARINT_MAX, &u) !=
                         (int)tkv_codec_uvarint_len(u))
                ret = fuzz_fail("uvarint %llu does not round-trip", (unsigned long long)u);
        } else if (k != TKV_EINVAL || u != 5) {
            ret = fuzz_fail("get_uvarint error %d (value %llu)", k, (unsigned long long)u);
        }
        k = tkv_codec_get_varint(in + off, size - off, &v);
        if (ret == 0 && k > 0) {
            int64_t w;
            size_t m = tkv_codec_put_varint(b, v);
            if (tkv_codec_get_varint(b, m, &w) != (int)m || w != v)
                ret = fuzz_fail("varint %lld does not round-trip", (long long)v);
        } else if (ret == 0 && (k != TKV_EINVAL || v != 5)) {
            ret = fuzz_fail("get_varint error %d", k);
        }
    }

    /* CRC32C: the hardware and software paths agree. */
    if (ret == 0 && tkv_codec_crc32c_hw_available() &&
        tkv_codec_crc32c_hw(0, in, size) != tkv_codec_crc32c_sw(0, in, size))
        ret = fuzz_fail("crc32c hw != sw for %zu bytes", size);

    free(in);
    free(out);
    free(re);
    return ret;
}

void fuzz_codec_seeds(struct fuzz_seeds *s, uint64_t rng)
{
    uint8_t key[40], enc[64];
    for (size_t n = 0; n < 24; n++) {
        for (size_t i = 0; i < n; i++)
            key[i] = i % 3 ? (uint8_t)fuzz_rand(&rng) : 0;
        size_t m = tkv_codec_encode_key(enc, key, n, fuzz_rand(&rng));
        fuzz_seeds_add(s, enc, m);
        m = tkv_codec_encode_bytes(enc, key, n);
        fuzz_seeds_add(s, enc, m);
    }
}
