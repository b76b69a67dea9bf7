/* Start-up and shutdown of the standalone node: engine once, then one
 * reactor core per server.cores, each with its engine session and a gRPC
 * listener on the shared server.addr port (SO_REUSEPORT spreads
 * connections over the cores). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#if TKV_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "server_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/reactor.h"

static atomic_uint n_listening;

/* Tell systemd (Type=notify) about our state; a no-op without NOTIFY_SOCKET
 * or without libsystemd. */
static void notify(const char *state)
{
#if TKV_HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

/* Release everything of one core; safe on a partly initialised core. */
static void core_teardown(struct server_core *c, uint32_t core)
{
    if (c->session && c->batch.n_ops) {
        /* The loop is over: apply what is left (never drop a write) but
         * answer nobody; the rpc layer has already ended those calls. */
        c->n_pending = 0;
        server_flush_writes(c);
    }
    if (c->rpc) {
        tkv_rpc_server_free(c->rpc);
        c->rpc = NULL;
    }
    if (c->n_batches)
        TKV_LOG_INFO("core stopped", TKV_LF_U64("core", core),
                     TKV_LF_U64("write_batches", c->n_batches),
                     TKV_LF_U64("batched_writes", c->n_batched_writes));
    tkv_engine_batch_close(&c->batch);
    tkv_free(c->pending);
    c->pending = NULL;
    tkv_engine_session_close(c->session);
    c->session = NULL;
    tkv_arena_close(&c->arena);
}

static int core_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    struct server_node *node = arg;
    struct server_core *c = &node->cores[core];
    struct tkv_rpc_method methods[SERVER_N_METHODS];
    struct tkv_rpc_server_config rcfg = {
        .max_recv_msg = node->cfg.server.max_grpc_recv_msg_len,
        .max_send_msg = node->cfg.server.max_grpc_send_msg_len,
    };
    size_t n_methods;
    int rv;

    c->core = core;
    tkv_arena_init(&c->arena, 0);
    tkv_engine_batch_init(&c->batch);
    c->max_send_msg = rcfg.max_send_msg ? rcfg.max_send_msg : TKV_RPC_DEFAULT_MAX_MSG;
    rv = tkv_engine_session_open(node->engine, &c->session);
    if (rv) {
        TKV_LOG_ERROR("cannot open an engine session", TKV_LF_U64("core", core), TKV_LF_ERR(rv));
        goto err;
    }
    tkv_reactor_on_before_sleep(r, server_flush_writes, c);
    server_methods(c, methods, &n_methods);
    rv = tkv_rpc_server_new(&rcfg, methods, n_methods, &c->rpc);
    if (rv) {
        TKV_LOG_ERROR("cannot create the gRPC server", TKV_LF_U64("core", core), TKV_LF_ERR(rv));
        goto err;
    }
    rv = tkv_rpc_server_listen(c->rpc, r, node->host, node->port, NULL);
    if (rv) {
        TKV_LOG_ERROR("cannot listen", TKV_LF_STR("host", node->host),
                      TKV_LF_U64("port", node->port), TKV_LF_U64("core", core), TKV_LF_ERR(rv));
        goto err;
    }
    TKV_LOG_DEBUG("core listening", TKV_LF_U64("core", core), TKV_LF_U64("port", node->port));
    if (atomic_fetch_add(&n_listening, 1) + 1 == node->cfg.server.cores) {
        char status[TKV_CONFIG_ADDR_MAX + 96];
        TKV_LOG_INFO("tinykv-server is serving", TKV_LF_STR("host", node->host),
                     TKV_LF_U64("port", node->port), TKV_LF_U64("cores", node->cfg.server.cores),
                     TKV_LF_STR("mode", "standalone"));
        /* Every core listens: only now may systemd start what depends on us. */
        snprintf(status, sizeof(status), "READY=1\nSTATUS=serving standalone on %s:%u, %u cores",
                 node->host, (unsigned)node->port, (unsigned)node->cfg.server.cores);
        notify(status);
    }
    return 0;
err:
    /* The reactor calls fini only for cores whose init succeeded: an init
     * fully succeeds or fully fails (STYLE.md 4.6), so undo it here. */
    core_teardown(c, core);
    return rv;
}

static void core_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    struct server_node *node = arg;
    (void)r;
    core_teardown(&node->cores[core], core);
}

/* Bind a socket with option opt (SO_REUSEPORT or SO_REUSEADDR) to
 * host:port and return it (port_out = the bound port), or -errno.
 * Port 0 means "any free port", but every core must listen on the same
 * one: it is reserved with a bound, never-listening SO_REUSEPORT socket
 * (it receives no connections) that stays open while the cores run. */
static int reserve_port(const char *host, uint16_t port, int opt, uint16_t *port_out)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int one = 1, fd, family = strchr(host, ':') ? AF_INET6 : AF_INET;

    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, opt, &one, sizeof(one)) < 0)
        goto fail;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        if (*host && inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
            errno = EINVAL;
            goto fail;
        }
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        if (*host && inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            errno = EINVAL;
            goto fail;
        }
        len = sizeof(*a);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        goto fail;
    *port_out = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                         : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
fail:
    one = -errno;
    close(fd);
    return one;
}

/* mkdir -p for the data dir (the engine creates only one level). */
static int mkdir_p(const char *path)
{
    char buf[TKV_CONFIG_PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return TKV_EINVAL;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = saved;
    }
    return 0;
}

int server_node_run(struct server_node *node)
{
    struct tkv_server_config *cfg = &node->cfg;
    struct tkv_reactor_group *group = NULL;
    char kv_dir[TKV_CONFIG_PATH_MAX + 8];
    int rv, port_fd = -1, code = 1;

    /* Before anything starts a thread (WiredTiger starts its own in open):
     * every thread inherits the mask, so SIGINT/SIGTERM reach only the
     * waiter in tkv_reactor_group_run_until_signal. */
    tkv_reactor_block_signals();
    rv = tkv_config_split_addr(cfg->server.addr, node->host, sizeof(node->host), &node->port);
    if (rv) {
        TKV_LOG_ERROR("bad server.addr", TKV_LF_STR("addr", cfg->server.addr), TKV_LF_ERR(rv));
        return 1;
    }
    if (node->host[0] == '\0')
        snprintf(node->host, sizeof(node->host),
                 "0.0.0.0"); /* ":port": every interface, as TinyKV */
    if (node->port == 0) {
        port_fd = reserve_port(node->host, 0, SO_REUSEPORT, &node->port);
        if (port_fd < 0) {
            TKV_LOG_ERROR("cannot pick a free port", TKV_LF_STR("host", node->host),
                          TKV_LF_ERR(port_fd));
            return 1;
        }
    } else {
        /* The cores listen with SO_REUSEPORT, which the kernel also grants
         * to ANOTHER process of the same user on the same port: a second
         * server started by mistake would silently share our connections.
         * Probe without it first (SO_REUSEADDR only, so TIME_WAIT leftovers
         * of a previous run do not count): an existing listener fails us. */
        uint16_t unused;
        int probe = reserve_port(node->host, node->port, SO_REUSEADDR, &unused);
        if (probe < 0) {
            TKV_LOG_ERROR("cannot listen: the address is in use", TKV_LF_STR("host", node->host),
                          TKV_LF_U64("port", node->port), TKV_LF_ERR(probe));
            return 1;
        }
        close(probe);
    }

    TKV_LOG_INFO("welcome to tinykv-server", TKV_LF_STR("version", TKV_VERSION),
                 TKV_LF_STR("git_hash", TKV_GIT_HASH), TKV_LF_STR("addr", cfg->server.addr),
                 TKV_LF_U64("port", node->port), TKV_LF_STR("data_dir", cfg->storage.data_dir),
                 TKV_LF_U64("cores", cfg->server.cores), TKV_LF_STR("mode", "standalone"));
    if (cfg->pd.n_endpoints > 0)
        TKV_LOG_WARN("scheduler endpoints are configured but cluster mode (Raft) is not built yet; "
                     "serving the standalone Raw API",
                     TKV_LF_STR("pd", cfg->pd.endpoints[0]));

    rv = mkdir_p(cfg->storage.data_dir);
    if (rv) {
        TKV_LOG_ERROR("cannot create the data dir", TKV_LF_STR("path", cfg->storage.data_dir),
                      TKV_LF_ERR(rv));
        goto out;
    }
    /* Same layout as TinyKV's -path: the KV data lives in <data-dir>/kv. */
    snprintf(kv_dir, sizeof(kv_dir), "%s/kv", cfg->storage.data_dir);
    struct tkv_engine_opts eopts = {.kind = TKV_ENGINE_WT, .path = kv_dir, .sync = true};
    rv = tkv_engine_open(&eopts, &node->engine);
    if (rv) {
        TKV_LOG_ERROR("cannot open the storage engine", TKV_LF_STR("path", kv_dir), TKV_LF_ERR(rv));
        goto out;
    }

    node->cores = tkv_xcalloc(cfg->server.cores, sizeof(*node->cores));
    struct tkv_reactor_config rcfg = {.n_cores = cfg->server.cores, .pin = true};
    atomic_store(&n_listening, 0);
    rv = tkv_reactor_group_start(&rcfg, core_init, core_fini, node, &group);
    if (rv) {
        TKV_LOG_ERROR("cannot start the reactor cores", TKV_LF_ERR(rv));
        goto out;
    }
    rv = tkv_reactor_group_run_until_signal(group);
    notify("STOPPING=1");
    if (rv) {
        TKV_LOG_ERROR("tinykv-server stopped on an error", TKV_LF_ERR(rv));
        goto out;
    }
    code = 0;
out:
    tkv_engine_close(node->engine); /* final checkpoint: a clean stop is durable */
    node->engine = NULL;
    tkv_free(node->cores);
    node->cores = NULL;
    if (port_fd >= 0)
        close(port_fd);
    if (code == 0)
        TKV_LOG_INFO("tinykv-server stopped");
    return code;
}
