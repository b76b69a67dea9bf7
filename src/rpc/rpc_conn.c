/* The per-connection gRPC/HTTP/2 engine: bytes in, bytes out. One nghttp2
 * session, gRPC 5-byte framing with reassembly, status/trailers, deadlines.
 * Used by both server and client; knows nothing about sockets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

/* Stop serializing once the owned send buffer holds this much: one socket
 * send per pull, bounded memory. */
#define RPC_OUT_CHUNK (256u * 1024)
/* Initial allocation for a message that arrives in pieces; it grows as the
 * bytes arrive so a huge announced length costs nothing until sent. */
#define RPC_MSG_INITIAL (64u * 1024)

/* ---------------------------------------------------------- accounting */

void rpc_conn_buffered_add(struct rpc_conn *c, size_t n)
{
    c->buffered += n;
    if (c->srv)
        c->srv->mem_buffered += n;
}

void rpc_conn_buffered_sub(struct rpc_conn *c, size_t n)
{
    c->buffered -= n;
    if (c->srv)
        c->srv->mem_buffered -= n;
}

static void queued_add(struct rpc_conn *c, size_t n)
{
    c->queued += n;
    if (c->srv)
        c->srv->mem_queued += n;
}

static void queued_sub(struct rpc_conn *c, size_t n)
{
    c->queued -= n;
    if (c->srv)
        c->srv->mem_queued -= n;
}

bool rpc_conn_mem_ok(const struct rpc_conn *c, size_t n, const char **why)
{
    if (c->buffered + c->queued + n > c->lim.conn_quota) {
        *why = "connection memory quota exhausted (partial requests and unsent responses; "
               "is the client reading its responses?)";
        return false;
    }
    if (c->srv && c->srv->mem_buffered + c->srv->mem_queued + n > c->srv->mem_quota) {
        *why = "server memory quota for gRPC buffers exhausted; retry later";
        c->srv->n_quota_refused++;
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- calls */

struct tkv_rpc_call *rpc_call_new(struct rpc_conn *c)
{
    /* Allocate the client wrapper size for both sides; same layout. */
    struct tkv_rpc_call *call = tkv_xcalloc(1, sizeof(struct tkv_rpc_ccall));
    call->conn = c;
    call->grpc_status = -1;
    if (c->is_server)
        call->start_ns = rpc_clock_ns();
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    c->n_calls++;
    return call;
}

static void dl_remove(struct tkv_rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    if (!call->in_dl)
        return;
    if (call->dl_prev)
        call->dl_prev->dl_next = call->dl_next;
    else
        c->dl_head = call->dl_next;
    if (call->dl_next)
        call->dl_next->dl_prev = call->dl_prev;
    else
        c->dl_tail = call->dl_prev;
    call->dl_prev = call->dl_next = NULL;
    call->in_dl = false;
}

/* Sorted insert from the tail: calls mostly arrive with similar timeouts,
 * so this is O(1) in the common case. */
static void dl_insert(struct tkv_rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    struct tkv_rpc_call *at = c->dl_tail;
    while (at && at->deadline > call->deadline)
        at = at->dl_prev;
    call->dl_prev = at;
    call->dl_next = at ? at->dl_next : c->dl_head;
    if (call->dl_next)
        call->dl_next->dl_prev = call;
    else
        c->dl_tail = call;
    if (at)
        at->dl_next = call;
    else
        c->dl_head = call;
    call->in_dl = true;
}

/* The single message of a unary side counts against the connection's
 * buffer budget until delivered, like a partial message. */
static void held_free(struct tkv_rpc_call *call)
{
    if (call->have_held)
        rpc_conn_buffered_sub(call->conn, call->held_len);
    tkv_free(call->held);
    call->held = NULL;
    call->held_len = 0;
    call->have_held = false;
}

static void call_drop_partial(struct tkv_rpc_call *call)
{
    if (call->msg) {
        rpc_conn_buffered_sub(call->conn, call->msg_cap);
        tkv_free(call->msg);
        call->msg = NULL;
    }
    call->msg_cap = call->msg_got = 0;
    call->hdr_got = 0;
}

static void ready_remove(struct tkv_rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    if (!call->in_ready)
        return;
    if (call->ready_prev)
        call->ready_prev->ready_next = call->ready_next;
    else
        c->ready_head = call->ready_next;
    if (call->ready_next)
        call->ready_next->ready_prev = call->ready_prev;
    else
        c->ready_tail = call->ready_prev;
    call->ready_prev = call->ready_next = NULL;
    call->in_ready = false;
}

static void ready_push(struct tkv_rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    call->ready_prev = c->ready_tail;
    call->ready_next = NULL;
    if (c->ready_tail)
        c->ready_tail->ready_next = call;
    else
        c->ready_head = call;
    c->ready_tail = call;
    call->in_ready = true;
}

void rpc_call_free(struct tkv_rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    dl_remove(call);
    ready_remove(call);
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    c->n_calls--;
    call_drop_partial(call);
    queued_sub(c, rpc_buf_avail(&call->q));
    rpc_buf_free(&call->q);
    held_free(call);
    tkv_free(call->path);
    tkv_free(call->grpc_msg);
    tkv_free(call->status_msg);
    tkv_arena_close(&call->arena);
    tkv_free(call);
}

void rpc_conn_kick(struct rpc_conn *c)
{
    /* Inside recv/pull the transport flushes afterwards anyway. */
    if (c->in_engine == 0 && !c->aborted && c->tp->want_write)
        c->tp->want_write(c->tp_arg);
}

void rpc_call_queue_msg(struct tkv_rpc_call *call, const void *msg, size_t len)
{
    uint8_t hdr[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    rpc_buf_append(&call->q, hdr, 5);
    rpc_buf_append(&call->q, msg, len);
    queued_add(call->conn, 5 + len);
}

void rpc_call_notify(struct tkv_rpc_call *call)
{
    struct rpc_conn *c = call->conn;
    if (call->submitted && call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(c->ng, call->id);
    }
    rpc_conn_kick(c);
}

static void nv_set(nghttp2_nv *nv, const char *name, const char *value)
{
    nv->name = (uint8_t *)(uintptr_t)name;
    nv->namelen = strlen(name);
    nv->value = (uint8_t *)(uintptr_t)value;
    nv->valuelen = strlen(value);
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

/* ------------------------------------------------------- data provider */

static size_t trailer_nv(struct tkv_rpc_call *call, nghttp2_nv *nv, char *st)
{
    size_t n = 0;
    snprintf(st, 8, "%d", call->status);
    nv_set(&nv[n++], "grpc-status", st);
    if (call->status_msg && call->status_msg[0])
        nv_set(&nv[n++], "grpc-message", call->status_msg);
    return n;
}

ssize_t rpc_call_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                      nghttp2_data_source *src, void *ud)
{
    struct rpc_conn *c = ud;
    struct tkv_rpc_call *call = src->ptr;
    size_t n = TKV_MIN(rpc_buf_avail(&call->q), len);
    if (n)
        memcpy(buf, call->q.p + call->q.off, n);
    call->q.off += n;
    queued_sub(c, n);
    if (rpc_buf_avail(&call->q) == 0) {
        call->q.off = call->q.len = 0;
        if (call->eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (c->is_server) {
                nghttp2_nv nv[2];
                char st[8];
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                if (nghttp2_submit_trailer(ng, sid, nv, trailer_nv(call, nv, st)) != 0)
                    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_INTERNAL_ERROR);
            }
        } else if (n == 0) {
            call->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* ------------------------------------------------------------- server */

static void server_reject_http(struct tkv_rpc_call *call, const char *status)
{
    nghttp2_nv nv[1];
    nv_set(&nv[0], ":status", status);
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
    call_drop_partial(call);
    dl_remove(call);
    ready_remove(call);
    call->status = status;
    call->status_msg = msg ? rpc_percent_encode(msg) : NULL;
    rpc_server_count(c->srv, call, status);
    if (c->aborted)
        return;
    if (!call->submitted && rpc_buf_avail(&call->q) == 0) {
        /* Trailers-only response. */
        nghttp2_nv nv[4];
        char st[8];
        nv_set(&nv[0], ":status", "200");
        nv_set(&nv[1], "content-type", "application/grpc");
        size_t n = 2 + trailer_nv(call, nv + 2, st);
        call->submitted = true;
        nghttp2_submit_response(c->ng, call->id, nv, n, NULL);
    } else {
        call->eof = true;
        if (!call->submitted) {
            nghttp2_nv nv[2];
            nghttp2_data_provider prd = {.source.ptr = call, .read_callback = rpc_call_read};
            nv_set(&nv[0], ":status", "200");
            nv_set(&nv[1], "content-type", "application/grpc");
            call->submitted = true;
            nghttp2_submit_response(c->ng, call->id, nv, 2, &prd);
        }
    }
    rpc_call_notify(call);
}

/* The library ends a server call on its own (bad input, deadline): answer
 * the client, and tell the handler if it owned the call. */
static void server_fail(struct tkv_rpc_call *call, int status, const char *msg)
{
    bool owned = call->handler_owns;
    if (call->finished)
        return;
    rpc_server_finish(call, status, msg);
    if (owned && call->method && call->method->on_cancel)
        call->method->on_cancel(call, (enum tkv_grpc_status)status);
}

static void server_dispatch(struct tkv_rpc_call *call)
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
        server_fail(call, TKV_GRPC_UNIMPLEMENTED, buf);
        return;
    }
    call->method = m;
    if (call->bad_encoding) {
        server_fail(call, TKV_GRPC_UNIMPLEMENTED, "grpc-encoding not supported (identity only)");
        return;
    }
    if (call->bad_timeout) {
        server_fail(call, TKV_GRPC_INTERNAL, "malformed grpc-timeout");
        return;
    }
    if (call->has_timeout) {
        uint64_t now = c->tp->now(c->tp_arg);
        call->deadline = call->timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + call->timeout_ns;
        if (call->deadline == 0)
            call->deadline = 1;
        dl_insert(call);
    }
}

static bool kind_single_request(enum tkv_rpc_kind k)
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
    held_free(call);
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
        ready_remove(call);
        if (!call->finished)
            server_deliver_unary(call);
    }
    c->in_engine--;
    return c->ready_head != NULL && !c->aborted;
}

static void server_remote_end(struct tkv_rpc_call *call)
{
    call->remote_closed = true;
    if (call->finished || !call->method)
        return;
    if (call->hdr_got > 0) {
        server_fail(call, TKV_GRPC_INTERNAL, "truncated message at end of stream");
        return;
    }
    if (kind_single_request(call->method->kind)) {
        if (!call->have_held) {
            server_fail(call, TKV_GRPC_INTERNAL, "missing request message");
            return;
        }
        if (!budget_left(call->conn, call)) {
            ready_push(call); /* next turn: rpc_conn_run_ready */
            return;
        }
        server_deliver_unary(call);
    } else {
        call->handler_owns = true;
        if (call->method->on_half_close)
            call->method->on_half_close(call);
    }
}

/* ------------------------------------------------------------- client */

static void client_complete(struct tkv_rpc_call *call, int status, const char *msg)
{
    struct tkv_rpc_ccall *cc = (struct tkv_rpc_ccall *)call;
    if (call->done)
        return;
    call->done = true;
    call->discard = true;
    dl_remove(call);
    if (status < 0 || status >= TKV_GRPC_STATUS_COUNT)
        status = TKV_GRPC_UNKNOWN;
    if (!msg)
        msg = "";
    if (call->unary) {
        struct tkv_slice resp = TKV_SLICE(NULL, 0);
        if (status == TKV_GRPC_OK && call->have_held)
            resp = TKV_SLICE(call->held ? call->held : (const uint8_t *)"", call->held_len);
        call->ucb(call->user, (enum tkv_grpc_status)status, msg, resp);
    } else if (call->cbs->on_done) {
        call->cbs->on_done(cc, call->user, (enum tkv_grpc_status)status, msg);
    }
    held_free(call);
}

/* The client stops a call on its own: complete it, reset the stream. */
static void client_fail(struct tkv_rpc_call *call, int status, const char *msg)
{
    if (call->done)
        return;
    client_complete(call, status, msg);
    if (call->submitted && !call->conn->aborted && !(call->local_closed && call->remote_closed))
        nghttp2_submit_rst_stream(call->conn->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
    rpc_conn_kick(call->conn);
}

void rpc_call_cancel_stream(struct tkv_rpc_call *call)
{
    call->done = true;
    call->discard = true;
    dl_remove(call);
    if (call->submitted && !call->conn->aborted && !(call->local_closed && call->remote_closed))
        nghttp2_submit_rst_stream(call->conn->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
    rpc_conn_kick(call->conn);
}

/* Response trailers (or a trailers-only response) arrived. */
static void client_trailers(struct tkv_rpc_call *call)
{
    char buf[64];
    call->remote_closed = true;
    if (call->done)
        return;
    if (call->http_status != 200) {
        snprintf(buf, sizeof(buf), "HTTP status %d", call->http_status);
        client_fail(call, rpc_http_to_grpc(call->http_status), buf);
        return;
    }
    if (call->grpc_status < 0) {
        client_fail(call, TKV_GRPC_UNKNOWN, "missing grpc-status");
        return;
    }
    if (call->grpc_status == TKV_GRPC_OK) {
        if (call->hdr_got > 0) {
            client_fail(call, TKV_GRPC_INTERNAL, "truncated response message");
            return;
        }
        if (call->unary && !call->have_held) {
            client_fail(call, TKV_GRPC_UNIMPLEMENTED, "no response message for unary call");
            return;
        }
    }
    client_complete(call, call->grpc_status, call->grpc_msg);
    if (!call->local_closed && !call->conn->aborted)
        nghttp2_submit_rst_stream(call->conn->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_NO_ERROR);
}

int rpc_client_submit(struct rpc_conn *c, struct tkv_rpc_call *call, const char *path,
                      uint64_t timeout_ns)
{
    nghttp2_nv nv[9];
    size_t n = 0;
    char tmo[16];
    nv_set(&nv[n++], ":method", "POST");
    nv_set(&nv[n++], ":scheme", "http");
    nv_set(&nv[n++], ":path", path);
    nv_set(&nv[n++], ":authority", c->authority);
    nv_set(&nv[n++], "content-type", "application/grpc");
    nv_set(&nv[n++], "te", "trailers");
    nv_set(&nv[n++], "user-agent", "tinykv-rpc/0.1");
    if (timeout_ns) {
        rpc_format_timeout(timeout_ns, tmo);
        nv_set(&nv[n++], "grpc-timeout", tmo);
        uint64_t now = c->tp->now(c->tp_arg);
        call->deadline = timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
        dl_insert(call);
    }
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = rpc_call_read};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, &prd, call);
    if (id < 0) {
        dl_remove(call);
        return TKV_ECLOSED;
    }
    call->id = id;
    call->submitted = true;
    call->path = tkv_xstrdup(path);
    rpc_conn_kick(c);
    return 0;
}

/* ---------------------------------------------------- message framing */

static void call_fail(struct tkv_rpc_call *call, int status, const char *msg)
{
    if (call->conn->is_server)
        server_fail(call, status, msg);
    else
        client_fail(call, status, msg);
    call->discard = true;
    call_drop_partial(call);
}

static void call_deliver(struct tkv_rpc_call *call, const uint8_t *p, size_t n)
{
    struct rpc_conn *c = call->conn;
    call->n_msgs++;
    c->progress++;
    bool single = c->is_server ? kind_single_request(call->method->kind) : call->unary;
    if (single) {
        if (call->n_msgs > 1) {
            call_fail(call, c->is_server ? TKV_GRPC_INTERNAL : TKV_GRPC_UNIMPLEMENTED,
                      c->is_server ? "more than one request message for a unary request"
                                   : "more than one response message for a unary call");
            return;
        }
        const char *why;
        if (c->buffered + n > c->lim.max_buffered) {
            call_fail(call, TKV_GRPC_RESOURCE_EXHAUSTED, "connection receive buffer full");
            return;
        }
        if (c->is_server && !rpc_conn_mem_ok(c, n, &why)) {
            call_fail(call, TKV_GRPC_RESOURCE_EXHAUSTED, why);
            return;
        }
        rpc_conn_buffered_add(c, n);
        call->held = n ? tkv_xmemdup(p, n) : NULL;
        call->held_len = n;
        call->have_held = true;
        return;
    }
    if (c->is_server) {
        call->handler_owns = true;
        call->method->on_message(call, TKV_SLICE(p, n));
    } else if (!call->done && call->cbs->on_message) {
        call->cbs->on_message((struct tkv_rpc_ccall *)call, call->user, TKV_SLICE(p, n));
    }
}

static void call_feed(struct tkv_rpc_call *call, const uint8_t *p, size_t n)
{
    struct rpc_conn *c = call->conn;
    char buf[128];
    while (n > 0 && !call->discard) {
        if (call->hdr_got < 5) {
            size_t k = TKV_MIN((size_t)(5 - call->hdr_got), n);
            memcpy(call->hdr + call->hdr_got, p, k);
            call->hdr_got = (uint8_t)(call->hdr_got + k);
            p += k;
            n -= k;
            if (call->hdr_got < 5)
                return;
            call->msg_len = (uint32_t)call->hdr[1] << 24 | (uint32_t)call->hdr[2] << 16 |
                            (uint32_t)call->hdr[3] << 8 | call->hdr[4];
            if (call->hdr[0] > 1) {
                call_fail(call, TKV_GRPC_INTERNAL, "invalid message flags");
                return;
            }
            if (call->hdr[0] == 1 && !call->encoding_ok) {
                call_fail(call, TKV_GRPC_UNIMPLEMENTED,
                          "compressed message without a negotiated grpc-encoding");
                return;
            }
            if (call->msg_len > c->lim.max_recv_msg) {
                snprintf(buf, sizeof(buf), "message larger than max (%u vs. %zu)", call->msg_len,
                         c->lim.max_recv_msg);
                call_fail(call, TKV_GRPC_RESOURCE_EXHAUSTED, buf);
                return;
            }
            if (n >= call->msg_len) {
                /* Whole message in this chunk: deliver without copying. */
                const uint8_t *m = p;
                p += call->msg_len;
                n -= call->msg_len;
                call->hdr_got = 0;
                call_deliver(call, m, call->msg_len);
                continue;
            }
            size_t cap = TKV_MIN((size_t)call->msg_len, (size_t)RPC_MSG_INITIAL);
            const char *why;
            if (c->buffered + cap > c->lim.max_buffered) {
                call_fail(call, TKV_GRPC_RESOURCE_EXHAUSTED, "connection receive buffer full");
                return;
            }
            if (c->is_server && !rpc_conn_mem_ok(c, cap, &why)) {
                call_fail(call, TKV_GRPC_RESOURCE_EXHAUSTED, why);
                return;
            }
            call->msg = tkv_xmalloc(cap);
            call->msg_cap = cap;
            call->msg_got = 0;
            rpc_conn_buffered_add(c, cap);
        }
        size_t k = TKV_MIN((size_t)call->msg_len - call->msg_got, n);
        if (call->msg_got + k > call->msg_cap) {
            size_t cap = call->msg_cap;
            while (cap < call->msg_got + k)
                cap *= 2;
            cap = TKV_MIN(cap, (size_t)call->msg_len);
            const char *why;
            if (c->buffered + (cap - call->msg_cap) > c->lim.max_buffered) {
                call_fail(call, TKV_GRPC_RESOURCE_EXHAUSTED, "connection receive buffer full");
                return;
            }
            if (c->is_server && !rpc_conn_mem_ok(c, cap - call->msg_cap, &why)) {
                call_fail(call, TKV_GRPC_RESOURCE_EXHAUSTED, why);
                return;
            }
            call->msg = tkv_xrealloc(call->msg, cap);
            rpc_conn_buffered_add(c, cap - call->msg_cap);
            call->msg_cap = cap;
        }
        memcpy(call->msg + call->msg_got, p, k);
        call->msg_got += k;
        p += k;
        n -= k;
        if (call->msg_got == call->msg_len) {
            uint8_t *m = call->msg;
            size_t len = call->msg_len, cap = call->msg_cap;
            call->msg = NULL;
            call->msg_cap = call->msg_got = 0;
            call->hdr_got = 0;
            rpc_conn_buffered_sub(c, cap);
            call_deliver(call, m, len);
            tkv_free(m);
        }
    }
}

/* ---------------------------------------------------- nghttp2 callbacks */

static struct tkv_rpc_call *stream_call(struct rpc_conn *c, int32_t sid)
{
    return sid ? nghttp2_session_get_stream_user_data(c->ng, sid) : NULL;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct rpc_conn *c = ud;
    if (!c->is_server || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct tkv_rpc_call *call = rpc_call_new(c);
    call->id = f->hd.stream_id;
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, call);
    return 0;
}

static bool eq(const uint8_t *a, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    return n == m && memcmp(a, lit, m) == 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct rpc_conn *c = ud;
    (void)ng;
    (void)flags;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct tkv_rpc_call *call = stream_call(c, f->hd.stream_id);
    if (!call)
        return 0;
    /* The limit we announced in SETTINGS_MAX_HEADER_LIST_SIZE, enforced:
     * nghttp2 only bounds each field, not the list. Over it the stream is
     * reset (the connection lives on). */
    call->hdr_list_bytes += namelen + valuelen + 32;
    if (call->hdr_list_bytes > RPC_MAX_HEADER_LIST)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (c->is_server) {
        if (f->headers.cat != NGHTTP2_HCAT_REQUEST)
            return 0;
        if (eq(name, namelen, ":path")) {
            tkv_free(call->path);
            call->path = tkv_xmalloc(valuelen + 1);
            memcpy(call->path, value, valuelen);
            call->path[valuelen] = 0;
        } else if (eq(name, namelen, ":method")) {
            call->bad_method = !eq(value, valuelen, "POST");
        } else if (eq(name, namelen, "content-type")) {
            /* application/grpc, application/grpc+proto, application/grpc;... */
            call->bad_ctype = !(valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                                (valuelen == 16 || value[16] == '+' || value[16] == ';'));
        } else if (eq(name, namelen, "grpc-timeout")) {
            call->bad_timeout =
                rpc_parse_timeout((const char *)value, valuelen, &call->timeout_ns) != 0;
            call->has_timeout = !call->bad_timeout;
        } else if (eq(name, namelen, "grpc-encoding")) {
            call->bad_encoding = !eq(value, valuelen, "identity");
        }
    } else {
        if (eq(name, namelen, ":status")) {
            int st = 0;
            for (size_t i = 0; i < valuelen && i < 3; i++)
                st = st * 10 + (value[i] - '0');
            call->http_status = st;
        } else if (eq(name, namelen, "grpc-status")) {
            int st = 0;
            bool ok = valuelen > 0 && valuelen < 6;
            for (size_t i = 0; ok && i < valuelen; i++) {
                if (value[i] < '0' || value[i] > '9')
                    ok = false;
                else
                    st = st * 10 + (value[i] - '0');
            }
            call->grpc_status = ok ? st : TKV_GRPC_UNKNOWN;
        } else if (eq(name, namelen, "grpc-message")) {
            tkv_free(call->grpc_msg);
            call->grpc_msg = rpc_percent_decode((const char *)value, valuelen);
        } else if (eq(name, namelen, "grpc-encoding")) {
            call->bad_encoding = !eq(value, valuelen, "identity");
        }
    }
    return 0;
}

/* One token per received SETTINGS or PING (not ACKs); false when the peer
 * is over RPC_CTRL_BURST + RPC_CTRL_RATE/s. Each costs us an answer, so a
 * flood of them is CPU and output for free (CVE-2019-9512/9515). Only
 * "strikes" count, as in gRPC's A8 keepalive policy: every HEADERS or DATA
 * frame we send refills the bucket (ctrl_traffic_sent), because grpc-go
 * sends a BDP-estimation PING almost every time it receives DATA, i.e.
 * hundreds to thousands per second on a healthy busy connection. A peer
 * that pings without any traffic from us is still bounded. */
static bool bucket_take(struct rpc_conn *c, uint32_t *tokens, uint64_t *refill_ns,
                        uint32_t burst, uint32_t rate)
{
    uint64_t now = c->tp->now(c->tp_arg);
    const uint64_t per = 1000000000ull / rate;
    if (now > *refill_ns) {
        uint64_t add = (now - *refill_ns) / per;
        if (add >= burst - *tokens) {
            *tokens = burst;
            *refill_ns = now;
        } else {
            *tokens += (uint32_t)add;
            *refill_ns += add * per;
        }
    }
    if (*tokens == 0)
        return false;
    (*tokens)--;
    return true;
}

static bool ctrl_take(struct rpc_conn *c)
{
    return bucket_take(c, &c->ctrl_tokens, &c->ctrl_refill_ns, RPC_CTRL_BURST, RPC_CTRL_RATE);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct rpc_conn *c = ud;
    c->got_frame = true;
    if ((f->hd.type == NGHTTP2_SETTINGS || f->hd.type == NGHTTP2_PING) &&
        !(f->hd.flags & NGHTTP2_FLAG_ACK) && !ctrl_take(c)) {
        if (!c->goaway)
            TKV_LOG_WARN("rpc: control frame flood, closing the connection",
                         TKV_LF_U64("frame_type", f->hd.type));
        c->goaway = true;
        if (c->client)
            rpc_client_set_unusable(c->client);
        nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
    }
    if (f->hd.type == NGHTTP2_RST_STREAM && c->is_server &&
        !bucket_take(c, &c->rst_tokens, &c->rst_refill_ns, RPC_RST_BURST, RPC_RST_RATE)) {
        if (!c->goaway)
            TKV_LOG_WARN("rpc: rapid reset (RST_STREAM flood), closing the connection");
        c->goaway = true;
        nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
    }
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK))
        c->progress++;
    struct tkv_rpc_call *call = stream_call(c, f->hd.stream_id);
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (!call)
            break;
        if (c->is_server) {
            if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
                server_dispatch(call);
            if (end)
                server_remote_end(call);
        } else if (end) {
            client_trailers(call);
        } else if (f->headers.cat == NGHTTP2_HCAT_RESPONSE && call->http_status != 200) {
            client_trailers(call);
        }
        break;
    case NGHTTP2_DATA:
        if (!call || !end)
            break;
        if (c->is_server)
            server_remote_end(call);
        else
            call->remote_closed = true; /* no trailers yet: resolved at stream close */
        break;
    case NGHTTP2_GOAWAY:
        c->goaway = true;
        if (c->client)
            rpc_client_set_unusable(c->client);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud)
{
    struct rpc_conn *c = ud;
    (void)ng;
    (void)flags;
    struct tkv_rpc_call *call = stream_call(c, sid);
    if (call && !(c->is_server && !call->method))
        call_feed(call, data, len);
    return 0;
}

/* One token back per HEADERS or DATA frame we send, never a full refill:
 * a peer that answers each of our DATA frames with a PING (grpc-go's BDP
 * estimation) stays even, while one that interleaves a cheap request with
 * hundreds of PINGs (a few frames from us per request) runs dry. */
static void ctrl_traffic_sent(struct rpc_conn *c)
{
    if (c->ctrl_tokens < RPC_CTRL_BURST)
        c->ctrl_tokens++;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct rpc_conn *c = ud;
    if (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA)
        ctrl_traffic_sent(c);
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    struct tkv_rpc_call *call = stream_call(c, f->hd.stream_id);
    if (!call)
        return 0;
    call->local_closed = true;
    /* The response is complete but the client is still sending: reset so
     * it stops (gRPC servers do the same). */
    if (c->is_server && !call->remote_closed)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static void stream_closed(struct rpc_conn *c, struct tkv_rpc_call *call, uint32_t error_code)
{
    call->local_closed = call->remote_closed = true;
    if (c->is_server) {
        if (!call->finished) {
            bool owned = call->handler_owns;
            call->finished = true;
            call->handler_owns = false;
            rpc_server_count(c->srv, call, TKV_GRPC_CANCELLED);
            if (owned && call->method->on_cancel)
                call->method->on_cancel(call, TKV_GRPC_CANCELLED);
        }
    } else if (!call->done) {
        char buf[64];
        if (error_code == NGHTTP2_NO_ERROR) {
            client_trailers(call);
            client_complete(call, TKV_GRPC_INTERNAL, "stream closed without status");
        } else if (error_code == NGHTTP2_REFUSED_STREAM) {
            client_complete(call, TKV_GRPC_UNAVAILABLE, "stream refused");
        } else if (error_code == NGHTTP2_CANCEL) {
            client_complete(call, TKV_GRPC_CANCELLED, "stream cancelled by the server");
        } else {
            snprintf(buf, sizeof(buf), "stream reset (HTTP/2 error %u)", error_code);
            client_complete(call, TKV_GRPC_INTERNAL, buf);
        }
    }
    rpc_call_free(call);
}

static int on_stream_close(nghttp2_session *ng, int32_t sid, uint32_t error_code, void *ud)
{
    struct rpc_conn *c = ud;
    struct tkv_rpc_call *call = stream_call(c, sid);
    if (call) {
        nghttp2_session_set_stream_user_data(ng, sid, NULL);
        stream_closed(c, call, error_code);
    }
    return 0;
}

static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
    struct rpc_conn *c = ud;
    (void)err;
    /* A request whose HEADERS never left (GOAWAY received, cancelled before
     * sending): nghttp2 opened no stream, so no close callback comes. */
    if (c->is_server || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (nghttp2_session_find_stream(ng, f->hd.stream_id))
        return 0;
    for (struct tkv_rpc_call *call = c->calls; call; call = call->next) {
        if (call->id == f->hd.stream_id) {
            stream_closed(c, call, NGHTTP2_REFUSED_STREAM);
            break;
        }
    }
    return 0;
}

static nghttp2_session_callbacks *make_callbacks(void)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        TKV_PANIC("nghttp2_session_callbacks_new: out of memory");
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
}

static struct rpc_conn *conn_new(bool server, const struct rpc_limits *lim,
                                 const struct rpc_transport *tp, void *tp_arg)
{
    struct rpc_conn *c = tkv_xcalloc(1, sizeof(*c));
    nghttp2_session_callbacks *cbs = make_callbacks();
    nghttp2_option *opt;
    int rv;
    c->is_server = server;
    c->lim = *lim;
    c->tp = tp;
    c->tp_arg = tp_arg;
    c->ctrl_tokens = RPC_CTRL_BURST;
    c->ctrl_refill_ns = tp->now(tp_arg);
    c->rst_tokens = RPC_RST_BURST;
    c->rst_refill_ns = c->ctrl_refill_ns;
    if (nghttp2_option_new(&opt) != 0)
        TKV_PANIC("nghttp2_option_new: out of memory");
    /* We raise the connection window ourselves below. */
    nghttp2_option_set_peer_max_concurrent_streams(opt, lim->max_streams);
    /* Flood bounds (nghttp2's defaults today, pinned so an upgrade cannot
     * loosen them): CONTINUATION floods (CVE-2024-28182), SETTINGS with
     * many entries, ACKs piling up for a peer that does not read
     * (CVE-2019-9512/9515), rapid reset (CVE-2023-44487, server only). */
    nghttp2_option_set_max_continuations(opt, RPC_MAX_CONTINUATIONS);
    nghttp2_option_set_max_settings(opt, RPC_MAX_SETTINGS_ENTRIES);
    nghttp2_option_set_max_outbound_ack(opt, RPC_MAX_OUTBOUND_ACK);
    if (server)
        nghttp2_option_set_stream_reset_rate_limit(opt, 2 * RPC_RST_BURST, 2 * RPC_RST_RATE);
    rv = server ? nghttp2_session_server_new2(&c->ng, cbs, c, opt)
                : nghttp2_session_client_new2(&c->ng, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        TKV_PANIC("nghttp2 session: %s", nghttp2_strerror(rv));
    nghttp2_settings_entry iv[3] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, lim->max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lim->window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, RPC_MAX_HEADER_LIST},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 3);
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)lim->window);
    return c;
}

struct rpc_conn *rpc_conn_new_server(struct tkv_rpc_server *srv, const struct rpc_transport *tp,
                                     void *tp_arg)
{
    struct rpc_conn *c = conn_new(true, rpc_server_limits(srv), tp, tp_arg);
    c->srv = srv;
    return c;
}

struct rpc_conn *rpc_conn_new_client_engine(const struct rpc_limits *lim, const char *authority,
                                            const struct rpc_transport *tp, void *tp_arg)
{
    struct rpc_conn *c = conn_new(false, lim, tp, tp_arg);
    c->authority = tkv_xstrdup(authority);
    return c;
}

/* ------------------------------------------------------------ driving */

int rpc_conn_recv(struct rpc_conn *c, const uint8_t *p, size_t n)
{
    if (c->aborted || c->failed)
        return TKV_ECLOSED;
    c->in_engine++;
    ssize_t r = nghttp2_session_mem_recv(c->ng, p, n);
    c->in_engine--;
    c->rx_bytes += n;
    if (r < 0) {
        c->failed = true;
        return TKV_EPROTO;
    }
    return 0;
}

int rpc_conn_pull(struct rpc_conn *c, const uint8_t **p, size_t *n)
{
    *n = 0;
    *p = NULL;
    if (c->out_busy || c->aborted || c->failed)
        return c->failed ? TKV_EPROTO : 0;
    c->out.len = c->out.off = 0;
    c->in_engine++;
    while (c->out.len < RPC_OUT_CHUNK) {
        const uint8_t *d;
        ssize_t r = nghttp2_session_mem_send(c->ng, &d);
        if (r < 0) {
            c->in_engine--;
            c->failed = true;
            return TKV_EPROTO;
        }
        if (r == 0)
            break;
        /* d points into the session until the next mem_send: copy it. */
        rpc_buf_append(&c->out, d, (size_t)r);
    }
    c->in_engine--;
    if (c->out.len) {
        c->out_busy = true;
        *p = c->out.p;
        *n = c->out.len;
    }
    return 0;
}

void rpc_conn_sent(struct rpc_conn *c)
{
    c->out_busy = false;
    c->out.len = c->out.off = 0;
    /* Give back memory after a burst. */
    if (c->out.cap > 4 * RPC_OUT_CHUNK)
        rpc_buf_free(&c->out);
}

bool rpc_conn_done(const struct rpc_conn *c)
{
    if (c->failed)
        return true;
    return !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) && !c->out_busy;
}

uint64_t rpc_conn_next_deadline(const struct rpc_conn *c)
{
    return c->dl_head ? c->dl_head->deadline : 0;
}

void rpc_conn_expire(struct rpc_conn *c, uint64_t now)
{
    while (c->dl_head && c->dl_head->deadline <= now && !c->aborted) {
        struct tkv_rpc_call *call = c->dl_head;
        dl_remove(call);
        if (c->is_server)
            server_fail(call, TKV_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
        else
            client_fail(call, TKV_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    }
    rpc_conn_kick(c);
}

void rpc_conn_shutdown(struct rpc_conn *c)
{
    if (c->goaway || c->aborted)
        return;
    c->goaway = true;
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    rpc_conn_kick(c);
}

void rpc_conn_abort(struct rpc_conn *c, enum tkv_grpc_status why, const char *msg)
{
    if (c->aborted)
        return;
    c->aborted = true;
    for (struct tkv_rpc_call *call = c->calls; call; call = call->next) {
        if (c->is_server) {
            if (!call->finished) {
                bool owned = call->handler_owns;
                call->finished = true;
                call->handler_owns = false;
                rpc_server_count(c->srv, call, why);
                if (owned && call->method->on_cancel)
                    call->method->on_cancel(call, why);
            }
        } else {
            client_complete(call, why, msg);
        }
    }
}

void rpc_conn_free(struct rpc_conn *c)
{
    if (!c)
        return;
    rpc_conn_abort(c, TKV_GRPC_UNAVAILABLE, "connection closed");
    while (c->calls)
        rpc_call_free(c->calls);
    nghttp2_session_del(c->ng);
    rpc_buf_free(&c->out);
    tkv_free(c->authority);
    tkv_free(c);
}

void rpc_conn_ping(struct rpc_conn *c)
{
    if (c->aborted || c->failed)
        return;
    nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
    rpc_conn_kick(c);
}

size_t rpc_conn_pending_out(const struct rpc_conn *c)
{
    return c->queued + rpc_buf_avail(&c->out);
}
