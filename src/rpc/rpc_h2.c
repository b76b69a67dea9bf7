/* gRPC 5-byte message framing (reassembly across DATA frames and reads,
 * several messages per frame, limits) and the nghttp2 session callbacks:
 * headers, frames in and out, control-frame token buckets, stream close. */
#include <stdio.h>
#include <string.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

static void call_fail(struct tkv_rpc_call *call, int status, const char *msg)
{
    if (call->conn->is_server)
        rpc_server_fail(call, status, msg);
    else
        rpc_client_fail(call, status, msg);
    call->discard = true;
    rpc_call_drop_partial(call);
}

static void call_deliver(struct tkv_rpc_call *call, const uint8_t *p, size_t n)
{
    struct rpc_conn *c = call->conn;
    call->n_msgs++;
    c->progress++;
    bool single = c->is_server ? rpc_kind_single_request(call->method->kind) : call->unary;
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
                rpc_server_dispatch(call);
            if (end)
                rpc_server_remote_end(call);
        } else if (end) {
            rpc_client_trailers(call);
        } else if (f->headers.cat == NGHTTP2_HCAT_RESPONSE && call->http_status != 200) {
            rpc_client_trailers(call);
        }
        break;
    case NGHTTP2_DATA:
        if (!call || !end)
            break;
        if (c->is_server)
            rpc_server_remote_end(call);
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
    if (f->hd.type == NGHTTP2_GOAWAY)
        c->goaway_unsent = false;
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
    if (!c->is_server)
        call->req_sent = true; /* the request is complete on the wire (or in the socket) */
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
            rpc_client_trailers(call);
            rpc_client_complete(call, TKV_GRPC_INTERNAL, "stream closed without status");
        } else if (error_code == NGHTTP2_REFUSED_STREAM) {
            /* RST_STREAM(REFUSED_STREAM), a stream above GOAWAY's last
             * stream id, or HEADERS never sent: not processed (RFC 9113 8.7). */
            call->refused = true;
            rpc_client_complete(call, TKV_GRPC_UNAVAILABLE, "stream refused");
        } else if (error_code == NGHTTP2_CANCEL) {
            rpc_client_complete(call, TKV_GRPC_CANCELLED, "stream cancelled by the server");
        } else {
            snprintf(buf, sizeof(buf), "stream reset (HTTP/2 error %u)", error_code);
            rpc_client_complete(call, TKV_GRPC_INTERNAL, buf);
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
    if (f->hd.type == NGHTTP2_GOAWAY)
        c->goaway_unsent = false;
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

nghttp2_session_callbacks *rpc_make_callbacks(void)
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
