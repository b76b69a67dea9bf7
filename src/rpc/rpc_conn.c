/* The per-connection gRPC/HTTP/2 engine: bytes in, bytes out. One nghttp2
 * session per connection; this file holds its memory accounting, the call
 * (stream) records and their lists, the data provider that frames queued
 * messages and trailers, connection creation, and the driving API
 * (recv/pull/sent, deadlines, shutdown, abort). Server and client calls live
 * in rpc_server_call.c / rpc_client_call.c, gRPC framing and the nghttp2
 * callbacks in rpc_h2.c. Knows nothing about sockets. */
#include <stdio.h>
#include <string.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

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

void rpc_dl_remove(struct tkv_rpc_call *call)
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
void rpc_dl_insert(struct tkv_rpc_call *call)
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
void rpc_held_free(struct tkv_rpc_call *call)
{
    if (call->have_held)
        rpc_conn_buffered_sub(call->conn, call->held_len);
    tkv_free(call->held);
    call->held = NULL;
    call->held_len = 0;
    call->have_held = false;
}

void rpc_call_drop_partial(struct tkv_rpc_call *call)
{
    if (call->msg) {
        rpc_conn_buffered_sub(call->conn, call->msg_cap);
        tkv_free(call->msg);
        call->msg = NULL;
    }
    call->msg_cap = call->msg_got = 0;
    call->hdr_got = 0;
}

void rpc_ready_remove(struct tkv_rpc_call *call)
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

void rpc_ready_push(struct tkv_rpc_call *call)
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
    rpc_dl_remove(call);
    rpc_ready_remove(call);
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    c->n_calls--;
    rpc_call_drop_partial(call);
    queued_sub(c, rpc_buf_avail(&call->q));
    rpc_buf_free(&call->q);
    rpc_held_free(call);
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

void rpc_nv_set(nghttp2_nv *nv, const char *name, const char *value)
{
    nv->name = (uint8_t *)(uintptr_t)name;
    nv->namelen = strlen(name);
    nv->value = (uint8_t *)(uintptr_t)value;
    nv->valuelen = strlen(value);
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

size_t rpc_trailer_nv(struct tkv_rpc_call *call, nghttp2_nv *nv, char *st)
{
    size_t n = 0;
    snprintf(st, 8, "%d", call->status);
    rpc_nv_set(&nv[n++], "grpc-status", st);
    if (call->status_msg && call->status_msg[0])
        rpc_nv_set(&nv[n++], "grpc-message", call->status_msg);
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
                if (nghttp2_submit_trailer(ng, sid, nv, rpc_trailer_nv(call, nv, st)) != 0)
                    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_INTERNAL_ERROR);
            }
        } else if (n == 0) {
            call->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static struct rpc_conn *conn_new(bool server, const struct rpc_limits *lim,
                                 const struct rpc_transport *tp, void *tp_arg)
{
    struct rpc_conn *c = tkv_xcalloc(1, sizeof(*c));
    nghttp2_session_callbacks *cbs = rpc_make_callbacks();
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
    if (c->goaway_due) {
        /* The graceful GOAWAY names the last stream processed NOW, and the
         * loop below serializes it before returning, so no request can be
         * received (and handed to a handler) between choosing the id and
         * the frame leaving: once it is serialized nghttp2 ignores newer
         * streams, and every older one is served. Chosen earlier (while a
         * send was in flight), a stream read meanwhile would be handled
         * AND declared unprocessed to the client, which then resends it
         * (a write applied twice). */
        c->goaway_due = false;
        if (nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR,
                                  NULL, 0) == 0)
            c->goaway_unsent = true;
    }
    while (c->out.len < RPC_OUT_CHUNK || c->goaway_unsent) {
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
        rpc_dl_remove(call);
        if (c->is_server)
            rpc_server_fail(call, TKV_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
        else
            rpc_client_fail(call, TKV_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    }
    rpc_conn_kick(c);
}

void rpc_conn_shutdown(struct rpc_conn *c)
{
    if (c->goaway || c->aborted)
        return;
    c->goaway = true;
    c->goaway_due = true; /* submitted by the next rpc_conn_pull: see there */
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
            rpc_client_complete(call, why, msg);
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
