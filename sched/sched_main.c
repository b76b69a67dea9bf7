/* tinyscheduler-server: load the configuration (PD's keys and flags), open
 * the scheduler's own WiredTiger engine in <data-dir>/meta, run one reactor
 * core serving schedulerpb.Scheduler on the first client URL until SIGINT or
 * SIGTERM. Exit codes: 0 clean stop, 1 start-up/runtime failure,
 * 2 configuration error. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>


#include "sched_http.h"
#include "sched_server.h"
#include "tkv/fsutil.h"
#include "tkv/err.h"
#include "tkv/hostport.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/status.h"

#define EXIT_CONFIG 2

static const char *version_text(void)
{
    return "tinyscheduler-server\n"
           "Release Version:   " TKV_VERSION "\n"
           "Git Commit Hash:   " TKV_GIT_HASH "\n"
           "Build Time:        " TKV_BUILD_TIME "\n"
           "Build Type:        " TKV_BUILD_TYPE "\n";
}

static uint64_t fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

static void core_teardown(struct sched_server *srv)
{
    sched_http_core_stop(srv);
    if (srv->rpc) {
        tkv_rpc_server_free(srv->rpc); /* cancels open streams first */
        srv->rpc = NULL;
    }
    sched_raft_stop(srv); /* several members: drops the cluster core unflushed */
    if (srv->reactor)
        sched_service_stop(srv);
    tkv_sched_cluster_close(srv->cluster); /* last region flush */
    srv->cluster = NULL;
    tkv_engine_session_close(srv->sess);
    srv->sess = NULL;
}

static int core_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    struct sched_server *srv = arg;
    struct tkv_rpc_method methods[SCHED_N_METHODS];
    size_t n_methods;
    int rv;
    (void)core;

    rv = tkv_engine_session_open(srv->engine, &srv->sess);
    if (rv) {
        TKV_LOG_ERROR("cannot open an engine session", TKV_LF_ERR(rv));
        goto err;
    }
    srv->opts = (struct tkv_sched_options){
        .max_replicas = srv->cfg.replication.max_replicas,
        .max_store_down_time_ns = srv->cfg.schedule.max_store_down_time_ms * 1000000ull,
        .leader_schedule_limit = srv->cfg.schedule.leader_schedule_limit,
        .region_schedule_limit = srv->cfg.schedule.region_schedule_limit,
        .replica_schedule_limit = srv->cfg.schedule.replica_schedule_limit,
    };
    uint64_t seed = srv->member_id ^ ((uint64_t)getpid() << 20) ^ tkv_now_ns(r);
    if (sched_raft_members(&srv->cfg) > 1) {
        srv->reactor = r; /* the cluster core opens when this member leads */
        rv = sched_raft_start(srv);
        if (rv)
            srv->reactor = NULL; /* the service timers never started */
    } else {
        rv = tkv_sched_cluster_open(srv->sess, &srv->opts, sched_wall_ms(), seed, tkv_now_ns(r),
                                    &srv->cluster);
    }
    if (rv) {
        TKV_LOG_ERROR("cannot load the scheduler state", TKV_LF_ERR(rv));
        goto err;
    }
    srv->rng = seed | 1;
    srv->reactor = r;
    sched_methods(srv, methods, &n_methods);
    rv = tkv_rpc_server_new(NULL, methods, n_methods, &srv->rpc);
    if (rv) {
        TKV_LOG_ERROR("cannot create the gRPC server", TKV_LF_ERR(rv));
        goto err;
    }
    rv = tkv_rpc_server_listen(srv->rpc, r, srv->host, srv->port, &srv->port);
    if (rv) {
        TKV_LOG_ERROR("cannot listen", TKV_LF_STR("host", srv->host), TKV_LF_U64("port", srv->port),
                      TKV_LF_ERR(rv));
        goto err;
    }
    sched_service_start(srv);
    sched_http_core_start(srv);
    TKV_LOG_INFO("tinyscheduler-server is serving", TKV_LF_STR("host", srv->host),
                 TKV_LF_U64("port", srv->port),
                 TKV_LF_U64("cluster_id", sched_raft_cluster_id(srv)),
                 TKV_LF_STR("name", srv->cfg.name));
    char status[TKV_CONFIG_ADDR_MAX + 96];
    snprintf(status, sizeof(status), "READY=1\nSTATUS=serving on %s:%u", srv->host,
             (unsigned)srv->port);
    tkv_status_sd_notify(status);
    return 0;
err:
    core_teardown(srv);
    srv->reactor = NULL;
    return rv;
}

static void core_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    core_teardown(arg);
}

/* host:port of the first URL of a "http://h:p,http://h:p" list. */
static int first_url(const char *urls, char *host, size_t cap, uint16_t *port)
{
    char one[TKV_CONFIG_URLS_MAX];
    const char *p = urls;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    size_t n = strcspn(p, ",/");
    if (n == 0 || n >= sizeof(one))
        return TKV_EINVAL;
    memcpy(one, p, n);
    one[n] = '\0';
    return tkv_hostport_split(one, "0.0.0.0", host, cap, port);
}

/* Refuse to start when another process listens on our port (the rpc layer
 * listens with SO_REUSEPORT, which would let two schedulers share it). */
static int probe_port(const char *host, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    int one = 1, fd, rv = 0;
    if (port == 0 || strchr(host, ':') || inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return 0; /* ephemeral or IPv6: nothing to probe */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        rv = -errno;
    close(fd);
    return rv;
}

static int run(struct sched_server *srv)
{
    struct tkv_reactor_group *group = NULL;
    char meta_dir[TKV_CONFIG_PATH_MAX + 8];
    int rv, code = 1;

    tkv_reactor_block_signals();
    rv = first_url(srv->cfg.client_urls, srv->host, sizeof(srv->host), &srv->port);
    if (rv) {
        TKV_LOG_ERROR("bad client-urls", TKV_LF_STR("client_urls", srv->cfg.client_urls));
        return 1;
    }
    rv = probe_port(srv->host, srv->port);
    if (rv) {
        TKV_LOG_ERROR("cannot listen: the address is in use", TKV_LF_STR("host", srv->host),
                      TKV_LF_U64("port", srv->port), TKV_LF_ERR(rv));
        return 1;
    }
    srv->member_id =
        fnv1a(srv->cfg.advertise_peer_urls, fnv1a(srv->cfg.name, 0xcbf29ce484222325ull));
    if (srv->member_id == 0)
        srv->member_id = 1;
    srv->prepare_ns = 3ull * 1000000000ull;
    if (getenv("TKV_SCHED_PREPARE_MS"))
        srv->prepare_ns = strtoull(getenv("TKV_SCHED_PREPARE_MS"), NULL, 10) * 1000000ull;
    TKV_LOG_INFO("welcome to tinyscheduler-server", TKV_LF_STR("version", TKV_VERSION),
                 TKV_LF_STR("git_hash", TKV_GIT_HASH), TKV_LF_STR("name", srv->cfg.name),
                 TKV_LF_STR("client_urls", srv->cfg.client_urls),
                 TKV_LF_STR("data_dir", srv->cfg.data_dir));
    rv = tkv_mkdir_p(srv->cfg.data_dir);
    if (rv) {
        TKV_LOG_ERROR("cannot create the data dir", TKV_LF_STR("path", srv->cfg.data_dir),
                      TKV_LF_ERR(rv));
        return 1;
    }
    snprintf(meta_dir, sizeof(meta_dir), "%s/meta", srv->cfg.data_dir);
    /* sync: every acknowledged change (ids, TSO bound, stores) is fsync'ed. */
    struct tkv_engine_opts eopts = {
        .kind = TKV_ENGINE_WT, .path = meta_dir, .sync = true, .cache_bytes = 64u << 20};
    rv = tkv_engine_open(&eopts, &srv->engine);
    if (rv) {
        TKV_LOG_ERROR("cannot open the metadata engine", TKV_LF_STR("path", meta_dir),
                      TKV_LF_ERR(rv));
        return 1;
    }
    sched_http_start(srv); /* metrics registry and status port, before the core starts */
    struct tkv_reactor_config rcfg = {.n_cores = 1, .pin = false};
    rv = tkv_reactor_group_start(&rcfg, core_init, core_fini, srv, &group);
    if (rv) {
        TKV_LOG_ERROR("cannot start the scheduler core", TKV_LF_ERR(rv));
        goto out;
    }
    rv = sched_http_run(srv, group); /* until SIGINT/SIGTERM; watchdog, SIGHUP log reopen */
    tkv_status_sd_notify("STOPPING=1");
    if (rv) {
        TKV_LOG_ERROR("tinyscheduler-server stopped on an error", TKV_LF_ERR(rv));
        goto out;
    }
    code = 0;
out:
    sched_http_stop(srv);
    tkv_engine_close(srv->engine);
    srv->engine = NULL;
    if (code == 0)
        TKV_LOG_INFO("tinyscheduler-server stopped");
    return code;
}

int main(int argc, char **argv)
{
    static struct sched_server srv;
    char err[512] = "";
    int rv;

    rv = tkv_config_sched_load(&srv.cfg, argc, argv, err, sizeof(err));
    if (rv) {
        fprintf(stderr, "tinyscheduler-server: %s\n", err[0] ? err : tkv_strerror(rv));
        return EXIT_CONFIG;
    }
    switch (srv.cfg.action) {
    case TKV_CONFIG_HELP:
        fputs(tkv_config_sched_usage(), stdout);
        return 0;
    case TKV_CONFIG_VERSION:
        fputs(version_text(), stdout);
        return 0;
    case TKV_CONFIG_CHECK:
        puts("config is ok");
        return 0;
    case TKV_CONFIG_INFO: {
        size_t n = tkv_config_sched_dump(&srv.cfg, srv.cfg.info_format, NULL, 0);
        char *buf = malloc(n + 1);
        if (!buf)
            return 1;
        tkv_config_sched_dump(&srv.cfg, srv.cfg.info_format, buf, n + 1);
        fputs(buf, stdout);
        free(buf);
        return 0;
    }
    case TKV_CONFIG_RUN:
        break;
    }
    tkv_log_set_level(srv.cfg.log.level);
    tkv_log_set_format(srv.cfg.log.format == TKV_CONFIG_LOG_JSON ? TKV_LOG_FORMAT_JSON
                                                                 : TKV_LOG_FORMAT_TEXT);
    if (srv.cfg.log.file.filename[0]) {
        rv = tkv_log_open_file(srv.cfg.log.file.filename); /* reopened on SIGHUP */
        if (rv) {
            fprintf(stderr, "tinyscheduler-server: cannot open log file %s: %s\n",
                    srv.cfg.log.file.filename, tkv_strerror(rv));
            return 1;
        }
    }
    return run(&srv);
}
