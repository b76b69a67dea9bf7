/* Byte-level encodings shared by storage and transport: big-endian integers,
 * TiKV's memcomparable key format (EncodeBytes/EncodeKey, TINYKV-API.md 2.2),
 * varints and CRC32C. Pure functions: no allocation, no global mutable state
 * beyond a lazily built CRC table; callable from any core or thread. */
#ifndef TKV_CODEC_H
#define TKV_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"

/* ---- fixed-width big-endian (the order keys and metadata sort in) ---- */

static inline void tkv_codec_put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t tkv_codec_get_u64be(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline void tkv_codec_put_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t tkv_codec_get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* ---- memcomparable bytes (MyRocks/TiDB format) ----
 * The key is cut into 8-byte groups; the last is zero-padded; each group is
 * followed by the marker 0xFF - pad_count; a length that is a multiple of 8
 * (including 0) ends with an all-zero group marked 0xF7. Byte-wise order of
 * encodings equals byte-wise order of keys, and no encoding is a prefix of
 * another. */

#define TKV_CODEC_GROUP 8u
#define TKV_CODEC_GROUP_ENC 9u

/* Encoded length of an n-byte key: (n / 8 + 1) * 9. */
static inline size_t tkv_codec_encoded_bytes_len(size_t n)
{
    return (n / TKV_CODEC_GROUP + 1) * TKV_CODEC_GROUP_ENC;
}

/* Upper bound of the decoded length of enc_len encoded bytes. */
static inline size_t tkv_codec_decoded_bytes_max(size_t enc_len)
{
    return enc_len / TKV_CODEC_GROUP_ENC * TKV_CODEC_GROUP;
}

/* EncodeBytes: write the encoding of key[0..n) to out, which must hold
 * tkv_codec_encoded_bytes_len(n) bytes. Returns the bytes written. */
size_t tkv_codec_encode_bytes(uint8_t *out, const uint8_t *key, size_t n);

/* DecodeBytes: decode one encoded key from the front of in[0..in_len).
 * @param out       receives the key; needs tkv_codec_decoded_bytes_max(in_len)
 *                  bytes (or at least the key's length); may be NULL to only
 *                  validate and measure.
 * @param out_len   the decoded key length.
 * @param consumed  encoded bytes used (a multiple of 9); the rest of in
 *                  (e.g. a timestamp) is untouched.
 * Outputs are written only on success. Returns 0, or TKV_EINVAL when in is
 * truncated, a marker is invalid (pad count > 8) or a pad byte is non-zero. */
int tkv_codec_decode_bytes(const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len,
                           size_t *consumed);

/* ---- MVCC keys: EncodeKey(key, ts) = EncodeBytes(key) ++ BE64(~ts) ----
 * Bitwise NOT makes newer timestamps of one user key sort first. */

static inline size_t tkv_codec_encoded_key_len(size_t n)
{
    return tkv_codec_encoded_bytes_len(n) + 8;
}

/* Write EncodeKey(key[0..n), ts) to out (tkv_codec_encoded_key_len(n)
 * bytes). Returns the bytes written. */
size_t tkv_codec_encode_key(uint8_t *out, const uint8_t *key, size_t n, tkv_ts ts);

/* Inverse of tkv_codec_encode_key: in must be exactly one encoded user key
 * followed by 8 timestamp bytes. key_out (may be NULL) needs
 * tkv_codec_decoded_bytes_max(len) bytes. Outputs written only on success.
 * Returns 0 or TKV_EINVAL (malformed or trailing bytes). */
int tkv_codec_decode_key(const uint8_t *in, size_t len, uint8_t *key_out, size_t *key_len_out,
                         tkv_ts *ts_out);

/* The timestamp of an encoded MVCC key (its last 8 bytes, un-NOTed); len >= 8. */
static inline tkv_ts tkv_codec_key_ts(const uint8_t *in, size_t len)
{
    return ~tkv_codec_get_u64be(in + len - 8);
}

/* ---- varints (protobuf/Go encoding/binary) ---- */

#define TKV_CODEC_VARINT_MAX 10u

/* Bytes the unsigned varint of v takes (1..10). */
size_t tkv_codec_uvarint_len(uint64_t v);

/* Write v as an unsigned varint to p (room for TKV_CODEC_VARINT_MAX bytes);
 * returns the bytes written. */
size_t tkv_codec_put_uvarint(uint8_t *p, uint64_t v);

/* Read an unsigned varint from p[0..len). Returns the bytes consumed (> 0)
 * and sets *v_out, or TKV_EINVAL when truncated or longer than 10 bytes /
 * overflowing 64 bits. *v_out is written only on success. */
int tkv_codec_get_uvarint(const uint8_t *p, size_t len, uint64_t *v_out);

/* Signed varints use zigzag (Go binary.PutVarint, protobuf sint64). */
size_t tkv_codec_put_varint(uint8_t *p, int64_t v);
int tkv_codec_get_varint(const uint8_t *p, size_t len, int64_t *v_out);

/* ---- CRC32C (Castagnoli) ----
 * Same convention as Go's crc32.Update with the Castagnoli table: pass 0 to
 * start, pass the previous result to continue; crc32c("123456789") =
 * 0xE3069283. Uses the SSE4.2 crc32 instruction when the CPU has it, else
 * a table (slicing-by-8). */
uint32_t tkv_codec_crc32c(uint32_t crc, const void *buf, size_t len);

/* The two implementations, exposed for tests and benchmarks.
 * tkv_codec_crc32c_hw must only be called if tkv_codec_crc32c_hw_available(). */
uint32_t tkv_codec_crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t tkv_codec_crc32c_hw(uint32_t crc, const void *buf, size_t len);
bool tkv_codec_crc32c_hw_available(void);

#endif
