/* The test.Echo service used by the rpc tests and tkv-rpc-echo. */
#include "rpc_echo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tkv/arena.h"
#include "tkv/mem.h"

const char echo_fail_message[] = "bad request: 100% \xc3\xbcnicode\nline2";

struct echo_state {
    struct tkv_rpc_call *call;
    struct echo_state *prev, *next; /* held list */
    bool held, async;
    size_t len, cap;
    char *buf;
};

struct echo_stats echo_stats;
static struct echo_state *held_head;

static struct echo_state *state_new(struct tkv_rpc_call *call)
{
    struct echo_state *s = tkv_xcalloc(1, sizeof(*s));
    s->call = call;
    tkv_rpc_call_set_data(call, s);
    return s;
}

static void state_free(struct echo_state *s)
{
    if (s->held) {
        if (s->prev)
            s->prev->next = s->next;
        else
            held_head = s->next;
        if (s->next)
            s->next->prev = s->prev;
        atomic_fetch_sub(&echo_stats.held, 1);
    }
    free(s->buf);
    tkv_free(s);
}

static void hold(struct echo_state *s)
{
    s->held = true;
    s->next = held_head;
    if (held_head)
        held_head->prev = s;
    held_head = s;
    atomic_fetch_add(&echo_stats.held, 1);
}

static void append(struct echo_state *s, struct tkv_slice m)
{
    if (s->len + m.len > s->cap) {
        s->cap = (s->len + m.len) * 2 + 16;
        s->buf = realloc(s->buf, s->cap);
    }
    if (m.len)
        memcpy(s->buf + s->len, m.ptr, m.len);
    s->len += m.len;
}

static void on_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    struct echo_state *s = tkv_rpc_call_data(call);
    atomic_fetch_add(&echo_stats.cancels, 1);
    atomic_fetch_add(&echo_stats.cancel_why[why], 1);
    if (s)
        state_free(s);
}

static bool is(struct tkv_slice m, const char *lit)
{
    return m.len == strlen(lit) && memcmp(m.ptr, lit, m.len) == 0;
}

static void unary_msg(struct tkv_rpc_call *call, struct tkv_slice m)
{
    atomic_fetch_add(&echo_stats.messages, 1);
    if (is(m, "fail")) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, echo_fail_message);
    } else if (is(m, "hold")) {
        hold(state_new(call));
    } else if (m.len > 6 && memcmp(m.ptr, "async:", 6) == 0) {
        struct echo_state *s = state_new(call);
        s->async = true;
        append(s, TKV_SLICE(m.ptr + 6, m.len - 6));
        hold(s);
    } else if (m.len > 5 && memcmp(m.ptr, "size:", 5) == 0) {
        char num[32];
        size_t k = TKV_MIN(m.len - 5, sizeof(num) - 1);
        memcpy(num, m.ptr + 5, k);
        num[k] = 0;
        size_t n = strtoull(num, NULL, 10);
        /* One byte over the send limit still shows the TOOBIG path; more
         * would only let a fuzzer exhaust memory in the test service. */
        if (n > echo_max_size)
            n = echo_max_size;
        char *b = malloc(n ? n : 1);
        memset(b, 'x', n);
        tkv_rpc_call_reply(call, b, n);
        free(b);
    } else {
        /* copy through the call arena, as real handlers decode into it */
        void *copy = tkv_arena_memdup(tkv_rpc_call_arena(call), m.ptr, m.len);
        tkv_rpc_call_reply(call, copy, m.len);
    }
}

static void cstream_msg(struct tkv_rpc_call *call, struct tkv_slice m)
{
    struct echo_state *s = tkv_rpc_call_data(call);
    atomic_fetch_add(&echo_stats.messages, 1);
    if (!s)
        s = state_new(call);
    append(s, m);
}

static void cstream_end(struct tkv_rpc_call *call)
{
    struct echo_state *s = tkv_rpc_call_data(call);
    tkv_rpc_call_reply(call, s ? s->buf : "", s ? s->len : 0);
    if (s)
        state_free(s);
}

static void sstream_msg(struct tkv_rpc_call *call, struct tkv_slice m)
{
    char num[32], out[32];
    size_t k = TKV_MIN(m.len, sizeof(num) - 1);
    atomic_fetch_add(&echo_stats.messages, 1);
    if (k)
        memcpy(num, m.ptr, k);
    num[k] = 0;
    long n = strtol(num, NULL, 10);
    if (n > (long)echo_max_stream_msgs)
        n = (long)echo_max_stream_msgs;
    for (long i = 0; i < n; i++) {
        int len = snprintf(out, sizeof(out), "msg-%ld", i);
        if (tkv_rpc_call_send(call, out, (size_t)len) != 0) {
            tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "send failed");
            return;
        }
    }
    tkv_rpc_call_finish(call, TKV_GRPC_OK, NULL);
}

static void bidi_msg(struct tkv_rpc_call *call, struct tkv_slice m)
{
    atomic_fetch_add(&echo_stats.messages, 1);
    if (!tkv_rpc_call_data(call))
        state_new(call);
    if (is(m, "end")) {
        state_free(tkv_rpc_call_data(call));
        tkv_rpc_call_finish(call, TKV_GRPC_OK, NULL);
        return;
    }
    if (tkv_rpc_call_send(call, m.ptr, m.len) != 0) {
        state_free(tkv_rpc_call_data(call));
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "send failed");
    }
}

static void bidi_end(struct tkv_rpc_call *call)
{
    struct echo_state *s = tkv_rpc_call_data(call);
    if (s)
        state_free(s);
    tkv_rpc_call_finish(call, TKV_GRPC_OK, NULL);
}

size_t echo_max_stream_msgs = 1000000;
size_t echo_max_size = TKV_RPC_DEFAULT_MAX_MSG + 1;

const struct tkv_rpc_method echo_methods[] = {
    {"/test.Echo/Unary", TKV_RPC_UNARY, unary_msg, NULL, on_cancel, NULL},
    {"/test.Echo/ClientStream", TKV_RPC_CLIENT_STREAM, cstream_msg, cstream_end, on_cancel, NULL},
    {"/test.Echo/ServerStream", TKV_RPC_SERVER_STREAM, sstream_msg, NULL, on_cancel, NULL},
    {"/test.Echo/Bidi", TKV_RPC_BIDI, bidi_msg, bidi_end, on_cancel, NULL},
};
const size_t echo_n_methods = sizeof(echo_methods) / sizeof(echo_methods[0]);

int echo_release(enum tkv_grpc_status st)
{
    int n = 0;
    while (held_head) {
        struct echo_state *s = held_head;
        struct tkv_rpc_call *call = s->call;
        if (s->async)
            tkv_rpc_call_reply(call, s->buf, s->len);
        else
            tkv_rpc_call_finish(call, st, "released");
        state_free(s);
        n++;
    }
    return n;
}

void echo_reset(void)
{
    memset(&echo_stats, 0, sizeof(echo_stats));
}
