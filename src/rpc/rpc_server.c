/* The server object (method table, limits, counters) and the call API
 * handlers use. Transport independent; the listener lives in rpc_net.c. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/metrics.h"

/* ---------------------------------------------------------- metrics
 *
 * tinykv_grpc_msg_total{type,code}: calls finished, by method and status;
 * tinykv_grpc_msg_duration_seconds{type}: from the request headers to the
 * end of the call; tinykv_grpc_connections / _accepted_total. type is the
 * method name in snake case ("/tinykvpb.TinyKv/RawGet" -> "raw_get", as
 * TiKV's kv_get), "unknown" for paths not in the table. The per-code
 * counters are registered on first use (once per server and code), so the
 * hot path only adds to handles it already holds. */

struct rpc_method_metrics {
    char type[64];
    struct tkv_histogram *duration;
    struct tkv_counter *by_code[TKV_GRPC_STATUS_COUNT];
};

static void method_type(const char *path, char *out, size_t cap)
{
    const char *name = path ? strrchr(path, '/') : NULL;
    size_t n = 0;
    name = name && name[1] ? name + 1 : "unknown";
    for (size_t i = 0; name[i] && n + 2 < cap; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!isalnum(ch)) {
            out[n++] = '_';
            continue;
        }
        if (isupper(ch) && i > 0)
            out[n++] = '_';
        out[n++] = (char)tolower(ch);
    }
    out[n] = '\0';
}

static void metrics_init(struct tkv_rpc_server *srv)
{
    struct tkv_metrics *reg = tkv_metrics_default();
    double bounds[20];
    tkv_metrics_exp_buckets(0.0001, 2, 20, bounds); /* 100 us .. 52 s */
    srv->mm = tkv_xcalloc(srv->n_methods + 1, sizeof(*srv->mm));
    for (size_t i = 0; i <= srv->n_methods; i++) {
        struct rpc_method_metrics *m = &srv->mm[i];
        method_type(i < srv->n_methods ? srv->methods[i].path : NULL, m->type, sizeof(m->type));
        m->duration = tkv_metrics_histogram(
            reg, "tinykv_grpc_msg_duration_seconds",
            "Duration of gRPC calls by method, from request headers to the final status.",
            (const char *[]){"type", m->type, NULL}, bounds, 20);
    }
    srv->m_conns = tkv_metrics_gauge(reg, "tinykv_grpc_connections",
                                     "Open client connections of the gRPC servers.", NULL);
    srv->m_accepted = tkv_metrics_counter(reg, "tinykv_grpc_connections_accepted_total",
                                          "Client connections accepted by the gRPC servers.",
                                          NULL);
}

void rpc_server_conn_metric(struct tkv_rpc_server *srv, int delta)
{
    tkv_gauge_add(srv->m_conns, delta);
    if (delta > 0)
        tkv_counter_inc(srv->m_accepted);
}

static void count_call(struct tkv_rpc_server *srv, const struct tkv_rpc_call *call, int status)
{
    size_t i = call->method ? (size_t)(call->method - srv->methods) : srv->n_methods;
    struct rpc_method_metrics *m = &srv->mm[i < srv->n_methods ? i : srv->n_methods];
    if (!m->by_code[status])
        m->by_code[status] = tkv_metrics_counter(
            tkv_metrics_default(), "tinykv_grpc_msg_total",
            "gRPC calls finished, by method and status code.",
            (const char *[]){"type", m->type, "code", tkv_grpc_status_name(status), NULL});
    tkv_counter_inc(m->by_code[status]);
    tkv_histogram_observe(m->duration, (double)(rpc_clock_ns() - call->start_ns) / 1e9);
}

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
    metrics_init(srv);
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
    tkv_free(srv->mm);
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

void rpc_server_count(struct tkv_rpc_server *srv, const struct tkv_rpc_call *call, int status)
{
    if (status < 0 || status >= TKV_GRPC_STATUS_COUNT)
        return;
    srv->calls[status]++;
    count_call(srv, call, status);
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
