/* Client side of a call: submitting a request, reading the status from
 * trailers, completing or failing exactly once, cancelling the stream. */
#include <stdio.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

void rpc_client_complete(struct tkv_rpc_call *call, int status, const char *msg)
{
    struct tkv_rpc_ccall *cc = (struct tkv_rpc_ccall *)call;
    if (call->done)
        return;
    call->done = true;
    call->discard = true;
    rpc_dl_remove(call);
    if (status < 0 || status >= TKV_GRPC_STATUS_COUNT)
        status = TKV_GRPC_UNKNOWN;
    if (!msg)
        msg = "";
    if (call->unary) {
        struct tkv_slice resp = TKV_SLICE(NULL, 0);
        if (call->reach)
            *call->reach = call->answered                  ? TKV_RPC_ANSWERED
                           : call->req_sent && !call->refused ? TKV_RPC_SENT
                                                              : TKV_RPC_NOT_SENT;
        if (status == TKV_GRPC_OK && call->have_held)
            resp = TKV_SLICE(call->held ? call->held : (const uint8_t *)"", call->held_len);
        call->ucb(call->user, (enum tkv_grpc_status)status, msg, resp);
    } else if (call->cbs->on_done) {
        call->cbs->on_done(cc, call->user, (enum tkv_grpc_status)status, msg);
    }
    rpc_held_free(call);
}

/* The client stops a call on its own: complete it, reset the stream. */
void rpc_client_fail(struct tkv_rpc_call *call, int status, const char *msg)
{
    if (call->done)
        return;
    rpc_client_complete(call, status, msg);
    if (call->submitted && !call->conn->aborted && !(call->local_closed && call->remote_closed))
        nghttp2_submit_rst_stream(call->conn->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
    rpc_conn_kick(call->conn);
}

void rpc_call_cancel_stream(struct tkv_rpc_call *call)
{
    call->done = true;
    call->discard = true;
    rpc_dl_remove(call);
    if (call->submitted && !call->conn->aborted && !(call->local_closed && call->remote_closed))
        nghttp2_submit_rst_stream(call->conn->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
    rpc_conn_kick(call->conn);
}

/* Response trailers (or a trailers-only response) arrived. */
void rpc_client_trailers(struct tkv_rpc_call *call)
{
    char buf[64];
    call->remote_closed = true;
    if (call->done)
        return;
    call->answered = true; /* whatever it says, the server said it */
    if (call->http_status != 200) {
        snprintf(buf, sizeof(buf), "HTTP status %d", call->http_status);
        rpc_client_fail(call, rpc_http_to_grpc(call->http_status), buf);
        return;
    }
    if (call->grpc_status < 0) {
        rpc_client_fail(call, TKV_GRPC_UNKNOWN, "missing grpc-status");
        return;
    }
    if (call->grpc_status == TKV_GRPC_OK) {
        if (call->hdr_got > 0) {
            rpc_client_fail(call, TKV_GRPC_INTERNAL, "truncated response message");
            return;
        }
        if (call->unary && !call->have_held) {
            rpc_client_fail(call, TKV_GRPC_UNIMPLEMENTED, "no response message for unary call");
            return;
        }
    }
    rpc_client_complete(call, call->grpc_status, call->grpc_msg);
    if (!call->local_closed && !call->conn->aborted)
        nghttp2_submit_rst_stream(call->conn->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_NO_ERROR);
}

int rpc_client_submit(struct rpc_conn *c, struct tkv_rpc_call *call, const char *path,
                      uint64_t timeout_ns)
{
    nghttp2_nv nv[9];
    size_t n = 0;
    char tmo[16];
    rpc_nv_set(&nv[n++], ":method", "POST");
    rpc_nv_set(&nv[n++], ":scheme", "http");
    rpc_nv_set(&nv[n++], ":path", path);
    rpc_nv_set(&nv[n++], ":authority", c->authority);
    rpc_nv_set(&nv[n++], "content-type", "application/grpc");
    rpc_nv_set(&nv[n++], "te", "trailers");
    rpc_nv_set(&nv[n++], "user-agent", "tinykv-rpc/0.1");
    if (timeout_ns) {
        rpc_format_timeout(timeout_ns, tmo);
        rpc_nv_set(&nv[n++], "grpc-timeout", tmo);
        uint64_t now = c->tp->now(c->tp_arg);
        call->deadline = timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
        rpc_dl_insert(call);
    }
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = rpc_call_read};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, &prd, call);
    if (id < 0) {
        rpc_dl_remove(call);
        return TKV_ECLOSED;
    }
    call->id = id;
    call->submitted = true;
    call->path = tkv_xstrdup(path);
    rpc_conn_kick(c);
    return 0;
}
