/* Fuzz target (a): protobuf decode of every request the server and the
 * scheduler accept (and, for other selector values, of any registered
 * message) through tkv_pb_decode with an arena, then re-encode: whatever
 * decodes must encode, and decode(encode(m)) must encode to the same bytes. */
#include <pb_common.h>
#include <stdlib.h>
#include <string.h>

#include "coprocessor.pb.h"
#include "fuzz_harness.h"
#include "kvrpcpb.pb.h"
#include "raft_serverpb.pb.h"
#include "schedulerpb.pb.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/pb.h"

/* Input layout: byte 0 picks the message type, the rest is its encoding. */
static const pb_msgdesc_t *const requests[] = {
    kvrpcpb_GetRequest_fields,
    kvrpcpb_ScanRequest_fields,
    kvrpcpb_PrewriteRequest_fields,
    kvrpcpb_CommitRequest_fields,
    kvrpcpb_CheckTxnStatusRequest_fields,
    kvrpcpb_BatchRollbackRequest_fields,
    kvrpcpb_ResolveLockRequest_fields,
    kvrpcpb_RawGetRequest_fields,
    kvrpcpb_RawPutRequest_fields,
    kvrpcpb_RawDeleteRequest_fields,
    kvrpcpb_RawScanRequest_fields,
    raft_serverpb_RaftMessage_fields,
    raft_serverpb_SnapshotChunk_fields,
    coprocessor_Request_fields,
    schedulerpb_GetMembersRequest_fields,
    schedulerpb_TsoRequest_fields,
    schedulerpb_BootstrapRequest_fields,
    schedulerpb_IsBootstrappedRequest_fields,
    schedulerpb_AllocIDRequest_fields,
    schedulerpb_GetStoreRequest_fields,
    schedulerpb_PutStoreRequest_fields,
    schedulerpb_GetAllStoresRequest_fields,
    schedulerpb_StoreHeartbeatRequest_fields,
    schedulerpb_RegionHeartbeatRequest_fields,
    schedulerpb_GetRegionRequest_fields,
    schedulerpb_GetRegionByIDRequest_fields,
    schedulerpb_ScanRegionsRequest_fields,
    schedulerpb_AskSplitRequest_fields,
    schedulerpb_ReportSplitRequest_fields,
    schedulerpb_GetClusterConfigRequest_fields,
    schedulerpb_PutClusterConfigRequest_fields,
    schedulerpb_ScatterRegionRequest_fields,
    schedulerpb_GetGCSafePointRequest_fields,
    schedulerpb_UpdateGCSafePointRequest_fields,
    schedulerpb_GetOperatorRequest_fields,
};
#define N_REQUESTS (sizeof(requests) / sizeof(requests[0]))

static const pb_msgdesc_t *pick(uint8_t sel)
{
    if (sel < N_REQUESTS)
        return requests[sel];
    return tkv_pb_registry[(sel - N_REQUESTS) % tkv_pb_registry_len].desc;
}

/* Encode into a fresh exact-size heap buffer (so ASan sees any overrun). */
static int encode(const pb_msgdesc_t *d, const void *msg, uint8_t **out, size_t *len)
{
    size_t sz;
    int rv = tkv_pb_encoded_size(d, msg, &sz);
    if (rv != 0)
        return fuzz_fail("%s: encoded_size of a decoded message: %d", tkv_pb_msg_name(d), rv);
    *out = malloc(sz ? sz : 1);
    if (!*out)
        abort();
    rv = tkv_pb_encode(d, msg, *out, sz, len);
    if (rv != 0 || *len != sz) {
        free(*out);
        return fuzz_fail("%s: encode of a decoded message: %d (%zu of %zu bytes)",
                         tkv_pb_msg_name(d), rv, *len, sz);
    }
    /* One byte short must be refused, not overrun. */
    if (sz > 0) {
        size_t n2;
        uint8_t *small = malloc(sz - 1 ? sz - 1 : 1);
        if (!small)
            abort();
        rv = tkv_pb_encode(d, msg, small, sz - 1, &n2);
        free(small);
        if (rv != TKV_ETOOBIG) {
            free(*out);
            return fuzz_fail("%s: encode into %zu bytes (needs %zu) returned %d",
                             tkv_pb_msg_name(d), sz - 1, sz, rv);
        }
    }
    return 0;
}

int fuzz_pb_one(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const pb_msgdesc_t *d = pick(data[0]);
    const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(d);
    if (!mi)
        return fuzz_fail("selector %u: descriptor not in the registry", data[0]);
    /* Exact-size copy of the input: the decoded message borrows it. */
    size_t n = size - 1;
    uint8_t *in = malloc(n ? n : 1);
    if (!in)
        abort();
    memcpy(in, data + 1, n);

    struct tkv_arena arena = {0};
    void *m1 = malloc(mi->size), *m2 = malloc(mi->size);
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    int ret = 0;
    if (!m1 || !m2)
        abort();
    int rv = tkv_pb_decode(d, m1, in, n, &arena);
    if (rv != 0 && rv != TKV_EPROTO) {
        ret = fuzz_fail("%s: decode returned %d (want 0 or TKV_EPROTO)", mi->name, rv);
        goto out;
    }
    if (rv != 0)
        goto out;
    if ((ret = encode(d, m1, &b1, &l1)) != 0)
        goto out;
    rv = tkv_pb_decode(d, m2, b1, l1, &arena);
    if (rv != 0) {
        ret = fuzz_fail("%s: our own encoding does not decode: %d", mi->name, rv);
        goto out;
    }
    if ((ret = encode(d, m2, &b2, &l2)) != 0)
        goto out;
    if (l1 != l2 || memcmp(b1, b2, l1) != 0)
        ret = fuzz_fail("%s: encode(decode(encode(x))) differs from encode(x) (%zu vs %zu bytes)",
                        mi->name, l2, l1);
out:
    free(b1);
    free(b2);
    free(m1);
    free(m2);
    tkv_arena_close(&arena);
    free(in);
    return ret;
}

/* ---- seeds: a plausible encoding of every request type, built from the
 * descriptors (every field present, sub-messages nested, repeated fields
 * with a few elements). */

struct wbuf {
    uint8_t p[4096];
    size_t n;
    bool full;
};

static void put(struct wbuf *w, const void *p, size_t n)
{
    if (w->full || w->n + n > sizeof(w->p)) {
        w->full = true;
        return;
    }
    memcpy(w->p + w->n, p, n);
    w->n += n;
}

static void put_varint(struct wbuf *w, uint64_t v)
{
    uint8_t b[10];
    size_t k = 0;
    do {
        b[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            b[k] |= 0x80;
        k++;
    } while (v);
    put(w, b, k);
}

static void gen_msg(struct wbuf *w, const pb_msgdesc_t *d, uint64_t *r, int depth)
{
    pb_field_iter_t it;
    const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(d);
    void *dummy = mi ? calloc(1, mi->size) : NULL;
    if (!dummy || !pb_field_iter_begin(&it, d, dummy)) {
        free(dummy);
        return;
    }
    do {
        uint8_t t = PB_LTYPE(it.type);
        int reps = PB_HTYPE(it.type) == PB_HTYPE_REPEATED ? 1 + (int)(fuzz_rand(r) % 3) : 1;
        for (int k = 0; k < reps; k++) {
            uint64_t x = fuzz_rand(r);
            switch (t) {
            case PB_LTYPE_BOOL:
            case PB_LTYPE_VARINT:
            case PB_LTYPE_UVARINT:
            case PB_LTYPE_SVARINT:
                put_varint(w, (uint64_t)it.tag << 3);
                put_varint(w, x % 3 == 0 ? x >> (x % 64) : x % 300);
                break;
            case PB_LTYPE_FIXED32:
                put_varint(w, (uint64_t)it.tag << 3 | 5);
                put(w, &x, 4);
                break;
            case PB_LTYPE_FIXED64:
                put_varint(w, (uint64_t)it.tag << 3 | 1);
                put(w, &x, 8);
                break;
            case PB_LTYPE_BYTES:
            case PB_LTYPE_STRING:
            case PB_LTYPE_FIXED_LENGTH_BYTES: {
                static const char txt[] = "default lock write key-1 value";
                size_t len = x % 12;
                put_varint(w, (uint64_t)it.tag << 3 | 2);
                put_varint(w, len);
                put(w, txt + (x >> 8) % (sizeof(txt) - 12), len);
                break;
            }
            case PB_LTYPE_SUBMESSAGE:
            case PB_LTYPE_SUBMSG_W_CB: {
                if (depth > 4 || !it.submsg_desc)
                    break;
                struct wbuf *sub = malloc(sizeof(*sub));
                if (!sub)
                    abort();
                sub->n = 0;
                sub->full = false;
                gen_msg(sub, it.submsg_desc, r, depth + 1);
                put_varint(w, (uint64_t)it.tag << 3 | 2);
                put_varint(w, sub->n);
                put(w, sub->p, sub->n);
                free(sub);
                break;
            }
            default:
                break;
            }
        }
    } while (pb_field_iter_next(&it));
    free(dummy);
}

void fuzz_pb_seeds(struct fuzz_seeds *s, uint64_t rng)
{
    struct wbuf *w = malloc(sizeof(*w));
    if (!w)
        abort();
    for (size_t i = 0; i < N_REQUESTS; i++) {
        for (int v = 0; v < 2; v++) {
            w->n = 0;
            w->full = false;
            uint8_t sel = (uint8_t)i;
            put(w, &sel, 1);
            gen_msg(w, requests[i], &rng, 0);
            if (!w->full)
                fuzz_seeds_add(s, w->p, w->n);
        }
    }
    free(w);
}
