/* tkv-rpc-echo: serves the test.Echo gRPC service (rpc_echo.h) on one core,
 * for interop tests with real gRPC peers. Usage: tkv-rpc-echo [port]
 * (0 = any free port); prints "PORT <n>" once listening; SIGTERM stops it. */
#include <stdio.h>
#include <stdlib.h>

#include "rpc_echo.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

static uint16_t want_port;
static struct tkv_rpc_server *srv;

static int echo_init(struct tkv_reactor *r, uint32_t core, void *arg)
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

static void echo_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    tkv_rpc_server_free(srv);
}

int main(int argc, char **argv)
{
    struct tkv_reactor_group *g;
    struct tkv_reactor_config cfg = {.n_cores = 1};
    if (argc > 1)
        want_port = (uint16_t)strtoul(argv[1], NULL, 10);
    tkv_reactor_block_signals();
    int rv = tkv_reactor_group_start(&cfg, echo_init, echo_fini, NULL, &g);
    if (rv != 0) {
        fprintf(stderr, "tkv-rpc-echo: reactor start failed: %d\n", rv);
        return 2;
    }
    rv = tkv_reactor_group_run_until_signal(g);
    return rv == 0 ? 0 : 1;
}
