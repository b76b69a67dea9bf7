/* The tinykvpb.TinyKv service of the standalone server: RawGet, RawPut,
 * RawDelete and RawScan straight on the engine (TinyKV project 1, no region
 * checks), every other method answers UNIMPLEMENTED. */
#include <stdio.h>
#include <string.h>

#include "server_private.h"
#include "kvrpcpb.pb.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/pb.h"
#include "tkv/log.h"
#include "tkv/mem.h"

/* Errors a client caused (unknown cf, key or value too large) go in the
 * response's error string, as TinyKV's raw handlers do; engine failures are
 * a gRPC INTERNAL status; a fatal engine error stops the node, since a
 * store that cannot trust its disk must not limp on (STYLE.md 4.5). */
static bool is_client_error(int rv)
{
    return rv == TKV_ECF || rv == TKV_ETOOBIG || rv == TKV_EINVAL;
}

static void check_fatal(int rv, const char *what)
{
    if (rv == TKV_EIOFATAL || rv == TKV_ECORRUPT) {
        TKV_LOG_FATAL("storage engine failed; stopping", TKV_LF_STR("op", what), TKV_LF_ERR(rv));
        TKV_PANIC("storage engine: %s: %s", what, tkv_strerror(rv));
    }
}

static void finish_engine_error(struct tkv_rpc_call *call, int rv, const char *what)
{
    char msg[160];
    check_fatal(rv, what);
    TKV_LOG_WARN("engine call failed", TKV_LF_STR("op", what), TKV_LF_ERR(rv));
    snprintf(msg, sizeof(msg), "%s: storage engine: %s", what, tkv_strerror(rv));
    tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, msg);
}

/* Every handler finishes synchronously and tkv_rpc_call_reply copies the
 * response, so one arena per core, reset per call, holds decode arrays and
 * response bytes. */
static struct tkv_arena *call_arena(struct server_core *core)
{
    tkv_arena_reset(&core->arena);
    return &core->arena;
}

/* Encode resp and reply; INTERNAL if it cannot be encoded. */
static void reply(struct tkv_rpc_call *call, struct tkv_arena *arena, const pb_msgdesc_t *fields,
                  const void *resp)
{
    struct tkv_slice out;
    if (tkv_pb_encode_arena(fields, resp, arena, 0, &out) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "cannot encode the response");
        return;
    }
    tkv_rpc_call_reply(call, out.ptr, out.len);
}

/* Decode or answer INVALID_ARGUMENT; returns false when the call is done. */
static bool decode(struct tkv_rpc_call *call, struct tkv_arena *arena, const pb_msgdesc_t *fields,
                   struct tkv_slice msg, void *req)
{
    const char *why = NULL;
    if (tkv_pb_decode_ex(fields, req, msg.ptr, msg.len, arena, &why) == 0)
        return true;
    char text[200];
    snprintf(text, sizeof(text), "cannot decode %s: %s", tkv_pb_msg_name(fields),
             why ? why : "malformed message");
    TKV_LOG_DEBUG("bad request", TKV_LF_STR("path", tkv_rpc_call_path(call)),
                  TKV_LF_STR("why", why ? why : ""));
    tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, text);
    return false;
}

/* The error string of a client error, naming the cf when it is unknown. */
static struct tkv_slice client_error(struct tkv_arena *arena, int rv, struct tkv_slice cf)
{
    if (rv == TKV_ECF)
        return tkv_pb_printf(arena, "unknown column family \"%.*s\" (want default, lock or write)",
                             (int)TKV_MIN(cf.len, 64), (const char *)cf.ptr);
    return tkv_pb_printf(arena, "%s", tkv_strerror(rv));
}

static void on_raw_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = call_arena(core);
    kvrpcpb_RawGetRequest req;
    kvrpcpb_RawGetResponse resp = {0};
    struct tkv_slice value = {0};
    enum tkv_cf cf;
    int rv;

    if (!decode(call, arena, kvrpcpb_RawGetRequest_fields, msg, &req))
        return;
    rv = tkv_engine_cf_from_name(req.cf, &cf);
    if (rv == 0)
        rv = tkv_engine_get(core->session, cf, req.key, &value);
    if (rv == 0) {
        resp.value = value; /* valid until the next engine call: encoded below */
    } else if (rv == TKV_ENOTFOUND) {
        resp.not_found = true;
    } else if (is_client_error(rv)) {
        resp.error = client_error(arena, rv, req.cf);
    } else {
        finish_engine_error(call, rv, "RawGet");
        return;
    }
    reply(call, arena, kvrpcpb_RawGetResponse_fields, &resp);
}

/* RawPut and RawDelete: group commit. A write is checked and appended to
 * the core's batch when its request arrives; the before-sleep hook
 * (server_flush_writes) applies the whole batch with ONE tkv_engine_write
 * per loop turn -- one fsync in sync mode for every write that arrived in
 * the turn -- and only then answers those calls. So a write is still
 * acknowledged only once durable, and the core no longer pays an fsync per
 * request. Client errors (unknown cf, too large) are answered at once and
 * leave the batch unchanged. */
static void queue_write(struct server_core *core, struct tkv_rpc_call *call)
{
    if (core->n_pending == core->cap_pending) {
        core->cap_pending = core->cap_pending ? 2 * core->cap_pending : 64;
        core->pending = tkv_xrealloc(core->pending, core->cap_pending * sizeof(*core->pending));
    }
    core->pending[core->n_pending++] = call;
}

static void on_write_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    (void)why;
    /* The write stays in the batch (a cancelled write may or may not be
     * applied, as with any RPC); only its reply is dropped. */
    for (size_t i = 0; i < core->n_pending; i++)
        if (core->pending[i] == call)
            core->pending[i] = NULL;
}

void server_flush_writes(void *arg)
{
    struct server_core *core = arg;
    int rv;

    if (core->n_pending == 0 && core->batch.n_ops == 0)
        return;
    rv = tkv_engine_write(core->session, &core->batch);
    tkv_engine_batch_clear(&core->batch);
    core->n_batches++;
    core->n_batched_writes += core->n_pending;
    for (size_t i = 0; i < core->n_pending; i++) {
        struct tkv_rpc_call *call = core->pending[i];
        if (!call)
            continue;
        if (rv == 0) /* Raw{Put,Delete}Response with no error: zero bytes */
            tkv_rpc_call_reply(call, "", 0);
        else
            finish_engine_error(call, rv, "RawPut/RawDelete");
    }
    core->n_pending = 0;
}

static void raw_write(struct tkv_rpc_call *call, struct tkv_slice cf_name, struct tkv_slice key,
                      const struct tkv_slice *value)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = &core->arena;
    enum tkv_cf cf;
    int rv;

    rv = tkv_engine_cf_from_name(cf_name, &cf);
    if (rv == 0)
        rv = value ? tkv_engine_batch_put(&core->batch, cf, key, *value)
                   : tkv_engine_batch_delete(&core->batch, cf, key);
    if (rv == 0) {
        queue_write(core, call);
        return;
    }
    if (!is_client_error(rv)) {
        finish_engine_error(call, rv, value ? "RawPut" : "RawDelete");
        return;
    }
    /* Same layout for both responses: error is field 2. */
    kvrpcpb_RawPutResponse resp = {.error = client_error(arena, rv, cf_name)};
    reply(call, arena, kvrpcpb_RawPutResponse_fields, &resp);
}

static void on_raw_put(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = call_arena(core);
    kvrpcpb_RawPutRequest req;

    if (decode(call, arena, kvrpcpb_RawPutRequest_fields, msg, &req))
        raw_write(call, req.cf, req.key, &req.value);
}

static void on_raw_delete(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = call_arena(core);
    kvrpcpb_RawDeleteRequest req;

    if (decode(call, arena, kvrpcpb_RawDeleteRequest_fields, msg, &req))
        raw_write(call, req.cf, req.key, NULL);
}

/* Bytes one KvPair adds to a RawScanResponse, at most (tags and lengths
 * bounded by 1 + 5 bytes each). */
static size_t pair_bound(size_t key_len, size_t value_len)
{
    return 6 + (6 + key_len) + (6 + value_len);
}

/* Collect up to limit pairs >= start from ONE snapshot, so a scan never
 * mixes states (TestIterWithRawDelete1); keys and values are copied into the
 * arena because the iterator's memory moves on. Stops with TKV_ETOOBIG
 * before the response could exceed max_bytes. */
static int scan(struct server_core *core, struct tkv_arena *arena, enum tkv_cf cf,
                struct tkv_slice start, uint32_t limit, size_t max_bytes,
                kvrpcpb_RawScanResponse *resp)
{
    struct tkv_engine_snap *snap = NULL;
    struct tkv_engine_iter *it = NULL;
    size_t bytes = 0;
    int rv;

    TKV_ERR(tkv_engine_snap_open(core->session, &snap));
    TKV_ERR(tkv_engine_iter_open(snap, cf, start, TKV_SLICE(NULL, 0), &it));
    TKV_ERR(tkv_engine_iter_seek(it, start));
    while (resp->kvs.n < limit && tkv_engine_iter_valid(it)) {
        struct tkv_slice k = tkv_engine_iter_key(it), v = tkv_engine_iter_value(it);
        bytes += pair_bound(k.len, v.len);
        if (bytes > max_bytes) {
            rv = TKV_ETOOBIG;
            goto err;
        }
        kvrpcpb_KvPair *kv = TKV_PB_PUSH(arena, &resp->kvs);
        kv->key = tkv_pb_dup(arena, k.ptr, k.len);
        kv->value = tkv_pb_dup(arena, v.ptr, v.len);
        TKV_ERR(tkv_engine_iter_next(it));
    }
    rv = 0;
err:
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    return rv;
}

static void on_raw_scan(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = call_arena(core);
    kvrpcpb_RawScanRequest req;
    kvrpcpb_RawScanResponse resp = {0};
    char ebuf[160];
    enum tkv_cf cf;
    int rv;

    if (!decode(call, arena, kvrpcpb_RawScanRequest_fields, msg, &req))
        return;
    rv = tkv_engine_cf_from_name(req.cf, &cf);
    if (rv != 0) {
        resp.error = client_error(arena, rv, req.cf);
    } else if (req.limit > 0) { /* limit 0 returns nothing (TINYKV-API.md 2.3) */
        rv = scan(core, arena, cf, req.start_key, req.limit, core->max_send_msg, &resp);
        if (rv == TKV_ETOOBIG) {
            snprintf(ebuf, sizeof(ebuf),
                     "RawScan response would exceed %llu bytes; use a smaller limit",
                     (unsigned long long)core->max_send_msg);
            tkv_rpc_call_finish(call, TKV_GRPC_RESOURCE_EXHAUSTED, ebuf);
            return;
        }
        if (rv != 0) {
            finish_engine_error(call, rv, "RawScan");
            return;
        }
    }
    reply(call, arena, kvrpcpb_RawScanResponse_fields, &resp);
}

/* Methods of tinykvpb.TinyKv that need Raft or transactions: not built yet,
 * and they say so instead of pretending. */
static void unimplemented(struct tkv_rpc_call *call)
{
    char msg[200];
    snprintf(msg, sizeof(msg),
             "%s is not built yet: this tinykv-server serves the standalone Raw API only "
             "(RawGet, RawPut, RawDelete, RawScan)",
             tkv_rpc_call_path(call));
    tkv_rpc_call_finish(call, TKV_GRPC_UNIMPLEMENTED, msg);
}

static void on_unimplemented_message(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    (void)msg;
    unimplemented(call);
}

static const struct {
    const char *path;
    enum tkv_rpc_kind kind;
    void (*on_message)(struct tkv_rpc_call *call, struct tkv_slice msg);
} method_table[SERVER_N_METHODS] = {
    {"/tinykvpb.TinyKv/RawGet", TKV_RPC_UNARY, on_raw_get},
    {"/tinykvpb.TinyKv/RawPut", TKV_RPC_UNARY, on_raw_put},
    {"/tinykvpb.TinyKv/RawDelete", TKV_RPC_UNARY, on_raw_delete},
    {"/tinykvpb.TinyKv/RawScan", TKV_RPC_UNARY, on_raw_scan},
    {"/tinykvpb.TinyKv/KvGet", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/KvScan", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/KvPrewrite", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/KvCommit", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/KvCheckTxnStatus", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/KvBatchRollback", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/KvResolveLock", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/Coprocessor", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/Raft", TKV_RPC_CLIENT_STREAM, NULL},
    {"/tinykvpb.TinyKv/Snapshot", TKV_RPC_CLIENT_STREAM, NULL},
};

void server_methods(struct server_core *core, struct tkv_rpc_method *methods, size_t *n_out)
{
    for (size_t i = 0; i < SERVER_N_METHODS; i++) {
        methods[i] = (struct tkv_rpc_method){
            .path = method_table[i].path,
            .kind = method_table[i].kind,
            .on_message =
                method_table[i].on_message ? method_table[i].on_message : on_unimplemented_message,
            /* A streaming call with no message at all ends here. */
            .on_half_close = method_table[i].kind == TKV_RPC_CLIENT_STREAM ? unimplemented : NULL,
            /* Writes wait for the turn's group commit; the rest finish
             * synchronously inside on_message. */
            .on_cancel = method_table[i].on_message == on_raw_put ||
                                 method_table[i].on_message == on_raw_delete
                             ? on_write_cancel
                             : NULL,
            .data = core,
        };
    }
    *n_out = SERVER_N_METHODS;
}
