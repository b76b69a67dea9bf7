/* The Raw API over routed requests: get, put, delete, and a scan that
 * continues region after region until it has `limit` pairs or reaches the
 * end of the key space. Raw keys are routed as they are (region boundaries
 * compare raw bytes, TINYKV-API.md 2.4). */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "tkv/err.h"
#include "tkv/mem.h"

enum raw_kind { RAW_GET, RAW_PUT, RAW_DELETE };

struct raw_op {
    enum raw_kind kind;
    tinykv_get_cb get_cb;
    tinykv_done_cb done_cb;
    void *user;
};

static struct tkv_slice arena_copy(struct tkv_arena *a, struct tkv_slice s)
{
    return TKV_SLICE(tkv_arena_memdup(a, s.ptr, s.len), s.len);
}

static bool cf_valid(const char *cf)
{
    return cf == NULL || *cf == '\0' || strlen(cf) < 64;
}

static void raw_done(struct client_req *q, int rv, void *resp)
{
    struct raw_op *op = q->user;
    struct tinykv *kv = q->kv;
    struct tkv_slice value = {0};
    if (rv == 0) {
        /* The three responses share region_error #1 and error #2. */
        struct tkv_slice err = op->kind == RAW_GET   ? ((kvrpcpb_RawGetResponse *)resp)->error
                               : op->kind == RAW_PUT ? ((kvrpcpb_RawPutResponse *)resp)->error
                                                     : ((kvrpcpb_RawDeleteResponse *)resp)->error;
        if (err.len) {
            client_set_errmsg(kv, "%.*s", (int)err.len, (const char *)err.ptr);
            rv = TKV_EENGINE;
        } else if (op->kind == RAW_GET) {
            kvrpcpb_RawGetResponse *g = resp;
            if (g->not_found)
                rv = TKV_ENOTFOUND;
            else
                value = g->value;
        }
    }
    if (op->kind == RAW_GET)
        op->get_cb(op->user, rv, rv == 0 ? value : (struct tkv_slice){0});
    else
        op->done_cb(op->user, rv);
}

static int raw_start(struct tinykv *kv, enum raw_kind kind, const char *cf, struct tkv_slice key,
                     struct tkv_slice value, tinykv_get_cb get_cb, tinykv_done_cb done_cb,
                     void *user)
{
    if (kv->closing)
        return TKV_ESHUTDOWN;
    if (!cf_valid(cf) || (key.len && !key.ptr) || (value.len && !value.ptr))
        return TKV_EINVAL;
    struct client_req *q;
    if (kind == RAW_GET)
        q = client_req_new(kv, "/tinykvpb.TinyKv/RawGet", kvrpcpb_RawGetRequest_fields,
                           sizeof(kvrpcpb_RawGetRequest), kvrpcpb_RawGetResponse_fields,
                           sizeof(kvrpcpb_RawGetResponse), 0, raw_done, NULL);
    else if (kind == RAW_PUT)
        q = client_req_new(kv, "/tinykvpb.TinyKv/RawPut", kvrpcpb_RawPutRequest_fields,
                           sizeof(kvrpcpb_RawPutRequest), kvrpcpb_RawPutResponse_fields,
                           sizeof(kvrpcpb_RawPutResponse), 0, raw_done, NULL);
    else
        q = client_req_new(kv, "/tinykvpb.TinyKv/RawDelete", kvrpcpb_RawDeleteRequest_fields,
                           sizeof(kvrpcpb_RawDeleteRequest), kvrpcpb_RawDeleteResponse_fields,
                           sizeof(kvrpcpb_RawDeleteResponse), 0, raw_done, NULL);
    /* A put or delete applied twice can land after another client's write
     * of the key: never resend one the server may have applied. */
    q->write_once = kind != RAW_GET;
    struct raw_op *op = tkv_arena_calloc(&q->arena, 1, sizeof *op);
    op->kind = kind;
    op->get_cb = get_cb;
    op->done_cb = done_cb;
    op->user = user;
    q->user = op;
    struct tkv_slice k = arena_copy(&q->arena, key);
    struct tkv_slice c = arena_copy(&q->arena, TKV_SLICE(cf ? cf : "", cf ? strlen(cf) : 0));
    q->route_key = k;
    if (kind == RAW_GET) {
        kvrpcpb_RawGetRequest *r = q->req;
        r->key = k;
        r->cf = c;
    } else if (kind == RAW_PUT) {
        kvrpcpb_RawPutRequest *r = q->req;
        r->key = k;
        r->value = arena_copy(&q->arena, value);
        r->cf = c;
    } else {
        kvrpcpb_RawDeleteRequest *r = q->req;
        r->key = k;
        r->cf = c;
    }
    client_req_start(q);
    return 0;
}

int tinykv_raw_get(struct tinykv *kv, const char *cf, struct tkv_slice key, tinykv_get_cb cb,
                   void *user)
{
    return raw_start(kv, RAW_GET, cf, key, (struct tkv_slice){0}, cb, NULL, user);
}

int tinykv_raw_put(struct tinykv *kv, const char *cf, struct tkv_slice key, struct tkv_slice value,
                   tinykv_done_cb cb, void *user)
{
    return raw_start(kv, RAW_PUT, cf, key, value, NULL, cb, user);
}

int tinykv_raw_delete(struct tinykv *kv, const char *cf, struct tkv_slice key, tinykv_done_cb cb,
                      void *user)
{
    return raw_start(kv, RAW_DELETE, cf, key, (struct tkv_slice){0}, NULL, cb, user);
}

/* ---- scan ---- */

struct raw_scan {
    struct tinykv *kv;
    struct tkv_arena arena; /* the pairs collected so far, cf, next start */
    char *cf;
    struct tkv_slice next; /* where the next region's scan starts */
    uint32_t limit;
    struct tinykv_kv *kvs;
    size_t n, cap;
    uint64_t deadline_ns;
    tinykv_scan_cb cb;
    void *user;
};

static void scan_step(struct raw_scan *s);

static void scan_finish(struct raw_scan *s, int rv)
{
    s->cb(s->user, rv, rv == 0 ? s->kvs : NULL, rv == 0 ? s->n : 0);
    tkv_arena_close(&s->arena);
    free(s->kvs);
    free(s);
}

static void scan_done(struct client_req *q, int rv, void *resp)
{
    struct raw_scan *s = q->user;
    if (rv) {
        scan_finish(s, rv);
        return;
    }
    kvrpcpb_RawScanResponse *r = resp;
    if (r->error.len) {
        client_set_errmsg(s->kv, "%.*s", (int)r->error.len, (const char *)r->error.ptr);
        scan_finish(s, TKV_EENGINE);
        return;
    }
    uint32_t asked = s->limit - (uint32_t)s->n;
    size_t take = r->kvs.n < asked ? r->kvs.n : asked;
    /* Keep only the region's own keys (a store that answered past its
     * region's end would otherwise duplicate the next region's pairs). */
    bool clipped = false;
    for (size_t i = 0; i < take && q->region_end_len; i++) {
        struct tkv_slice k = r->kvs.items[i].key;
        size_t l = k.len < q->region_end_len ? k.len : q->region_end_len;
        int d = l ? memcmp(k.ptr, q->region_end, l) : 0;
        if (d > 0 || (d == 0 && k.len >= q->region_end_len)) {
            take = i;
            clipped = true;
        }
    }
    if (s->n + take > s->cap) {
        s->cap = (s->n + take) * 2;
        s->kvs = tkv_xrealloc(s->kvs, s->cap * sizeof *s->kvs);
    }
    for (size_t i = 0; i < take; i++) {
        s->kvs[s->n].key = arena_copy(&s->arena, r->kvs.items[i].key);
        s->kvs[s->n].value = arena_copy(&s->arena, r->kvs.items[i].value);
        s->n++;
    }
    /* A region answers only its own keys: fewer than asked means its end
     * was reached; go on from there unless it was the last region. */
    if (s->n >= s->limit || (take == asked && !clipped) || q->region_id == 0 ||
        q->region_end_len == 0) {
        scan_finish(s, 0);
        return;
    }
    s->next = arena_copy(&s->arena, TKV_SLICE(q->region_end, q->region_end_len));
    scan_step(s);
}

static void scan_step(struct raw_scan *s)
{
    struct tinykv *kv = s->kv;
    struct client_req *q =
        client_req_new(kv, "/tinykvpb.TinyKv/RawScan", kvrpcpb_RawScanRequest_fields,
                       sizeof(kvrpcpb_RawScanRequest), kvrpcpb_RawScanResponse_fields,
                       sizeof(kvrpcpb_RawScanResponse), s->deadline_ns, scan_done, s);
    kvrpcpb_RawScanRequest *r = q->req;
    r->start_key = arena_copy(&q->arena, s->next);
    r->limit = s->limit - (uint32_t)s->n;
    r->cf = TKV_SLICE(s->cf, strlen(s->cf));
    q->route_key = r->start_key;
    client_req_start(q);
}

int tinykv_raw_scan(struct tinykv *kv, const char *cf, struct tkv_slice start, uint32_t limit,
                    tinykv_scan_cb cb, void *user)
{
    if (kv->closing)
        return TKV_ESHUTDOWN;
    if (!cf_valid(cf) || (start.len && !start.ptr))
        return TKV_EINVAL;
    struct raw_scan *s = tkv_xcalloc(1, sizeof *s);
    s->kv = kv;
    tkv_arena_init(&s->arena, 0);
    s->cf = tkv_arena_strdup(&s->arena, cf ? cf : "");
    s->next = arena_copy(&s->arena, start);
    s->limit = limit;
    s->deadline_ns = client_deadline(kv);
    s->cb = cb;
    s->user = user;
    scan_step(s);
    return 0;
}
