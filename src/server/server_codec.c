/* Hand-written proto3 codec for the kvrpcpb Raw* messages (see server_codec.h
 * for why). Decoding borrows from the input; encoding appends to a pbuf. */
#include "server_codec.h"

#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

struct rd {
    const uint8_t *p;
    const uint8_t *end;
};

static int rd_varint(struct rd *r, uint64_t *v_out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return TKV_EPROTO;
        uint8_t b = *r->p++;
        /* The tenth byte may carry only the top bit of a 64-bit value. */
        if (shift == 63 && b > 1)
            return TKV_EPROTO;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v_out = v;
            return 0;
        }
    }
    return TKV_EPROTO;
}

struct field {
    uint32_t num;
    int wt;
    uint64_t u;         /* WT_VARINT */
    struct tkv_slice b; /* WT_LEN */
};

/* Read one field; *why_out names the problem on error. */
static int rd_field(struct rd *r, struct field *f, const char **why_out)
{
    uint64_t tag, n;
    if (rd_varint(r, &tag)) {
        *why_out = "truncated or over-long field tag";
        return TKV_EPROTO;
    }
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) {
        *why_out = "field number out of range";
        return TKV_EPROTO;
    }
    f->num = (uint32_t)(tag >> 3);
    f->wt = (int)(tag & 7);
    switch (f->wt) {
    case WT_VARINT:
        if (rd_varint(r, &f->u)) {
            *why_out = "truncated or over-long varint";
            return TKV_EPROTO;
        }
        return 0;
    case WT_I64:
    case WT_I32:
        n = f->wt == WT_I64 ? 8 : 4;
        if ((uint64_t)(r->end - r->p) < n) {
            *why_out = "truncated fixed-width field";
            return TKV_EPROTO;
        }
        r->p += n;
        return 0;
    case WT_LEN:
        if (rd_varint(r, &n)) {
            *why_out = "truncated length";
            return TKV_EPROTO;
        }
        if (n > (uint64_t)(r->end - r->p)) {
            *why_out = "length-delimited field runs past the end of the message";
            return TKV_EPROTO;
        }
        f->b = TKV_SLICE(r->p, (size_t)n);
        r->p += n;
        return 0;
    default:
        *why_out = "unsupported wire type (groups are not proto3)";
        return TKV_EPROTO;
    }
}

/* Check that msg is a well-formed message; depth bounds recursion into the
 * sub-messages we know (Context.region_epoch, Context.peer). */
static int check_msg(struct tkv_slice msg, bool is_context, const char **why_out)
{
    struct rd r = {msg.ptr, msg.ptr + msg.len};
    struct field f;
    while (r.p < r.end) {
        TKV_RET(rd_field(&r, &f, why_out));
        if (is_context) {
            if ((f.num == 1 || f.num == 5) && f.wt != WT_VARINT) {
                *why_out = "kvrpcpb.Context: wrong wire type";
                return TKV_EPROTO;
            }
            if (f.num == 2 || f.num == 3) {
                if (f.wt != WT_LEN) {
                    *why_out = "kvrpcpb.Context: wrong wire type";
                    return TKV_EPROTO;
                }
                TKV_RET(check_msg(f.b, false, why_out));
            }
        }
    }
    return 0;
}

const char *tkv_server_raw_req_name(enum tkv_server_raw_kind kind)
{
    switch (kind) {
    case TKV_SERVER_RAW_GET:
        return "kvrpcpb.RawGetRequest";
    case TKV_SERVER_RAW_PUT:
        return "kvrpcpb.RawPutRequest";
    case TKV_SERVER_RAW_DELETE:
        return "kvrpcpb.RawDeleteRequest";
    case TKV_SERVER_RAW_SCAN:
        return "kvrpcpb.RawScanRequest";
    }
    return "?";
}

/* Field numbers per request kind (TINYKV-API.md 1.5); 0 = not present. */
struct req_layout {
    uint32_t key, value, cf, limit;
};

static struct req_layout req_layout(enum tkv_server_raw_kind kind)
{
    switch (kind) {
    case TKV_SERVER_RAW_GET:
    case TKV_SERVER_RAW_DELETE:
        return (struct req_layout){.key = 2, .cf = 3};
    case TKV_SERVER_RAW_PUT:
        return (struct req_layout){.key = 2, .value = 3, .cf = 4};
    case TKV_SERVER_RAW_SCAN:
        return (struct req_layout){.key = 2, .limit = 3, .cf = 4};
    }
    return (struct req_layout){0};
}

static int want(const struct field *f, int wt, const char **why_out)
{
    if (f->wt != wt) {
        *why_out = "known field with the wrong wire type";
        return TKV_EPROTO;
    }
    return 0;
}

int tkv_server_raw_req_decode(enum tkv_server_raw_kind kind, struct tkv_slice msg,
                              struct tkv_server_raw_req *out, const char **why_out)
{
    struct req_layout l = req_layout(kind);
    struct rd r = {msg.ptr, msg.ptr + msg.len};
    struct field f;

    memset(out, 0, sizeof(*out));
    while (r.p < r.end) {
        TKV_RET(rd_field(&r, &f, why_out));
        if (f.num == 1) {
            TKV_RET(want(&f, WT_LEN, why_out));
            TKV_RET(check_msg(f.b, true, why_out));
            out->has_context = true;
            /* region_id, for logs; the last occurrence wins. */
            struct rd c = {f.b.ptr, f.b.ptr + f.b.len};
            struct field cf;
            while (c.p < c.end) {
                TKV_RET(rd_field(&c, &cf, why_out));
                if (cf.num == 1)
                    out->region_id = cf.u;
            }
        } else if (f.num == l.key) {
            TKV_RET(want(&f, WT_LEN, why_out));
            out->key = f.b;
        } else if (l.value && f.num == l.value) {
            TKV_RET(want(&f, WT_LEN, why_out));
            out->value = f.b;
        } else if (f.num == l.cf) {
            TKV_RET(want(&f, WT_LEN, why_out));
            out->cf = f.b;
        } else if (l.limit && f.num == l.limit) {
            TKV_RET(want(&f, WT_VARINT, why_out));
            out->limit = (uint32_t)f.u; /* proto3 uint32 keeps the low 32 bits */
        }
    }
    return 0;
}

/* ---- encoding ---- */

void tkv_server_pbuf_free(struct tkv_server_pbuf *b)
{
    tkv_free(b->ptr);
    *b = (struct tkv_server_pbuf){0};
}

static void pb_reserve(struct tkv_server_pbuf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < n)
        cap *= 2;
    b->ptr = tkv_xrealloc(b->ptr, cap);
    b->cap = cap;
}

static void pb_varint(struct tkv_server_pbuf *b, uint64_t v)
{
    pb_reserve(b, 10);
    do {
        uint8_t byte = (uint8_t)(v & 0x7f);
        v >>= 7;
        b->ptr[b->len++] = (uint8_t)(byte | (v ? 0x80 : 0));
    } while (v);
}

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

void tkv_server_pbuf_varint_field(struct tkv_server_pbuf *b, uint32_t field, uint64_t v)
{
    pb_varint(b, (uint64_t)field << 3 | WT_VARINT);
    pb_varint(b, v);
}

void tkv_server_pbuf_bytes_field(struct tkv_server_pbuf *b, uint32_t field, struct tkv_slice v,
                                 bool omit_empty)
{
    if (omit_empty && v.len == 0)
        return;
    pb_varint(b, (uint64_t)field << 3 | WT_LEN);
    pb_varint(b, v.len);
    pb_reserve(b, v.len);
    if (v.len)
        memcpy(b->ptr + b->len, v.ptr, v.len);
    b->len += v.len;
}

void tkv_server_raw_req_encode(enum tkv_server_raw_kind kind, const struct tkv_server_raw_req *req,
                               struct tkv_server_pbuf *out)
{
    struct req_layout l = req_layout(kind);
    if (req->has_context) {
        struct tkv_server_pbuf ctx = {0};
        if (req->region_id)
            tkv_server_pbuf_varint_field(&ctx, 1, req->region_id);
        tkv_server_pbuf_bytes_field(out, 1, TKV_SLICE(ctx.ptr, ctx.len), false);
        tkv_server_pbuf_free(&ctx);
    }
    tkv_server_pbuf_bytes_field(out, l.key, req->key, true);
    if (l.value)
        tkv_server_pbuf_bytes_field(out, l.value, req->value, true);
    if (l.limit && req->limit)
        tkv_server_pbuf_varint_field(out, l.limit, req->limit);
    tkv_server_pbuf_bytes_field(out, l.cf, req->cf, true);
}

void tkv_server_raw_get_resp_encode(struct tkv_server_pbuf *out, struct tkv_slice error,
                                    struct tkv_slice value, bool not_found)
{
    tkv_server_pbuf_bytes_field(out, 2, error, true);
    tkv_server_pbuf_bytes_field(out, 3, value, true);
    if (not_found)
        tkv_server_pbuf_varint_field(out, 4, 1);
}

void tkv_server_raw_write_resp_encode(struct tkv_server_pbuf *out, struct tkv_slice error)
{
    tkv_server_pbuf_bytes_field(out, 2, error, true);
}

void tkv_server_raw_scan_resp_error(struct tkv_server_pbuf *out, struct tkv_slice error)
{
    tkv_server_pbuf_bytes_field(out, 2, error, true);
}

static size_t pair_body_size(size_t key_len, size_t value_len)
{
    size_t n = 0;
    if (key_len)
        n += 1 + varint_size(key_len) + key_len;
    if (value_len)
        n += 1 + varint_size(value_len) + value_len;
    return n;
}

size_t tkv_server_raw_scan_pair_size(size_t key_len, size_t value_len)
{
    size_t body = pair_body_size(key_len, value_len);
    return 1 + varint_size(body) + body;
}

void tkv_server_raw_scan_resp_add(struct tkv_server_pbuf *out, struct tkv_slice key,
                                  struct tkv_slice value)
{
    size_t body = pair_body_size(key.len, value.len);
    pb_varint(out, (uint64_t)3 << 3 | WT_LEN);
    pb_varint(out, body);
    tkv_server_pbuf_bytes_field(out, 2, key, true);
    tkv_server_pbuf_bytes_field(out, 3, value, true);
}

/* ---- response decoding (client side) ---- */

int tkv_server_raw_resp_decode(enum tkv_server_raw_kind kind, struct tkv_slice msg,
                               struct tkv_server_raw_resp *out, const char **why_out)
{
    struct rd r = {msg.ptr, msg.ptr + msg.len};
    struct field f;

    memset(out, 0, sizeof(*out));
    out->msg = msg;
    while (r.p < r.end) {
        TKV_RET(rd_field(&r, &f, why_out));
        if (f.num == 1) { /* region_error: errorpb.Error */
            TKV_RET(want(&f, WT_LEN, why_out));
            TKV_RET(check_msg(f.b, false, why_out));
            out->has_region_error = true;
            struct rd e = {f.b.ptr, f.b.ptr + f.b.len};
            struct field ef;
            while (e.p < e.end) {
                TKV_RET(rd_field(&e, &ef, why_out));
                if (ef.num == 1 && ef.wt == WT_LEN)
                    out->region_error_message = ef.b;
            }
        } else if (f.num == 2) {
            TKV_RET(want(&f, WT_LEN, why_out));
            out->error = f.b;
        } else if (f.num == 3 && kind == TKV_SERVER_RAW_GET) {
            TKV_RET(want(&f, WT_LEN, why_out));
            out->value = f.b;
        } else if (f.num == 4 && kind == TKV_SERVER_RAW_GET) {
            TKV_RET(want(&f, WT_VARINT, why_out));
            out->not_found = f.u != 0;
        } else if (f.num == 3 && kind == TKV_SERVER_RAW_SCAN) {
            TKV_RET(want(&f, WT_LEN, why_out));
            TKV_RET(check_msg(f.b, false, why_out));
            out->n_kvs++;
        }
    }
    return 0;
}

int tkv_server_raw_scan_next(const struct tkv_server_raw_resp *resp, size_t *pos,
                             struct tkv_slice *key_out, struct tkv_slice *value_out)
{
    struct rd r = {resp->msg.ptr + *pos, resp->msg.ptr + resp->msg.len};
    struct field f;
    const char *why;

    while (r.p < r.end) {
        TKV_RET(rd_field(&r, &f, &why));
        if (f.num != 3 || f.wt != WT_LEN)
            continue;
        *pos = (size_t)(r.p - resp->msg.ptr);
        *key_out = TKV_SLICE(NULL, 0);
        *value_out = TKV_SLICE(NULL, 0);
        struct rd p = {f.b.ptr, f.b.ptr + f.b.len};
        struct field pf;
        while (p.p < p.end) {
            TKV_RET(rd_field(&p, &pf, &why));
            if (pf.num == 2 && pf.wt == WT_LEN)
                *key_out = pf.b;
            else if (pf.num == 3 && pf.wt == WT_LEN)
                *value_out = pf.b;
        }
        return 1;
    }
    *pos = resp->msg.len;
    return 0;
}
