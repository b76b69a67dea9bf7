/* The tinykvpb.TinyKv service of the standalone server: RawGet, RawPut,
 * RawDelete and RawScan straight on the engine (TinyKV project 1, no region
 * checks), every other method answers UNIMPLEMENTED. */
#include <stdio.h>
#include <string.h>

#include "server_codec.h"
#include "server_private.h"
#include "tkv/err.h"
#include "tkv/log.h"

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

static void reply(struct tkv_rpc_call *call, struct tkv_server_pbuf *out)
{
    tkv_rpc_call_reply(call, out->ptr, out->len);
    tkv_server_pbuf_free(out);
}

/* Decode or answer INVALID_ARGUMENT; returns false when the call is done. */
static bool decode(struct tkv_rpc_call *call, enum tkv_server_raw_kind kind, struct tkv_slice msg,
                   struct tkv_server_raw_req *req)
{
    const char *why = "";
    if (tkv_server_raw_req_decode(kind, msg, req, &why) == 0)
        return true;
    char text[200];
    snprintf(text, sizeof(text), "cannot decode %s: %s", tkv_server_raw_req_name(kind), why);
    TKV_LOG_DEBUG("bad request", TKV_LF_STR("path", tkv_rpc_call_path(call)),
                  TKV_LF_STR("why", why));
    tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, text);
    return false;
}

/* The error string of a client error: "<what>: <text>", with the cf name
 * for unknown column families. */
static struct tkv_slice client_error(char *buf, size_t cap, int rv,
                                     const struct tkv_server_raw_req *req)
{
    int n;
    if (rv == TKV_ECF)
        n = snprintf(buf, cap, "unknown column family \"%.*s\" (want default, lock or write)",
                     (int)TKV_MIN(req->cf.len, 64), (const char *)req->cf.ptr);
    else
        n = snprintf(buf, cap, "%s", tkv_strerror(rv));
    return TKV_SLICE(buf, n < 0 ? 0 : TKV_MIN((size_t)n, cap - 1));
}

static void on_raw_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_server_raw_req req;
    struct tkv_server_pbuf out = {0};
    struct tkv_slice value = {0};
    char ebuf[160];
    enum tkv_cf cf;
    int rv;

    if (!decode(call, TKV_SERVER_RAW_GET, msg, &req))
        return;
    rv = tkv_engine_cf_from_name(req.cf, &cf);
    if (rv == 0)
        rv = tkv_engine_get(core->session, cf, req.key, &value);
    if (rv == 0 || rv == TKV_ENOTFOUND)
        tkv_server_raw_get_resp_encode(&out, TKV_SLICE(NULL, 0), value, rv == TKV_ENOTFOUND);
    else if (is_client_error(rv))
        tkv_server_raw_get_resp_encode(&out, client_error(ebuf, sizeof(ebuf), rv, &req),
                                       TKV_SLICE(NULL, 0), false);
    else {
        finish_engine_error(call, rv, "RawGet");
        return;
    }
    reply(call, &out);
}

/* Shared by RawPut and RawDelete: in sync mode tkv_engine_write returns only
 * once the write is durable, so the reply is sent after that. */
static void raw_write(struct tkv_rpc_call *call, struct tkv_slice msg,
                      enum tkv_server_raw_kind kind)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_server_raw_req req;
    struct tkv_server_pbuf out = {0};
    char ebuf[160];
    enum tkv_cf cf;
    int rv;

    if (!decode(call, kind, msg, &req))
        return;
    rv = tkv_engine_cf_from_name(req.cf, &cf);
    if (rv == 0) {
        if (kind == TKV_SERVER_RAW_PUT)
            rv = tkv_engine_put(core->session, cf, req.key, req.value);
        else
            rv = tkv_engine_delete(core->session, cf, req.key);
    }
    if (rv == 0)
        tkv_server_raw_write_resp_encode(&out, TKV_SLICE(NULL, 0));
    else if (is_client_error(rv))
        tkv_server_raw_write_resp_encode(&out, client_error(ebuf, sizeof(ebuf), rv, &req));
    else {
        finish_engine_error(call, rv, kind == TKV_SERVER_RAW_PUT ? "RawPut" : "RawDelete");
        return;
    }
    reply(call, &out);
}

static void on_raw_put(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    raw_write(call, msg, TKV_SERVER_RAW_PUT);
}

static void on_raw_delete(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    raw_write(call, msg, TKV_SERVER_RAW_DELETE);
}

/* Fill out with up to limit pairs >= start from one snapshot, so a scan
 * never mixes states (TestIterWithRawDelete1). Stops with TKV_ETOOBIG
 * before the response would exceed max_bytes. */
static int scan(struct server_core *core, enum tkv_cf cf, struct tkv_slice start, uint32_t limit,
                size_t max_bytes, struct tkv_server_pbuf *out)
{
    struct tkv_engine_snap *snap = NULL;
    struct tkv_engine_iter *it = NULL;
    uint32_t n = 0;
    int rv;

    TKV_ERR(tkv_engine_snap_open(core->session, &snap));
    TKV_ERR(tkv_engine_iter_open(snap, cf, start, TKV_SLICE(NULL, 0), &it));
    TKV_ERR(tkv_engine_iter_seek(it, start));
    while (n < limit && tkv_engine_iter_valid(it)) {
        struct tkv_slice k = tkv_engine_iter_key(it), v = tkv_engine_iter_value(it);
        if (out->len + tkv_server_raw_scan_pair_size(k.len, v.len) > max_bytes) {
            rv = TKV_ETOOBIG;
            goto err;
        }
        tkv_server_raw_scan_resp_add(out, k, v);
        n++;
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
    struct tkv_server_raw_req req;
    struct tkv_server_pbuf out = {0};
    char ebuf[160];
    enum tkv_cf cf;
    int rv;

    if (!decode(call, TKV_SERVER_RAW_SCAN, msg, &req))
        return;
    rv = tkv_engine_cf_from_name(req.cf, &cf);
    if (rv != 0) {
        tkv_server_raw_scan_resp_error(&out, client_error(ebuf, sizeof(ebuf), rv, &req));
        {
            reply(call, &out);
            return;
        }
    }
    if (req.limit == 0) /* limit 0 returns nothing (TINYKV-API.md 2.3) */
    {
        reply(call, &out);
        return;
    }
    rv = scan(core, cf, req.key, req.limit, core->max_send_msg, &out);
    if (rv == TKV_ETOOBIG) {
        tkv_server_pbuf_free(&out);
        snprintf(ebuf, sizeof(ebuf),
                 "RawScan response would exceed %llu bytes; use a smaller limit",
                 (unsigned long long)core->max_send_msg);
        {
            tkv_rpc_call_finish(call, TKV_GRPC_RESOURCE_EXHAUSTED, ebuf);
            return;
        }
    }
    if (rv != 0) {
        tkv_server_pbuf_free(&out);
        {
            finish_engine_error(call, rv, "RawScan");
            return;
        }
    }
    reply(call, &out);
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
            .on_cancel = NULL, /* every handler finishes synchronously */
            .data = core,
        };
    }
    *n_out = SERVER_N_METHODS;
}
