/* tkv-rpc-echo: interop helper for real gRPC peers.
 *   tkv-rpc-echo [port]         serve test.Echo (rpc_echo.h) on one core; prints
 *                               "PORT <n>" once listening; SIGTERM stops it.
 *   tkv-rpc-echo client <port>  call a test.Echo server (e.g. python3-grpcio) with
 *                               unary/streaming/error/deadline calls; exit 0 if all
 *                               behaved, 1 otherwise (failures on stderr). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_echo.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

#define MS 1000000ull

static uint16_t want_port;
static struct tkv_rpc_server *srv;
static struct tkv_reactor_group *group;
static atomic_int failures;

static int serve_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    uint16_t port = 0;
    int rv = tkv_rpc_server_new(NULL, echo_methods, echo_n_methods, &srv);
    if (rv == 0)
        rv = tkv_rpc_server_listen(srv, r, "127.0.0.1", want_port, &port);
    if (rv != 0) {
        fprintf(stderr, "tkv-rpc-echo: listen failed: %d\n", rv);
        return rv;
    }
    printf("PORT %u\n", (unsigned)port);
    fflush(stdout);
    return 0;
}

static void serve_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    tkv_rpc_server_free(srv);
}

/* ---- client mode ---- */

static struct tkv_rpc_client *cl;
static int pending;
static uint8_t *big;
#define BIG_LEN (1u << 20)

static void failf(const char *what, int st, const char *msg)
{
    fprintf(stderr, "tkv-rpc-echo client: %s: status %s (%s)\n", what, tkv_grpc_status_name(st),
            msg);
    atomic_fetch_add(&failures, 1);
}

static void one_done(void)
{
    if (--pending == 0) {
        tkv_rpc_client_close(cl);
        tkv_reactor_group_stop(group);
    }
}

static void echo_cb(void *user, enum tkv_grpc_status st, const char *m, struct tkv_slice resp)
{
    const char *want = user;
    if (st != TKV_GRPC_OK || resp.len != strlen(want) || memcmp(resp.ptr, want, resp.len) != 0)
        failf("unary echo", st, m);
    free(user);
    one_done();
}

static void big_cb(void *user, enum tkv_grpc_status st, const char *m, struct tkv_slice resp)
{
    (void)user;
    if (st != TKV_GRPC_OK || resp.len != BIG_LEN || memcmp(resp.ptr, big, BIG_LEN) != 0)
        failf("1 MiB echo", st, m);
    one_done();
}

static void status_cb(void *user, enum tkv_grpc_status st, const char *m, struct tkv_slice resp)
{
    intptr_t want = (intptr_t)user;
    (void)resp;
    if ((intptr_t)st != want)
        failf("status call", st, m);
    else if (st == TKV_GRPC_INVALID_ARGUMENT && strcmp(m, echo_fail_message) != 0)
        failf("grpc-message mismatch", st, m);
    one_done();
}

struct sx {
    const char *what;
    int want_n, n;
    size_t bytes, want_bytes;
};

static void sx_msg(struct tkv_rpc_ccall *c, void *user, struct tkv_slice m)
{
    (void)c;
    struct sx *x = user;
    x->n++;
    x->bytes += m.len;
}

static void sx_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status st, const char *m)
{
    (void)c;
    struct sx *x = user;
    if (st != TKV_GRPC_OK || x->n != x->want_n || x->bytes != x->want_bytes) {
        fprintf(stderr, "%s: %d messages / %zu bytes (want %d / %zu)\n", x->what, x->n, x->bytes,
                x->want_n, x->want_bytes);
        failf(x->what, st, m);
    }
    one_done();
}

static const struct tkv_rpc_stream_cbs sx_cbs = {sx_msg, sx_done};
static struct sx sx_server = {"server stream", 20, 0, 0, 0};
static struct sx sx_client = {"client stream", 1, 0, 0, 30};
static struct sx sx_bidi = {"bidi", 10, 0, 0, 20};

static int client_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    struct tkv_rpc_ccall *c;
    int rv = tkv_rpc_client_connect(r, "127.0.0.1", want_port, NULL, &cl);
    if (rv != 0)
        return rv;
    for (int i = 0; i < 100; i++) {
        char *m = malloc(16);
        snprintf(m, 16, "c%d", i);
        pending++;
        tkv_rpc_client_unary(cl, "/test.Echo/Unary", m, strlen(m), 10000 * MS, echo_cb, m);
    }
    pending++;
    tkv_rpc_client_unary(cl, "/test.Echo/Unary", big, BIG_LEN, 10000 * MS, big_cb, NULL);
    pending++;
    tkv_rpc_client_unary(cl, "/test.Echo/Unary", "fail", 4, 10000 * MS, status_cb,
                         (void *)(intptr_t)TKV_GRPC_INVALID_ARGUMENT);
    pending++;
    tkv_rpc_client_unary(cl, "/test.Echo/Nope", "x", 1, 10000 * MS, status_cb,
                         (void *)(intptr_t)TKV_GRPC_UNIMPLEMENTED);
    pending++;
    tkv_rpc_client_unary(cl, "/test.Echo/Unary", "hold", 4, 100 * MS, status_cb,
                         (void *)(intptr_t)TKV_GRPC_DEADLINE_EXCEEDED);

    pending++;
    tkv_rpc_client_start(cl, "/test.Echo/ServerStream", 10000 * MS, &sx_cbs, &sx_server, &c);
    tkv_rpc_ccall_send(c, "20", 2);
    tkv_rpc_ccall_close_send(c);
    sx_server.want_bytes = 10 * 5 + 10 * 6; /* msg-0..msg-9, msg-10..msg-19 */

    pending++;
    tkv_rpc_client_start(cl, "/test.Echo/ClientStream", 10000 * MS, &sx_cbs, &sx_client, &c);
    for (int i = 0; i < 10; i++)
        tkv_rpc_ccall_send(c, "abc", 3);
    tkv_rpc_ccall_close_send(c);

    pending++;
    tkv_rpc_client_start(cl, "/test.Echo/Bidi", 10000 * MS, &sx_cbs, &sx_bidi, &c);
    for (int i = 0; i < 10; i++)
        tkv_rpc_ccall_send(c, "zz", 2);
    tkv_rpc_ccall_close_send(c);
    return 0;
}

static void client_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    if (pending > 0) {
        fprintf(stderr, "tkv-rpc-echo client: %d calls never completed\n", pending);
        atomic_fetch_add(&failures, 1);
        tkv_rpc_client_close(cl);
    }
}

int main(int argc, char **argv)
{
    struct tkv_reactor_config cfg = {.n_cores = 1};
    bool client = argc > 2 && strcmp(argv[1], "client") == 0;
    if (argc > 1)
        want_port = (uint16_t)strtoul(argv[client ? 2 : 1], NULL, 10);
    tkv_reactor_block_signals();
    if (client) {
        big = malloc(BIG_LEN);
        for (size_t i = 0; i < BIG_LEN; i++)
            big[i] = (uint8_t)(i * 31 + (i >> 9));
    }
    int rv = tkv_reactor_group_start(&cfg, client ? client_init : serve_init,
                                     client ? client_fini : serve_fini, NULL, &group);
    if (rv != 0) {
        fprintf(stderr, "tkv-rpc-echo: reactor start failed: %d\n", rv);
        return 2;
    }
    rv = tkv_reactor_group_run_until_signal(group);
    free(big);
    if (client)
        return rv == 0 && atomic_load(&failures) == 0 ? 0 : 1;
    return rv == 0 ? 0 : 1;
}
