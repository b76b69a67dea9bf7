/* Hand-rolled etcd v3 KV messages and a proto3 field reader (bench_wire.h).
 * Written from the protobuf wire-format spec; no etcd code is used. */
#include "bench_wire.h"

#include <string.h>

#include "tkv/codec.h"

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool over;
};

static void put_byte(struct wbuf *w, uint8_t c)
{
    if (w->len < w->cap)
        w->p[w->len] = c;
    else
        w->over = true;
    w->len++;
}

static void put_varint(struct wbuf *w, uint64_t v)
{
    uint8_t tmp[TKV_CODEC_VARINT_MAX];
    size_t n = tkv_codec_put_uvarint(tmp, v);
    for (size_t i = 0; i < n; i++)
        put_byte(w, tmp[i]);
}

static void put_bytes_field(struct wbuf *w, uint32_t field, struct tkv_slice s)
{
    if (s.len == 0)
        return;
    put_varint(w, (uint64_t)field << 3 | 2);
    put_varint(w, s.len);
    if (w->len + s.len <= w->cap)
        memcpy(w->p + w->len, s.ptr, s.len);
    else
        w->over = true;
    w->len += s.len;
}

static void put_varint_field(struct wbuf *w, uint32_t field, uint64_t v)
{
    if (v == 0)
        return;
    put_varint(w, (uint64_t)field << 3);
    put_varint(w, v);
}

size_t bench_etcd_put_encode(uint8_t *buf, size_t cap, struct tkv_slice key, struct tkv_slice value)
{
    struct wbuf w = {buf, 0, cap, false};
    put_bytes_field(&w, 1, key);
    put_bytes_field(&w, 2, value);
    return w.over ? 0 : w.len;
}

size_t bench_etcd_range_encode(uint8_t *buf, size_t cap, struct tkv_slice key,
                               struct tkv_slice range_end, int64_t limit, bool serializable)
{
    struct wbuf w = {buf, 0, cap, false};
    put_bytes_field(&w, 1, key);
    put_bytes_field(&w, 2, range_end);
    put_varint_field(&w, 3, (uint64_t)limit);
    put_varint_field(&w, 7, serializable ? 1 : 0);
    return w.over ? 0 : w.len;
}

static int get_varint(struct tkv_slice msg, size_t *pos, uint64_t *v)
{
    int n = tkv_codec_get_uvarint(msg.ptr + *pos, msg.len - *pos, v);
    if (n <= 0)
        return -1;
    *pos += (size_t)n;
    return 0;
}

int bench_pb_next(struct tkv_slice msg, size_t *pos, uint32_t *field, uint32_t *wt, uint64_t *v,
                  struct tkv_slice *b)
{
    if (*pos >= msg.len)
        return 0;
    uint64_t tag;
    if (get_varint(msg, pos, &tag) != 0 || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX)
        return -1;
    *field = (uint32_t)(tag >> 3);
    *wt = (uint32_t)(tag & 7);
    const uint8_t *base = msg.ptr;
    switch (*wt) {
    case 0:
        return get_varint(msg, pos, v) == 0 ? 1 : -1;
    case 1:
    case 5: {
        size_t n = *wt == 1 ? 8 : 4;
        if (msg.len - *pos < n)
            return -1;
        uint64_t x = 0;
        for (size_t i = 0; i < n; i++)
            x |= (uint64_t)base[*pos + i] << (8 * i);
        *pos += n;
        *v = x;
        return 1;
    }
    case 2: {
        uint64_t n;
        if (get_varint(msg, pos, &n) != 0 || n > msg.len - *pos)
            return -1;
        b->ptr = base + *pos;
        b->len = (size_t)n;
        *pos += (size_t)n;
        return 1;
    }
    default:
        return -1; /* groups (3, 4) and reserved types */
    }
}

/* Walk a whole message checking only that it is well formed. */
static int pb_check(struct tkv_slice msg)
{
    size_t pos = 0;
    uint32_t f, wt;
    uint64_t v;
    struct tkv_slice b;
    int rv;
    while ((rv = bench_pb_next(msg, &pos, &f, &wt, &v, &b)) == 1)
        ;
    return rv;
}

static int kv_decode(struct tkv_slice msg, struct tkv_slice *key, struct tkv_slice *value)
{
    size_t pos = 0;
    uint32_t f, wt;
    uint64_t v;
    struct tkv_slice b = {0};
    int rv;
    key->len = value->len = 0;
    while ((rv = bench_pb_next(msg, &pos, &f, &wt, &v, &b)) == 1) {
        if (f == 1 && wt == 2)
            *key = b;
        else if (f == 5 && wt == 2)
            *value = b;
        else if ((f == 1 || f == 5) && wt != 2)
            return -1;
    }
    return rv;
}

int bench_etcd_range_decode(struct tkv_slice msg, struct bench_etcd_range *out)
{
    memset(out, 0, sizeof *out);
    size_t pos = 0;
    uint32_t f, wt;
    uint64_t v = 0;
    struct tkv_slice b = {0};
    int rv;
    while ((rv = bench_pb_next(msg, &pos, &f, &wt, &v, &b)) == 1) {
        switch (f) {
        case 1: /* header */
            if (wt != 2 || pb_check(b) != 0)
                return -1;
            break;
        case 2: /* kvs */
            if (wt != 2)
                return -1;
            if (out->n_kvs == 0) {
                if (kv_decode(b, &out->first_key, &out->first_value) != 0)
                    return -1;
            }
            out->n_kvs++;
            break;
        case 3:
            if (wt != 0)
                return -1;
            out->more = v != 0;
            break;
        case 4:
            if (wt != 0)
                return -1;
            out->count = (int64_t)v;
            break;
        default:
            break;
        }
    }
    return rv;
}

int bench_etcd_put_decode(struct tkv_slice msg)
{
    return pb_check(msg);
}

void bench_grpc_prefix(uint8_t out[5], size_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}
