/* The server object (method table, limits, counters) and the call API
 * handlers use. Transport independent; the listener lives in rpc_net.c. */
#include <string.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/mem.h"

int tkv_rpc_server_new(const struct tkv_rpc_server_config *cfg,
                       const struct tkv_rpc_method *methods, size_t n_methods,
                       struct tkv_rpc_server **out)
{
    static const struct tkv_rpc_server_config defaults;
    if (!cfg)
        cfg = &defaults;
    for (size_t i = 0; i < n_methods; i++) {
        if (!methods[i].path || methods[i].path[0] != '/' || !methods[i].on_message)
            return TKV_EINVAL;
        /* a streaming request must be finishable when the client half-closes */
        if ((methods[i].kind == TKV_RPC_CLIENT_STREAM || methods[i].kind == TKV_RPC_BIDI) &&
            !methods[i].on_half_close)
            return TKV_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(methods[i].path, methods[j].path) == 0)
                return TKV_EINVAL;
    }
    struct tkv_rpc_server *srv = tkv_xcalloc(1, sizeof(*srv));
    srv->cfg = *cfg;
    srv->lim.max_recv_msg = cfg->max_recv_msg ? cfg->max_recv_msg : TKV_RPC_DEFAULT_MAX_MSG;
    srv->lim.max_send_msg = cfg->max_send_msg ? cfg->max_send_msg : TKV_RPC_DEFAULT_MAX_MSG;
    srv->lim.max_streams = cfg->max_streams ? cfg->max_streams : TKV_RPC_DEFAULT_MAX_STREAMS;
    srv->lim.window = cfg->window ? cfg->window : TKV_RPC_DEFAULT_WINDOW;
    if (srv->lim.window > 0x7fffffffu)
        srv->lim.window = 0x7fffffffu;
    srv->lim.conn_quota = cfg->conn_mem_quota ? cfg->conn_mem_quota : 64u << 20;
    if (srv->lim.conn_quota < srv->lim.max_recv_msg + srv->lim.max_send_msg + 1024)
        srv->lim.conn_quota = srv->lim.max_recv_msg + srv->lim.max_send_msg + 1024;
    srv->mem_quota = cfg->mem_quota ? cfg->mem_quota : 256u << 20;
    if (srv->mem_quota < srv->lim.conn_quota)
        srv->mem_quota = srv->lim.conn_quota;
    srv->lim.max_buffered = cfg->max_conn_buffered ? cfg->max_conn_buffered : srv->lim.conn_quota;
    if (srv->lim.max_buffered < srv->lim.max_recv_msg)
        srv->lim.max_buffered = srv->lim.max_recv_msg;
    if (!srv->cfg.handshake_timeout_ns)
        srv->cfg.handshake_timeout_ns = 10ull * 1000000000ull;
    if (!srv->cfg.idle_timeout_ns)
        srv->cfg.idle_timeout_ns = TKV_RPC_DEFAULT_IDLE_NS;
    else if (srv->cfg.idle_timeout_ns == UINT64_MAX)
        srv->cfg.idle_timeout_ns = 0; /* never (internally 0) */
    if (!srv->cfg.out_high_water)
        srv->cfg.out_high_water = 4u << 20;
    srv->lim.turn_max_requests = cfg->turn_max_requests ? cfg->turn_max_requests : 64;
    srv->lim.turn_max_bytes = cfg->turn_max_bytes ? cfg->turn_max_bytes : 4u << 20;
    srv->lim.turn_max_big_bytes = cfg->turn_max_big_bytes ? cfg->turn_max_big_bytes : 8u << 20;
    srv->methods = n_methods ? tkv_xmemdup(methods, n_methods * sizeof(*methods)) : NULL;
    srv->n_methods = n_methods;
    srv->listen_fd = -1;
    srv->spare_fd = -1;
    *out = srv;
    return 0;
}

void tkv_rpc_server_free(struct tkv_rpc_server *srv)
{
    if (!srv)
        return;
    if (srv->net_drop)
        srv->net_drop(srv);
    tkv_free(srv->methods);
    tkv_free(srv);
}

const struct tkv_rpc_method *rpc_server_lookup(const struct tkv_rpc_server *srv, const char *path)
{
    /* Tables are small (TinyKv has 14 methods): a scan beats hashing. */
    for (size_t i = 0; i < srv->n_methods; i++)
        if (strcmp(srv->methods[i].path, path) == 0)
            return &srv->methods[i];
    return NULL;
}

const struct rpc_limits *rpc_server_limits(const struct tkv_rpc_server *srv)
{
    return &srv->lim;
}

void rpc_server_count(struct tkv_rpc_server *srv, int status)
{
    if (status >= 0 && status < TKV_GRPC_STATUS_COUNT)
        srv->calls[status]++;
}

uint64_t tkv_rpc_server_calls(const struct tkv_rpc_server *srv, enum tkv_grpc_status status)
{
    if ((int)status < 0 || (int)status >= TKV_GRPC_STATUS_COUNT)
        return 0;
    return srv->calls[status];
}

uint32_t tkv_rpc_server_connections(const struct tkv_rpc_server *srv)
{
    return srv->n_conns;
}

/* ------------------------------------------------------------- calls */

int tkv_rpc_call_send(struct tkv_rpc_call *call, const void *msg, size_t len)
{
    struct rpc_conn *c = call->conn;
    tkv_assert(!call->finished || !call->handler_owns);
    if (call->finished || c->aborted)
        return TKV_ECLOSED;
    if (len > c->lim.max_send_msg || len > 0xffffffffu)
        return TKV_ETOOBIG;
    const char *why;
    if (!rpc_conn_mem_ok(c, len + 5, &why))
        return TKV_ENOMEM;
    enum tkv_rpc_kind k = call->method->kind;
    if ((k == TKV_RPC_UNARY || k == TKV_RPC_CLIENT_STREAM) && call->n_sent > 0)
        return TKV_EINVAL;
    call->n_sent++;
    rpc_call_queue_msg(call, msg, len);
    if (!call->submitted) {
        nghttp2_nv nv[2] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
             NGHTTP2_NV_FLAG_NONE},
        };
        nghttp2_data_provider prd = {.source.ptr = call, .read_callback = rpc_call_read};
        call->submitted = true;
        nghttp2_submit_response(c->ng, call->id, nv, 2, &prd);
    }
    rpc_call_notify(call);
    return 0;
}

void tkv_rpc_call_finish(struct tkv_rpc_call *call, enum tkv_grpc_status status, const char *msg)
{
    rpc_server_finish(call, status, msg);
}

void tkv_rpc_call_reply(struct tkv_rpc_call *call, const void *msg, size_t len)
{
    int rv = tkv_rpc_call_send(call, msg, len);
    const char *why = NULL;
    if (rv == 0)
        rpc_server_finish(call, TKV_GRPC_OK, NULL);
    else if (rv == TKV_ENOMEM && !rpc_conn_mem_ok(call->conn, len + 5, &why))
        rpc_server_finish(call, TKV_GRPC_RESOURCE_EXHAUSTED, why);
    else
        rpc_server_finish(call,
                          rv == TKV_ETOOBIG || rv == TKV_ENOMEM ? TKV_GRPC_RESOURCE_EXHAUSTED
                                                                : TKV_GRPC_INTERNAL,
                          tkv_strerror(rv));
}

struct tkv_arena *tkv_rpc_call_arena(struct tkv_rpc_call *call)
{
    return &call->arena;
}

void tkv_rpc_call_set_data(struct tkv_rpc_call *call, void *data)
{
    call->data = data;
}

void *tkv_rpc_call_data(const struct tkv_rpc_call *call)
{
    return call->data;
}

void *tkv_rpc_call_method_data(const struct tkv_rpc_call *call)
{
    return call->method ? call->method->data : NULL;
}

const char *tkv_rpc_call_path(const struct tkv_rpc_call *call)
{
    return call->path;
}

uint64_t tkv_rpc_call_deadline_ns(const struct tkv_rpc_call *call)
{
    return call->has_timeout ? call->deadline : 0;
}

size_t tkv_rpc_call_conn_mem(const struct tkv_rpc_call *call)
{
    return call->conn->buffered + call->conn->queued;
}

size_t tkv_rpc_call_conn_mem_quota(const struct tkv_rpc_call *call)
{
    return call->conn->lim.conn_quota;
}

size_t tkv_rpc_call_out_bytes(const struct tkv_rpc_call *call)
{
    return rpc_buf_avail(&call->q);
}
