/* Unsigned (LEB128, as protobuf and Go encoding/binary) and zigzag varints. */
#include "tkv/codec.h"
#include "tkv/err.h"

size_t tkv_codec_uvarint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t tkv_codec_put_uvarint(uint8_t *p, uint64_t v)
{
    size_t i = 0;
    while (v >= 0x80) {
        p[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[i++] = (uint8_t)v;
    return i;
}

int tkv_codec_get_uvarint(const uint8_t *p, size_t len, uint64_t *v_out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && i < TKV_CODEC_VARINT_MAX; i++) {
        uint8_t b = p[i];
        /* The 10th byte may only carry the top bit of a 64-bit value. */
        if (i == TKV_CODEC_VARINT_MAX - 1 && b > 1)
            return TKV_EINVAL;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (b < 0x80) {
            *v_out = v;
            return (int)(i + 1);
        }
    }
    return TKV_EINVAL; /* truncated, or more than 10 bytes */
}

size_t tkv_codec_put_varint(uint8_t *p, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    return tkv_codec_put_uvarint(p, z);
}

int tkv_codec_get_varint(const uint8_t *p, size_t len, int64_t *v_out)
{
    uint64_t z;
    int n = tkv_codec_get_uvarint(p, len, &z);
    if (n > 0)
        *v_out = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
    return n;
}
