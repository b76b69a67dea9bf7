/* The tinykv-server schema: one descriptor per TOML key (TiKV names, TinyKV
 * defaults), read alike by the file loader, the flags, validation and the
 * dump, so they can never disagree about a key; plus the flag table. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config_private.h"
#include "tkv/common.h"
#include "tkv/config.h"
#include "tkv/err.h"

#define F(field)                                                                                   \
    offsetof(struct tkv_server_config, field), sizeof(((struct tkv_server_config *)0)->field)
#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define DAY_MS (86400000ull)

/* Sections appear in this order in the dump and in conf/tinykv.toml. */
static const struct config_key server_keys[] = {
    {"server.addr", CONFIG_K_ADDR, F(server.addr), 0, 0, 0},
    {"server.advertise-addr", CONFIG_K_ADDR_OPT, F(server.advertise_addr), 0, 0, 0},
    {"server.status-addr", CONFIG_K_ADDR, F(server.status_addr), 0, 0, 0},
    {"server.advertise-status-addr", CONFIG_K_ADDR_OPT, F(server.advertise_status_addr), 0, 0, 0},
    {"server.max-grpc-recv-msg-len", CONFIG_K_SIZE, F(server.max_grpc_recv_msg_len), KiB, GiB, 0},
    {"server.max-grpc-send-msg-len", CONFIG_K_SIZE, F(server.max_grpc_send_msg_len), KiB, GiB, 0},
    {"server.grpc-memory-pool-quota", CONFIG_K_SIZE, F(server.grpc_memory_pool_quota), MiB,
     1024 * GiB, 0},
    {"server.grpc-conn-memory-quota", CONFIG_K_SIZE, F(server.grpc_conn_memory_quota), MiB,
     1024 * GiB, 0},
    {"server.grpc-idle-timeout", CONFIG_K_DURATION, F(server.grpc_idle_timeout_ms), 100, DAY_MS, 0},
    {"server.cores", CONFIG_K_U32, F(server.cores), 0, TKV_CONFIG_MAX_CORES, 0},
    {"server.max-connections", CONFIG_K_U32, F(server.max_connections), 0, 1000000, 0},
    {"storage.data-dir", CONFIG_K_STR, F(storage.data_dir), 0, 0, 0},
    {"storage.sync-log", CONFIG_K_BOOL, F(storage.sync_log), 0, 0, 0},
    {"storage.reserve-space", CONFIG_K_SIZE, F(storage.reserve_space), 0, 1024 * 1024 * GiB, 0},
    {"log.level", CONFIG_K_LOG_LEVEL, F(log.level), 0, 0, 0},
    {"log.format", CONFIG_K_LOG_FORMAT, F(log.format), 0, 0, 0},
    {"log.file.filename", CONFIG_K_STR_OPT, F(log.file.filename), 0, 0, 0},
    {"pd.endpoints", CONFIG_K_ADDR_LIST, offsetof(struct tkv_server_config, pd.endpoints),
     TKV_CONFIG_ADDR_MAX, 0, TKV_CONFIG_MAX_PD, offsetof(struct tkv_server_config, pd.n_endpoints)},
    {"raftstore.raft-base-tick-interval", CONFIG_K_DURATION,
     F(raftstore.raft_base_tick_interval_ms), 1, DAY_MS, 0},
    {"raftstore.raft-heartbeat-ticks", CONFIG_K_U32, F(raftstore.raft_heartbeat_ticks), 1, 1000000,
     0},
    {"raftstore.raft-election-timeout-ticks", CONFIG_K_U32,
     F(raftstore.raft_election_timeout_ticks), 2, 1000000, 0},
    {"raftstore.raft-log-gc-tick-interval", CONFIG_K_DURATION,
     F(raftstore.raft_log_gc_tick_interval_ms), 1, DAY_MS, 0},
    {"raftstore.raft-log-gc-count-limit", CONFIG_K_U64, F(raftstore.raft_log_gc_count_limit), 1,
     UINT32_MAX, 0},
    {"raftstore.split-region-check-tick-interval", CONFIG_K_DURATION,
     F(raftstore.split_region_check_tick_interval_ms), 1, DAY_MS, 0},
    {"raftstore.pd-heartbeat-tick-interval", CONFIG_K_DURATION,
     F(raftstore.pd_heartbeat_tick_interval_ms), 1, DAY_MS, 0},
    {"raftstore.pd-store-heartbeat-tick-interval", CONFIG_K_DURATION,
     F(raftstore.pd_store_heartbeat_tick_interval_ms), 1, DAY_MS, 0},
    {"raftstore.snap-mgr-gc-tick-interval", CONFIG_K_DURATION,
     F(raftstore.snap_mgr_gc_tick_interval_ms), 1, DAY_MS, 0},
    {"raftstore.snap-generate-bytes-per-turn", CONFIG_K_SIZE,
     F(raftstore.snap_generate_bytes_per_turn), KiB, GiB, 0},
    {"raftstore.raft-log-zero-fill", CONFIG_K_BOOL, F(raftstore.raft_log_zero_fill), 0, 0, 0},
    {"coprocessor.region-max-size", CONFIG_K_SIZE, F(coprocessor.region_max_size), KiB, 1024 * GiB,
     0},
    {"coprocessor.region-split-size", CONFIG_K_SIZE, F(coprocessor.region_split_size), KiB,
     1024 * GiB, 0},
};

/* Flags: TiKV names first, TinyKV course names as aliases. */
static const struct config_flag server_flags[] = {
    {{"C", "config"}, CONFIG_F_CONFIG, NULL},
    {{"A", "addr"}, CONFIG_F_KEY, "server.addr"},
    {{"advertise-addr"}, CONFIG_F_KEY, "server.advertise-addr"},
    {{"status-addr"}, CONFIG_F_KEY, "server.status-addr"},
    {{"advertise-status-addr"}, CONFIG_F_KEY, "server.advertise-status-addr"},
    {{"data-dir", "path"}, CONFIG_F_KEY, "storage.data-dir"},
    {{"L", "log-level", "loglevel"}, CONFIG_F_KEY, "log.level"},
    {{"log-file"}, CONFIG_F_KEY, "log.file.filename"},
    {{"pd", "scheduler"}, CONFIG_F_KEY, "pd.endpoints"},
    {{"cores"}, CONFIG_F_KEY, "server.cores"},
    {{"config-check"}, CONFIG_F_CHECK, NULL},
    {{"config-info"}, CONFIG_F_INFO, NULL},
    {{"V", "version"}, CONFIG_F_VERSION, NULL},
    {{"h", "help"}, CONFIG_F_HELP, NULL},
};

static const char server_usage[] =
    "Usage: tinykv-server [flags]\n"
    "\n"
    "Settings come from built-in defaults, then the config file, then flags\n"
    "(flags win). Every key is documented in conf/tinykv.toml.\n"
    "\n"
    "  -C, --config FILE          TOML config file (strict: unknown keys are errors)\n"
    "  -A, --addr HOST:PORT       server.addr: gRPC address of store 0; store k uses PORT+k\n"
    "                             (default 127.0.0.1:20160)\n"
    "      --advertise-addr H:P   server.advertise-addr: address given to peers (default: addr)\n"
    "      --status-addr H:P      server.status-addr: HTTP status/metrics (default "
    "127.0.0.1:20180)\n"
    "      --advertise-status-addr H:P  server.advertise-status-addr\n"
    "      --data-dir DIR         storage.data-dir (default ./tinykv-data)\n"
    "  -L, --log-level LEVEL      log.level: debug, info, warn, error, fatal (default info)\n"
    "      --log-file FILE        log.file.filename (default: stderr)\n"
    "      --pd A[,B...]          pd.endpoints: scheduler addresses; empty = standalone mode\n"
    "      --cores N              server.cores: shard threads = stores (0 = one per CPU; default "
    "1)\n"
    "      --config-check         validate the configuration and exit\n"
    "      --config-info FORMAT   print the effective configuration (toml or json) and exit\n"
    "  -V, --version              print version information and exit\n"
    "  -h, --help                 print this help and exit\n"
    "\n"
    "TinyKV course aliases: -addr, -path (= --data-dir), -scheduler (= --pd),\n"
    "-loglevel (= --log-level). One or two dashes work for every long flag, and\n"
    "values may follow as the next argument or after '='.\n";

const char *tkv_config_usage(void)
{
    return server_usage;
}

/* Tables a file may declare (including parents of nested ones). */
static const char *const server_sections[] = {"server", "storage",   "log",        "log.file",
                                              "pd",     "raftstore", "coprocessor"};

static const struct config_schema server_schema = {server_keys, TKV_ARRAY_LEN(server_keys),
                                                   server_sections, TKV_ARRAY_LEN(server_sections)};

void tkv_config_defaults(struct tkv_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->server.addr, sizeof(cfg->server.addr), "127.0.0.1:20160");
    snprintf(cfg->server.status_addr, sizeof(cfg->server.status_addr), "127.0.0.1:20180");
    cfg->server.max_grpc_recv_msg_len = 16 * MiB;
    cfg->server.max_grpc_send_msg_len = 16 * MiB;
    cfg->server.grpc_memory_pool_quota = 512 * MiB;
    cfg->server.grpc_conn_memory_quota = 64 * MiB;
    cfg->server.grpc_idle_timeout_ms = 60000;
    cfg->server.cores = 1;
    cfg->server.max_connections = 0;
    snprintf(cfg->storage.data_dir, sizeof(cfg->storage.data_dir), "./tinykv-data");
    cfg->storage.sync_log = true;
    cfg->storage.reserve_space = 5 * GiB; /* TiKV's default */
    cfg->log.level = TKV_LOG_LEVEL_INFO;
    cfg->log.format = TKV_CONFIG_LOG_TEXT;
    cfg->pd.n_endpoints = 0;
    cfg->raftstore.raft_base_tick_interval_ms = 1000;
    cfg->raftstore.raft_heartbeat_ticks = 2;
    cfg->raftstore.raft_election_timeout_ticks = 10;
    cfg->raftstore.raft_log_gc_tick_interval_ms = 10000;
    cfg->raftstore.raft_log_gc_count_limit = 128000;
    cfg->raftstore.split_region_check_tick_interval_ms = 10000;
    cfg->raftstore.pd_heartbeat_tick_interval_ms = 10000;
    cfg->raftstore.pd_store_heartbeat_tick_interval_ms = 10000;
    cfg->raftstore.snap_mgr_gc_tick_interval_ms = 60000;
    cfg->raftstore.snap_generate_bytes_per_turn = MiB;
    cfg->raftstore.raft_log_zero_fill = true;
    cfg->coprocessor.region_max_size = 144 * MiB;
    cfg->coprocessor.region_split_size = 96 * MiB;
    cfg->action = TKV_CONFIG_RUN;
    cfg->info_format = TKV_CONFIG_DUMP_TOML;
}

void tkv_config_test_defaults(struct tkv_server_config *cfg)
{
    tkv_config_defaults(cfg);
    snprintf(cfg->server.addr, sizeof(cfg->server.addr), "127.0.0.1:0");
    snprintf(cfg->server.status_addr, sizeof(cfg->server.status_addr), "127.0.0.1:0");
    cfg->raftstore.raft_base_tick_interval_ms = 50;
    cfg->raftstore.raft_log_gc_tick_interval_ms = 50;
    cfg->raftstore.split_region_check_tick_interval_ms = 100;
    cfg->raftstore.pd_heartbeat_tick_interval_ms = 100;
    cfg->raftstore.pd_store_heartbeat_tick_interval_ms = 500;
}

int tkv_config_store_addr(const struct tkv_server_config *cfg, uint32_t k, bool advertise,
                          char *buf, size_t cap)
{
    if (k >= cfg->server.cores)
        return TKV_EINVAL;
    const char *a =
        advertise && cfg->server.advertise_addr[0] ? cfg->server.advertise_addr : cfg->server.addr;
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port;
    TKV_RET(tkv_config_split_addr(a, host, sizeof(host), &port));
    unsigned long p = port == 0 ? 0 : (unsigned long)port + k;
    if (p > 65535)
        return TKV_EINVAL;
    int n = strchr(host, ':') ? snprintf(buf, cap, "[%s]:%lu", host, p)
                              : snprintf(buf, cap, "%s:%lu", host, p);
    if (n < 0 || (size_t)n >= cap)
        return TKV_EINVAL;
    return 0;
}

int tkv_config_apply_doc(struct tkv_server_config *cfg, const struct tkv_toml_doc *doc, char *err,
                         size_t errlen)
{
    return config_apply_doc(&server_schema, cfg, doc, err, errlen);
}

int tkv_config_set(struct tkv_server_config *cfg, const char *key, const char *text, char *err,
                   size_t errlen)
{
    return config_set_text(&server_schema, cfg, key, text, err, errlen);
}

size_t tkv_config_dump(const struct tkv_server_config *cfg, enum tkv_config_dump_format format,
                       char *buf, size_t cap)
{
    return config_dump(&server_schema, cfg, format, buf, cap);
}

/* "./a//b/" -> "a/b": enough to compare paths lexically. */
static void lexical_path(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    const char *p = in;
    if (*p == '/' && o + 1 < cap)
        out[o++] = '/';
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0)
            break;
        if (!(n == 1 && p[0] == '.')) {
            if (o > 0 && out[o - 1] != '/' && o + 1 < cap)
                out[o++] = '/';
            if (o + n < cap) {
                memcpy(out + o, p, n);
                o += n;
            }
        }
        p += n;
    }
    out[o] = '\0';
}

int tkv_config_validate(const struct tkv_server_config *cfg, char *err, size_t errlen)
{
    char host[TKV_CONFIG_ADDR_MAX], shost[TKV_CONFIG_ADDR_MAX], what[200];
    uint16_t port, sport;
    if (config_check_addr(cfg->server.addr, false, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "server.addr: %s", what);
    if (config_check_addr(cfg->server.status_addr, false, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "server.status-addr: %s", what);
    if (config_check_addr(cfg->server.advertise_addr, true, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "server.advertise-addr: %s", what);
    if (config_check_addr(cfg->server.advertise_status_addr, true, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "server.advertise-status-addr: %s", what);
    tkv_config_split_addr(cfg->server.addr, host, sizeof(host), &port);
    tkv_config_split_addr(cfg->server.status_addr, shost, sizeof(shost), &sport);
    if (cfg->server.cores < 1 || cfg->server.cores > TKV_CONFIG_MAX_CORES)
        return config_errf(err, errlen, "server.cores: must be between 1 and %d, got %u",
                           TKV_CONFIG_MAX_CORES, cfg->server.cores);
    if (port != 0 && (unsigned long)port + cfg->server.cores - 1 > 65535)
        return config_errf(
            err, errlen,
            "server.addr: port %u + %u cores runs past 65535 (store k listens on port+k)", port,
            cfg->server.cores);
    if (port != 0 && sport >= port && sport < (unsigned long)port + cfg->server.cores &&
        (strcmp(host, shost) == 0 || config_host_unspecified(host) ||
         config_host_unspecified(shost)))
        return config_errf(
            err, errlen,
            "server.status-addr: port %u collides with the store ports %u-%lu of server.addr",
            sport, port, (unsigned long)port + cfg->server.cores - 1);
    if (cfg->pd.n_endpoints > 0) {
        char ahost[TKV_CONFIG_ADDR_MAX];
        uint16_t aport;
        if (cfg->server.advertise_addr[0]) {
            tkv_config_split_addr(cfg->server.advertise_addr, ahost, sizeof(ahost), &aport);
            if (config_host_unspecified(ahost) || aport == 0)
                return config_errf(
                    err, errlen,
                    "server.advertise-addr: \"%s\" cannot be reached by peers (unspecified host or "
                    "port 0)",
                    cfg->server.advertise_addr);
        } else if (config_host_unspecified(host)) {
            return config_errf(
                err, errlen,
                "server.advertise-addr: must be set when server.addr listens on %s in cluster mode "
                "(pd.endpoints is set)",
                host);
        }
    }
    if (!cfg->storage.data_dir[0])
        return config_errf(err, errlen, "storage.data-dir: must not be empty");
    if (cfg->log.file.filename[0]) {
        char d[TKV_CONFIG_PATH_MAX], f[TKV_CONFIG_PATH_MAX];
        lexical_path(cfg->storage.data_dir, d, sizeof(d));
        lexical_path(cfg->log.file.filename, f, sizeof(f));
        size_t dl = strlen(d);
        if ((dl == 0 && f[0] != '/') ||
            (strncmp(f, d, dl) == 0 && (f[dl] == '/' || f[dl] == '\0') && dl > 0))
            return config_errf(
                err, errlen, "log.file.filename: \"%s\" must not be inside storage.data-dir \"%s\"",
                cfg->log.file.filename, cfg->storage.data_dir);
    }
    if (cfg->server.max_grpc_recv_msg_len < KiB || cfg->server.max_grpc_send_msg_len < KiB)
        return config_errf(err, errlen, "server.max-grpc-*-msg-len: must be at least 1KiB");
    if (cfg->server.grpc_conn_memory_quota <
        cfg->server.max_grpc_recv_msg_len + cfg->server.max_grpc_send_msg_len)
        return config_errf(err, errlen,
                           "server.grpc-conn-memory-quota: must be at least "
                           "max-grpc-recv-msg-len + max-grpc-send-msg-len");
    if (cfg->server.grpc_memory_pool_quota < cfg->server.grpc_conn_memory_quota)
        return config_errf(err, errlen,
                           "server.grpc-memory-pool-quota: must be at least "
                           "grpc-conn-memory-quota");
    if (cfg->raftstore.raft_base_tick_interval_ms == 0)
        return config_errf(err, errlen, "raftstore.raft-base-tick-interval: must be positive");
    if (cfg->raftstore.raft_heartbeat_ticks == 0)
        return config_errf(err, errlen, "raftstore.raft-heartbeat-ticks: must be positive");
    if (cfg->raftstore.raft_election_timeout_ticks <= cfg->raftstore.raft_heartbeat_ticks)
        return config_errf(err, errlen,
                           "raftstore.raft-election-timeout-ticks: must be greater than "
                           "raft-heartbeat-ticks (%u <= "
                           "%u)",
                           cfg->raftstore.raft_election_timeout_ticks,
                           cfg->raftstore.raft_heartbeat_ticks);
    if (cfg->raftstore.raft_log_gc_count_limit == 0)
        return config_errf(err, errlen, "raftstore.raft-log-gc-count-limit: must be positive");
    if (cfg->coprocessor.region_split_size >= cfg->coprocessor.region_max_size) {
        char a[32], b[32];
        tkv_config_format_size(cfg->coprocessor.region_split_size, a, sizeof(a));
        tkv_config_format_size(cfg->coprocessor.region_max_size, b, sizeof(b));
        return config_errf(err, errlen,
                           "coprocessor.region-split-size: must be smaller than "
                           "coprocessor.region-max-size (%s >= %s)",
                           a, b);
    }
    return 0;
}

int tkv_config_load(struct tkv_server_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    tkv_config_defaults(cfg);
    TKV_RET(config_load_cmdline(&server_schema, cfg, server_flags, TKV_ARRAY_LEN(server_flags),
                                argc, argv, cfg->config_file, sizeof(cfg->config_file),
                                &cfg->action, &cfg->info_format, err, errlen));
    if (cfg->action == TKV_CONFIG_HELP || cfg->action == TKV_CONFIG_VERSION)
        return 0;
    if (cfg->server.cores == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->server.cores = (uint32_t)(n < 1                      ? 1
                                       : n > TKV_CONFIG_MAX_CORES ? TKV_CONFIG_MAX_CORES
                                                                  : n);
    }
    int rv = tkv_config_validate(cfg, err, errlen);
    if (rv < 0 && cfg->config_file[0] && err && errlen) {
        /* Say where the invalid combination came from. */
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", err);
        config_errf(err, errlen, "%s: %s", cfg->config_file, msg);
    }
    return rv;
}
