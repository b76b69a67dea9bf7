/* Server side of a call: HTTP-level refusals, dispatch to the method
 * table, finishing with trailers, the per-turn request budget (ready list),
 * and the end of a request stream. */
#include <stdio.h>
#include <string.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

static void server_reject_http(struct tkv_rpc_call *call, const char *status)
{
    nghttp2_nv nv[1];
    rpc_nv_set(&nv[0], ":status", status);
    call->finished = true;
    call->discard = true;
    call->submitted = true;
    nghttp2_submit_response(call->conn->ng, call->id, nv, 1, NULL);
}

void rpc_server_finish(struct tkv_rpc_call *call, int status, const char *msg)
{
    struct rpc_conn *c = call->conn;
    if (call->finished)
        return;
    call->finished = true;
    call->handler_owns = false;
    call->discard = true;
    rpc_call_drop_partial(call);
    rpc_dl_remove(call);
    rpc_ready_remove(call);
    call->status = status;
    call->status_msg = msg ? rpc_percent_encode(msg) : NULL;
    rpc_server_count(c->srv, call, status);
    if (c->aborted)
        return;
    if (!call->submitted && rpc_buf_avail(&call->q) == 0) {
        /* Trailers-only response. */
        nghttp2_nv nv[4];
        char st[8];
        rpc_nv_set(&nv[0], ":status", "200");
        rpc_nv_set(&nv[1], "content-type", "application/grpc");
        size_t n = 2 + rpc_trailer_nv(call, nv + 2, st);
        call->submitted = true;
        nghttp2_submit_response(c->ng, call->id, nv, n, NULL);
    } else {
        call->eof = true;
        if (!call->submitted) {
            nghttp2_nv nv[2];
            nghttp2_data_provider prd = {.source.ptr = call, .read_callback = rpc_call_read};
            rpc_nv_set(&nv[0], ":status", "200");
            rpc_nv_set(&nv[1], "content-type", "application/grpc");
            call->submitted = true;
            nghttp2_submit_response(c->ng, call->id, nv, 2, &prd);
        }
    }
    rpc_call_notify(call);
}

/* The library ends a server call on its own (bad input, deadline): answer
 * the client, and tell the handler if it owned the call. */
void rpc_server_fail(struct tkv_rpc_call *call, int status, const char *msg)
{
    bool owned = call->handler_owns;
    if (call->finished)
        return;
    rpc_server_finish(call, status, msg);
    if (owned && call->method && call->method->on_cancel)
        call->method->on_cancel(call, (enum tkv_grpc_status)status);
}

void rpc_server_dispatch(struct tkv_rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    if (call->bad_method) {
        server_reject_http(call, "405");
        return;
    }
    if (call->bad_ctype) {
        server_reject_http(call, "415");
        return;
    }
    const struct tkv_rpc_method *m = call->path ? rpc_server_lookup(c->srv, call->path) : NULL;
    if (!m) {
        char buf[256];
        snprintf(buf, sizeof(buf), "unknown method %.200s", call->path ? call->path : "");
        rpc_server_fail(call, TKV_GRPC_UNIMPLEMENTED, buf);
        return;
    }
    call->method = m;
    if (call->bad_encoding) {
        rpc_server_fail(call, TKV_GRPC_UNIMPLEMENTED,
                        "grpc-encoding not supported (identity only)");
        return;
    }
    if (call->bad_timeout) {
        rpc_server_fail(call, TKV_GRPC_INTERNAL, "malformed grpc-timeout");
        return;
    }
    if (call->has_timeout) {
        uint64_t now = c->tp->now(c->tp_arg);
        call->deadline = call->timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + call->timeout_ns;
        if (call->deadline == 0)
            call->deadline = 1;
        rpc_dl_insert(call);
    }
}

bool rpc_kind_single_request(enum tkv_rpc_kind k)
{
    return k == TKV_RPC_UNARY || k == TKV_RPC_SERVER_STREAM;
}

static bool budget_left(struct rpc_conn *c, const struct tkv_rpc_call *call)
{
    if (!c->budgeted)
        return true;
    if (c->turn_requests >= c->lim.turn_max_requests || c->turn_bytes >= c->lim.turn_max_bytes)
        return false;
    /* Big requests share one budget per turn over the whole server (the
     * first of a turn always goes); small ones never wait for it. */
    struct tkv_rpc_server *srv = c->srv;
    if (srv && call->held_len > RPC_BIG_REQUEST) {
        uint64_t now = c->tp->now(c->tp_arg);
        if (now != srv->big_turn_ns) {
            srv->big_turn_ns = now;
            srv->turn_big_bytes = 0;
        }
        if (srv->turn_big_bytes >= c->lim.turn_max_big_bytes)
            return false;
    }
    return true;
}

static void server_deliver_unary(struct tkv_rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    c->turn_requests++;
    c->turn_bytes += call->held_len;
    if (c->srv && call->held_len > RPC_BIG_REQUEST)
        c->srv->turn_big_bytes += call->held_len;
    call->handler_owns = true;
    /* An empty message has no buffer; handlers get a valid pointer
     * anyway (memcpy(dst, msg.ptr, 0) with NULL is UB). */
    call->method->on_message(
        call, TKV_SLICE(call->held ? call->held : (const uint8_t *)"", call->held_len));
    rpc_held_free(call);
}

void rpc_conn_new_turn(struct rpc_conn *c)
{
    c->turn_requests = 0;
    c->turn_bytes = 0;
}

bool rpc_conn_run_ready(struct rpc_conn *c)
{
    c->in_engine++; /* the transport flushes afterwards */
    while (c->ready_head && !c->aborted && budget_left(c, c->ready_head)) {
        struct tkv_rpc_call *call = c->ready_head;
        rpc_ready_remove(call);
        if (!call->finished)
            server_deliver_unary(call);
    }
    c->in_engine--;
    return c->ready_head != NULL && !c->aborted;
}

void rpc_server_remote_end(struct tkv_rpc_call *call)
{
    call->remote_closed = true;
    if (call->finished || !call->method)
        return;
    if (call->hdr_got > 0) {
        rpc_server_fail(call, TKV_GRPC_INTERNAL, "truncated message at end of stream");
        return;
    }
    if (rpc_kind_single_request(call->method->kind)) {
        if (!call->have_held) {
            rpc_server_fail(call, TKV_GRPC_INTERNAL, "missing request message");
            return;
        }
        if (!budget_left(call->conn, call)) {
            rpc_ready_push(call); /* next turn: rpc_conn_run_ready */
            return;
        }
        server_deliver_unary(call);
    } else {
        call->handler_owns = true;
        if (call->method->on_half_close)
            call->method->on_half_close(call);
    }
}
