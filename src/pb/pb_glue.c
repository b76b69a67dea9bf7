/* nanopb glue: the field callback that makes bytes/string fields zero-copy
 * slices and repeated fields arena arrays, plus decode/encode entry points.
 * Design and invariants: src/pb/README.md. */
#include <pb_common.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/pb.h"

/* Decode state behind pb_istream_t.state. Our own read callback (not
 * nanopb's buffer stream) lets the field callback reach both the current
 * input position (for zero-copy slices) and the arena. Substreams copy
 * `state`, so every nested stream shares this one context and `cur`. */
struct dec_ctx {
    const uint8_t *cur;
    struct tkv_arena *arena;
    const pb_msgdesc_t *cached_desc; /* last element type looked up */
    size_t cached_size;
    /* Decode amplification bound: bytes of repeated-field elements this
     * decode may create (a 2-byte empty sub-message becomes a struct of
     * dozens of bytes; unbounded, a 16 MiB message could take ~20x). */
    size_t elem_bytes, elem_budget;
};

/* TKV_PB_DECODE_AMPLIFICATION x the message size + 64 KiB. */
static bool dec_charge(pb_istream_t *istream, struct dec_ctx *ctx, size_t size)
{
    ctx->elem_bytes += size;
    if (ctx->elem_bytes > ctx->elem_budget)
        PB_RETURN_ERROR(istream, "message decodes to too many repeated elements (more than "
                                 "4x its size in memory)");
    return true;
}

/* The decode in progress on this thread. Needed only for one case: nanopb
 * hands an unpacked repeated scalar to the callback on a temporary buffer
 * stream of its own (it copies the varint to the stack first), so the
 * callback cannot reach the arena through the stream. The pointer lives
 * only for the duration of one synchronous tkv_pb_decode call (saved and
 * restored around it), so it carries no per-core state across calls and is
 * safe under the single-threaded simulator too (STYLE.md 4.6 rule 9). */
static _Thread_local struct dec_ctx *current_ctx;

static bool dec_read(pb_istream_t *stream, pb_byte_t *buf, size_t count)
{
    struct dec_ctx *ctx = stream->state;
    /* nanopb checked bytes_left >= count before calling us. */
    if (buf)
        memcpy(buf, ctx->cur, count);
    ctx->cur += count;
    return true;
}

/* Registry rows ordered by descriptor address, built once, for O(log n)
 * lookups on every decode and every repeated field encoded. */
static const struct tkv_pb_msginfo **by_desc;
static pthread_once_t by_desc_once = PTHREAD_ONCE_INIT;

static int cmp_desc(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)(*(const struct tkv_pb_msginfo *const *)a)->desc;
    uintptr_t y = (uintptr_t)(*(const struct tkv_pb_msginfo *const *)b)->desc;
    return x < y ? -1 : x > y;
}

static void by_desc_build(void)
{
    /* Process lifetime; never freed. */
    by_desc = tkv_xcalloc(tkv_pb_registry_len, sizeof(*by_desc));
    for (size_t i = 0; i < tkv_pb_registry_len; i++)
        by_desc[i] = &tkv_pb_registry[i];
    qsort(by_desc, tkv_pb_registry_len, sizeof(*by_desc), cmp_desc);
}

const struct tkv_pb_msginfo *tkv_pb_msginfo(const pb_msgdesc_t *desc)
{
    pthread_once(&by_desc_once, by_desc_build);
    size_t lo = 0, hi = tkv_pb_registry_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const pb_msgdesc_t *d = by_desc[mid]->desc;
        if (d == desc)
            return by_desc[mid];
        if ((uintptr_t)d < (uintptr_t)desc)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *tkv_pb_msg_name(const pb_msgdesc_t *desc)
{
    const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(desc);
    return mi ? mi->name : "?";
}

static size_t dec_elem_size(struct dec_ctx *ctx, const pb_msgdesc_t *desc)
{
    if (ctx->cached_desc != desc) {
        const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(desc);
        if (!mi)
            return 0;
        ctx->cached_desc = desc;
        ctx->cached_size = mi->size;
    }
    return ctx->cached_size;
}

void tkv_pb_rep_reserve(struct tkv_arena *arena, void *rep_, size_t elem_size, size_t n)
{
    struct tkv_pb_rep *rep = rep_;
    if (n <= rep->cap)
        return;
    size_t cap = rep->cap ? rep->cap : 4;
    while (cap < n)
        cap *= 2;
    size_t old_bytes, new_bytes;
    if (__builtin_mul_overflow(rep->cap, elem_size, &old_bytes) ||
        __builtin_mul_overflow(cap, elem_size, &new_bytes))
        TKV_PANIC("pb: repeated field of %zu x %zu bytes overflows", cap, elem_size);
    /* A caller-provided array (cap 0, n > 0) is copied, never grown in place. */
    if (rep->cap == 0 && rep->n > 0) {
        void *items = tkv_arena_alloc(arena, new_bytes);
        memcpy(items, rep->items, rep->n * elem_size);
        rep->items = items;
    } else {
        rep->items = tkv_arena_grow(arena, rep->cap ? rep->items : NULL, old_bytes, new_bytes);
    }
    memset((uint8_t *)rep->items + rep->n * elem_size, 0, (cap - rep->n) * elem_size);
    rep->cap = cap;
}

void *tkv_pb_rep_push(struct tkv_arena *arena, void *rep_, size_t elem_size)
{
    struct tkv_pb_rep *rep = rep_;
    if (rep->n == rep->cap || rep->cap == 0)
        tkv_pb_rep_reserve(arena, rep, elem_size, rep->n + 1);
    void *e = (uint8_t *)rep->items + rep->n * elem_size;
    memset(e, 0, elem_size);
    rep->n++;
    return e;
}

static bool field_is_rep(const pb_field_t *field)
{
    return PB_HTYPE(field->type) == PB_HTYPE_REPEATED;
}

static bool decode_field(pb_istream_t *istream, const pb_field_t *field)
{
    pb_type_t lt = PB_LTYPE(field->type);
    bool ours = istream->callback == dec_read;
    struct dec_ctx *ctx = ours ? istream->state : current_ctx;
    if (!ctx)
        PB_RETURN_ERROR(istream, "tkv_pb: use tkv_pb_decode for tinykv messages");
    if (!ours && lt != PB_LTYPE_UVARINT && lt != PB_LTYPE_VARINT) {
        /* nanopb hands a non-length-delimited value of a bytes/string/
         * message field on a temporary buffer: the wire type is wrong. */
        static _Thread_local char why[96];
        snprintf(why, sizeof(why), "field %u has the wrong wire type (want length-delimited)",
                 (unsigned)field->tag);
        PB_RETURN_ERROR(istream, why);
    }

    if (lt == PB_LTYPE_BYTES || lt == PB_LTYPE_STRING) {
        /* istream is the substream of exactly this value. */
        struct tkv_slice s = {.ptr = ctx->cur, .len = istream->bytes_left};
        ctx->cur += s.len;
        istream->bytes_left = 0;
        if (field_is_rep(field)) {
            if (!dec_charge(istream, ctx, sizeof(s)))
                return false;
            struct tkv_slice *e = tkv_pb_rep_push(ctx->arena, field->pData, sizeof(s));
            *e = s;
        } else {
            if (field->data_size != sizeof(struct tkv_slice))
                PB_RETURN_ERROR(istream, "tkv_pb: bytes field is not a tkv_slice");
            *(struct tkv_slice *)field->pData = s;
        }
        return true;
    }
    if (!field_is_rep(field) || field->data_size != sizeof(struct tkv_pb_rep))
        PB_RETURN_ERROR(istream, "tkv_pb: callback field is not a TKV_PB_REP");

    if (PB_LTYPE_IS_SUBMSG(lt)) {
        size_t size = dec_elem_size(ctx, field->submsg_desc);
        if (size == 0)
            PB_RETURN_ERROR(istream, "tkv_pb: unregistered sub-message type");
        if (!dec_charge(istream, ctx, size))
            return false;
        void *e = tkv_pb_rep_push(ctx->arena, field->pData, size);
        /* e is zeroed, which is every proto3 default: skip nanopb's init. */
        return pb_decode_ex(istream, field->submsg_desc, e, PB_DECODE_NOINIT);
    }
    if (lt == PB_LTYPE_UVARINT || lt == PB_LTYPE_VARINT) {
        /* Called once per element for unpacked encoding, and repeatedly on
         * the substream for packed; an empty packed run has no element. */
        if (istream->bytes_left == 0)
            return true;
        uint64_t v;
        if (!pb_decode_varint(istream, &v))
            return false;
        if (!dec_charge(istream, ctx, sizeof(v)))
            return false;
        uint64_t *e = tkv_pb_rep_push(ctx->arena, field->pData, sizeof(v));
        *e = v;
        return true;
    }
    PB_RETURN_ERROR(istream, "tkv_pb: unsupported repeated field type");
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

static bool encode_field(pb_ostream_t *ostream, const pb_field_t *field)
{
    pb_type_t lt = PB_LTYPE(field->type);

    if ((lt == PB_LTYPE_BYTES || lt == PB_LTYPE_STRING) && !field_is_rep(field)) {
        const struct tkv_slice *s = field->pData;
        if (s->len == 0)
            return true; /* proto3: empty is absent */
        if (!s->ptr)
            PB_RETURN_ERROR(ostream, "tkv_pb: slice with NULL ptr");
        return pb_encode_tag_for_field(ostream, field) && pb_encode_string(ostream, s->ptr, s->len);
    }
    if (!field_is_rep(field) || field->data_size != sizeof(struct tkv_pb_rep))
        PB_RETURN_ERROR(ostream, "tkv_pb: callback field is not a TKV_PB_REP");
    const struct tkv_pb_rep *rep = field->pData;
    if (rep->n == 0)
        return true;
    if (!rep->items)
        PB_RETURN_ERROR(ostream, "tkv_pb: repeated field with NULL items");

    if (lt == PB_LTYPE_BYTES || lt == PB_LTYPE_STRING) {
        const struct tkv_slice *s = rep->items;
        for (size_t i = 0; i < rep->n; i++) {
            if (!s[i].ptr && s[i].len)
                PB_RETURN_ERROR(ostream, "tkv_pb: slice with NULL ptr");
            if (!pb_encode_tag_for_field(ostream, field) ||
                !pb_encode_string(ostream, s[i].ptr, s[i].len))
                return false;
        }
        return true;
    }
    if (PB_LTYPE_IS_SUBMSG(lt)) {
        const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(field->submsg_desc);
        if (!mi)
            PB_RETURN_ERROR(ostream, "tkv_pb: unregistered sub-message type");
        const uint8_t *e = rep->items;
        for (size_t i = 0; i < rep->n; i++, e += mi->size)
            if (!pb_encode_tag_for_field(ostream, field) ||
                !pb_encode_submessage(ostream, field->submsg_desc, e))
                return false;
        return true;
    }
    if (lt == PB_LTYPE_UVARINT || lt == PB_LTYPE_VARINT) {
        /* Packed, as Go and every proto3 encoder emit it. */
        const uint64_t *v = rep->items;
        size_t size = 0;
        for (size_t i = 0; i < rep->n; i++)
            size += varint_size(v[i]);
        if (!pb_encode_tag(ostream, PB_WT_STRING, field->tag) || !pb_encode_varint(ostream, size))
            return false;
        for (size_t i = 0; i < rep->n; i++)
            if (!pb_encode_varint(ostream, v[i]))
                return false;
        return true;
    }
    PB_RETURN_ERROR(ostream, "tkv_pb: unsupported repeated field type");
}

bool tkv_pb_field_cb(pb_istream_t *istream, pb_ostream_t *ostream, const pb_field_t *field)
{
    if (istream)
        return decode_field(istream, field);
    if (ostream)
        return encode_field(ostream, field);
    return true;
}

/* After a failed decode: find the first top-level field whose wire type
 * does not match its declared type (nanopb fails those without a message),
 * so the error names it instead of saying "(none)". Writes into out and
 * returns it, or NULL if nothing specific was found. */
static const char *diagnose(const pb_msgdesc_t *fields, size_t msg_size, const uint8_t *buf,
                            size_t len, char *out, size_t cap)
{
    pb_istream_t s = pb_istream_from_buffer(buf, len);
    void *scratch = tkv_xcalloc(1, msg_size ? msg_size : 1);
    const char *res = NULL;
    while (s.bytes_left > 0) {
        pb_wire_type_t wt;
        uint32_t tag;
        bool eof;
        if (!pb_decode_tag(&s, &wt, &tag, &eof) || eof)
            break;
        pb_field_iter_t it;
        if (pb_field_iter_begin(&it, fields, scratch) && pb_field_iter_find(&it, tag)) {
            pb_type_t lt = PB_LTYPE(it.type);
            int want = -1;
            if (lt == PB_LTYPE_BYTES || lt == PB_LTYPE_STRING || PB_LTYPE_IS_SUBMSG(lt))
                want = PB_WT_STRING;
            else if (PB_HTYPE(it.type) != PB_HTYPE_REPEATED) /* packed or not: both fine */
                want = lt == PB_LTYPE_FIXED32 ? PB_WT_32BIT
                       : lt == PB_LTYPE_FIXED64 ? PB_WT_64BIT
                                                : PB_WT_VARINT;
            if (want >= 0 && (int)wt != want) {
                snprintf(out, cap, "field %u has wire type %d, want %d", (unsigned)tag, (int)wt,
                         want);
                res = out;
                break;
            }
        }
        if (!pb_skip_field(&s, wt)) {
            snprintf(out, cap, "field %u is truncated", (unsigned)tag);
            res = out;
            break;
        }
    }
    tkv_free(scratch);
    return res;
}

int tkv_pb_decode_ex(const pb_msgdesc_t *fields, void *msg, const uint8_t *buf, size_t len,
                     struct tkv_arena *arena, const char **why_out)
{
    const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(fields);
    if (!mi) {
        if (why_out)
            *why_out = "not a registered tinykv message";
        return TKV_EINVAL;
    }
    memset(msg, 0, mi->size);
    struct dec_ctx ctx = {.cur = buf, .arena = arena, .elem_budget = 4 * len + 64 * 1024};
    pb_istream_t s = {.callback = dec_read, .state = &ctx, .bytes_left = len, .errmsg = NULL};
    struct dec_ctx *saved = current_ctx;
    current_ctx = &ctx;
    bool ok = pb_decode_ex(&s, fields, msg, PB_DECODE_NOINIT);
    current_ctx = saved;
    if (!ok) {
        static _Thread_local char diag[96];
        if (why_out)
            *why_out = s.errmsg ? s.errmsg
                       : diagnose(fields, mi->size, buf, len, diag, sizeof(diag))
                           ? diag
                           : "malformed protobuf (a field with the wrong wire type, or "
                             "truncated)";
        return TKV_EPROTO;
    }
    return 0;
}

int tkv_pb_decode(const pb_msgdesc_t *fields, void *msg, const uint8_t *buf, size_t len,
                  struct tkv_arena *arena)
{
    return tkv_pb_decode_ex(fields, msg, buf, len, arena, NULL);
}

int tkv_pb_decode_new(const pb_msgdesc_t *fields, const uint8_t *buf, size_t len,
                      struct tkv_arena *arena, void **msg_out)
{
    const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(fields);
    if (!mi)
        return TKV_EINVAL;
    void *msg = tkv_arena_alloc(arena, mi->size);
    int rv = tkv_pb_decode(fields, msg, buf, len, arena);
    if (rv == 0)
        *msg_out = msg;
    return rv;
}

int tkv_pb_encoded_size(const pb_msgdesc_t *fields, const void *msg, size_t *size_out)
{
    size_t size;
    if (!pb_get_encoded_size(&size, fields, msg))
        return TKV_EINVAL;
    *size_out = size;
    return 0;
}

int tkv_pb_encode(const pb_msgdesc_t *fields, const void *msg, uint8_t *buf, size_t cap,
                  size_t *len_out)
{
    pb_ostream_t s = pb_ostream_from_buffer(buf, cap);
    if (!pb_encode(&s, fields, msg)) {
        /* nanopb reports a full buffer as "stream full". */
        if (s.errmsg && strcmp(s.errmsg, "stream full") == 0)
            return TKV_ETOOBIG;
        return TKV_EINVAL;
    }
    *len_out = s.bytes_written;
    return 0;
}

int tkv_pb_encode_arena(const pb_msgdesc_t *fields, const void *msg, struct tkv_arena *arena,
                        size_t headroom, struct tkv_slice *out)
{
    size_t size, len;
    TKV_RET(tkv_pb_encoded_size(fields, msg, &size));
    uint8_t *buf = tkv_arena_alloc(arena, headroom + size);
    int rv = tkv_pb_encode(fields, msg, buf + headroom, size, &len);
    if (rv < 0)
        return rv;
    /* Sizing and encoding walk the same message: they cannot disagree. */
    tkv_assert(len == size);
    *out = TKV_SLICE(buf, headroom + len);
    return 0;
}
