/* Internals of the standalone tinykv-server: per-core state, the Raw KV
 * handlers and the node start-up sequence (see README.md). */
#ifndef TKV_SERVER_PRIVATE_H
#define TKV_SERVER_PRIVATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>

#include "tkv/arena.h"
#include "tkv/config.h"
#include "tkv/engine.h"
#include "tkv/rpc.h"

struct tkv_reactor;
struct scan_job;
struct tkv_txn_latches;
struct txn_job;
struct tkv_reactor_group;
struct tkv_status_server;
struct tkv_counter;
struct tkv_histogram;
struct cluster_store;
struct cluster_node;

/* Engine metrics of the group-commit path (server_raw.c), shared by every
 * core; each core writes its own slot. */
struct server_metrics {
    struct tkv_counter *write_batches;     /* tinykv_engine_write_batches_total */
    struct tkv_histogram *batch_ops;       /* tinykv_engine_write_batch_ops */
    struct tkv_histogram *batch_bytes;     /* tinykv_engine_write_batch_bytes */
    struct tkv_histogram *commit_duration; /* tinykv_engine_commit_duration_seconds */
    struct tkv_counter *write_errors;      /* tinykv_engine_write_errors_total */
    struct tkv_counter *disk_full_refused; /* tinykv_disk_full_refused_writes_total */
};

/* Register the server metrics in the default registry (main thread). */
void server_metrics_init(struct server_metrics *m);

/* Disk-full protection of the node's data dir (server_disk.c, README.md
 * "Disk full"): set up by main before the engine opens, measured by a
 * monitor thread, read by every core through atomics (no syscall, no lock
 * on the hot path). */
struct tkv_gauge;
struct server_disk {
    bool enabled;             /* false when the filesystem cannot be measured */
    char dir[TKV_CONFIG_PATH_MAX];
    char placeholder[TKV_CONFIG_PATH_MAX + 32]; /* <data-dir>/space_placeholder_file */
    uint64_t capacity;        /* bytes of the filesystem at start-up */
    uint64_t reserve;         /* storage.reserve-space, at most 5 % of capacity */
    uint64_t placeholder_bytes; /* a fifth of the reserve */
    uint64_t headroom;        /* tkv_engine_disk_headroom of the engine's options */
    uint64_t refuse_below;    /* writes refused while free space is below this */
    uint64_t resume_at;       /* ... until it is back at this (room for the placeholder) */
    _Atomic uint64_t avail;   /* free bytes at the last measurement (monitor) */
    _Atomic uint64_t written; /* bytes the cores committed since then (estimate) */
    _Atomic int full;         /* 1: refusing writes (monitor; a core on ENOSPC) */
    /* Monitor thread only. */
    pthread_t thread;
    _Atomic int stop;
    bool running, warned_measure, warned_placeholder;
    uint64_t n_full_events;
    struct tkv_gauge *g_capacity, *g_available, *g_full;
};

/* Main thread, after the data dir exists and before the engine opens:
 * measure the filesystem, scale eopts' disk budget (log file size,
 * checkpoint log size, dirty bound) to it, compute the thresholds, release
 * or create the placeholder, log the plan. */
void server_disk_plan(struct server_disk *d, const struct tkv_server_config *cfg,
                      struct tkv_engine_opts *eopts);
/* Start / stop the monitor thread (main thread; stop joins). */
int server_disk_monitor_start(struct server_disk *d);
void server_disk_monitor_stop(struct server_disk *d);
/* Hot path, any core: must writes be refused now? Atomic loads only. */
bool server_disk_full(struct server_disk *d);
/* After a committed write batch (core): its ops and key+value bytes, so the
 * estimate between two measurements includes them. */
void server_disk_account(struct server_disk *d, size_t n_ops, size_t bytes);
/* The engine reported ENOSPC: refuse writes until the monitor sees room. */
void server_disk_note_enospc(struct server_disk *d);

/* The error text of a write refused for a full disk (the Raw responses'
 * error string; the gRPC RESOURCE_EXHAUSTED message of the Kv writes). */
#define SERVER_DISK_FULL_MSG "disk full"

/* One core of the standalone node: its engine session and its gRPC server
 * (accepting on its own dup of the node's one listening socket). Owned and
 * used by that core only; created by the core's init, freed by its fini. */
struct server_core {
    uint32_t core;
    int listen_fd; /* dup of the node's listener until the rpc server owns it; -1 after */
    struct tkv_engine_session *session;
    struct tkv_rpc_server *rpc;
    uint64_t max_send_msg;
    struct tkv_arena arena; /* per call: reset at the start of each handler */
    /* Group commit: writes of this loop turn, applied by server_flush_writes. */
    struct tkv_engine_batch batch;
    struct tkv_rpc_call **pending; /* calls answered after the batch; NULL = cancelled */
    size_t n_pending, cap_pending;
    uint64_t n_batches, n_batched_writes; /* for the shutdown log line */
    /* RawScans longer than one chunk, served round-robin (server_raw.c). */
    struct tkv_reactor *reactor;
    struct scan_job *scan_head, *scan_tail;
    size_t n_scans_queued;
    bool scan_pump_queued;
    bool stopping; /* orderly stop began: new scans answer UNAVAILABLE */
    uint64_t n_scans_abandoned;
    size_t scan_bytes; /* response bytes held by queued scans */
    /* Transactions (server_txn.c). Every core: its reactor and the txn
     * core (core 0), where the five writing Kv commands run. The txn core
     * only: the node's latch table, commands whose writes wait in `batch`
     * (answered and unlatched after the flush), commands resumed by a
     * latch release, and every live command (for shutdown). */
    struct server_core *txn_core;
    struct tkv_txn_latches *latches;
    struct txn_job *txn_flush, **txn_flush_tail;
    struct txn_job *txn_ready, **txn_ready_tail;
    bool txn_ready_scheduled;
    struct txn_job *txn_jobs;
    uint64_t n_txn_cmds, n_txn_waits;
    const struct server_metrics *metrics;
    struct server_disk *disk; /* the node's (shared, atomics only) */
    struct cluster_store *store; /* cluster mode: this core's store (server_cluster.c) */
};

/* The node: everything main() sets up before the cores start. Read-only
 * once the cores run. */
struct server_node {
    struct tkv_server_config cfg;
    struct server_metrics metrics;
    struct tkv_reactor_group *group; /* while the cores run (ready_mu) */
    struct tkv_status_server *status; /* NULL when status-addr is "" or taken */
    /* per core: 1 once it listens (written by the core, read by /readyz) */
    _Atomic int *core_serving;
    _Atomic int stopping; /* shutdown began: /readyz answers 503 */
    struct tkv_engine *engine;
    struct server_disk disk;
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port;             /* resolved (never 0 once the node runs) */
    uint32_t max_conns_per_core; /* server.max-connections (or derived) / cores, rounded up */
    struct server_core *cores; /* cfg.server.cores entries */
    struct cluster_node *cluster; /* cluster mode (pd.endpoints set), else NULL */
};

/* The tinykvpb.TinyKv method table: Raw{Get,Put,Delete,Scan} and the seven
 * Kv* commands served; Coprocessor, Raft and Snapshot answer UNIMPLEMENTED. data of each method =
 * the core. Fills methods[0..n) (n_out = count, at most SERVER_N_METHODS). */
#define SERVER_N_METHODS 14
void server_methods(struct server_core *core, struct tkv_rpc_method *methods, size_t *n_out);

/* Before-sleep hook of each core (arg = its server_core): apply the batched
 * writes of this loop turn in one engine write (one fsync), then answer
 * their calls. Core of arg only. */
void server_flush_writes(void *arg);

/* Answer every queued RawScan UNAVAILABLE and free it (the stop hook: a
 * SIGTERM must not wait for queued scans). Core of core only. */
void server_abandon_scans(struct server_core *core);
/* server_txn.c: the Kv* handlers (data = the receiving core). KvGet and
 * KvScan answer on that core; the writing commands run on the txn core. */
void server_on_kv_get(struct tkv_rpc_call *call, struct tkv_slice msg);
void server_on_kv_scan(struct tkv_rpc_call *call, struct tkv_slice msg);
void server_on_kv_prewrite(struct tkv_rpc_call *call, struct tkv_slice msg);
void server_on_kv_commit(struct tkv_rpc_call *call, struct tkv_slice msg);
void server_on_kv_check_txn_status(struct tkv_rpc_call *call, struct tkv_slice msg);
void server_on_kv_batch_rollback(struct tkv_rpc_call *call, struct tkv_slice msg);
void server_on_kv_resolve_lock(struct tkv_rpc_call *call, struct tkv_slice msg);
void server_txn_on_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why);
/* Core init/fini (core thread; txn_core = &node->cores[0]). */
void server_txn_core_init(struct server_core *c, struct server_core *txn_core,
                          struct tkv_reactor *r);
void server_txn_core_fini(struct server_core *c);
/* After the turn's engine write (rv its result): answer and unlatch the
 * txn commands whose writes were in it. Txn core only. */
void server_txn_after_flush(struct server_core *c, int rv);

/* Bind and listen on host:port (port_io: 0 = any; the bound port on
 * return), waiting a bounded time while the address is still held by a
 * process killed a moment ago. Returns the fd or -1 (logged). */
int server_listen_once_free(const char *host, uint16_t *port_io);

/* The error string of a client error (unknown cf named, quoted). */
struct tkv_slice server_raw_client_error(struct tkv_arena *arena, int rv, struct tkv_slice cf);

/* Run the node until SIGINT/SIGTERM. Returns the process exit code
 * (0 clean stop, 1 start-up or runtime failure). Main thread. */
int server_node_run(struct server_node *node);

/* Version block for -V/--version (static string). */
const char *server_version_text(void);

#endif
