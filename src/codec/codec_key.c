/* Memcomparable key encoding (EncodeBytes/DecodeBytes) and MVCC keys
 * (EncodeKey = EncodeBytes ++ BE64(~ts)), TINYKV-API.md section 2.2. */
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"

#define MARKER_FULL 0xFFu /* a full group: more groups follow */

size_t tkv_codec_encode_bytes(uint8_t *out, const uint8_t *key, size_t n)
{
    uint8_t *p = out;
    /* Every full group, then always one final group with 0..7 key bytes:
     * that is why n % 8 == 0 ends with an all-pad group (marker 0xF7). */
    for (size_t i = 0; i <= n; i += TKV_CODEC_GROUP) {
        size_t left = n - i;
        if (left >= TKV_CODEC_GROUP) {
            memcpy(p, key + i, TKV_CODEC_GROUP);
            p[TKV_CODEC_GROUP] = MARKER_FULL;
        } else {
            size_t pad = TKV_CODEC_GROUP - left;
            if (left)
                memcpy(p, key + i, left);
            memset(p + left, 0, pad);
            p[TKV_CODEC_GROUP] = (uint8_t)(MARKER_FULL - pad);
        }
        p += TKV_CODEC_GROUP_ENC;
        if (left < TKV_CODEC_GROUP)
            break;
    }
    return (size_t)(p - out);
}

int tkv_codec_decode_bytes(const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len,
                           size_t *consumed)
{
    size_t pos = 0, n = 0;
    for (;;) {
        if (in_len - pos < TKV_CODEC_GROUP_ENC)
            return TKV_EINVAL; /* truncated */
        const uint8_t *g = in + pos;
        uint8_t marker = g[TKV_CODEC_GROUP];
        size_t pad = MARKER_FULL - marker;
        if (pad > TKV_CODEC_GROUP)
            return TKV_EINVAL;
        size_t real = TKV_CODEC_GROUP - pad;
        for (size_t i = real; i < TKV_CODEC_GROUP; i++)
            if (g[i] != 0)
                return TKV_EINVAL; /* pad bytes must be zero */
        if (out && real)
            memcpy(out + n, g, real);
        n += real;
        pos += TKV_CODEC_GROUP_ENC;
        if (pad)
            break;
    }
    *out_len = n;
    *consumed = pos;
    return 0;
}

size_t tkv_codec_encode_key(uint8_t *out, const uint8_t *key, size_t n, tkv_ts ts)
{
    size_t len = tkv_codec_encode_bytes(out, key, n);
    tkv_codec_put_u64be(out + len, ~ts);
    return len + 8;
}

int tkv_codec_decode_key(const uint8_t *in, size_t len, uint8_t *key_out, size_t *key_len_out,
                         tkv_ts *ts_out)
{
    size_t key_len, used;
    if (len < 8)
        return TKV_EINVAL;
    TKV_RET(tkv_codec_decode_bytes(in, len - 8, NULL, &key_len, &used));
    if (used != len - 8)
        return TKV_EINVAL; /* trailing bytes between key and timestamp */
    if (key_out)
        TKV_RET(tkv_codec_decode_bytes(in, len - 8, key_out, &key_len, &used));
    *key_len_out = key_len;
    *ts_out = tkv_codec_key_ts(in, len);
    return 0;
}
