/* Start-up and shutdown of the standalone node: the listening socket and
 * the engine once, then one reactor core per server.cores, each with its
 * engine session and a gRPC server accepting on its dup of the listener. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


#include "server_private.h"
#include "server_cluster.h"
#include "tkv/fsutil.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/metrics.h"
#include "tkv/reactor.h"
#include "tkv/status.h"

/* Pending connections the kernel queues for us (capped by somaxconn). */
#define SERVER_LISTEN_BACKLOG 1024
/* Descriptors kept out of the connection budget: WiredTiger (its log,
 * tables, checkpoint and journal files), the raft log's segments, stdio,
 * the log file, and per core its io_uring, eventfd, listener copy and
 * spare (the accept-and-close trick). */
#define SERVER_FD_RESERVE 256
#define SERVER_FD_RESERVE_PER_CORE 16
/* How long start-up waits for an address still held (e.g. by the listener
 * of a process killed a moment ago), and how often it retries. */
#define SERVER_LISTEN_WAIT_MS 5000
#define SERVER_LISTEN_RETRY_MS 50

static atomic_uint n_listening;

static void core_stopping(void *arg);

/* A core whose loop has not turned for this long is stuck: /readyz says
 * so and the systemd watchdog is not fed. Idle cores turn every second
 * (the reactor's metrics tick), so this is far above normal. Under a
 * systemd watchdog the limit is half its interval (at least 2 s). */
#define SERVER_STALL_LIMIT_NS (5ull * 1000 * 1000 * 1000)
static uint64_t stall_limit_ns = SERVER_STALL_LIMIT_NS;

/* Guards the hand-over of node->group between the main thread, the cores'
 * fini and the status thread's readiness check, so /readyz never reads a
 * group that tkv_reactor_group_run is freeing (every core leaves the
 * "serving" state under it before the group is freed). Start-up and
 * shutdown only; never taken on the hot path. */
static pthread_mutex_t ready_mu = PTHREAD_MUTEX_INITIALIZER;


/* Release everything of one core; safe on a partly initialised core. */
static void core_teardown(struct server_core *c, uint32_t core)
{
    server_cluster_core_fini(c);
    server_txn_core_fini(c);
    if (c->session && c->batch.n_ops) {
        /* The loop is over: apply what is left (never drop a write) but
         * answer nobody; the rpc layer has already ended those calls. */
        c->n_pending = 0;
        server_flush_writes(c);
    }
    if (c->listen_fd >= 0) {
        close(c->listen_fd);
        c->listen_fd = -1;
    }
    if (c->rpc) {
        tkv_rpc_server_free(c->rpc);
        c->rpc = NULL;
    }
    server_abandon_scans(c);
    if (c->n_batches || c->n_scans_abandoned)
        TKV_LOG_INFO("core stopped", TKV_LF_U64("core", core),
                     TKV_LF_U64("write_batches", c->n_batches),
                     TKV_LF_U64("batched_writes", c->n_batched_writes),
                     TKV_LF_U64("scans_abandoned", c->n_scans_abandoned));
    tkv_engine_batch_close(&c->batch);
    tkv_free(c->pending);
    c->pending = NULL;
    tkv_engine_session_close(c->session);
    c->session = NULL;
    tkv_arena_close(&c->arena);
}

static void core_on_stop(void *arg)
{
    struct server_core *c = arg;
    c->stopping = true;
    server_abandon_scans(c);
}

static int core_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    struct server_node *node = arg;
    struct server_core *c = &node->cores[core];
    struct tkv_rpc_method methods[SERVER_N_METHODS];
    struct tkv_rpc_server_config rcfg = {
        .max_recv_msg = node->cfg.server.max_grpc_recv_msg_len,
        .max_send_msg = node->cfg.server.max_grpc_send_msg_len,
        .conn_mem_quota = node->cfg.server.grpc_conn_memory_quota,
        .mem_quota = node->cfg.server.grpc_memory_pool_quota / node->cfg.server.cores,
        .idle_timeout_ns = node->cfg.server.grpc_idle_timeout_ms * 1000000ull,
        .max_connections = node->max_conns_per_core,
    };
    size_t n_methods;
    int rv;

    c->core = core;
    server_txn_core_init(c, &node->cores[0], r);
    c->metrics = &node->metrics;
    c->disk = &node->disk;
    tkv_arena_init(&c->arena, 0);
    tkv_engine_batch_init(&c->batch);
    c->max_send_msg = rcfg.max_send_msg ? rcfg.max_send_msg : TKV_RPC_DEFAULT_MAX_MSG;
    c->reactor = r;
    if (node->cluster) { /* cluster mode: this core is a store */
        rv = server_cluster_core_init(r, c, node);
        if (rv)
            goto err;
        goto methods;
    }
    rv = tkv_engine_session_open(node->engine, &c->session);
    if (rv) {
        TKV_LOG_ERROR("cannot open an engine session", TKV_LF_U64("core", core), TKV_LF_ERR(rv));
        goto err;
    }
    tkv_reactor_on_before_sleep(r, server_flush_writes, c);
methods:
    /* Registered before the rpc server's own stop hook, so queued scans
     * are answered before the GOAWAY and never delay the stop. */
    tkv_reactor_on_stop(r, core_on_stop, c);
    server_methods(c, methods, &n_methods);
    rv = tkv_rpc_server_new(&rcfg, methods, n_methods, &c->rpc);
    if (rv) {
        TKV_LOG_ERROR("cannot create the gRPC server", TKV_LF_U64("core", core), TKV_LF_ERR(rv));
        goto err;
    }
    rv = tkv_rpc_server_listen_fd(c->rpc, r, c->listen_fd);
    if (rv == 0)
        c->listen_fd = -1; /* the rpc server closes it on stop */
    if (rv) {
        TKV_LOG_ERROR("cannot listen", TKV_LF_STR("host", node->host),
                      TKV_LF_U64("port", node->port), TKV_LF_U64("core", core), TKV_LF_ERR(rv));
        goto err;
    }
    TKV_LOG_DEBUG("core listening", TKV_LF_U64("core", core), TKV_LF_U64("port", node->port));
    atomic_store(&node->core_serving[core], 1);
    tkv_reactor_on_stop(r, core_stopping, node);
    if (atomic_fetch_add(&n_listening, 1) + 1 == node->cfg.server.cores) {
        char status[TKV_CONFIG_ADDR_MAX + 96];
        TKV_LOG_INFO("tinykv-server is serving", TKV_LF_STR("host", node->host),
                     TKV_LF_U64("port", node->port), TKV_LF_U64("cores", node->cfg.server.cores),
                     TKV_LF_STR("mode", node->cluster ? "cluster" : "standalone"));
        /* Every core listens: only now may systemd start what depends on us. */
        snprintf(status, sizeof(status), "READY=1\nSTATUS=serving %s on %s:%u, %u cores",
                 node->cluster ? "cluster" : "standalone", node->host, (unsigned)node->port,
                 (unsigned)node->cfg.server.cores);
        tkv_status_sd_notify(status);
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
    pthread_mutex_lock(&ready_mu);
    atomic_store(&node->core_serving[core], 0);
    pthread_mutex_unlock(&ready_mu);
    core_teardown(&node->cores[core], core);
}

/* Bind and listen on host:port, waiting (bounded) while the address is in
 * use. After kill -9 the dead process's listener outlives it for a moment:
 * its io_uring is torn down asynchronously, and the pending accept holds
 * the socket until then, so an immediate restart would fail. A live
 * server there keeps the address past the wait and we give up. Returns
 * the fd (port_io = the bound port, for port 0) or -1 (logged). */
int server_listen_once_free(const char *host, uint16_t *port_io)
{
    uint64_t waited_ms = 0;
    for (;;) {
        int fd = tkv_reactor_listen_tcp(host, *port_io, false, SERVER_LISTEN_BACKLOG, port_io);
        if (fd >= 0) {
            if (waited_ms)
                TKV_LOG_INFO("the address is free now", TKV_LF_STR("host", host),
                             TKV_LF_U64("port", *port_io), TKV_LF_U64("waited_ms", waited_ms));
            return fd;
        }
        if (fd == -EADDRINUSE && waited_ms < SERVER_LISTEN_WAIT_MS) {
            if (waited_ms == 0)
                TKV_LOG_WARN("the address is in use; waiting for it to be released "
                             "(a previous instance's listener may still be closing)",
                             TKV_LF_STR("host", host), TKV_LF_U64("port", *port_io),
                             TKV_LF_U64("max_wait_ms", SERVER_LISTEN_WAIT_MS));
            struct timespec ts = {0, SERVER_LISTEN_RETRY_MS * 1000000L};
            nanosleep(&ts, NULL);
            waited_ms += SERVER_LISTEN_RETRY_MS;
            continue;
        }
        if (fd == -EADDRINUSE)
            TKV_LOG_ERROR("cannot listen: the address is in use", TKV_LF_STR("host", host),
                          TKV_LF_U64("port", *port_io), TKV_LF_U64("waited_ms", waited_ms));
        else if (fd == TKV_ENOTFOUND || fd == TKV_EINVAL)
            TKV_LOG_ERROR("cannot listen: cannot resolve the host (use an IPv4 address, "
                          "[an IPv6 address], localhost or a name that resolves)",
                          TKV_LF_STR("host", host), TKV_LF_ERR(fd));
        else
            TKV_LOG_ERROR("cannot listen", TKV_LF_STR("host", host), TKV_LF_U64("port", *port_io),
                          TKV_LF_ERR(fd));
        return -1;
    }
}

/* Raise the soft RLIMIT_NOFILE to the hard limit (every connection is a
 * descriptor; a distribution's default soft limit of 1024 is a few hundred
 * clients) and log both. Returns the soft limit now in force. */
static uint64_t raise_file_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        TKV_LOG_WARN("cannot read the file descriptor limit", TKV_LF_ERR(-errno));
        return 1024;
    }
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            TKV_LOG_WARN("cannot raise the file descriptor limit", TKV_LF_U64("soft", before),
                         TKV_LF_ERR(-errno));
            rl.rlim_cur = before;
        }
    }
    uint64_t soft = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    TKV_LOG_INFO("file descriptor limit", TKV_LF_U64("soft", soft),
                 TKV_LF_U64("hard", rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : rl.rlim_max),
                 TKV_LF_U64("soft_at_start", before == RLIM_INFINITY ? UINT64_MAX : before));
    return soft;
}

/* server.max-connections for the node: what the descriptor limit leaves
 * after the reserve for the engine, the raft log and the process itself
 * (0 = that budget; a configured value above it is cut to it), so clients
 * can never take the descriptors WiredTiger needs to open a file: it
 * panics when it cannot (measured: with max-connections forced above the
 * budget at nofile 128, its log server hit EMFILE and the node aborted). */
static uint32_t connection_limit(uint64_t nofile, uint32_t configured, uint32_t cores)
{
    uint64_t reserve = SERVER_FD_RESERVE + (uint64_t)SERVER_FD_RESERVE_PER_CORE * cores;
    uint64_t budget = nofile > reserve ? nofile - reserve : 0;
    if (budget > 1000000)
        budget = 1000000;
    if (configured && configured <= budget) {
        TKV_LOG_INFO("connection limit", TKV_LF_U64("max_connections", configured),
                     TKV_LF_U64("nofile", nofile), TKV_LF_U64("reserved", reserve));
        return configured;
    }
    if (configured) /* the reserve is what keeps WiredTiger alive: it wins */
        TKV_LOG_WARN("server.max-connections is above what the file descriptor limit leaves "
                     "for connections; using the limit's budget (raise ulimit -n)",
                     TKV_LF_U64("max_connections", configured),
                     TKV_LF_U64("descriptor_budget", budget), TKV_LF_U64("nofile", nofile),
                     TKV_LF_U64("reserved", reserve));
    if (budget < cores) {
        TKV_LOG_WARN("the file descriptor limit leaves no room for connections past the reserve; "
                     "serving one connection per core (raise ulimit -n)",
                     TKV_LF_U64("nofile", nofile), TKV_LF_U64("reserved", reserve));
        budget = cores;
    }
    TKV_LOG_INFO("connection limit", TKV_LF_U64("max_connections", budget),
                 TKV_LF_U64("nofile", nofile), TKV_LF_U64("reserved", reserve));
    return (uint32_t)budget;
}

/* ---- readiness, status and the systemd watchdog ---- */

/* The first reason the node does not serve, or 0 when every core serves
 * and turns. Status thread and main thread. */
static int node_ready(void *arg, char *reason, size_t cap)
{
    struct server_node *node = arg;
    int rv = 0;
    if (atomic_load(&node->stopping)) {
        snprintf(reason, cap, "shutting down");
        return 1;
    }
    pthread_mutex_lock(&ready_mu);
    if (!node->group) {
        snprintf(reason, cap, "starting: the cores are not running yet");
        rv = 1;
    }
    for (uint32_t k = 0; rv == 0 && k < node->cfg.server.cores; k++) {
        if (!atomic_load(&node->core_serving[k])) {
            snprintf(reason, cap, "core %u is not serving", (unsigned)k);
            rv = 1;
            break;
        }
        uint64_t stall = tkv_reactor_group_core_stall_ns(node->group, k);
        if (stall > stall_limit_ns) {
            snprintf(reason, cap, "core %u: event loop has not turned for %.1f s", (unsigned)k,
                     stall == UINT64_MAX ? 0.0 : (double)stall / 1e9);
            rv = 1;
        }
    }
    pthread_mutex_unlock(&ready_mu);
    return rv;
}

static void core_stopping(void *arg)
{
    struct server_node *node = arg;
    atomic_store(&node->stopping, 1);
}

static void node_status_fill(void *arg, json_t *o)
{
    struct server_node *node = arg;
    char reason[200] = "";
    json_object_set_new(o, "mode", json_string(node->cluster ? "cluster" : "standalone"));
    json_object_set_new(o, "cores", json_integer(node->cfg.server.cores));
    if (node->cluster) { /* one store per core */
        json_t *cstores = json_array();
        server_cluster_status_fill(node, cstores);
        json_object_set_new(o, "stores", cstores);
        bool cready = node_ready(node, reason, sizeof(reason)) == 0;
        json_object_set_new(o, "ready", json_boolean(cready));
        if (!cready)
            json_object_set_new(o, "not_ready_reason", json_string(reason));
        return;
    }
    /* Standalone: every core serves the one store behind server.addr. */
    json_t *stores = json_array();
    json_t *st = json_object();
    json_object_set_new(st, "address", json_string(node->cfg.server.addr));
    json_object_set_new(st, "port", json_integer(node->port));
    json_object_set_new(st, "data_dir", json_string(node->cfg.storage.data_dir));
    if (node->disk.enabled) { /* atomics of the disk monitor (server_disk.c) */
        json_object_set_new(st, "capacity", json_integer((json_int_t)node->disk.capacity));
        json_object_set_new(st, "available",
                            json_integer((json_int_t)atomic_load(&node->disk.avail)));
        json_object_set_new(st, "disk_full", json_boolean(server_disk_full(&node->disk)));
    }
    json_array_append_new(stores, st);
    json_object_set_new(o, "stores", stores);
    bool ready = node_ready(node, reason, sizeof(reason)) == 0;
    json_object_set_new(o, "ready", json_boolean(ready));
    if (!ready)
        json_object_set_new(o, "not_ready_reason", json_string(reason));
}

static char *node_config_json(void *arg)
{
    struct server_node *node = arg;
    size_t n = tkv_config_dump(&node->cfg, TKV_CONFIG_DUMP_JSON, NULL, 0);
    char *buf = tkv_malloc(n + 1);
    if (buf)
        tkv_config_dump(&node->cfg, TKV_CONFIG_DUMP_JSON, buf, n + 1);
    return buf;
}

/* Main thread, every half watchdog interval: feed systemd only while
 * every core serves and turns, so a stuck core gets the process killed
 * and restarted (Restart=on-failure). */
static void watchdog_tick(void *arg)
{
    struct server_node *node = arg;
    static bool warned;
    tkv_status_sd_watchdog_feed(node_ready, node, atomic_load(&node->stopping), &warned);
}

static void node_reload(void *arg)
{
    struct server_node *node = arg;
    tkv_status_sd_reload_log(node->cfg.log.file.filename);
}

int server_node_run(struct server_node *node)
{
    struct tkv_server_config *cfg = &node->cfg;
    struct tkv_reactor_group *group = NULL;
    char kv_dir[TKV_CONFIG_PATH_MAX + 8];
    int rv, listen_fd = -1, code = 1;

    /* Before anything starts a thread (WiredTiger starts its own in open):
     * every thread inherits the mask, so SIGINT/SIGTERM reach only the
     * waiter in tkv_reactor_group_run_until_signal. */
    tkv_reactor_block_signals();
    uint64_t nofile = raise_file_limit();
    uint32_t max_conns = connection_limit(nofile, cfg->server.max_connections, cfg->server.cores);
    node->max_conns_per_core = (max_conns + cfg->server.cores - 1) / cfg->server.cores;
    rv = tkv_config_split_addr(cfg->server.addr, node->host, sizeof(node->host), &node->port);
    if (rv) {
        TKV_LOG_ERROR("bad server.addr", TKV_LF_STR("addr", cfg->server.addr), TKV_LF_ERR(rv));
        return 1;
    }
    if (node->host[0] == '\0')
        snprintf(node->host, sizeof(node->host),
                 "0.0.0.0"); /* ":port": every interface, as TinyKV */
    /* ONE listening socket for the whole node, bound without SO_REUSEPORT:
     * the bind itself is the "is anybody else here" check, atomically, so
     * a second server on the same port fails instead of silently sharing
     * our connections (SO_REUSEPORT lets any process of the same user join
     * the group; a probe before the cores bind left a window where two
     * servers starting together both passed and both served, which made
     * concurrently running tests talk to each other's servers). Every core
     * accepts on its own dup of it; port 0 picks one port for all. */
    if (cfg->pd.n_endpoints == 0) { /* cluster mode: one listener per store, below */
        listen_fd = server_listen_once_free(node->host, &node->port);
        if (listen_fd < 0)
            return 1;
    }

    TKV_LOG_INFO("welcome to tinykv-server", TKV_LF_STR("version", TKV_VERSION),
                 TKV_LF_STR("git_hash", TKV_GIT_HASH), TKV_LF_STR("addr", cfg->server.addr),
                 TKV_LF_U64("port", node->port), TKV_LF_STR("data_dir", cfg->storage.data_dir),
                 TKV_LF_U64("cores", cfg->server.cores),
                 TKV_LF_STR("mode", cfg->pd.n_endpoints ? "cluster" : "standalone"));

    /* Metrics: one slot per core, then the families every core uses. */
    if (tkv_metrics_default_init(cfg->server.cores) < 0)
        TKV_LOG_WARN("metrics registry already set up; per-core slots may be shared");
    tkv_metrics_register_process(tkv_metrics_default());
    server_metrics_init(&node->metrics);
    node->core_serving = tkv_xcalloc(cfg->server.cores, sizeof(*node->core_serving));
    atomic_store(&node->stopping, 0);

    /* The status port answers /livez from here on and /readyz 503 until
     * every core serves. A taken status port is logged but does not stop
     * the node: serving data matters more than its dashboard. */
    struct tkv_status_info sinfo = {
        .component = "tinykv-server", .version = TKV_VERSION, .git_hash = TKV_GIT_HASH,
        .build_time = TKV_BUILD_TIME, .ready = node_ready, .status_fill = node_status_fill,
        .config_json = node_config_json, .arg = node};
    if (cfg->server.status_addr[0]) {
        rv = tkv_status_start(cfg->server.status_addr, &sinfo, &node->status);
        if (rv)
            TKV_LOG_ERROR("cannot start the status server; serving without it",
                          TKV_LF_STR("status_addr", cfg->server.status_addr), TKV_LF_ERR(rv));
        else
            TKV_LOG_INFO("status server listening",
                         TKV_LF_STR("status_addr", cfg->server.status_addr),
                         TKV_LF_U64("status_port", tkv_status_port(node->status)));
    }

    rv = tkv_mkdir_p(cfg->storage.data_dir);
    if (rv) {
        TKV_LOG_ERROR("cannot create the data dir", TKV_LF_STR("path", cfg->storage.data_dir),
                      TKV_LF_ERR(rv));
        goto out;
    }
    if (cfg->pd.n_endpoints > 0) { /* cluster mode: <data-dir>/store-<k>/{kv,raft,ident} */
        rv = server_cluster_prepare(node);
        if (rv)
            goto out;
        goto start_cores;
    }
    /* Same layout as TinyKV's -path: the KV data lives in <data-dir>/kv. */
    snprintf(kv_dir, sizeof(kv_dir), "%s/kv", cfg->storage.data_dir);
    struct tkv_engine_opts eopts = {.kind = TKV_ENGINE_WT, .path = kv_dir, .sync = true};
    /* Before the engine opens: on a nearly full disk the placeholder's
     * space goes to WiredTiger's recovery, and its disk budget is scaled
     * to the filesystem (server_disk.c). */
    server_disk_plan(&node->disk, cfg, &eopts);
    rv = tkv_engine_open(&eopts, &node->engine);
    if (rv) {
        TKV_LOG_ERROR("cannot open the storage engine", TKV_LF_STR("path", kv_dir), TKV_LF_ERR(rv));
        goto out;
    }
    rv = server_disk_monitor_start(&node->disk);
    if (rv)
        goto out;

    node->cores = tkv_xcalloc(cfg->server.cores, sizeof(*node->cores));
    for (uint32_t k = 0; k < cfg->server.cores; k++)
        node->cores[k].listen_fd = -1;
    for (uint32_t k = 0; k < cfg->server.cores; k++) {
        node->cores[k].listen_fd = fcntl(listen_fd, F_DUPFD_CLOEXEC, 0);
        if (node->cores[k].listen_fd < 0) {
            rv = -errno;
            TKV_LOG_ERROR("cannot duplicate the listening socket", TKV_LF_ERR(rv));
            goto out;
        }
    }
    /* Only the cores hold the socket now: it stops listening as soon as
     * the last core closes its copy on stop. */
    close(listen_fd);
    listen_fd = -1;
start_cores:;
    struct tkv_reactor_config rcfg = {.n_cores = cfg->server.cores, .pin = true};
    atomic_store(&n_listening, 0);
    pthread_mutex_lock(&ready_mu); /* cores may finish before group is set */
    rv = tkv_reactor_group_start(&rcfg, core_init, core_fini, node, &group);
    node->group = rv ? NULL : group;
    pthread_mutex_unlock(&ready_mu);
    if (rv) {
        TKV_LOG_ERROR("cannot start the reactor cores", TKV_LF_ERR(rv));
        goto out;
    }
    uint64_t wd = tkv_status_sd_watchdog_ns();
    if (wd) {
        stall_limit_ns = wd / 2 > 2000000000ull ? wd / 2 : 2000000000ull;
        TKV_LOG_INFO("systemd watchdog enabled", TKV_LF_U64("interval_ms", wd / 1000000),
                     TKV_LF_U64("stall_limit_ms", stall_limit_ns / 1000000));
    }
    struct tkv_reactor_run_hooks hooks = {
        .tick_ns = wd / 2, .on_tick = wd ? watchdog_tick : NULL,
        .on_reload = node_reload, .arg = node};
    rv = tkv_reactor_group_run(group, &hooks);
    pthread_mutex_lock(&ready_mu);
    node->group = NULL; /* freed by tkv_reactor_group_run */
    pthread_mutex_unlock(&ready_mu);
    atomic_store(&node->stopping, 1);
    tkv_status_sd_notify("STOPPING=1");
    if (rv) {
        TKV_LOG_ERROR("tinykv-server stopped on an error", TKV_LF_ERR(rv));
        goto out;
    }
    code = 0;
out:
    server_disk_monitor_stop(&node->disk);
    tkv_status_stop(node->status);
    node->status = NULL;
    tkv_engine_close(node->engine); /* final checkpoint: a clean stop is durable */
    node->engine = NULL;
    server_cluster_close(node);
    if (node->cores) {
        for (uint32_t k = 0; k < cfg->server.cores; k++)
            if (node->cores[k].listen_fd >= 0) /* a core that never started */
                close(node->cores[k].listen_fd);
    }
    tkv_free(node->cores);
    node->cores = NULL;
    tkv_free((void *)node->core_serving);
    node->core_serving = NULL;
    if (listen_fd >= 0)
        close(listen_fd);
    if (code == 0)
        TKV_LOG_INFO("tinykv-server stopped");
    return code;
}
