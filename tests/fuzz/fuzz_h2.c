/* Fuzz target (b): the HTTP/2 + gRPC engine (src/rpc/rpc_conn.c, rpc_h2.c, ...) fed
 * hostile bytes in random-sized chunks, with the echo method table, the
 * output pumped after every chunk and a fake clock that moves (deadlines).
 * Also the client side (bytes from a hostile server) for one selector bit. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_harness.h"
#include "rpc_echo.h"
#include "rpc_int.h"
#include "tkv/err.h"

/* Input layout: byte 0 = flags, the rest = bytes from the peer.
 *   bit 0: prepend a valid client preface + empty SETTINGS
 *   bit 1: small limits (64 KiB messages, 128 KiB buffered, 16 streams)
 *   bit 2: client engine (with calls in flight) instead of the server
 *   bits 3-7: seed for the chunk sizes and clock steps. */
#define F_PREFACE 1u
#define F_SMALL 2u
#define F_CLIENT 4u

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
static const uint8_t empty_settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};

struct h2 {
    uint64_t now;
    struct tkv_rpc_client *cl;
};

static uint64_t h2_now(void *arg)
{
    return ((struct h2 *)arg)->now;
}
static void h2_want(void *arg)
{
    (void)arg;
}
static void h2_close(void *arg)
{
    struct h2 *h = arg;
    if (h->cl)
        rpc_client_destroy(h->cl);
    h->cl = NULL;
}
static const struct rpc_transport h2_tp = {h2_want, h2_now, h2_close};

/* Drain the engine's output as a fast reader would. A connection that keeps
 * producing output with no input is a hang. */
static int pump(struct rpc_conn *c, size_t *total)
{
    for (int i = 0; i < 4096; i++) {
        const uint8_t *p;
        size_t n;
        if (rpc_conn_pull(c, &p, &n) != 0 || n == 0)
            return 0;
        *total += n;
        rpc_conn_sent(c);
    }
    return fuzz_fail("output pump did not quiesce after 4096 pulls");
}

static void u_cb(void *user, enum tkv_grpc_status st, const char *msg, struct tkv_slice resp)
{
    (void)user;
    (void)st;
    (void)msg;
    (void)resp;
}
static void s_msg(struct tkv_rpc_ccall *c, void *user, struct tkv_slice m)
{
    (void)c;
    (void)user;
    (void)m;
}
static void s_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status st, const char *m)
{
    (void)c;
    (void)user;
    (void)st;
    (void)m;
}
static const struct tkv_rpc_stream_cbs s_cbs = {s_msg, s_done};

/* A few calls of every kind on client cl (used for seeds and as the client
 * mode's calls in flight). */
static void client_calls(struct tkv_rpc_client *cl)
{
    struct tkv_rpc_ccall *c;
    tkv_rpc_client_unary(cl, "/test.Echo/Unary", "hello", 5, 0, u_cb, NULL);
    tkv_rpc_client_unary(cl, "/test.Echo/Unary", "fail", 4, 5000000000ull, u_cb, NULL);
    tkv_rpc_client_unary(cl, "/test.Echo/Unary", "hold", 4, 1000000000ull, u_cb, NULL);
    tkv_rpc_client_unary(cl, "/test.Echo/Unary", "async:x", 7, 0, u_cb, NULL);
    tkv_rpc_client_unary(cl, "/test.Echo/Unary", "size:70000", 10, 0, u_cb, NULL);
    tkv_rpc_client_unary(cl, "/test.Echo/Nope", "x", 1, 0, u_cb, NULL);
    if (tkv_rpc_client_start(cl, "/test.Echo/ClientStream", 0, &s_cbs, NULL, &c) == 0) {
        tkv_rpc_ccall_send(c, "ab", 2);
        tkv_rpc_ccall_send(c, "", 0);
        tkv_rpc_ccall_send(c, "cd", 2);
        tkv_rpc_ccall_close_send(c);
    }
    if (tkv_rpc_client_start(cl, "/test.Echo/ServerStream", 0, &s_cbs, NULL, &c) == 0) {
        tkv_rpc_ccall_send(c, "3", 1);
        tkv_rpc_ccall_close_send(c);
    }
    if (tkv_rpc_client_start(cl, "/test.Echo/Bidi", 2000000000ull, &s_cbs, NULL, &c) == 0) {
        tkv_rpc_ccall_send(c, "ping", 4);
        tkv_rpc_ccall_send(c, "end", 3);
    }
}

int fuzz_h2_one(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    uint64_t r = 0x51ed270b27a3c9f1ull ^ (uint64_t)(flags >> 3) << 40 ^ size;
    struct h2 h = {.now = 1000000000ull};
    struct tkv_rpc_server *srv = NULL;
    struct rpc_conn *c;
    struct tkv_rpc_server_config cfg = {0};
    size_t out = 0;
    int ret = 0;
    data++;
    size--;
    echo_max_stream_msgs = 2000;
    echo_max_size = 256 * 1024;

    if (flags & F_SMALL) {
        cfg.max_recv_msg = 64 * 1024;
        cfg.max_send_msg = 64 * 1024;
        cfg.max_conn_buffered = 128 * 1024;
        cfg.max_streams = 16;
        cfg.window = 65535;
    }
    if (flags & F_CLIENT) {
        struct tkv_rpc_client_config ccfg = {.max_recv_msg = cfg.max_recv_msg};
        h.cl = rpc_client_new(&ccfg, "fuzz", &h2_tp, &h);
        c = rpc_client_conn(h.cl);
        client_calls(h.cl);
    } else {
        echo_reset();
        if (tkv_rpc_server_new(&cfg, echo_methods, echo_n_methods, &srv) != 0)
            return fuzz_fail("tkv_rpc_server_new failed");
        c = rpc_conn_new_server(srv, &h2_tp, &h);
    }
    const struct rpc_limits lim = c->lim;

    bool dead = false;
    if (pump(c, &out) != 0)
        goto fail;
    if (flags & F_PREFACE) {
        if (!(flags & F_CLIENT))
            dead = rpc_conn_recv(c, preface, sizeof(preface) - 1) != 0;
        dead = dead || rpc_conn_recv(c, empty_settings, sizeof(empty_settings)) != 0;
    }
    size_t off = 0;
    while (off < size && !dead) {
        uint64_t x = fuzz_rand(&r);
        size_t k = x % 4 == 0 ? 1 + x % 7 : x % 4 == 1 ? 1 + (x >> 8) % 4096 : 1 + (x >> 8) % 64;
        if (k > size - off)
            k = size - off;
        /* Exact-size heap copy so ASan catches reads past the chunk. */
        uint8_t *chunk = malloc(k);
        if (!chunk)
            abort();
        memcpy(chunk, data + off, k);
        dead = rpc_conn_recv(c, chunk, k) != 0;
        free(chunk);
        off += k;
        if (pump(c, &out) != 0)
            goto fail;
        if (c->buffered > lim.max_buffered) {
            ret = fuzz_fail("buffered %zu bytes > max_conn_buffered %zu", c->buffered,
                            lim.max_buffered);
            goto fail;
        }
        if (!(flags & F_CLIENT) && c->n_calls > lim.max_streams + 64) {
            /* Closed-but-unfreed streams are freed at stream close; open
             * ones are bounded by SETTINGS_MAX_CONCURRENT_STREAMS. */
            ret = fuzz_fail("%u calls alive on one connection (max_streams %u)", c->n_calls,
                            lim.max_streams);
            goto fail;
        }
        if ((x >> 20) % 8 == 0) {
            h.now += (x >> 24) % 3000000000ull;
            rpc_conn_expire(c, h.now);
        }
        if (!(flags & F_CLIENT) && (x >> 40) % 16 == 0)
            echo_release(TKV_GRPC_OK);
        if (rpc_conn_done(c))
            break;
    }
    if (!dead) {
        h.now += 10000000000ull;
        rpc_conn_expire(c, h.now);
        if (!(flags & F_CLIENT))
            echo_release(TKV_GRPC_OK);
        rpc_conn_shutdown(c);
        if (pump(c, &out) != 0)
            goto fail;
    }
    goto done;
fail:
    if (ret == 0)
        ret = -1;
done:
    if (flags & F_CLIENT) {
        if (h.cl)
            tkv_rpc_client_close(h.cl); /* h2_close destroys it */
    } else {
        rpc_conn_free(c);
        if (echo_release(TKV_GRPC_CANCELLED) != 0 && ret == 0)
            ret = fuzz_fail("echo calls still held after the connection was freed");
        tkv_rpc_server_free(srv);
    }
    return ret;
}

/* Seeds: what our own client sends (server mode) and what our server
 * answers to it (client mode). */
void fuzz_h2_seeds(struct fuzz_seeds *s, uint64_t rng)
{
    (void)rng;
    struct h2 h = {.now = 1000000000ull};
    struct tkv_rpc_server *srv;
    uint8_t *req = NULL, *resp = NULL;
    size_t req_n = 0, resp_n = 0;

    h.cl = rpc_client_new(NULL, "fuzz", &h2_tp, &h);
    client_calls(h.cl);
    echo_reset();
    if (tkv_rpc_server_new(NULL, echo_methods, echo_n_methods, &srv) != 0)
        abort();
    struct rpc_conn *sc = rpc_conn_new_server(srv, &h2_tp, &h);
    struct rpc_conn *cc = rpc_client_conn(h.cl);
    for (int round = 0; round < 64; round++) {
        const uint8_t *p;
        size_t n;
        bool moved = false;
        if (rpc_conn_pull(cc, &p, &n) == 0 && n) {
            req = realloc(req, req_n + n);
            memcpy(req + req_n, p, n);
            req_n += n;
            rpc_conn_recv(sc, p, n);
            rpc_conn_sent(cc);
            moved = true;
        }
        if (rpc_conn_pull(sc, &p, &n) == 0 && n) {
            resp = realloc(resp, resp_n + n);
            memcpy(resp + resp_n, p, n);
            resp_n += n;
            rpc_conn_recv(cc, p, n);
            rpc_conn_sent(sc);
            moved = true;
        }
        if (!moved && echo_release(TKV_GRPC_OK) == 0)
            break;
    }
    /* flag byte + bytes; big seeds are cut (libFuzzer's -max_len). */
    for (uint8_t f = 0; f <= F_SMALL; f += F_SMALL) {
        uint8_t *b = malloc(1 + TKV_MAX(req_n, resp_n));
        size_t n = TKV_MIN(req_n, (size_t)8000);
        b[0] = f;
        memcpy(b + 1, req, n);
        fuzz_seeds_add(s, b, 1 + n);
        n = TKV_MIN(resp_n, (size_t)8000);
        b[0] = (uint8_t)(F_CLIENT | f);
        memcpy(b + 1, resp, n);
        fuzz_seeds_add(s, b, 1 + n);
        free(b);
    }
    tkv_rpc_client_close(h.cl);
    rpc_conn_free(sc);
    echo_release(TKV_GRPC_CANCELLED);
    tkv_rpc_server_free(srv);
    free(req);
    free(resp);
}
