/* The client API: one HTTP/2 connection carrying many gRPC calls (unary and
 * streaming). Transport independent; connecting lives in rpc_net.c. */
#include <string.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/mem.h"

struct tkv_rpc_client *rpc_client_new(const struct tkv_rpc_client_config *cfg,
                                      const char *authority, const struct rpc_transport *tp,
                                      void *tp_arg)
{
    static const struct tkv_rpc_client_config defaults;
    if (!cfg)
        cfg = &defaults;
    struct tkv_rpc_client *cl = tkv_xcalloc(1, sizeof(*cl));
    cl->lim.max_recv_msg = cfg->max_recv_msg ? cfg->max_recv_msg : TKV_RPC_DEFAULT_MAX_MSG;
    cl->lim.max_send_msg = 0xffffffffu;
    cl->lim.window = cfg->window ? cfg->window : TKV_RPC_DEFAULT_WINDOW;
    if (cl->lim.window > 0x7fffffffu)
        cl->lim.window = 0x7fffffffu;
    cl->lim.max_streams = TKV_RPC_DEFAULT_MAX_STREAMS;
    cl->lim.max_buffered = 4 * cl->lim.max_recv_msg;
    cl->conn = rpc_conn_new_client_engine(&cl->lim, authority, tp, tp_arg);
    cl->conn->client = cl;
    cl->usable = true;
    return cl;
}

struct rpc_conn *rpc_client_conn(struct tkv_rpc_client *cl)
{
    return cl->conn;
}

void rpc_client_destroy(struct tkv_rpc_client *cl)
{
    rpc_conn_free(cl->conn);
    tkv_free(cl);
}

void rpc_client_set_unusable(struct tkv_rpc_client *cl)
{
    cl->usable = false;
}

bool tkv_rpc_client_usable(const struct tkv_rpc_client *cl)
{
    const struct rpc_conn *c = cl->conn;
    return cl->usable && !cl->closing && !c->goaway && !c->aborted && !c->failed;
}

void tkv_rpc_client_close(struct tkv_rpc_client *cl)
{
    struct rpc_conn *c = cl->conn;
    cl->closing = true;
    cl->usable = false;
    rpc_conn_abort(c, TKV_GRPC_CANCELLED, "client closed");
    c->tp->close(c->tp_arg);
}

static bool can_start(const struct tkv_rpc_client *cl)
{
    const struct rpc_conn *c = cl->conn;
    return !cl->closing && !c->aborted && !c->failed && !c->goaway;
}

int tkv_rpc_client_unary(struct tkv_rpc_client *cl, const char *path, const void *req, size_t len,
                         uint64_t timeout_ns, tkv_rpc_unary_cb cb, void *user)
{
    return tkv_rpc_client_unary_reach(cl, path, req, len, timeout_ns, cb, user, NULL);
}

int tkv_rpc_client_unary_reach(struct tkv_rpc_client *cl, const char *path, const void *req,
                               size_t len, uint64_t timeout_ns, tkv_rpc_unary_cb cb, void *user,
                               enum tkv_rpc_reach *reach)
{
    if (!can_start(cl))
        return TKV_ECLOSED;
    if (len > cl->lim.max_send_msg)
        return TKV_ETOOBIG;
    struct tkv_rpc_call *call = rpc_call_new(cl->conn);
    call->unary = true;
    call->ucb = cb;
    call->user = user;
    call->reach = reach;
    rpc_call_queue_msg(call, req, len);
    call->eof = true;
    int rv = rpc_client_submit(cl->conn, call, path, timeout_ns);
    if (rv < 0) {
        call->done = true;
        rpc_call_free(call);
    }
    return rv;
}

int tkv_rpc_client_start(struct tkv_rpc_client *cl, const char *path, uint64_t timeout_ns,
                         const struct tkv_rpc_stream_cbs *cbs, void *user,
                         struct tkv_rpc_ccall **out)
{
    if (!can_start(cl))
        return TKV_ECLOSED;
    struct tkv_rpc_call *call = rpc_call_new(cl->conn);
    call->cbs = cbs;
    call->user = user;
    int rv = rpc_client_submit(cl->conn, call, path, timeout_ns);
    if (rv < 0) {
        call->done = true;
        rpc_call_free(call);
        return rv;
    }
    *out = (struct tkv_rpc_ccall *)call;
    return 0;
}

int tkv_rpc_ccall_send(struct tkv_rpc_ccall *cc, const void *msg, size_t len)
{
    struct tkv_rpc_call *call = &cc->s;
    if (call->done || call->eof || call->conn->aborted)
        return TKV_ECLOSED;
    if (len > call->conn->lim.max_send_msg)
        return TKV_ETOOBIG;
    rpc_call_queue_msg(call, msg, len);
    rpc_call_notify(call);
    return 0;
}

void tkv_rpc_ccall_close_send(struct tkv_rpc_ccall *cc)
{
    struct tkv_rpc_call *call = &cc->s;
    if (call->done || call->eof)
        return;
    call->eof = true;
    rpc_call_notify(call);
}

void tkv_rpc_ccall_cancel(struct tkv_rpc_ccall *cc)
{
    rpc_call_cancel_stream(&cc->s);
}

size_t tkv_rpc_ccall_out_bytes(const struct tkv_rpc_ccall *cc)
{
    return rpc_buf_avail(&cc->s.q);
}
