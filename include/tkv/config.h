/* Configuration: a strict TOML-subset parser, the tinykv-server config schema
 * (TiKV key names, TinyKV defaults) and the command-line flags that override it.
 * Start-up code only: call from the main thread before any core starts. */
#ifndef TKV_CONFIG_H
#define TKV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/log.h"

/* ---------------------------------------------------------------------------
 * TOML subset (see src/config/README.md for exactly what is accepted).
 * Accepted: comments, [table] / [dotted.table] headers, bare / "basic" /
 * 'literal' keys and dotted keys, basic strings with escapes, literal strings,
 * decimal integers with _ separators and sign, decimal floats, booleans,
 * arrays of one scalar type (may span lines, trailing comma allowed).
 * Rejected with an error: multi-line strings, inline tables, arrays of tables,
 * nested arrays, dates, hex/octal/binary integers, inf/nan, duplicate keys or
 * tables, input over TKV_TOML_MAX_BYTES, invalid UTF-8, NUL bytes.
 * ------------------------------------------------------------------------- */

#define TKV_TOML_MAX_BYTES (1u << 20) /* largest accepted file */
#define TKV_TOML_MAX_ITEMS 4096       /* keys + tables in one document */
#define TKV_TOML_MAX_ARRAY 1024       /* elements in one array */
#define TKV_TOML_MAX_DEPTH 16         /* segments in one key path */

enum tkv_toml_type {
    TKV_TOML_STRING,
    TKV_TOML_INT,
    TKV_TOML_FLOAT,
    TKV_TOML_BOOL,
    TKV_TOML_ARRAY,
};

struct tkv_toml_value {
    enum tkv_toml_type type;
    union {
        struct {
            char *ptr; /* NUL-terminated UTF-8; may also contain "\u0000" as a NUL byte */
            size_t len;
        } str;
        int64_t i;
        double f;
        bool b;
        struct {
            struct tkv_toml_value *items; /* all of one scalar type */
            size_t n;
        } arr;
    } u;
};

enum tkv_toml_item_kind {
    TKV_TOML_ITEM_VALUE, /* key = value */
    TKV_TOML_ITEM_TABLE, /* [header] */
};

/* One key or table header, in document order. `path` is the canonical full
 * path: segments joined by '.', a segment written "quoted" (with TOML escapes)
 * unless it is a non-empty bare key ([A-Za-z0-9_-]+). So `a."b.c"` and `a.b.c`
 * differ, and `[server]` + `addr = 1` gives path "server.addr". */
struct tkv_toml_item {
    enum tkv_toml_item_kind kind;
    char *path;
    int line;                  /* 1-based line of the key or header */
    int col;                   /* 1-based column (bytes) of the key or header */
    struct tkv_toml_value val; /* VALUE items only */
};

struct tkv_toml_doc {
    char *name; /* file name used in messages */
    struct tkv_toml_item *items;
    size_t n_items;
    /* private: bookkeeping for duplicate detection */
    void *priv;
    size_t cap_items;
};

/* Parse text[0..len) (need not be NUL-terminated) into doc. `name` is used in
 * error messages ("<name>:<line>:<col>: <key>: <what>") and copied.
 * On success fills *doc, which the caller releases with
 * tkv_config_toml_free(). On error *doc is left empty (freeing it is safe),
 * err holds one line of text (always NUL-terminated when errlen > 0).
 * Errors: TKV_ECONFIG (malformed input, limits), TKV_ENOMEM.
 * Pure function: any thread. */
int tkv_config_toml_parse(const char *name, const char *text, size_t len, struct tkv_toml_doc *doc,
                          char *err, size_t errlen);

/* Read and parse the file at path (at most TKV_TOML_MAX_BYTES).
 * Errors: as tkv_config_toml_parse, plus -errno when the file cannot be read
 * (the message names the file). Any thread (blocking I/O: not on a core). */
int tkv_config_toml_parse_file(const char *path, struct tkv_toml_doc *doc, char *err,
                               size_t errlen);

/* Release everything the doc owns; safe on a zeroed or already freed doc. */
void tkv_config_toml_free(struct tkv_toml_doc *doc);

/* The VALUE item whose canonical path equals `path`, or NULL. The pointer is
 * valid until tkv_config_toml_free(doc). */
const struct tkv_toml_item *tkv_config_toml_find(const struct tkv_toml_doc *doc, const char *path);

/* ---------------------------------------------------------------------------
 * Human units shared by all config files (TiKV's ReadableSize/Duration).
 * ------------------------------------------------------------------------- */

/* "16MB", "96MiB", "1.5GB", "512", "4 kb": B, K/KB/KiB, M/MB/MiB, G/GB/GiB,
 * T/TB/TiB, P/PB/PiB, any case; all binary (1KB = 1024 B, as TiKV).
 * Errors: TKV_EINVAL (syntax, negative, overflow). Any thread. */
int tkv_config_parse_size(const char *s, uint64_t *bytes_out);
/* "1s", "50ms", "10m", "1h", "1d", "1h30m", "1.5s" -> milliseconds; the result
 * must be a whole number of milliseconds. Errors: TKV_EINVAL. Any thread. */
int tkv_config_parse_duration(const char *s, uint64_t *ms_out);
/* Shortest exact text for a size ("144MiB", "1000B") / duration ("10s",
 * "1m", "150ms"); writes at most cap bytes, NUL-terminated. Any thread. */
void tkv_config_format_size(uint64_t bytes, char *buf, size_t cap);
void tkv_config_format_duration(uint64_t ms, char *buf, size_t cap);

/* ---------------------------------------------------------------------------
 * tinykv-server configuration (conf/tinykv.toml documents every key).
 * Fixed-size strings keep the struct a plain value: copy it freely, nothing to
 * free. All durations are milliseconds, all sizes bytes.
 * ------------------------------------------------------------------------- */

#define TKV_CONFIG_ADDR_MAX 256
#define TKV_CONFIG_PATH_MAX 1024
#define TKV_CONFIG_MAX_PD 16
#define TKV_CONFIG_MAX_CORES 256

enum tkv_config_log_format { TKV_CONFIG_LOG_TEXT, TKV_CONFIG_LOG_JSON };

/* What main() should do after tkv_config_load() returned 0. */
enum tkv_config_action {
    TKV_CONFIG_RUN,     /* start the server */
    TKV_CONFIG_CHECK,   /* --config-check: config is valid; print "config is ok", exit 0 */
    TKV_CONFIG_INFO,    /* --config-info FORMAT: print tkv_config_dump(info_format), exit 0 */
    TKV_CONFIG_HELP,    /* -h/--help: print tkv_config_usage(), exit 0 (cfg not loaded) */
    TKV_CONFIG_VERSION, /* -V/--version: print the version block, exit 0 (cfg not loaded) */
};

enum tkv_config_dump_format { TKV_CONFIG_DUMP_TOML, TKV_CONFIG_DUMP_JSON };

struct tkv_server_config {
    struct {
        /* Listen address of store 0 ("host:port"); store k of this node
         * listens on port+k (tkv_config_store_addr). Port 0 = ephemeral. */
        char addr[TKV_CONFIG_ADDR_MAX];
        /* Address given to the scheduler and peers; "" = same as addr. */
        char advertise_addr[TKV_CONFIG_ADDR_MAX];
        /* HTTP status/metrics address (one per node). */
        char status_addr[TKV_CONFIG_ADDR_MAX];
        char advertise_status_addr[TKV_CONFIG_ADDR_MAX];
        /* gRPC messages larger than this get RESOURCE_EXHAUSTED. */
        uint64_t max_grpc_recv_msg_len;
        uint64_t max_grpc_send_msg_len;
        /* Bytes all gRPC connections of the node may hold in partial
         * requests and unsent responses (split evenly over the cores), and
         * one connection's share (issue 13 item 3; src/rpc/README.md). */
        uint64_t grpc_memory_pool_quota;
        uint64_t grpc_conn_memory_quota;
        /* A connection that completes no request (and answers no keepalive
         * PING) for this long is closed; trickled bytes do not count. */
        uint64_t grpc_idle_timeout_ms;
        /* Shard threads = stores on this node; 0 in the file or flag means one
         * per online CPU and is resolved by tkv_config_load(), so after a
         * successful load 1 <= cores <= TKV_CONFIG_MAX_CORES. */
        uint32_t cores;
        /* Accepted client connections per node; 0 = derived from the file
         * descriptor limit (see conf/tinykv.toml and src/server). */
        uint32_t max_connections;
    } server;
    struct {
        /* Relative paths are relative to the working directory. */
        char data_dir[TKV_CONFIG_PATH_MAX];
        /* fsync the raft log before acknowledging a write. */
        bool sync_log;
        /* Disk-full protection (TiKV's storage.reserve-space): bytes kept
         * free on the data dir's filesystem, at most 5 % of its capacity;
         * a fifth of it is a placeholder file released when the disk
         * fills. 0 = no reserve and no placeholder (writes are still
         * refused before the engine's own headroom is gone). */
        uint64_t reserve_space;
    } storage;
    struct {
        enum tkv_log_level level;
        enum tkv_config_log_format format;
        struct {
            char filename[TKV_CONFIG_PATH_MAX]; /* "" = stderr */
        } file;
    } log;
    struct {
        /* Scheduler endpoints ("host:port" or "http://host:port"); none =
         * standalone mode (no Raft cluster, TinyKV project 1). */
        char endpoints[TKV_CONFIG_MAX_PD][TKV_CONFIG_ADDR_MAX];
        uint32_t n_endpoints;
    } pd;
    struct {
        uint64_t raft_base_tick_interval_ms;
        uint32_t raft_heartbeat_ticks;
        uint32_t raft_election_timeout_ticks;
        uint64_t raft_log_gc_tick_interval_ms;
        uint64_t raft_log_gc_count_limit;
        uint64_t split_region_check_tick_interval_ms;
        uint64_t pd_heartbeat_tick_interval_ms;
        uint64_t pd_store_heartbeat_tick_interval_ms;
        uint64_t snap_mgr_gc_tick_interval_ms;
        uint64_t snap_generate_bytes_per_turn; /* raftstore cfg.snap_gen_budget */
        /* zero-fill new raft log segments before use (the raft log's
         * tkv_raftlog_config.skip_zero_fill is its negation) */
        bool raft_log_zero_fill;
    } raftstore;
    struct {
        uint64_t region_max_size;
        uint64_t region_split_size;
    } coprocessor;

    /* Set by tkv_config_load(), not config keys. */
    char config_file[TKV_CONFIG_PATH_MAX]; /* "" when no -C/--config */
    enum tkv_config_action action;
    enum tkv_config_dump_format info_format; /* for TKV_CONFIG_INFO */
};

/* Fill cfg with the built-in defaults (equal to conf/tinykv.toml). Any thread. */
void tkv_config_defaults(struct tkv_server_config *cfg);

/* Defaults with TinyKV's NewTestConfig timings (TINYKV-API.md 2.16) for
 * cluster tests: 50ms raft tick, 50ms log GC tick, 100ms split check, 100ms
 * region heartbeat, 500ms store heartbeat; addresses on 127.0.0.1 port 0
 * (ephemeral). Any thread. */
void tkv_config_test_defaults(struct tkv_server_config *cfg);

/* The whole start-up sequence: defaults, then the file named by -C/--config
 * (if any), then every other flag (flags win), then cores=0 resolution, then
 * validation. argv[0] is the program name and is skipped; argv is borrowed.
 * On success returns 0 and cfg->action says what to do (for HELP and VERSION
 * nothing else is loaded). On error returns TKV_ECONFIG (bad flag, malformed
 * file, unknown key, bad value, failed validation), -errno (config file
 * unreadable) or TKV_ENOMEM, and err holds one line such as
 * "conf/tinykv.toml:12: server.addr: expected a string" or
 * "flag --cores: expected an integer, got \"x\""; exit non-zero.
 * Main thread, before cores start. */
int tkv_config_load(struct tkv_server_config *cfg, int argc, char **argv, char *err, size_t errlen);

/* Apply a parsed document on top of cfg (strict: unknown tables/keys and
 * wrongly typed values are errors naming file, line and key). Does not
 * validate cross-key constraints; call tkv_config_validate() after.
 * Errors: TKV_ECONFIG. Any thread. */
int tkv_config_apply_doc(struct tkv_server_config *cfg, const struct tkv_toml_doc *doc, char *err,
                         size_t errlen);

/* Apply one setting by its TOML key ("server.addr") from text, the way a
 * command-line flag is applied ("16MB", "true", "a,b" for lists).
 * Errors: TKV_ECONFIG (unknown key or bad value). Any thread. */
int tkv_config_set(struct tkv_server_config *cfg, const char *key, const char *text, char *err,
                   size_t errlen);

/* Check ranges and cross-key rules (split size < max size, election ticks >
 * heartbeat ticks, addresses parse, ports do not collide, log file not inside
 * data dir, ...). Errors: TKV_ECONFIG naming the key. Any thread. */
int tkv_config_validate(const struct tkv_server_config *cfg, char *err, size_t errlen);

/* Write the effective config as TOML (loadable: re-reading it gives the same
 * config) or as one JSON object nested by section. Returns the length the full
 * text needs (excluding the NUL), like snprintf; writes at most cap bytes,
 * NUL-terminated when cap > 0. Any thread. */
size_t tkv_config_dump(const struct tkv_server_config *cfg, enum tkv_config_dump_format format,
                       char *buf, size_t cap);

/* Address of store k (0 <= k < cores): host of server.addr (or of the
 * advertise address when advertise is true and set) with port + k; port 0
 * stays 0 (ephemeral). Errors: TKV_EINVAL (k out of range, buffer too small).
 * Any thread. */
int tkv_config_store_addr(const struct tkv_server_config *cfg, uint32_t k, bool advertise,
                          char *buf, size_t cap);

/* Split "host:port" / "[v6]:port" into host (without brackets) and port
 * (tkv_hostport_split without the ":port" shorthand).
 * Errors: TKV_EINVAL. Any thread. */
int tkv_config_split_addr(const char *addr, char *host, size_t host_cap, uint16_t *port_out);

/* The --help text (static string). */
const char *tkv_config_usage(void);

/* ---------------------------------------------------------------------------
 * tinyscheduler-server configuration (PD's key names and flags; TinyKV's
 * scheduler defaults; conf/tinyscheduler.toml documents every key).
 * Empty strings marked "derived" are filled in by tkv_config_sched_load()
 * the way PD does, so after a successful load none of them is empty.
 * ------------------------------------------------------------------------- */

#define TKV_CONFIG_URLS_MAX 1024
#define TKV_CONFIG_NAME_MAX 128

struct tkv_sched_config {
    char name[TKV_CONFIG_NAME_MAX];        /* derived: "pd-<hostname>" */
    char data_dir[TKV_CONFIG_PATH_MAX];    /* derived: "default.<name>" */
    char client_urls[TKV_CONFIG_URLS_MAX]; /* "http://h:p[,http://h:p...]": gRPC */
    char peer_urls[TKV_CONFIG_URLS_MAX];   /* scheduler-to-scheduler traffic */
    char advertise_client_urls[TKV_CONFIG_URLS_MAX]; /* derived: client_urls */
    char advertise_peer_urls[TKV_CONFIG_URLS_MAX];   /* derived: peer_urls */
    char initial_cluster[TKV_CONFIG_URLS_MAX];       /* derived: "<name>=<advertise_peer_urls>" */
    char initial_cluster_state[16];                  /* "new" or "existing" */
    uint64_t lease_s;                                /* leader lease, seconds (PD: integer) */
    uint64_t tso_save_interval_ms;
    /* HTTP/1.1 status port (metrics, PD's HTTP API, dashboard): its own
     * port because the client URL's gRPC server speaks HTTP/2 only. ""
     * disables it. */
    char status_addr[TKV_CONFIG_ADDR_MAX];
    struct {
        enum tkv_log_level level;
        enum tkv_config_log_format format;
        struct {
            char filename[TKV_CONFIG_PATH_MAX]; /* "" = stderr */
        } file;
    } log;
    struct {
        uint64_t patrol_region_interval_ms;
        uint64_t max_store_down_time_ms;
        uint64_t leader_schedule_limit;
        uint64_t region_schedule_limit;
        uint64_t replica_schedule_limit;
    } schedule;
    struct {
        uint64_t max_replicas;
    } replication;

    /* Set by tkv_config_sched_load(), not config keys. */
    char config_file[TKV_CONFIG_PATH_MAX];
    enum tkv_config_action action;
    enum tkv_config_dump_format info_format;
};

/* Built-in defaults (equal to conf/tinyscheduler.toml; derived fields empty).
 * Any thread. */
void tkv_config_sched_defaults(struct tkv_sched_config *cfg);

/* Defaults, then -C/--config file, then flags (PD names: --name, --data-dir,
 * --client-urls, --peer-urls, --advertise-client-urls, --advertise-peer-urls,
 * --initial-cluster, --status-addr, -L/--log-level, --log-file, --config-check,
 * --config-info FORMAT, -V/--version, -h/--help; one or two dashes), then the
 * derived fields, then validation. Returns and errors as tkv_config_load().
 * Main thread, before cores start. */
int tkv_config_sched_load(struct tkv_sched_config *cfg, int argc, char **argv, char *err,
                          size_t errlen);

/* As the tkv_config_* counterparts, for the scheduler schema. Validation
 * accepts empty derived fields (they are checked after derivation). */
int tkv_config_sched_apply_doc(struct tkv_sched_config *cfg, const struct tkv_toml_doc *doc,
                               char *err, size_t errlen);
int tkv_config_sched_set(struct tkv_sched_config *cfg, const char *key, const char *text, char *err,
                         size_t errlen);
int tkv_config_sched_validate(const struct tkv_sched_config *cfg, char *err, size_t errlen);
size_t tkv_config_sched_dump(const struct tkv_sched_config *cfg, enum tkv_config_dump_format format,
                             char *buf, size_t cap);
/* The --help text of tinyscheduler-server (static string). */
const char *tkv_config_sched_usage(void);

#endif
