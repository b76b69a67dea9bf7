/* Cluster mode: each core k is a store (TINYKV-API.md 2.15) hosting a
 * raftstore (include/tkv/raftstore.h) on its reactor. Start-up talks to the
 * scheduler synchronously from the main thread (one short-lived reactor per
 * call); at run time each core keeps its own scheduler connection for the
 * store heartbeat and the RegionHeartbeat stream. See README.md "Cluster
 * mode" for the durability story (raft log group commit, engine checkpoints
 * on a helper thread). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "server_cluster.h"
#include "server_private.h"
#include "errorpb.pb.h"
#include "kvrpcpb.pb.h"
#include "metapb.pb.h"
#include "schedulerpb.pb.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/fsutil.h"
#include "tkv/hostport.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/metrics.h"
#include "tkv/pb.h"
#include "tkv/raftlog.h"
#include "tkv/raftstore.h"
#include "tkv/reactor.h"
#include "tkv/transport.h"
#include "tkv/txn_cluster.h"

/* Engine checkpoints: how often each store asks for one. A checkpoint
 * bounds what a restart replays from the raft log and lets raft log GC
 * drop segments (the safe-to-drop hook answers the applied index the last
 * completed checkpoint captured). */
#define CLUSTER_CKPT_INTERVAL_MS 5000
/* While raft log work waits for a requested checkpoint (a snapshot
 * applied, a peer destroyed), the core looks for its answer this often
 * rather than at its next tick (ckpt_timer). */
#define CLUSTER_CKPT_POLL_MS 10
/* How often the checkpoint thread refreshes disk capacity for store
 * heartbeats; between refreshes it sleeps until a core asks for a
 * checkpoint (ckpt_wake_fd), so an idle or busy node pays no 10 ms polling
 * wake-ups (100 context switches a second per node, measured). */
#define CLUSTER_STATVFS_MS 1000
/* Start-up calls to the scheduler: per attempt, and how long start-up
 * keeps retrying an unreachable scheduler (TinyKV: 60 x 3 s). */
#define CLUSTER_SCHED_RPC_TIMEOUT_NS (3ull * 1000000000ull)
#define CLUSTER_SCHED_STARTUP_MS 60000
#define CLUSTER_SCHED_RETRY_MS 500
/* Largest number of regions one heartbeat round reports per store. */
#define CLUSTER_MAX_HB_REGIONS 1024
#define CLUSTER_IDENT_FILE "ident"
/* Store addresses the transport asked for (other nodes' stores), cached
 * from the scheduler's GetStore and refreshed after this long (a store
 * restarted on port 0 registers a new address). */
#define CLUSTER_ADDR_CACHE 64
#define CLUSTER_ADDR_TTL_MS 10000
/* Scheduler commands in flight per store (conf changes proposed, split
 * asks and their proposals): bounds what a flood of heartbeat responses or
 * split checks can pile up; beyond it a command waits for the scheduler's
 * next resend or the checker's next round. */
#define CLUSTER_MAX_ADMIN_INFLIGHT 64
#define CLUSTER_MAX_SPLIT_INFLIGHT 16
/* Regions to heartbeat at once (region_changed), and split results whose
 * right half is reported with them; beyond it a full round is sent. */
#define CLUSTER_MAX_URGENT 128
#define CLUSTER_MAX_SPLIT_REPORTS 16

enum ckpt_state { CKPT_IDLE = 0, CKPT_REQUESTED, CKPT_DONE };

enum req_kind { REQ_GET, REQ_PUT, REQ_DELETE, REQ_SCAN };

struct cluster_store;

/* Scheduler commands (region heartbeat responses, AskSplit), counted per
 * kind and outcome in tinykv_scheduler_commands_total. */
enum cmd_type { CMD_CHANGE_PEER, CMD_TRANSFER_LEADER, CMD_SPLIT, CMD_MALFORMED, CMD_N_TYPES };
enum cmd_result { CMD_STARTED, CMD_DONE, CMD_FAILED, CMD_IGNORED, CMD_N_RESULTS };

/* A conf change handed to the raftstore, until its callback. Owned by the
 * store (its inflight list); the list also keeps the scheduler's resends
 * of the same change from being proposed twice. */
struct admin_op {
    struct cluster_store *st;
    struct admin_op *next;
    uint64_t region_id;
    uint32_t change_type;
    struct tkv_rs_peer peer;
};

/* One split of a region this store leads: asked (AskSplit on the store's
 * scheduler connection), then proposed (tkv_raftstore_split) with the ids
 * the scheduler handed out. Owned by the store's list; at most one per
 * region. */
enum split_stage { SPLIT_NEW, SPLIT_ASKING, SPLIT_PROPOSED };
struct split_ask {
    struct cluster_store *st;
    struct split_ask *next;
    enum split_stage stage;
    struct tkv_rs_region region; /* as the split checker saw it */
    uint64_t new_region_id; /* from AskSplit */
    uint32_t key_len;
    uint8_t key[TKV_RS_BOUND_MAX];
};

/* The right half of a split, reported with the left one at once (TinyKV
 * has no ReportSplit RPC: its stores heartbeat both regions). */
struct split_report {
    uint64_t left_id;
    struct tkv_rs_region right;
};

/* One Raw request waiting for the raftstore. Owned by the store (free
 * list) from the handler until its callback; call is NULL once the client
 * cancelled it. */
struct cl_req {
    struct tkv_rpc_call *call;
    struct cluster_store *st;
    enum req_kind kind;
    uint64_t req_store_id; /* Context.peer.store_id, for StoreNotMatch */
    struct cl_req *next_free;
};

/* One store address learnt from the scheduler (GetStore). */
struct store_addr {
    uint64_t store_id;
    char addr[TKV_CONFIG_ADDR_MAX];
    uint64_t fetched_ms; /* 0: never answered */
    bool pending;        /* a GetStore is in flight */
};

struct cluster_store {
    uint32_t k;
    uint64_t store_id;
    uint64_t prepared_region, prepared_peer; /* bootstrap ids (store 0) */
    char dir[TKV_CONFIG_PATH_MAX + 32];
    char addr[TKV_CONFIG_ADDR_MAX + 8]; /* advertised host:port */
    char core_label[12];                /* "k", the store's core label */
    uint16_t port;
    int listen_fd;
    struct tkv_engine *engine;
    /* checkpoint handshake with the checkpoint thread (see ckpt_main) */
    _Atomic int ckpt_state;
    _Atomic int ckpt_rv;
    _Atomic uint64_t capacity, available;
    /* core-owned from here */
    struct server_node *node;
    struct server_core *core;
    struct tkv_reactor *r;
    struct tkv_raftlog *log;
    struct tkv_raftstore *rs;
    struct tkv_reactor_hook ready_hook;
    bool hook_added;
    struct tkv_timer tick_timer, kick_timer, hb_timer, store_hb_timer;
    /* env.request_checkpoint: the raftstore has raft log work waiting for a
     * checkpoint (a snapshot applied, a peer destroyed); ckpt_timer begins
     * one at once and polls the thread's answer every CLUSTER_CKPT_POLL_MS
     * until a checkpoint begun after the request is done (ckpt_urgent). */
    struct tkv_timer ckpt_timer;
    bool ckpt_wanted, ckpt_urgent;
    uint64_t last_ckpt_ms;
    uint64_t n_ckpts, n_ckpt_failures;
    struct tkv_rpc_client *sched;
    struct tkv_rpc_ccall *hb_stream;
    bool stopping;
    bool closing; /* core fini: calls are gone, answers are dropped */
    uint64_t led_sum;      /* fingerprint of the regions led at the last tick */
    uint64_t dropped_msgs; /* cluster_send before the transport exists */
    struct tkv_transport *tp;
    struct tkv_txn_cluster *txn; /* Kv* commands of the regions this store leads */
    struct store_addr addrs[CLUSTER_ADDR_CACHE];
    uint64_t ignored_ops;  /* scheduler commands refused by validation */
    struct admin_op *admin_ops; /* conf changes in flight */
    size_t n_admin_ops;
    struct split_ask *splits; /* splits asked or proposed */
    size_t n_splits;
    struct tkv_timer split_timer, urgent_timer;
    uint64_t urgent[CLUSTER_MAX_URGENT]; /* regions to heartbeat at once */
    size_t n_urgent;
    bool urgent_all; /* overflow: heartbeat every led region */
    struct split_report reports[CLUSTER_MAX_SPLIT_REPORTS];
    size_t n_reports;
    struct tkv_counter *cmd_counters[CMD_N_TYPES][CMD_N_RESULTS];
    struct tkv_arena arena; /* responses, reset per callback */
    struct cl_req *free_reqs;
    size_t n_live_reqs;
    uint64_t max_send_msg;
};

struct cluster_node {
    uint64_t cluster_id;
    char sched_host[TKV_CONFIG_ADDR_MAX];
    uint16_t sched_port;
    char node_label[TKV_CONFIG_ADDR_MAX + 8];
    struct cluster_store *stores;
    uint32_t n_stores;
    pthread_t ckpt_thread;
    bool ckpt_started;
    _Atomic int ckpt_stop;
    /* eventfd the cores write after raising CKPT_REQUESTED (and close after
     * ckpt_stop): a non-blocking write, the thread's only wake-up */
    int ckpt_wake_fd;
};

static struct cluster_node *cluster_of(const struct server_node *node)
{
    return node->cluster;
}

/* Non-blocking eventfd write (any thread): EAGAIN means the counter is
 * saturated, i.e. a wake-up is pending anyway. */
static void ckpt_wake(struct cluster_node *cl)
{
    uint64_t one = 1;
    ssize_t n = write(cl->ckpt_wake_fd, &one, sizeof(one));
    (void)n;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ================================================================ ident */

/* <store dir>/ident: "cluster_id N\nstore_id N\n[bootstrap_region N\n
 * bootstrap_peer N\n]". Written atomically (tmp, fsync, rename, fsync of
 * the dir) so a crash leaves the old or the new file. Untrusted on read:
 * unknown keys, bad numbers or a missing store id refuse start-up. */
static int ident_read(struct cluster_store *st, uint64_t *cluster_id)
{
    char path[sizeof(st->dir) + 16], buf[512];
    snprintf(path, sizeof(path), "%s/%s", st->dir, CLUSTER_IDENT_FILE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 1 : -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0)
        return -errno;
    buf[n] = 0;
    char *save = NULL;
    *cluster_id = 0;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char key[32];
        uint64_t v;
        char tail;
        if (sscanf(line, "%31s %" SCNu64 "%c", key, &v, &tail) != 2 || v == 0) {
            TKV_LOG_ERROR("malformed store ident line", TKV_LF_STR("path", path),
                          TKV_LF_STR("line", line));
            return TKV_ECORRUPT;
        }
        if (strcmp(key, "cluster_id") == 0)
            *cluster_id = v;
        else if (strcmp(key, "store_id") == 0)
            st->store_id = v;
        else if (strcmp(key, "bootstrap_region") == 0)
            st->prepared_region = v;
        else if (strcmp(key, "bootstrap_peer") == 0)
            st->prepared_peer = v;
        else {
            TKV_LOG_ERROR("unknown key in the store ident", TKV_LF_STR("path", path),
                          TKV_LF_STR("key", key));
            return TKV_ECORRUPT;
        }
    }
    if (!*cluster_id || !st->store_id || (!st->prepared_region != !st->prepared_peer)) {
        TKV_LOG_ERROR("incomplete store ident", TKV_LF_STR("path", path));
        return TKV_ECORRUPT;
    }
    return 0;
}

static int ident_write(const struct cluster_store *st, uint64_t cluster_id)
{
    char path[sizeof(st->dir) + 16], tmp[sizeof(st->dir) + 24], buf[256];
    int n = snprintf(buf, sizeof(buf), "cluster_id %" PRIu64 "\nstore_id %" PRIu64 "\n", cluster_id,
                     st->store_id);
    if (st->prepared_region)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n,
                      "bootstrap_region %" PRIu64 "\nbootstrap_peer %" PRIu64 "\n",
                      st->prepared_region, st->prepared_peer);
    snprintf(path, sizeof(path), "%s/%s", st->dir, CLUSTER_IDENT_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rv = 0;
    if (write(fd, buf, (size_t)n) != n || fsync(fd) != 0)
        rv = errno ? -errno : TKV_EIOFATAL;
    close(fd);
    if (rv == 0 && rename(tmp, path) != 0)
        rv = -errno;
    if (rv == 0) {
        int dfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            rv = -errno;
        if (dfd >= 0)
            close(dfd);
    }
    return rv;
}

/* ============================================ start-up scheduler calls */

/* One blocking unary call on a short-lived one-core reactor: start-up
 * runs on the main thread before the cores exist, and a handful of calls
 * is all it needs, so sequential code beats an async chain here. */
struct sync_call {
    const char *host;
    uint16_t port;
    const char *path;
    struct tkv_slice req;
    struct tkv_reactor *r;
    struct tkv_rpc_client *cl;
    int status; /* gRPC status, or -1: no answer */
    char message[256];
    uint8_t *resp;
    size_t resp_len;
};

static void sync_finish(void *arg)
{
    struct sync_call *sc = arg;
    if (sc->cl)
        tkv_rpc_client_close(sc->cl);
    sc->cl = NULL;
    tkv_reactor_group_stop(tkv_reactor_group_of(sc->r));
}

static void sync_cb(void *user, enum tkv_grpc_status status, const char *message,
                    struct tkv_slice resp)
{
    struct sync_call *sc = user;
    sc->status = (int)status;
    snprintf(sc->message, sizeof(sc->message), "%s", message ? message : "");
    if (status == TKV_GRPC_OK && resp.len) {
        sc->resp = tkv_xmalloc(resp.len);
        memcpy(sc->resp, resp.ptr, resp.len);
        sc->resp_len = resp.len;
    }
    tkv_reactor_defer(sc->r, sync_finish, sc);
}

static int sync_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    struct sync_call *sc = arg;
    (void)core;
    sc->r = r;
    int rv = tkv_rpc_client_connect(r, sc->host, sc->port, NULL, &sc->cl);
    if (rv == 0)
        rv = tkv_rpc_client_unary(sc->cl, sc->path, sc->req.ptr, sc->req.len,
                                  CLUSTER_SCHED_RPC_TIMEOUT_NS, sync_cb, sc);
    if (rv) {
        snprintf(sc->message, sizeof(sc->message), "%s", tkv_strerror(rv));
        tkv_reactor_defer(r, sync_finish, sc);
    }
    return 0;
}

static void sync_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    struct sync_call *sc = arg;
    (void)r;
    (void)core;
    if (sc->cl)
        tkv_rpc_client_close(sc->cl);
    sc->cl = NULL;
}

/* Call path on host:port; decode the response into resp (arena-backed).
 * Returns 0, TKV_EUNAVAILABLE (no answer / gRPC error; text in why) or
 * TKV_EPROTO (undecodable answer). */
static int sched_call_at(const char *host, uint16_t port, const char *method,
                         const pb_msgdesc_t *req_fields, const void *req,
                         const pb_msgdesc_t *resp_fields, void *resp, struct tkv_arena *arena,
                         char *why, size_t why_cap)
{
    char path[128];
    struct tkv_slice enc;
    snprintf(path, sizeof(path), "/schedulerpb.Scheduler/%s", method);
    if (tkv_pb_encode_arena(req_fields, req, arena, 0, &enc) != 0)
        return TKV_EINVAL;
    struct sync_call sc = {.host = host, .port = port, .path = path, .req = enc, .status = -1};
    struct tkv_reactor_config rcfg = {.n_cores = 1, .pin = false, .uring_entries = 64};
    struct tkv_reactor_group *g = NULL;
    int rv = tkv_reactor_group_start(&rcfg, sync_init, sync_fini, &sc, &g);
    if (rv == 0)
        rv = tkv_reactor_group_wait(g);
    if (rv == 0 && sc.status != TKV_GRPC_OK) {
        snprintf(why, why_cap, "%s: %s (%s)", method,
                 sc.status < 0 ? "no answer" : tkv_grpc_status_name(sc.status), sc.message);
        rv = TKV_EUNAVAILABLE;
    }
    if (rv == 0) {
        struct tkv_slice copy = tkv_pb_dup(arena, sc.resp ? sc.resp : (const uint8_t *)"",
                                           sc.resp_len);
        if (tkv_pb_decode(resp_fields, resp, copy.ptr, copy.len, arena) != 0) {
            snprintf(why, why_cap, "%s: undecodable response", method);
            rv = TKV_EPROTO;
        }
    } else if (sc.status < 0 && why[0] == 0) {
        snprintf(why, why_cap, "%s: %s", method, tkv_strerror(rv));
    }
    tkv_free(sc.resp);
    return rv;
}

/* A response header error (type, message) as one line; 0 when none. */
static int header_error(const schedulerpb_ResponseHeader *h, bool has, char *why, size_t cap)
{
    if (!has || !h->has_error)
        return 0;
    snprintf(why, cap, "scheduler error %d: %.*s", (int)h->error.type,
             (int)TKV_MIN(h->error.message.len, 200), (const char *)h->error.message.ptr);
    return (int)h->error.type ? (int)h->error.type : -1;
}

/* Retry a start-up call until it answers or the start-up budget is spent. */
#define SCHED_CALL(cl, arena, method, Req, req, Resp, resp)                                      \
    sched_call_retry((cl), (arena), #method, schedulerpb_##Req##_fields, (req),                  \
                     schedulerpb_##Resp##_fields, (resp), sizeof(*(resp)))

static int sched_call_retry(struct cluster_node *cl, struct tkv_arena *arena, const char *method,
                            const pb_msgdesc_t *req_fields, const void *req,
                            const pb_msgdesc_t *resp_fields, void *resp, size_t resp_size)
{
    uint64_t deadline = mono_ms() + CLUSTER_SCHED_STARTUP_MS;
    char why[400] = "";
    bool warned = false;
    for (;;) {
        memset(resp, 0, resp_size);
        why[0] = 0;
        int rv = sched_call_at(cl->sched_host, cl->sched_port, method, req_fields, req,
                               resp_fields, resp, arena, why, sizeof(why));
        if (rv != TKV_EUNAVAILABLE)
            return rv;
        if (mono_ms() >= deadline) {
            TKV_LOG_ERROR("the scheduler does not answer; giving up", TKV_LF_STR("why", why),
                          TKV_LF_STR("scheduler", cl->sched_host),
                          TKV_LF_U64("port", cl->sched_port));
            return rv;
        }
        if (!warned)
            TKV_LOG_WARN("the scheduler does not answer yet; retrying", TKV_LF_STR("why", why));
        warned = true;
        sleep_ms(CLUSTER_SCHED_RETRY_MS);
    }
}

/* "http://h:p" or "h:p" -> host, port. */
static int parse_endpoint(const char *s, size_t len, char *host, size_t cap, uint16_t *port)
{
    char buf[TKV_CONFIG_ADDR_MAX];
    if (len >= sizeof(buf))
        return TKV_EINVAL;
    memcpy(buf, s, len);
    buf[len] = 0;
    const char *p = buf;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strncmp(p, "https://", 8) == 0)
        p += 8;
    char *slash = strchr(p, '/');
    if (slash)
        *slash = 0;
    return tkv_hostport_split(p, NULL, host, cap, port);
}

/* GetMembers on each endpoint until one answers: the cluster id and the
 * leader's first client URL (TINYKV-API.md 2.15). */
static int find_scheduler(struct server_node *node, struct cluster_node *cl, struct tkv_arena *a)
{
    const struct tkv_server_config *cfg = &node->cfg;
    uint64_t deadline = mono_ms() + CLUSTER_SCHED_STARTUP_MS;
    bool warned = false;
    for (;;) {
        char why[400] = "";
        for (uint32_t i = 0; i < cfg->pd.n_endpoints; i++) {
            char host[TKV_CONFIG_ADDR_MAX];
            uint16_t port;
            const char *ep = cfg->pd.endpoints[i];
            if (parse_endpoint(ep, strlen(ep), host, sizeof(host), &port) != 0) {
                TKV_LOG_ERROR("bad pd.endpoints entry", TKV_LF_STR("endpoint", ep));
                return TKV_EINVAL;
            }
            schedulerpb_GetMembersRequest req = {0};
            schedulerpb_GetMembersResponse resp = {0};
            tkv_arena_reset(a);
            int rv = sched_call_at(host, port, "GetMembers", schedulerpb_GetMembersRequest_fields,
                                   &req, schedulerpb_GetMembersResponse_fields, &resp, a, why,
                                   sizeof(why));
            if (rv || !resp.has_header || resp.header.cluster_id == 0)
                continue;
            cl->cluster_id = resp.header.cluster_id;
            snprintf(cl->sched_host, sizeof(cl->sched_host), "%s", host);
            cl->sched_port = port;
            if (resp.has_leader && resp.leader.client_urls.n > 0) {
                struct tkv_slice u = resp.leader.client_urls.items[0];
                char lh[TKV_CONFIG_ADDR_MAX];
                uint16_t lp;
                if (parse_endpoint((const char *)u.ptr, u.len, lh, sizeof(lh), &lp) == 0) {
                    snprintf(cl->sched_host, sizeof(cl->sched_host), "%s", lh);
                    cl->sched_port = lp;
                }
            }
            TKV_LOG_INFO("found the scheduler", TKV_LF_U64("cluster_id", cl->cluster_id),
                         TKV_LF_STR("leader_host", cl->sched_host),
                         TKV_LF_U64("leader_port", cl->sched_port));
            return 0;
        }
        if (mono_ms() >= deadline) {
            TKV_LOG_ERROR("no scheduler endpoint answers GetMembers; giving up",
                          TKV_LF_STR("last_error", why));
            return TKV_EUNAVAILABLE;
        }
        if (!warned)
            TKV_LOG_WARN("no scheduler endpoint answers GetMembers yet; retrying",
                         TKV_LF_STR("last_error", why));
        warned = true;
        sleep_ms(CLUSTER_SCHED_RETRY_MS);
    }
}

/* label: room for the store's two labels. */
static void fill_store_pb(struct cluster_node *cl, struct cluster_store *st, metapb_Store *out,
                          metapb_StoreLabel label[2])
{
    memset(out, 0, sizeof(*out));
    out->id = st->store_id;
    out->address = tkv_pb_str(st->addr);
    out->state = metapb_StoreState_Up;
    /* The node label keeps the scheduler from placing two replicas of a
     * region on two stores (cores) of this one machine. */
    label[0].key = tkv_pb_str("node");
    label[0].value = tkv_pb_str(cl->node_label);
    /* Which core of the node: for people (the dashboard, store list);
     * placement looks at the node label only. */
    snprintf(st->core_label, sizeof(st->core_label), "%u", (unsigned)st->k);
    label[1].key = tkv_pb_str("core");
    label[1].value = tkv_pb_str(st->core_label);
    out->labels.items = label;
    out->labels.n = 2;
}

static int alloc_id(struct cluster_node *cl, struct tkv_arena *a, uint64_t *out)
{
    schedulerpb_AllocIDRequest req = {.has_header = true, .header.cluster_id = cl->cluster_id};
    schedulerpb_AllocIDResponse resp;
    char why[300];
    int rv = SCHED_CALL(cl, a, AllocID, AllocIDRequest, &req, AllocIDResponse, &resp);
    if (rv == 0 && header_error(&resp.header, resp.has_header, why, sizeof(why))) {
        TKV_LOG_ERROR("AllocID failed", TKV_LF_STR("why", why));
        return TKV_EUNAVAILABLE;
    }
    if (rv == 0 && resp.id == 0)
        rv = TKV_EPROTO;
    *out = resp.id;
    return rv;
}

static void region_genesis(const struct cluster_store *st, struct tkv_rs_region *rg)
{
    memset(rg, 0, sizeof(*rg));
    rg->id = st->prepared_region;
    rg->epoch.conf_ver = 1; /* TinyKV's bootstrap epoch */
    rg->epoch.version = 1;
    rg->n_peers = 1;
    rg->peers[0].id = st->prepared_peer;
    rg->peers[0].store_id = st->store_id;
}

static int open_raftlog_sync(struct cluster_store *st, struct tkv_raftlog **out)
{
    char dir[sizeof(st->dir) + 8];
    struct tkv_raftlog_corruption where = {0};
    snprintf(dir, sizeof(dir), "%s/raft", st->dir);
    struct tkv_raftlog_config lc = {
        .dir = dir, .skip_zero_fill = !st->node->cfg.raftstore.raft_log_zero_fill};
    int rv = tkv_raftlog_open(&lc, out, &where);
    if (rv == TKV_ECORRUPT)
        TKV_LOG_ERROR("the raft log is corrupt", TKV_LF_STR("path", where.path),
                      TKV_LF_U64("offset", where.offset), TKV_LF_STR("reason", where.reason));
    else if (rv)
        TKV_LOG_ERROR("cannot open the raft log", TKV_LF_STR("dir", dir), TKV_LF_ERR(rv));
    return rv;
}

/* The store's engine, <dir>/kv. Raft mode: WiredTiger's log off;
 * durability comes from the raft log's group commit, engine state from
 * checkpoints. One WiredTiger cache per store: the default split over the
 * stores. */
static int open_store_engine(struct cluster_node *cl, struct cluster_store *st)
{
    char kv_dir[sizeof(st->dir) + 8];
    snprintf(kv_dir, sizeof(kv_dir), "%s/kv", st->dir);
    size_t cache = (256u << 20) / cl->n_stores;
    struct tkv_engine_opts eo = {.kind = TKV_ENGINE_WT, .path = kv_dir, .sync = false,
                                 .cache_bytes = cache < (32u << 20) ? (32u << 20) : cache};
    int rv = tkv_engine_open(&eo, &st->engine);
    if (rv)
        TKV_LOG_ERROR("cannot open the storage engine", TKV_LF_STR("path", kv_dir),
                      TKV_LF_ERR(rv));
    return rv;
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* rm -r path (absent is fine). */
static int remove_tree(const char *path)
{
    if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        return -errno;
    return 0;
}

/* Store 0 prepared a first region but another node bootstrapped the
 * cluster (TinyKV's ClearPrepareBootstrap): the prepared region overlaps
 * the cluster's and must go. The store holds nothing else (no other store
 * can have reached it: it was never registered), so its engine and raft
 * log are wiped and reopened empty; the ident forgets the prepared ids last,
 * so a crash in between wipes again at the next start. */
static int discard_prepared(struct cluster_node *cl, struct cluster_store *st)
{
    char path[sizeof(st->dir) + 8];
    int rv = 0;
    TKV_LOG_WARN("another node bootstrapped the cluster; discarding the first region this "
                 "store prepared",
                 TKV_LF_U64("store_id", st->store_id),
                 TKV_LF_U64("prepared_region", st->prepared_region));
    tkv_engine_close(st->engine);
    st->engine = NULL;
    snprintf(path, sizeof(path), "%s/kv", st->dir);
    rv = remove_tree(path);
    snprintf(path, sizeof(path), "%s/raft", st->dir);
    if (rv == 0)
        rv = remove_tree(path);
    if (rv == 0) {
        int dfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            rv = -errno;
        if (dfd >= 0)
            close(dfd);
    }
    if (rv) {
        TKV_LOG_ERROR("cannot remove the prepared region", TKV_LF_STR("dir", st->dir),
                      TKV_LF_ERR(rv));
        return rv;
    }
    st->prepared_region = st->prepared_peer = 0;
    if ((rv = ident_write(st, cl->cluster_id))) {
        TKV_LOG_ERROR("cannot write the store ident", TKV_LF_STR("dir", st->dir), TKV_LF_ERR(rv));
        return rv;
    }
    return open_store_engine(cl, st);
}

/* The cluster is bootstrapped and store 0 holds a prepared first region:
 * is it the cluster's? Bootstrap registers the bootstrapping store, and a
 * store with a prepared region registers itself (PutStore) only after this
 * question was answered, so the scheduler knowing store 0 means our
 * Bootstrap went through; not knowing it means another node's did. */
static int resolve_prepared(struct cluster_node *cl, struct tkv_arena *a)
{
    struct cluster_store *st = &cl->stores[0];
    if (!st->prepared_region)
        return 0;
    schedulerpb_GetStoreRequest req = {.has_header = true,
                                       .header.cluster_id = cl->cluster_id,
                                       .store_id = st->store_id};
    schedulerpb_GetStoreResponse resp;
    int rv = SCHED_CALL(cl, a, GetStore, GetStoreRequest, &req, GetStoreResponse, &resp);
    if (rv)
        return rv;
    if (resp.has_store && resp.store.id == st->store_id &&
        !(resp.has_header && resp.header.has_error))
        return 0; /* ours: keep it */
    return discard_prepared(cl, st);
}

/* TinyKV's bootstrap (2.15) on store 0 when the cluster is not
 * bootstrapped: ids for region and peer persisted in the ident first (so
 * a crash in between reuses them instead of making a second region), the
 * genesis region written locally, then Bootstrap. */
static int bootstrap_cluster(struct cluster_node *cl, struct tkv_arena *a)
{
    struct cluster_store *st = &cl->stores[0];
    int rv;
    if (!st->prepared_region) {
        uint64_t rid, pid;
        if ((rv = alloc_id(cl, a, &rid)) || (rv = alloc_id(cl, a, &pid)))
            return rv;
        st->prepared_region = rid;
        st->prepared_peer = pid;
        if ((rv = ident_write(st, cl->cluster_id))) {
            TKV_LOG_ERROR("cannot write the store ident", TKV_LF_STR("dir", st->dir),
                          TKV_LF_ERR(rv));
            return rv;
        }
    }
    struct tkv_raftlog *log = NULL;
    if ((rv = open_raftlog_sync(st, &log)))
        return rv;
    if (tkv_raftlog_last_index(log, st->prepared_region) < TKV_RAFT_INIT_INDEX) {
        struct tkv_rs_region rg;
        region_genesis(st, &rg);
        rv = tkv_raftstore_bootstrap(log, st->engine, st->store_id, &rg);
        if (rv)
            TKV_LOG_ERROR("cannot write the first region", TKV_LF_ERR(rv));
    }
    tkv_raftlog_close(log);
    if (rv)
        return rv;
    metapb_StoreLabel label[2];
    schedulerpb_BootstrapRequest req = {.has_header = true,
                                        .header.cluster_id = cl->cluster_id,
                                        .has_store = true};
    fill_store_pb(cl, st, &req.store, label);
    schedulerpb_BootstrapResponse resp;
    char why[300];
    rv = SCHED_CALL(cl, a, Bootstrap, BootstrapRequest, &req, BootstrapResponse, &resp);
    if (rv)
        return rv;
    int err = header_error(&resp.header, resp.has_header, why, sizeof(why));
    if (err == schedulerpb_ErrorType_ALREADY_BOOTSTRAPPED) {
        /* Two nodes started together and the other one won. */
        return resolve_prepared(cl, a);
    }
    if (err) {
        TKV_LOG_ERROR("Bootstrap failed", TKV_LF_STR("why", why));
        return TKV_EUNAVAILABLE;
    }
    TKV_LOG_INFO("bootstrapped the cluster", TKV_LF_U64("cluster_id", cl->cluster_id),
                 TKV_LF_U64("store_id", st->store_id),
                 TKV_LF_U64("region_id", st->prepared_region),
                 TKV_LF_U64("peer_id", st->prepared_peer));
    return 0;
}

static int put_store(struct cluster_node *cl, struct cluster_store *st, struct tkv_arena *a)
{
    metapb_StoreLabel label[2];
    schedulerpb_PutStoreRequest req = {.has_header = true,
                                       .header.cluster_id = cl->cluster_id,
                                       .has_store = true};
    fill_store_pb(cl, st, &req.store, label);
    schedulerpb_PutStoreResponse resp;
    char why[300];
    int rv = SCHED_CALL(cl, a, PutStore, PutStoreRequest, &req, PutStoreResponse, &resp);
    if (rv == 0 && header_error(&resp.header, resp.has_header, why, sizeof(why))) {
        TKV_LOG_ERROR("PutStore refused", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_STR("address", st->addr), TKV_LF_STR("why", why));
        return TKV_ECONFLICT;
    }
    return rv;
}

/* ===================================================== raftstore glue */

static uint64_t env_now_ms(void *ctx)
{
    struct cluster_store *st = ctx;
    return st->r ? tkv_now_ns(st->r) / 1000000 : mono_ms();
}

/* The one exit of raft messages to other stores: the store's transport
 * (src/transport: one Raft stream per destination store, batched per loop
 * turn, bounded queues). Before it exists (the start-up recovery pass, the
 * moment between opening the raftstore and the transport) a message is
 * dropped and counted, as a lossy network would: raft retransmits. */
static void cluster_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m)
{
    struct cluster_store *st = ctx;
    if (st->tp && !st->closing)
        tkv_transport_send(st->tp, to_store, m);
    else
        st->dropped_msgs++;
}

static void rs_config(const struct server_node *node, const struct cluster_store *st,
                      struct tkv_raftstore_config *rc)
{
    const struct tkv_server_config *cfg = &node->cfg;
    uint64_t tick = cfg->raftstore.raft_base_tick_interval_ms ? cfg->raftstore.raft_base_tick_interval_ms : 1000;
    memset(rc, 0, sizeof(*rc));
    rc->store_id = st->store_id;
    rc->election_tick = cfg->raftstore.raft_election_timeout_ticks;
    rc->heartbeat_tick = cfg->raftstore.raft_heartbeat_ticks;
    uint64_t gc = cfg->raftstore.raft_log_gc_tick_interval_ms / tick;
    rc->raft_log_gc_tick = gc ? (uint32_t)TKV_MIN(gc, UINT32_MAX) : 1;
    rc->raft_log_gc_count_limit = cfg->raftstore.raft_log_gc_count_limit;
    /* Split check (coprocessor.region-max-size / -split-size,
     * raftstore.split-region-check-tick-interval in ticks, at least one). */
    rc->region_max_size = cfg->coprocessor.region_max_size;
    rc->region_split_size = cfg->coprocessor.region_split_size;
    uint64_t sc = cfg->raftstore.split_region_check_tick_interval_ms / tick;
    rc->split_check_tick = sc ? (uint32_t)TKV_MIN(sc, UINT32_MAX) : 1;
    rc->snap_gen_budget = cfg->raftstore.snap_generate_bytes_per_turn;
    rc->seed = st->store_id * 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
}

/* Open every store's raft log synchronously, open its raftstore and close
 * both: the open-time repairs (a raft log left behind a snapshot, raft's
 * hard state) are written before the core reopens the log in reactor mode
 * (raftstore README "Departures"), and a corrupt store fails start-up
 * here, before anything serves. */
static int recovery_pass(struct server_node *node, struct cluster_store *st)
{
    struct tkv_raftlog *log = NULL;
    int rv = open_raftlog_sync(st, &log);
    if (rv)
        return rv;
    struct tkv_raftstore_env env = {.ctx = st, .now_ms = env_now_ms, .send = cluster_send,
                                    .raftlog = log, .engine = st->engine};
    struct tkv_raftstore_config rc;
    rs_config(node, st, &rc);
    struct tkv_raftstore *rs = NULL;
    rv = tkv_raftstore_open(&rc, &env, &rs);
    if (rv)
        TKV_LOG_ERROR("cannot open the raftstore", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_ERR(rv));
    tkv_raftstore_close(rs);
    tkv_raftlog_close(log);
    return rv;
}

/* ============================================== the checkpoint thread */

/* Engine checkpoints off the cores: a core asks (state REQUESTED, after
 * tkv_raftstore_checkpoint_begin captured the applied indexes), this
 * thread runs tkv_engine_checkpoint (WiredTiger checkpoints run beside the
 * core's writes) and answers (DONE); the core's next tick calls
 * tkv_raftstore_checkpoint_done. No lock: one atomic word per store. */
static void *ckpt_main(void *arg)
{
    struct cluster_node *cl = arg;
    uint64_t last_statvfs = 0;
    while (!atomic_load(&cl->ckpt_stop)) {
        for (uint32_t k = 0; k < cl->n_stores; k++) {
            struct cluster_store *st = &cl->stores[k];
            if (atomic_load_explicit(&st->ckpt_state, memory_order_acquire) != CKPT_REQUESTED)
                continue;
            int rv = tkv_engine_checkpoint(st->engine);
            atomic_store(&st->ckpt_rv, rv);
            atomic_store_explicit(&st->ckpt_state, CKPT_DONE, memory_order_release);
        }
        uint64_t now = mono_ms();
        if (now - last_statvfs >= CLUSTER_STATVFS_MS) {
            last_statvfs = now;
            for (uint32_t k = 0; k < cl->n_stores; k++) {
                struct statvfs sv;
                if (statvfs(cl->stores[k].dir, &sv) == 0) {
                    atomic_store(&cl->stores[k].capacity, (uint64_t)sv.f_blocks * sv.f_frsize);
                    atomic_store(&cl->stores[k].available, (uint64_t)sv.f_bavail * sv.f_frsize);
                }
            }
        }
        /* until a request (or stop) or the next disk refresh; a request
         * raised between the scan above and this poll left the counter
         * non-zero, so it is not slept through */
        uint64_t waited = mono_ms() - last_statvfs;
        int timeout = waited >= CLUSTER_STATVFS_MS ? 0 : (int)(CLUSTER_STATVFS_MS - waited);
        struct pollfd pfd = {.fd = cl->ckpt_wake_fd, .events = POLLIN};
        if (poll(&pfd, 1, timeout) > 0) {
            uint64_t n;
            ssize_t got = read(cl->ckpt_wake_fd, &n, sizeof(n));
            (void)got; /* EAGAIN: another reader cannot exist; nothing to do */
        }
    }
    return NULL;
}

/* ==================================================== prepare (main) */

static int store_listen(struct server_node *node, struct cluster_store *st)
{
    const struct tkv_server_config *cfg = &node->cfg;
    char host[TKV_CONFIG_ADDR_MAX], adv[TKV_CONFIG_ADDR_MAX + 8], ahost[TKV_CONFIG_ADDR_MAX];
    uint16_t port, aport;
    int rv = tkv_config_split_addr(cfg->server.addr, host, sizeof(host), &port);
    if (rv)
        return rv;
    if (!host[0])
        snprintf(host, sizeof(host), "0.0.0.0");
    uint16_t want = port ? (uint16_t)(port + st->k) : 0;
    st->listen_fd = server_listen_once_free(host, &want);
    if (st->listen_fd < 0)
        return TKV_EUNAVAILABLE;
    st->port = want;
    /* Advertised: advertise-addr (port + k) or server.addr's host, with
     * the port actually bound when the configured one is 0. */
    rv = tkv_config_store_addr(cfg, st->k, true, adv, sizeof(adv));
    if (rv == 0)
        rv = tkv_config_split_addr(adv, ahost, sizeof(ahost), &aport);
    if (rv)
        return rv;
    if (aport == 0 || !cfg->server.advertise_addr[0])
        aport = st->port;
    if (strchr(ahost, ':'))
        snprintf(st->addr, sizeof(st->addr), "[%s]:%u", ahost, (unsigned)aport);
    else
        snprintf(st->addr, sizeof(st->addr), "%s:%u", ahost, (unsigned)aport);
    return 0;
}

int server_cluster_prepare(struct server_node *node)
{
    const struct tkv_server_config *cfg = &node->cfg;
    struct cluster_node *cl = tkv_xcalloc(1, sizeof(*cl));
    struct tkv_arena arena;
    int rv = 0;
    node->cluster = cl;
    cl->ckpt_wake_fd = -1;
    tkv_arena_init(&arena, 0);
    cl->n_stores = cfg->server.cores;
    cl->stores = tkv_xcalloc(cl->n_stores, sizeof(*cl->stores));
    for (uint32_t k = 0; k < cl->n_stores; k++) {
        cl->stores[k].k = k;
        cl->stores[k].listen_fd = -1;
        cl->stores[k].node = node;
        snprintf(cl->stores[k].dir, sizeof(cl->stores[k].dir), "%s/store-%u",
                 cfg->storage.data_dir, (unsigned)k);
    }
    /* listeners first: the addresses we register are the ports we hold */
    for (uint32_t k = 0; k < cl->n_stores && rv == 0; k++)
        rv = store_listen(node, &cl->stores[k]);
    if (rv)
        goto out;
    snprintf(cl->node_label, sizeof(cl->node_label), "%s", cl->stores[0].addr);
    node->port = cl->stores[0].port;

    rv = find_scheduler(node, cl, &arena);
    if (rv)
        goto out;
    for (uint32_t k = 0; k < cl->n_stores && rv == 0; k++) {
        struct cluster_store *st = &cl->stores[k];
        uint64_t cid = 0;
        rv = tkv_mkdir_p(st->dir);
        if (rv) {
            TKV_LOG_ERROR("cannot create the store dir", TKV_LF_STR("path", st->dir),
                          TKV_LF_ERR(rv));
            break;
        }
        rv = ident_read(st, &cid);
        if (rv < 0) {
            TKV_LOG_ERROR("cannot read the store ident", TKV_LF_STR("dir", st->dir),
                          TKV_LF_ERR(rv));
            break;
        }
        if (rv == 0 && cid != cl->cluster_id) {
            TKV_LOG_ERROR("this store belongs to another cluster",
                          TKV_LF_STR("dir", st->dir), TKV_LF_U64("store_cluster_id", cid),
                          TKV_LF_U64("scheduler_cluster_id", cl->cluster_id));
            rv = TKV_ECONFLICT;
            break;
        }
        if (rv == 1) { /* a new store */
            rv = alloc_id(cl, &arena, &st->store_id);
            if (rv == 0)
                rv = ident_write(st, cl->cluster_id);
            if (rv) {
                TKV_LOG_ERROR("cannot get or persist a store id", TKV_LF_STR("dir", st->dir),
                              TKV_LF_ERR(rv));
                break;
            }
            TKV_LOG_INFO("new store id", TKV_LF_U64("store", k), TKV_LF_U64("store_id", st->store_id));
        }
        rv = open_store_engine(cl, st);
    }
    if (rv)
        goto out;

    schedulerpb_IsBootstrappedRequest ireq = {.has_header = true,
                                              .header.cluster_id = cl->cluster_id};
    schedulerpb_IsBootstrappedResponse iresp;
    rv = SCHED_CALL(cl, &arena, IsBootstrapped, IsBootstrappedRequest, &ireq,
                    IsBootstrappedResponse, &iresp);
    if (rv == 0 && !iresp.bootstrapped)
        rv = bootstrap_cluster(cl, &arena);
    else if (rv == 0)
        rv = resolve_prepared(cl, &arena); /* a crash may have left a lost race's region */
    for (uint32_t k = 0; k < cl->n_stores && rv == 0; k++)
        rv = recovery_pass(node, &cl->stores[k]);
    for (uint32_t k = 0; k < cl->n_stores && rv == 0; k++)
        rv = put_store(cl, &cl->stores[k], &arena);
    if (rv)
        goto out;

    node->cores = tkv_xcalloc(cl->n_stores, sizeof(*node->cores));
    for (uint32_t k = 0; k < cl->n_stores; k++) {
        node->cores[k].listen_fd = cl->stores[k].listen_fd;
        cl->stores[k].listen_fd = -1; /* the core owns it now */
    }
    atomic_store(&cl->ckpt_stop, 0);
    cl->ckpt_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (cl->ckpt_wake_fd < 0) {
        rv = -errno;
        TKV_LOG_ERROR("cannot create the checkpoint thread's eventfd", TKV_LF_ERR(rv));
        goto out;
    }
    rv = -pthread_create(&cl->ckpt_thread, NULL, ckpt_main, cl);
    if (rv) {
        TKV_LOG_ERROR("cannot start the checkpoint thread", TKV_LF_ERR(rv));
        goto out;
    }
    cl->ckpt_started = true;
    for (uint32_t k = 0; k < cl->n_stores; k++)
        TKV_LOG_INFO("store ready", TKV_LF_U64("store", k),
                     TKV_LF_U64("store_id", cl->stores[k].store_id),
                     TKV_LF_STR("address", cl->stores[k].addr),
                     TKV_LF_U64("port", cl->stores[k].port), TKV_LF_STR("dir", cl->stores[k].dir));
out:
    tkv_arena_close(&arena);
    return rv;
}

void server_cluster_close(struct server_node *node)
{
    struct cluster_node *cl = cluster_of(node);
    if (!cl)
        return;
    if (cl->ckpt_started) {
        atomic_store(&cl->ckpt_stop, 1);
        ckpt_wake(cl);
        pthread_join(cl->ckpt_thread, NULL);
    }
    if (cl->ckpt_wake_fd >= 0)
        close(cl->ckpt_wake_fd);
    for (uint32_t k = 0; k < cl->n_stores; k++) {
        struct cluster_store *st = &cl->stores[k];
        if (st->listen_fd >= 0)
            close(st->listen_fd);
        tkv_engine_close(st->engine); /* final checkpoint: a clean stop is durable */
    }
    tkv_free(cl->stores);
    tkv_free(cl);
    node->cluster = NULL;
}

uint16_t server_cluster_port(const struct server_node *node, uint32_t k)
{
    const struct cluster_node *cl = cluster_of(node);
    return cl && k < cl->n_stores ? cl->stores[k].port : 0;
}

uint64_t server_cluster_store_id(const struct server_node *node, uint32_t k)
{
    const struct cluster_node *cl = cluster_of(node);
    return cl && k < cl->n_stores ? cl->stores[k].store_id : 0;
}

void server_cluster_status_fill(struct server_node *node, json_t *stores)
{
    struct cluster_node *cl = cluster_of(node);
    if (!cl)
        return;
    for (uint32_t k = 0; k < cl->n_stores; k++) {
        json_t *o = json_object();
        json_object_set_new(o, "store_id", json_integer((json_int_t)cl->stores[k].store_id));
        json_object_set_new(o, "address", json_string(cl->stores[k].addr));
        json_object_set_new(o, "port", json_integer(cl->stores[k].port));
        json_object_set_new(o, "data_dir", json_string(cl->stores[k].dir));
        json_array_append_new(stores, o);
    }
}

/* ======================================================== core: timers */

static void ready_hook(void *arg)
{
    struct cluster_store *st = arg;
    if (!st->rs)
        return;
    /* One Ready per turn (the raft log's own hook, added after this one,
     * then writes the turn's group commit). More work right away: come
     * back next turn without sleeping. */
    bool more = tkv_raftstore_ready(st->rs);
    /* Kv* commands whose latches are free start after the Ready (their
     * proposals go into the next one, so come back without sleeping). */
    if (st->txn && tkv_txn_cluster_poll(st->txn) > 0)
        more = true;
    if (more && !tkv_timer_armed(&st->kick_timer))
        tkv_timer_start(st->r, &st->kick_timer, 0);
}

static void on_kick(struct tkv_timer *t)
{
    (void)t; /* the turn itself runs the ready hook */
}

static void ckpt_step(struct cluster_store *st)
{
    int state = atomic_load_explicit(&st->ckpt_state, memory_order_acquire);
    uint64_t now = tkv_now_ns(st->r) / 1000000;
    if (state == CKPT_DONE) {
        int rv = atomic_load(&st->ckpt_rv);
        if (rv == 0) {
            tkv_raftstore_checkpoint_done(st->rs);
            st->n_ckpts++;
            st->ckpt_urgent = false;
        } else {
            /* Nothing is lost: the raft log keeps every entry above the
             * last good checkpoint. Retry at the next interval. */
            st->n_ckpt_failures++;
            TKV_LOG_ERROR("engine checkpoint failed", TKV_LF_U64("store_id", st->store_id),
                          TKV_LF_ERR(rv));
        }
        /* a failed one leaves ckpt_urgent set: the next one (at the
         * interval) still has work waiting for it */
        atomic_store_explicit(&st->ckpt_state, CKPT_IDLE, memory_order_release);
    } else if (state == CKPT_IDLE &&
               (st->ckpt_wanted || now - st->last_ckpt_ms >= CLUSTER_CKPT_INTERVAL_MS)) {
        st->last_ckpt_ms = now;
        st->ckpt_urgent = st->ckpt_urgent || st->ckpt_wanted;
        st->ckpt_wanted = false;
        tkv_raftstore_checkpoint_begin(st->rs);
        atomic_store_explicit(&st->ckpt_state, CKPT_REQUESTED, memory_order_release);
        ckpt_wake(cluster_of(st->node));
    }
}

/* Early checkpoints (env.request_checkpoint): begin now rather than at
 * the interval, then look for the thread's answer every poll period (a
 * tick may be a second) until the requested checkpoint is done. */
static void on_ckpt_timer(struct tkv_timer *t)
{
    struct cluster_store *st = t->data;
    if (!st->rs || st->stopping)
        return;
    ckpt_step(st);
    if (st->ckpt_wanted || st->ckpt_urgent)
        tkv_timer_start(st->r, t, CLUSTER_CKPT_POLL_MS * 1000000ull);
}

static void env_request_checkpoint(void *ctx)
{
    struct cluster_store *st = ctx;
    st->ckpt_wanted = true;
    /* inside the raftstore's ready: the timer calls back on a later turn */
    if (!st->stopping && !tkv_timer_armed(&st->ckpt_timer))
        tkv_timer_start(st->r, &st->ckpt_timer, 0);
}

static void on_tick(struct tkv_timer *t)
{
    struct cluster_store *st = t->data;
    if (!st->rs || st->stopping)
        return;
    tkv_raftstore_tick(st->rs);
    ckpt_step(st);
    /* A new leader reports its region at once (the scheduler learns a
     * region and its leader only from heartbeats), not a full
     * pd-heartbeat-tick-interval later. */
    uint64_t ids[CLUSTER_MAX_HB_REGIONS], led = 0;
    size_t n = tkv_raftstore_region_ids(st->rs, ids, CLUSTER_MAX_HB_REGIONS);
    for (size_t i = 0; i < n && i < CLUSTER_MAX_HB_REGIONS; i++) {
        struct tkv_rs_region_status rs;
        tkv_raftstore_region_status(st->rs, ids[i], &rs);
        if (rs.is_leader) /* an order-free fingerprint of the led set */
            led += (ids[i] + 1) * 0x9e3779b97f4a7c15ull;
    }
    if (led != st->led_sum) {
        st->led_sum = led;
        tkv_timer_start(st->r, &st->hb_timer, 0);
    }
    tkv_timer_start(st->r, t,
                    st->node->cfg.raftstore.raft_base_tick_interval_ms * 1000000ull);
}

/* ---- scheduler link (heartbeats) ---- */

static bool sched_usable(struct cluster_store *st)
{
    struct cluster_node *cl = cluster_of(st->node);
    if (st->sched && !tkv_rpc_client_usable(st->sched)) {
        if (st->hb_stream) {
            tkv_rpc_ccall_cancel(st->hb_stream);
            st->hb_stream = NULL;
        }
        tkv_rpc_client_close(st->sched);
        st->sched = NULL;
    }
    if (!st->sched && tkv_rpc_client_connect(st->r, cl->sched_host, cl->sched_port, NULL,
                                             &st->sched) != 0) {
        st->sched = NULL;
        return false;
    }
    return true;
}

static void on_store_hb_done(void *user, enum tkv_grpc_status status, const char *message,
                             struct tkv_slice resp)
{
    struct cluster_store *st = user;
    (void)resp;
    if (status != TKV_GRPC_OK)
        TKV_LOG_DEBUG("store heartbeat failed", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_STR("status", tkv_grpc_status_name(status)),
                      TKV_LF_STR("message", message));
}

static void on_store_hb(struct tkv_timer *t)
{
    struct cluster_store *st = t->data;
    if (st->stopping)
        return;
    if (sched_usable(st)) {
        struct cluster_node *cl = cluster_of(st->node);
        uint64_t ids[1];
        schedulerpb_StoreHeartbeatRequest req = {
            .has_header = true, .header.cluster_id = cl->cluster_id, .has_stats = true};
        req.stats.store_id = st->store_id;
        req.stats.region_count = (uint32_t)tkv_raftstore_region_ids(st->rs, ids, 0);
        req.stats.capacity = atomic_load(&st->capacity);
        req.stats.available = atomic_load(&st->available);
        uint8_t buf[256];
        size_t n = 0;
        if (tkv_pb_encode(schedulerpb_StoreHeartbeatRequest_fields, &req, buf, sizeof(buf), &n) ==
            0)
            (void)tkv_rpc_client_unary(st->sched, "/schedulerpb.Scheduler/StoreHeartbeat", buf, n,
                                       CLUSTER_SCHED_RPC_TIMEOUT_NS, on_store_hb_done, st);
    }
    tkv_timer_start(st->r, t,
                    st->node->cfg.raftstore.pd_store_heartbeat_tick_interval_ms * 1000000ull);
}

static void region_to_pb(struct tkv_arena *a, const struct tkv_rs_region *rg, metapb_Region *out)
{
    memset(out, 0, sizeof(*out));
    out->id = rg->id;
    out->start_key = tkv_pb_dup(a, rg->start, rg->start_len);
    out->end_key = tkv_pb_dup(a, rg->end, rg->end_len);
    out->has_region_epoch = true;
    out->region_epoch.conf_ver = rg->epoch.conf_ver;
    out->region_epoch.version = rg->epoch.version;
    TKV_PB_RESERVE(a, &out->peers, rg->n_peers);
    for (uint32_t i = 0; i < rg->n_peers; i++) {
        metapb_Peer *p = TKV_PB_PUSH(a, &out->peers);
        p->id = rg->peers[i].id;
        p->store_id = rg->peers[i].store_id;
    }
}

/* ---- scheduler commands (TINYKV-API.md 2.11-2.13, 2.15) ----
 * Region heartbeat responses carry ChangePeer / TransferLeader for a region
 * this store leads; the split checker's ask_split becomes AskSplit and then
 * tkv_raftstore_split. Every response is untrusted: a command is carried
 * out only when it names a region this store leads, this store's peer as
 * target_peer, the region's current epoch and a peer that makes sense for
 * the change; anything else is ignored (debug log, counter). */

static const char *const cmd_type_names[CMD_N_TYPES] = {"change_peer", "transfer_leader",
                                                        "split", "malformed"};
static const char *const cmd_result_names[CMD_N_RESULTS] = {"started", "done", "failed",
                                                            "ignored"};

static void cmd_counters_register(struct cluster_store *st)
{
    struct tkv_metrics *reg = tkv_metrics_default();
    for (int t = 0; t < CMD_N_TYPES; t++)
        for (int r = 0; r < CMD_N_RESULTS; r++)
            st->cmd_counters[t][r] = tkv_metrics_counter(
                reg, "tinykv_scheduler_commands_total",
                "Scheduler commands (region heartbeat responses, splits) by type and outcome",
                (const char *const[]){"type", cmd_type_names[t], "result", cmd_result_names[r],
                                      NULL});
}

static void cmd_count(struct cluster_store *st, enum cmd_type t, enum cmd_result r)
{
    if (st->cmd_counters[t][r])
        tkv_counter_inc(st->cmd_counters[t][r]);
    if (r == CMD_IGNORED)
        st->ignored_ops++;
}

/* Not carried out: a scheduler resends, and stale or misrouted commands
 * are normal around leader changes, so debug level. */
static void cmd_ignore(struct cluster_store *st, enum cmd_type t, uint64_t region_id,
                       const char *why)
{
    cmd_count(st, t, CMD_IGNORED);
    TKV_LOG_DEBUG("scheduler command ignored", TKV_LF_U64("store_id", st->store_id),
                  TKV_LF_STR("type", cmd_type_names[t]), TKV_LF_U64("region_id", region_id),
                  TKV_LF_STR("why", why));
}

static const struct tkv_rs_peer *peer_by_id(const struct tkv_rs_region *rg, uint64_t peer_id)
{
    for (uint32_t i = 0; i < rg->n_peers; i++)
        if (rg->peers[i].id == peer_id)
            return &rg->peers[i];
    return NULL;
}

static const struct tkv_rs_peer *peer_on_store(const struct tkv_rs_region *rg, uint64_t store_id)
{
    for (uint32_t i = 0; i < rg->n_peers; i++)
        if (rg->peers[i].store_id == store_id)
            return &rg->peers[i];
    return NULL;
}

static void on_change_peer_done(void *arg, const struct tkv_rs_result *res)
{
    struct admin_op *op = arg;
    struct cluster_store *st = op->st;
    for (struct admin_op **pp = &st->admin_ops; *pp; pp = &(*pp)->next)
        if (*pp == op) {
            *pp = op->next;
            st->n_admin_ops--;
            break;
        }
    const char *what = op->change_type == TKV_RS_ADD_PEER ? "add" : "remove";
    if (res->rv == 0) {
        cmd_count(st, CMD_CHANGE_PEER, CMD_DONE);
        TKV_LOG_INFO("conf change applied", TKV_LF_U64("store_id", st->store_id),
                     TKV_LF_U64("region_id", op->region_id), TKV_LF_STR("change", what),
                     TKV_LF_U64("peer_id", op->peer.id),
                     TKV_LF_U64("peer_store_id", op->peer.store_id));
    } else {
        cmd_count(st, CMD_CHANGE_PEER, CMD_FAILED);
        TKV_LOG_DEBUG("conf change not applied", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_U64("region_id", op->region_id), TKV_LF_STR("change", what),
                      TKV_LF_U64("peer_id", op->peer.id), TKV_LF_ERR(res->rv),
                      TKV_LF_U64("region_error", res->region_error.kind));
    }
    tkv_free(op);
}

static void carry_change_peer(struct cluster_store *st, const struct tkv_rs_region_status *rs,
                              const schedulerpb_RegionHeartbeatResponse *resp)
{
    const schedulerpb_ChangePeer *cp = &resp->change_peer;
    uint64_t rid = rs->region.id;
    uint32_t type;
    if (!cp->has_peer || cp->peer.id == 0 || cp->peer.store_id == 0) {
        cmd_ignore(st, CMD_CHANGE_PEER, rid, "change peer without a peer id and store");
        return;
    }
    if (cp->change_type == eraftpb_ConfChangeType_AddNode)
        type = TKV_RS_ADD_PEER;
    else if (cp->change_type == eraftpb_ConfChangeType_RemoveNode)
        type = TKV_RS_REMOVE_PEER;
    else {
        cmd_ignore(st, CMD_CHANGE_PEER, rid, "unsupported change type (no learners)");
        return;
    }
    const struct tkv_rs_peer *by_id = peer_by_id(&rs->region, cp->peer.id);
    if (type == TKV_RS_ADD_PEER) {
        if (by_id && by_id->store_id == cp->peer.store_id)
            return; /* a member already: the scheduler has not heard yet */
        if (by_id) {
            cmd_ignore(st, CMD_CHANGE_PEER, rid, "the peer id is used on another store");
            return;
        }
        if (peer_on_store(&rs->region, cp->peer.store_id)) {
            cmd_ignore(st, CMD_CHANGE_PEER, rid, "the store already holds a peer");
            return;
        }
        if (rs->region.n_peers >= TKV_RS_MAX_PEERS) {
            cmd_ignore(st, CMD_CHANGE_PEER, rid, "the region has the most peers");
            return;
        }
    } else {
        if (!by_id)
            return; /* removed already */
        if (by_id->store_id != cp->peer.store_id) {
            cmd_ignore(st, CMD_CHANGE_PEER, rid, "the peer is on another store");
            return;
        }
        if (rs->region.n_peers == 1) {
            cmd_ignore(st, CMD_CHANGE_PEER, rid, "it is the region's last peer");
            return;
        }
    }
    for (const struct admin_op *o = st->admin_ops; o; o = o->next)
        if (o->region_id == rid && o->change_type == type && o->peer.id == cp->peer.id)
            return; /* proposed already; waiting for it */
    if (st->n_admin_ops >= CLUSTER_MAX_ADMIN_INFLIGHT) {
        cmd_ignore(st, CMD_CHANGE_PEER, rid, "too many conf changes in flight");
        return;
    }
    struct admin_op *op = tkv_xcalloc(1, sizeof(*op));
    op->st = st;
    op->region_id = rid;
    op->change_type = type;
    op->peer.id = cp->peer.id;
    op->peer.store_id = cp->peer.store_id;
    op->next = st->admin_ops;
    st->admin_ops = op;
    st->n_admin_ops++;
    cmd_count(st, CMD_CHANGE_PEER, CMD_STARTED);
    TKV_LOG_DEBUG("conf change proposed", TKV_LF_U64("store_id", st->store_id),
                  TKV_LF_U64("region_id", rid),
                  TKV_LF_STR("change", type == TKV_RS_ADD_PEER ? "add" : "remove"),
                  TKV_LF_U64("peer_id", op->peer.id), TKV_LF_U64("peer_store_id", op->peer.store_id));
    /* The scheduler's epoch: the one the change was decided on (the
     * raftstore refuses it when the region's conf_ver moved since). */
    struct tkv_rs_epoch ep = {.conf_ver = resp->region_epoch.conf_ver,
                              .version = resp->region_epoch.version};
    tkv_raftstore_change_peer(st->rs, rid, &ep, type, op->peer, on_change_peer_done, op);
    /* op may be freed here (an answer up front is synchronous) */
}

static void carry_transfer_leader(struct cluster_store *st, const struct tkv_rs_region_status *rs,
                                  const schedulerpb_TransferLeader *tl)
{
    uint64_t rid = rs->region.id;
    if (!tl->has_peer || tl->peer.id == 0) {
        cmd_ignore(st, CMD_TRANSFER_LEADER, rid, "transfer leader without a peer");
        return;
    }
    const struct tkv_rs_peer *to = peer_by_id(&rs->region, tl->peer.id);
    if (!to || to->store_id != tl->peer.store_id) {
        cmd_ignore(st, CMD_TRANSFER_LEADER, rid, "the target is not a peer of the region");
        return;
    }
    if (to->id == rs->peer_id)
        return; /* leads already */
    int rv = tkv_raftstore_transfer_leader(st->rs, rid, to->id);
    cmd_count(st, CMD_TRANSFER_LEADER, rv == 0 ? CMD_STARTED : CMD_FAILED);
    TKV_LOG_DEBUG("leader transfer", TKV_LF_U64("store_id", st->store_id),
                  TKV_LF_U64("region_id", rid), TKV_LF_U64("to_peer_id", to->id),
                  TKV_LF_U64("to_store_id", to->store_id), TKV_LF_ERR(rv));
}

static void on_hb_message(struct tkv_rpc_ccall *c, void *user, struct tkv_slice msg)
{
    struct cluster_store *st = user;
    (void)c;
    if (st->stopping || st->closing || !st->rs)
        return;
    schedulerpb_RegionHeartbeatResponse resp;
    tkv_arena_reset(&st->arena);
    if (tkv_pb_decode(schedulerpb_RegionHeartbeatResponse_fields, &resp, msg.ptr, msg.len,
                      &st->arena) != 0) {
        cmd_ignore(st, CMD_MALFORMED, 0, "undecodable region heartbeat response");
        return;
    }
    if (resp.has_header && resp.header.has_error) {
        /* The answer to one of our heartbeats (stale, malformed): nothing
         * to carry out; the next heartbeat reports the region again. */
        TKV_LOG_DEBUG("region heartbeat refused by the scheduler",
                      TKV_LF_U64("store_id", st->store_id), TKV_LF_U64("region_id", resp.region_id),
                      TKV_LF_U64("error_type", resp.header.error.type),
                      TKV_LF_HEX("message", resp.header.error.message.ptr,
                                 TKV_MIN(resp.header.error.message.len, 200)));
        return;
    }
    if (!resp.has_change_peer && !resp.has_transfer_leader)
        return; /* keep-alive */
    enum cmd_type t = resp.has_change_peer ? CMD_CHANGE_PEER : CMD_TRANSFER_LEADER;
    uint64_t rid = resp.region_id;
    if (resp.has_change_peer && resp.has_transfer_leader) {
        cmd_ignore(st, CMD_MALFORMED, rid, "both a change peer and a transfer leader");
        return;
    }
    struct tkv_rs_region_status rs;
    tkv_raftstore_region_status(st->rs, rid, &rs);
    if (rid == 0 || !rs.exists) {
        cmd_ignore(st, t, rid, "the region is not on this store");
        return;
    }
    if (!rs.is_leader) {
        cmd_ignore(st, t, rid, "this store does not lead the region");
        return;
    }
    if (!resp.has_target_peer || resp.target_peer.id != rs.peer_id ||
        resp.target_peer.store_id != st->store_id) {
        cmd_ignore(st, t, rid, "addressed to another peer");
        return;
    }
    /* TinyKV's epoch rule (TINYKV-API.md 2.4 step 6): a conf change is
     * checked on conf_ver, a leader transfer on both. */
    if (!resp.has_region_epoch || resp.region_epoch.conf_ver != rs.region.epoch.conf_ver ||
        (t == CMD_TRANSFER_LEADER && resp.region_epoch.version != rs.region.epoch.version)) {
        cmd_ignore(st, t, rid, "the epoch is not the region's");
        return;
    }
    if (t == CMD_TRANSFER_LEADER)
        carry_transfer_leader(st, &rs, &resp.transfer_leader);
    else
        carry_change_peer(st, &rs, &resp);
}

static void on_hb_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status status,
                       const char *message)
{
    struct cluster_store *st = user;
    if (st->hb_stream == c)
        st->hb_stream = NULL;
    if (status != TKV_GRPC_OK && status != TKV_GRPC_CANCELLED)
        TKV_LOG_DEBUG("region heartbeat stream ended", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_STR("status", tkv_grpc_status_name(status)),
                      TKV_LF_STR("message", message));
}

static const struct tkv_rpc_stream_cbs hb_cbs = {.on_message = on_hb_message,
                                                 .on_done = on_hb_done};

/* The store's one long-lived RegionHeartbeat stream, (re)started on demand. */
static bool hb_stream_ready(struct cluster_store *st)
{
    if (sched_usable(st) && !st->hb_stream &&
        tkv_rpc_client_start(st->sched, "/schedulerpb.Scheduler/RegionHeartbeat", 0, &hb_cbs, st,
                             &st->hb_stream) != 0)
        st->hb_stream = NULL;
    return st->hb_stream != NULL;
}

/* One RegionHeartbeat (region rg led by leader_peer_id on this store;
 * pending: peers still catching up, or NULL). */
static int send_region_hb(struct cluster_store *st, const struct tkv_rs_region *rg,
                          uint64_t leader_peer_id, const struct tkv_rs_region_status *pending)
{
    struct cluster_node *cl = cluster_of(st->node);
    tkv_arena_reset(&st->arena);
    schedulerpb_RegionHeartbeatRequest req = {.has_header = true,
                                              .header.cluster_id = cl->cluster_id,
                                              .has_region = true,
                                              .has_leader = true};
    region_to_pb(&st->arena, rg, &req.region);
    req.leader.id = leader_peer_id;
    req.leader.store_id = st->store_id;
    if (pending && pending->n_pending) {
        TKV_PB_RESERVE(&st->arena, &req.pending_peers, pending->n_pending);
        for (uint32_t i = 0; i < pending->n_pending; i++) {
            metapb_Peer *q = TKV_PB_PUSH(&st->arena, &req.pending_peers);
            q->id = pending->pending[i].id;
            q->store_id = pending->pending[i].store_id;
        }
    }
    struct tkv_slice enc;
    int rv = tkv_pb_encode_arena(schedulerpb_RegionHeartbeatRequest_fields, &req, &st->arena, 0,
                                 &enc);
    return rv ? rv : tkv_rpc_ccall_send(st->hb_stream, enc.ptr, enc.len);
}

/* RegionHeartbeat for every region this store leads. */
static void on_region_hb(struct tkv_timer *t)
{
    struct cluster_store *st = t->data;
    if (st->stopping)
        return;
    if (hb_stream_ready(st)) {
        uint64_t local[CLUSTER_MAX_HB_REGIONS];
        size_t n = tkv_raftstore_region_ids(st->rs, local, CLUSTER_MAX_HB_REGIONS);
        for (size_t i = 0; i < n && i < CLUSTER_MAX_HB_REGIONS; i++) {
            struct tkv_rs_region_status rs;
            tkv_raftstore_region_status(st->rs, local[i], &rs);
            if (!rs.exists || !rs.is_leader)
                continue;
            if (send_region_hb(st, &rs.region, rs.peer_id, &rs) != 0)
                break;
        }
    }
    tkv_timer_start(st->r, t, st->node->cfg.raftstore.pd_heartbeat_tick_interval_ms * 1000000ull);
}

/* env.region_changed, inside the raftstore's tick/ready: only queue; the
 * urgent timer heartbeats on the next turn. */
static void env_region_changed(void *ctx, const struct tkv_rs_region *region,
                               const struct tkv_rs_region *right, bool removed)
{
    struct cluster_store *st = ctx;
    if (st->stopping || st->closing || !st->r)
        return;
    if (!removed) { /* a removed peer's region is reported by its leader */
        bool queued = false;
        for (size_t i = 0; i < st->n_urgent && !queued; i++)
            queued = st->urgent[i] == region->id;
        if (!queued && st->n_urgent < CLUSTER_MAX_URGENT)
            st->urgent[st->n_urgent++] = region->id;
        else if (!queued)
            st->urgent_all = true;
    }
    if (right && st->n_reports < CLUSTER_MAX_SPLIT_REPORTS) {
        st->reports[st->n_reports].left_id = region->id;
        st->reports[st->n_reports].right = *right;
        st->n_reports++;
    } else if (right) {
        st->urgent_all = true; /* the right half is reported once it elects */
    }
    if (!tkv_timer_armed(&st->urgent_timer))
        tkv_timer_start(st->r, &st->urgent_timer, 0);
}

static void on_urgent_hb(struct tkv_timer *t)
{
    struct cluster_store *st = t->data;
    if (st->stopping)
        return;
    if (st->urgent_all) {
        st->urgent_all = false;
        st->n_urgent = st->n_reports = 0;
        tkv_timer_start(st->r, &st->hb_timer, 0);
        return;
    }
    /* Without a stream the next full round reports them. */
    bool up = hb_stream_ready(st);
    for (size_t i = 0; i < st->n_urgent && up; i++) {
        struct tkv_rs_region_status rs;
        tkv_raftstore_region_status(st->rs, st->urgent[i], &rs);
        if (rs.exists && rs.is_leader)
            up = send_region_hb(st, &rs.region, rs.peer_id, &rs) == 0;
    }
    /* A split: the right half too, led by this store's new peer when it led
     * the parent (TinyKV reports both halves the same way; the new peer is
     * campaigning and later heartbeats correct the leader). */
    for (size_t i = 0; i < st->n_reports && up; i++) {
        struct tkv_rs_region_status left, right;
        tkv_raftstore_region_status(st->rs, st->reports[i].left_id, &left);
        tkv_raftstore_region_status(st->rs, st->reports[i].right.id, &right);
        if (!left.exists || !left.is_leader || !right.exists)
            continue;
        up = send_region_hb(st, &right.region, right.peer_id, NULL) == 0;
    }
    st->n_urgent = st->n_reports = 0;
}

/* ---- splits: ask_split -> AskSplit -> tkv_raftstore_split ---- */

static void split_finish(struct split_ask *a, enum cmd_result r, const char *why, int rv,
                         uint64_t new_region_id)
{
    struct cluster_store *st = a->st;
    for (struct split_ask **pp = &st->splits; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            st->n_splits--;
            break;
        }
    cmd_count(st, CMD_SPLIT, r);
    if (r == CMD_DONE)
        TKV_LOG_INFO("split applied", TKV_LF_U64("store_id", st->store_id),
                     TKV_LF_U64("region_id", a->region.id),
                     TKV_LF_U64("new_region_id", new_region_id),
                     TKV_LF_HEX("split_key", a->key, a->key_len));
    else
        /* Retried by the split checker's next round. */
        TKV_LOG_DEBUG("region split not done", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_U64("region_id", a->region.id), TKV_LF_STR("why", why),
                      TKV_LF_ERR(rv));
    tkv_free(a);
}

static void env_ask_split(void *ctx, const struct tkv_rs_region *region, struct tkv_slice key)
{
    struct cluster_store *st = ctx;
    if (st->stopping || st->closing || !st->r)
        return;
    if (key.len == 0 || key.len > TKV_RS_BOUND_MAX) {
        cmd_ignore(st, CMD_SPLIT, region->id, "split key empty or over the bound limit");
        return;
    }
    for (const struct split_ask *a = st->splits; a; a = a->next)
        if (a->region.id == region->id)
            return; /* at most one split of a region in flight */
    if (st->n_splits >= CLUSTER_MAX_SPLIT_INFLIGHT) {
        cmd_ignore(st, CMD_SPLIT, region->id, "too many splits in flight");
        return;
    }
    struct split_ask *a = tkv_xcalloc(1, sizeof(*a));
    a->st = st;
    a->stage = SPLIT_NEW;
    a->region = *region;
    a->key_len = (uint32_t)key.len;
    memcpy(a->key, key.ptr, key.len);
    a->next = st->splits;
    st->splits = a;
    st->n_splits++;
    if (!tkv_timer_armed(&st->split_timer))
        tkv_timer_start(st->r, &st->split_timer, 0);
}

static void on_split_done(void *arg, const struct tkv_rs_result *res)
{
    struct split_ask *a = arg;
    split_finish(a, res->rv == 0 ? CMD_DONE : CMD_FAILED, "the split proposal failed", res->rv,
                 a->new_region_id);
}

static void on_ask_split_done(void *user, enum tkv_grpc_status status, const char *message,
                              struct tkv_slice resp)
{
    struct split_ask *a = user;
    struct cluster_store *st = a->st;
    if (status != TKV_GRPC_OK) {
        TKV_LOG_DEBUG("AskSplit failed", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_STR("status", tkv_grpc_status_name(status)),
                      TKV_LF_STR("message", message ? message : ""));
        split_finish(a, CMD_FAILED, "AskSplit failed", TKV_EUNAVAILABLE, 0);
        return;
    }
    if (st->stopping || st->closing || !st->rs) {
        split_finish(a, CMD_FAILED, "the store is stopping", TKV_ESHUTDOWN, 0);
        return;
    }
    schedulerpb_AskSplitResponse r;
    tkv_arena_reset(&st->arena);
    if (tkv_pb_decode(schedulerpb_AskSplitResponse_fields, &r, resp.ptr, resp.len, &st->arena) != 0) {
        split_finish(a, CMD_FAILED, "undecodable AskSplit answer", TKV_EPROTO, 0);
        return;
    }
    if (r.has_header && r.header.has_error) {
        split_finish(a, CMD_FAILED, "the scheduler refused AskSplit", TKV_EUNAVAILABLE, 0);
        return;
    }
    bool ok = r.new_region_id != 0 && r.new_region_id != a->region.id &&
              r.new_peer_ids.n == a->region.n_peers && r.new_peer_ids.n <= TKV_RS_MAX_PEERS;
    uint64_t ids[TKV_RS_MAX_PEERS];
    for (size_t i = 0; ok && i < r.new_peer_ids.n; i++) {
        ids[i] = r.new_peer_ids.items[i];
        ok = ids[i] != 0;
        for (size_t j = 0; ok && j < i; j++)
            ok = ids[j] != ids[i];
    }
    if (!ok) {
        split_finish(a, CMD_FAILED, "AskSplit answer without a region id or with bad peer ids",
                     TKV_EPROTO, 0);
        return;
    }
    a->stage = SPLIT_PROPOSED;
    a->new_region_id = r.new_region_id;
    cmd_count(st, CMD_SPLIT, CMD_STARTED);
    tkv_raftstore_split(st->rs, a->region.id, &a->region.epoch,
                        (struct tkv_slice){.ptr = a->key, .len = a->key_len}, r.new_region_id, ids,
                        r.new_peer_ids.n, on_split_done, a);
    /* a may be freed here (an answer up front is synchronous) */
}

static void on_split_timer(struct tkv_timer *t)
{
    struct cluster_store *st = t->data;
    if (st->stopping)
        return;
    struct cluster_node *cl = cluster_of(st->node);
    bool up = sched_usable(st); /* may cancel asks of a dead connection first */
    struct split_ask *next;
    for (struct split_ask *a = st->splits; a; a = next) {
        next = a->next;
        if (a->stage != SPLIT_NEW)
            continue;
        if (!up) {
            split_finish(a, CMD_FAILED, "no scheduler connection", TKV_EUNAVAILABLE, 0);
            continue;
        }
        tkv_arena_reset(&st->arena);
        schedulerpb_AskSplitRequest req = {.has_header = true,
                                           .header.cluster_id = cl->cluster_id,
                                           .has_region = true};
        region_to_pb(&st->arena, &a->region, &req.region);
        struct tkv_slice enc;
        int rv = tkv_pb_encode_arena(schedulerpb_AskSplitRequest_fields, &req, &st->arena, 0, &enc);
        if (rv == 0)
            rv = tkv_rpc_client_unary(st->sched, "/schedulerpb.Scheduler/AskSplit", enc.ptr,
                                      enc.len, CLUSTER_SCHED_RPC_TIMEOUT_NS, on_ask_split_done, a);
        if (rv)
            split_finish(a, CMD_FAILED, "cannot send AskSplit", rv, 0);
        else
            a->stage = SPLIT_ASKING;
    }
}

static void store_on_stop(void *arg)
{
    struct cluster_store *st = arg;
    st->stopping = true;
    tkv_timer_stop(st->r, &st->tick_timer);
    tkv_timer_stop(st->r, &st->ckpt_timer);
    tkv_timer_stop(st->r, &st->hb_timer);
    tkv_timer_stop(st->r, &st->store_hb_timer);
    tkv_timer_stop(st->r, &st->split_timer);
    tkv_timer_stop(st->r, &st->urgent_timer);
    if (st->hb_stream) {
        tkv_rpc_ccall_cancel(st->hb_stream);
        st->hb_stream = NULL;
    }
    if (st->sched) {
        tkv_rpc_client_close(st->sched);
        st->sched = NULL;
    }
}

/* ---- transport host (TINYKV-API.md 2.10; tkv/transport.h) ---- */

static struct store_addr *addr_slot(struct cluster_store *st, uint64_t store_id, bool create)
{
    struct store_addr *oldest = &st->addrs[0];
    for (size_t i = 0; i < CLUSTER_ADDR_CACHE; i++) {
        if (st->addrs[i].store_id == store_id)
            return &st->addrs[i];
        if (!st->addrs[i].pending && st->addrs[i].fetched_ms < oldest->fetched_ms)
            oldest = &st->addrs[i];
    }
    if (!create || oldest->pending)
        return NULL;
    memset(oldest, 0, sizeof(*oldest));
    oldest->store_id = store_id;
    return oldest;
}

static void on_get_store(void *user, enum tkv_grpc_status status, const char *message,
                         struct tkv_slice resp)
{
    struct cluster_store *st = user;
    (void)message;
    if (status != TKV_GRPC_OK) {
        for (size_t i = 0; i < CLUSTER_ADDR_CACHE; i++)
            st->addrs[i].pending = false; /* asked again at the next resolve */
        return;
    }
    schedulerpb_GetStoreResponse r;
    tkv_arena_reset(&st->arena);
    if (tkv_pb_decode(schedulerpb_GetStoreResponse_fields, &r, resp.ptr, resp.len, &st->arena) != 0 ||
        !r.has_store || r.store.id == 0)
        return;
    struct store_addr *a = addr_slot(st, r.store.id, false);
    if (!a)
        return;
    a->pending = false;
    if (r.store.state == metapb_StoreState_Tombstone || r.store.address.len == 0 ||
        r.store.address.len >= sizeof(a->addr))
        return;
    memcpy(a->addr, r.store.address.ptr, r.store.address.len);
    a->addr[r.store.address.len] = 0;
    a->fetched_ms = tkv_now_ns(st->r) / 1000000 + 1;
}

/* host.resolve: our own node's stores from memory, others from the
 * scheduler (GetStore, cached; "not yet" while it is asked). */
static int tp_resolve(void *ctx, uint64_t store_id, char *addr, size_t cap)
{
    struct cluster_store *st = ctx;
    struct cluster_node *cl = cluster_of(st->node);
    for (uint32_t k = 0; k < cl->n_stores; k++)
        if (cl->stores[k].store_id == store_id) {
            snprintf(addr, cap, "%s", cl->stores[k].addr);
            return 0;
        }
    uint64_t now = tkv_now_ns(st->r) / 1000000;
    struct store_addr *a = addr_slot(st, store_id, true);
    if (!a)
        return TKV_EUNAVAILABLE;
    bool fresh = a->fetched_ms && now - a->fetched_ms < CLUSTER_ADDR_TTL_MS;
    if (!fresh && !a->pending && !st->stopping && sched_usable(st)) {
        schedulerpb_GetStoreRequest req = {.has_header = true,
                                           .header.cluster_id = cl->cluster_id,
                                           .store_id = store_id};
        uint8_t buf[64];
        size_t n = 0;
        if (tkv_pb_encode(schedulerpb_GetStoreRequest_fields, &req, buf, sizeof(buf), &n) == 0 &&
            tkv_rpc_client_unary(st->sched, "/schedulerpb.Scheduler/GetStore", buf, n,
                                 CLUSTER_SCHED_RPC_TIMEOUT_NS, on_get_store, st) == 0)
            a->pending = true;
    }
    if (!a->fetched_ms)
        return TKV_EUNAVAILABLE;
    snprintf(addr, cap, "%s", a->addr); /* a stale address is retried after backoff */
    return 0;
}

static void tp_deliver(void *ctx, const struct tkv_rs_msg *m)
{
    struct cluster_store *st = ctx;
    if (st->rs && !st->closing)
        tkv_raftstore_receive(st->rs, m);
}

static void tp_report_unreachable(void *ctx, uint64_t region_id, uint64_t to_peer_id)
{
    struct cluster_store *st = ctx;
    if (st->rs)
        tkv_raftstore_report_unreachable(st->rs, region_id, to_peer_id);
}

static void tp_report_snapshot(void *ctx, uint64_t region_id, uint64_t to_peer_id, bool failed)
{
    struct cluster_store *st = ctx;
    if (st->rs)
        tkv_raftstore_report_snapshot(st->rs, region_id, to_peer_id, failed);
}

int server_cluster_core_init(struct tkv_reactor *r, struct server_core *c,
                             struct server_node *node)
{
    struct cluster_node *cl = cluster_of(node);
    struct cluster_store *st = &cl->stores[c->core];
    int rv;
    c->store = st;
    st->core = c;
    st->r = r;
    st->max_send_msg = c->max_send_msg;
    tkv_arena_init(&st->arena, 0);
    tkv_timer_init(&st->tick_timer, on_tick, st);
    tkv_timer_init(&st->kick_timer, on_kick, st);
    tkv_timer_init(&st->ckpt_timer, on_ckpt_timer, st);
    tkv_timer_init(&st->hb_timer, on_region_hb, st);
    tkv_timer_init(&st->store_hb_timer, on_store_hb, st);
    tkv_timer_init(&st->split_timer, on_split_timer, st);
    tkv_timer_init(&st->urgent_timer, on_urgent_hb, st);
    cmd_counters_register(st);
    /* Our hook before the raft log's: the Ready of a turn stages its
     * writes, then the log's hook writes them in the same turn. */
    tkv_reactor_hook_init(&st->ready_hook, ready_hook, st);
    tkv_reactor_hook_add(r, &st->ready_hook);
    st->hook_added = true;

    char dir[sizeof(st->dir) + 8];
    struct tkv_raftlog_corruption where = {0};
    snprintf(dir, sizeof(dir), "%s/raft", st->dir);
    struct tkv_raftlog_config lc = {.dir = dir, .reactor = r,
                                    .skip_zero_fill = !st->node->cfg.raftstore.raft_log_zero_fill};
    rv = tkv_raftlog_open(&lc, &st->log, &where);
    if (rv) {
        TKV_LOG_ERROR("cannot open the raft log", TKV_LF_STR("dir", dir), TKV_LF_ERR(rv));
        return rv;
    }
    struct tkv_raftstore_env env = {.ctx = st, .now_ms = env_now_ms, .send = cluster_send,
                                    .raftlog = st->log, .engine = st->engine,
                                    .ask_split = env_ask_split,
                                    .region_changed = env_region_changed,
                                    .request_checkpoint = env_request_checkpoint};
    struct tkv_raftstore_config rc;
    rs_config(node, st, &rc);
    rv = tkv_raftstore_open(&rc, &env, &st->rs);
    if (rv) {
        TKV_LOG_ERROR("cannot open the raftstore", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_ERR(rv));
        st->rs = NULL;
        return rv;
    }
    /* After the raft log (its before-sleep flush must not be overtaken by
     * a message sent from a later hook). */
    struct tkv_transport_config tc = {.store_id = st->store_id};
    struct tkv_transport_host th = {.ctx = st,
                                    .resolve = tp_resolve,
                                    .deliver = tp_deliver,
                                    .report_unreachable = tp_report_unreachable,
                                    .report_snapshot = tp_report_snapshot};
    rv = tkv_transport_new(r, &tc, &th, &st->tp);
    if (rv) {
        TKV_LOG_ERROR("cannot create the store transport", TKV_LF_U64("store_id", st->store_id),
                      TKV_LF_ERR(rv));
        st->tp = NULL;
        return rv;
    }
    st->txn = tkv_txn_cluster_new(st->rs);
    /* A region whose only voter is this store elects itself at once. */
    uint64_t ids[CLUSTER_MAX_HB_REGIONS];
    size_t n = tkv_raftstore_region_ids(st->rs, ids, CLUSTER_MAX_HB_REGIONS);
    for (size_t i = 0; i < n && i < CLUSTER_MAX_HB_REGIONS; i++) {
        struct tkv_rs_region_status s;
        tkv_raftstore_region_status(st->rs, ids[i], &s);
        if (s.exists && s.region.n_peers == 1 && s.region.peers[0].store_id == st->store_id)
            (void)tkv_raftstore_campaign(st->rs, ids[i]);
    }
    st->last_ckpt_ms = tkv_now_ns(r) / 1000000;
    tkv_reactor_on_stop(r, store_on_stop, st);
    tkv_timer_start(r, &st->tick_timer, node->cfg.raftstore.raft_base_tick_interval_ms * 1000000ull);
    tkv_timer_start(r, &st->hb_timer, 0);
    tkv_timer_start(r, &st->store_hb_timer, 0);
    TKV_LOG_INFO("store serving", TKV_LF_U64("store", c->core), TKV_LF_U64("store_id", st->store_id),
                 TKV_LF_U64("port", st->port), TKV_LF_U64("regions", n));
    return 0;
}

void server_cluster_core_fini(struct server_core *c)
{
    struct cluster_store *st = c->store;
    if (!st)
        return;
    store_on_stop(st);
    tkv_timer_stop(st->r, &st->kick_timer);
    struct tkv_transport_stats ts = {0};
    uint64_t rejects = 0;
    if (st->tp) {
        tkv_transport_stats(st->tp, &ts);
        for (int i = 0; i < TKV_TRANSPORT_REJECT_COUNT; i++)
            rejects += ts.rejects[i];
    }
    if (st->rs) {
        struct tkv_raftstore_stats s;
        tkv_raftstore_stats(st->rs, &s);
        TKV_LOG_INFO("store stopped", TKV_LF_U64("store_id", st->store_id),
                     TKV_LF_U64("proposals", s.proposals),
                     TKV_LF_U64("applied_entries", s.applied_entries),
                     TKV_LF_U64("ready_turns", s.ready_turns),
                     TKV_LF_U64("snapshots_generated", s.snapshots_generated),
                     TKV_LF_U64("snapshot_generations_abandoned", s.snap_gen_abandoned),
                     TKV_LF_U64("snapshot_generated_bytes", s.snap_gen_bytes),
                     TKV_LF_U64("snapshot_generation_turns", s.snap_gen_turns),
                     TKV_LF_U64("checkpoints", st->n_ckpts),
                     TKV_LF_U64("msgs_dropped_no_transport", st->dropped_msgs),
                     TKV_LF_U64("transport_msgs_sent", ts.msgs_sent),
                     TKV_LF_U64("transport_msgs_received", ts.msgs_received),
                     TKV_LF_U64("transport_msgs_delivered", ts.msgs_delivered),
                     TKV_LF_U64("transport_rejects", rejects),
                     TKV_LF_U64("operators_ignored", st->ignored_ops));
    }
    /* The transport first: freeing it reports unfinished snapshots to the
     * raftstore, which must still be there. */
    tkv_transport_free(st->tp);
    st->tp = NULL;
    st->closing = true;
    tkv_raftstore_close(st->rs); /* answers what waits with TKV_ESHUTDOWN (dropped) */
    st->rs = NULL;
    tkv_txn_cluster_free(st->txn); /* after the raftstore (tkv/txn_cluster.h) */
    st->txn = NULL;
    tkv_raftlog_close(st->log);
    st->log = NULL;
    /* What the raftstore and the scheduler connection did not answer (asks
     * never sent) dies with the store. */
    while (st->splits) {
        struct split_ask *a = st->splits;
        st->splits = a->next;
        tkv_free(a);
    }
    st->n_splits = 0;
    while (st->admin_ops) {
        struct admin_op *o = st->admin_ops;
        st->admin_ops = o->next;
        tkv_free(o);
    }
    st->n_admin_ops = 0;
    if (st->hook_added)
        tkv_reactor_hook_remove(st->r, &st->ready_hook);
    st->hook_added = false;
    while (st->free_reqs) {
        struct cl_req *q = st->free_reqs;
        st->free_reqs = q->next_free;
        tkv_free(q);
    }
    tkv_arena_close(&st->arena);
    c->store = NULL;
}

/* ======================================================= Raw handlers */

static struct cl_req *req_new(struct cluster_store *st, struct tkv_rpc_call *call,
                              enum req_kind kind)
{
    struct cl_req *q = st->free_reqs;
    if (q)
        st->free_reqs = q->next_free;
    else
        q = tkv_xmalloc(sizeof(*q));
    memset(q, 0, sizeof(*q));
    q->call = call;
    q->st = st;
    q->kind = kind;
    st->n_live_reqs++;
    tkv_rpc_call_set_data(call, q);
    return q;
}

static void req_free(struct cl_req *q)
{
    struct cluster_store *st = q->st;
    st->n_live_reqs--;
    q->next_free = st->free_reqs;
    st->free_reqs = q;
}

static void on_req_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    struct cl_req *q = tkv_rpc_call_data(call);
    (void)why;
    if (q)
        q->call = NULL; /* the proposal goes on; its answer is dropped */
}

/* errorpb.Error of a raftstore region error (TINYKV-API.md 2.4). */
static void region_error_pb(struct tkv_arena *a, const struct cluster_store *st,
                            uint64_t req_store_id, const struct tkv_rs_region_error *e,
                            errorpb_Error *out)
{
    memset(out, 0, sizeof(*out));
    switch (e->kind) {
    case TKV_RS_NOT_LEADER:
        out->message = tkv_pb_printf(a, "peer is not leader for region %" PRIu64, e->region_id);
        out->has_not_leader = true;
        out->not_leader.region_id = e->region_id;
        if (e->leader.id) {
            out->not_leader.has_leader = true;
            out->not_leader.leader.id = e->leader.id;
            out->not_leader.leader.store_id = e->leader.store_id;
        }
        break;
    case TKV_RS_EPOCH_NOT_MATCH:
        out->message = tkv_pb_printf(a, "epoch not match for region %" PRIu64, e->region_id);
        out->has_epoch_not_match = true;
        TKV_PB_RESERVE(a, &out->epoch_not_match.current_regions, e->n_current);
        for (uint32_t i = 0; i < e->n_current && i < 2; i++)
            region_to_pb(a, &e->current[i], TKV_PB_PUSH(a, &out->epoch_not_match.current_regions));
        break;
    case TKV_RS_KEY_NOT_IN_REGION:
        out->message = tkv_pb_printf(a, "key is not in region %" PRIu64, e->region_id);
        out->has_key_not_in_region = true;
        out->key_not_in_region.key = tkv_pb_dup(a, e->key, e->key_len);
        out->key_not_in_region.region_id = e->region_id;
        if (e->n_current) {
            out->key_not_in_region.start_key =
                tkv_pb_dup(a, e->current[0].start, e->current[0].start_len);
            out->key_not_in_region.end_key = tkv_pb_dup(a, e->current[0].end, e->current[0].end_len);
        }
        break;
    case TKV_RS_REGION_NOT_FOUND:
        out->message = tkv_pb_printf(a, "region %" PRIu64 " not found", e->region_id);
        out->has_region_not_found = true;
        out->region_not_found.region_id = e->region_id;
        break;
    case TKV_RS_STALE_COMMAND:
        out->message = tkv_pb_str("stale command");
        out->has_stale_command = true;
        break;
    case TKV_RS_PEER_NOT_MATCH: /* errorpb has no field for it: TinyKV sends the message only */
        out->message = tkv_pb_printf(a,
                                     "mismatch peer id for region %" PRIu64
                                     ": this store holds another peer of it now",
                                     e->region_id);
        break;
    case TKV_RS_STORE_NOT_MATCH:
    default:
        out->message = tkv_pb_printf(a, "store not match: request for store %" PRIu64
                                         ", this is store %" PRIu64,
                                     req_store_id, st->store_id);
        out->has_store_not_match = true;
        out->store_not_match.request_store_id = req_store_id;
        out->store_not_match.actual_store_id = st->store_id;
        break;
    }
}

static void reply_pb(struct tkv_rpc_call *call, struct tkv_arena *a, const pb_msgdesc_t *fields,
                     const void *resp)
{
    struct tkv_slice out;
    if (tkv_pb_encode_arena(fields, resp, a, 0, &out) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "cannot encode the response");
        return;
    }
    tkv_rpc_call_reply(call, out.ptr, out.len);
}

/* Every Raw response has region_error (1) and error (2) first: one layout
 * serves all four for those two fields. */
struct raw_resp_head {
    bool has_region_error;
    errorpb_Error region_error;
    struct tkv_slice error;
};

static void on_rs_done(void *arg, const struct tkv_rs_result *res)
{
    struct cl_req *q = arg;
    struct tkv_rpc_call *call = q->call;
    struct cluster_store *st = q->st;
    /* closing: the core's loop is over and the rpc layer ended every call */
    if (!call || st->closing) {
        req_free(q);
        return;
    }
    tkv_rpc_call_set_data(call, NULL); /* the reply below ends the call */
    struct tkv_arena *a = &st->arena;
    tkv_arena_reset(a);
    if (res->rv == TKV_ESHUTDOWN && (q->kind == REQ_PUT || q->kind == REQ_DELETE)) {
        /* The proposal may still commit and apply (on this node after a
         * restart, or on a new leader): outcome unknown. UNKNOWN, not
         * UNAVAILABLE, so libtinykv does not send the write again (a second
         * apply could land after another client's write of the key). */
        tkv_rpc_call_finish(call, TKV_GRPC_UNKNOWN,
                            "store is stopping: the write may or may not have been applied");
        req_free(q);
        return;
    }
    if (res->rv == TKV_ESHUTDOWN || (res->rv == TKV_EREGION &&
                                     res->region_error.kind == TKV_RS_SERVER_BUSY)) {
        /* TinyKV's errorpb has no ServerIsBusy; clients retry UNAVAILABLE
         * (nothing was done: a read, or a write refused before proposing). */
        tkv_rpc_call_finish(call, TKV_GRPC_UNAVAILABLE,
                            res->rv == TKV_ESHUTDOWN ? "store is stopping" : "server is busy");
        req_free(q);
        return;
    }
    if (res->rv && res->rv != TKV_ENOTFOUND && res->rv != TKV_EREGION &&
        tkv_err_class(res->rv) != TKV_ERR_CLIENT) {
        if (tkv_err_class(res->rv) == TKV_ERR_FATAL)
            TKV_PANIC("storage failed, stopping: %s", tkv_strerror(res->rv));
        char msg[160];
        snprintf(msg, sizeof(msg), "raftstore: %s", tkv_strerror(res->rv));
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, msg);
        req_free(q);
        return;
    }
    struct raw_resp_head head = {0};
    if (res->rv == TKV_EREGION) {
        head.has_region_error = true;
        region_error_pb(a, st, q->req_store_id, &res->region_error, &head.region_error);
    } else if (res->rv && res->rv != TKV_ENOTFOUND) {
        head.error = tkv_pb_printf(a, "%s", tkv_strerror(res->rv));
    }
    switch (q->kind) {
    case REQ_GET: {
        kvrpcpb_RawGetResponse r = {.has_region_error = head.has_region_error,
                                    .region_error = head.region_error,
                                    .error = head.error};
        if (res->rv == 0)
            r.value = res->value;
        else if (res->rv == TKV_ENOTFOUND)
            r.not_found = true;
        reply_pb(call, a, kvrpcpb_RawGetResponse_fields, &r);
        break;
    }
    case REQ_PUT:
    case REQ_DELETE: {
        kvrpcpb_RawPutResponse r = {.has_region_error = head.has_region_error,
                                    .region_error = head.region_error,
                                    .error = head.error};
        reply_pb(call, a, kvrpcpb_RawPutResponse_fields, &r);
        break;
    }
    case REQ_SCAN: {
        kvrpcpb_RawScanResponse r = {.has_region_error = head.has_region_error,
                                     .region_error = head.region_error,
                                     .error = head.error};
        if (res->rv == 0 && res->n_kvs) {
            /* Never past the send limit: return the pairs that fit (the
             * client continues after the last key), as standalone does. */
            size_t budget = st->max_send_msg > 1024 ? st->max_send_msg - 1024 : st->max_send_msg;
            size_t used = 0;
            r.kvs.items = tkv_arena_calloc(a, res->n_kvs, sizeof(*r.kvs.items));
            for (size_t i = 0; i < res->n_kvs; i++) {
                size_t sz = res->kvs[i].key.len + res->kvs[i].value.len + 16;
                if (used + sz > budget)
                    break;
                used += sz;
                kvrpcpb_KvPair *p = &r.kvs.items[r.kvs.n++];
                memset(p, 0, sizeof(*p));
                p->key = res->kvs[i].key;
                p->value = res->kvs[i].value;
            }
            if (r.kvs.n == 0) {
                tkv_rpc_call_finish(call, TKV_GRPC_RESOURCE_EXHAUSTED,
                                    "the first pair alone exceeds the send limit");
                req_free(q);
                return;
            }
        }
        reply_pb(call, a, kvrpcpb_RawScanResponse_fields, &r);
        break;
    }
    }
    req_free(q);
}

static bool decode_req(struct tkv_rpc_call *call, struct tkv_arena *a, const pb_msgdesc_t *fields,
                       struct tkv_slice msg, void *req)
{
    const char *why = NULL;
    if (tkv_pb_decode_ex(fields, req, msg.ptr, msg.len, a, &why) == 0)
        return true;
    char text[200];
    snprintf(text, sizeof(text), "cannot decode %s: %s", tkv_pb_msg_name(fields),
             why ? why : "malformed message");
    tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, text);
    return false;
}

static void header_of(const kvrpcpb_Context *ctx, bool has, struct tkv_rs_header *h)
{
    memset(h, 0, sizeof(*h));
    if (!has)
        return; /* region 0: RegionNotFound */
    h->region_id = ctx->region_id;
    if (ctx->has_peer) {
        h->peer.id = ctx->peer.id;
        h->peer.store_id = ctx->peer.store_id;
    }
    if (ctx->has_region_epoch) {
        h->epoch.conf_ver = ctx->region_epoch.conf_ver;
        h->epoch.version = ctx->region_epoch.version;
    }
    h->term = ctx->term;
}

/* An unknown cf is the client's error, in the response's error string. */
static bool check_cf(struct tkv_rpc_call *call, struct cluster_store *st, struct tkv_slice name,
                     enum tkv_cf *cf, const pb_msgdesc_t *resp_fields)
{
    int rv = tkv_engine_cf_from_name(name, cf);
    if (rv == 0)
        return true;
    tkv_arena_reset(&st->arena);
    struct raw_resp_head r = {.error = server_raw_client_error(&st->arena, rv, name)};
    /* RawGet/Put/Delete/Scan responses share the head layout, and a
     * response with only region_error/error set encodes the same. */
    kvrpcpb_RawScanResponse resp = {.error = r.error};
    (void)resp_fields;
    reply_pb(call, &st->arena, kvrpcpb_RawScanResponse_fields, &resp);
    return false;
}

static void on_cl_raw_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct cluster_store *st = core->store;
    struct tkv_arena *a = &core->arena;
    kvrpcpb_RawGetRequest req;
    struct tkv_rs_header h;
    enum tkv_cf cf;
    tkv_arena_reset(a);
    if (!decode_req(call, a, kvrpcpb_RawGetRequest_fields, msg, &req) ||
        !check_cf(call, st, req.cf, &cf, kvrpcpb_RawGetResponse_fields))
        return;
    header_of(&req.context, req.has_context, &h);
    struct cl_req *q = req_new(st, call, REQ_GET);
    q->req_store_id = h.peer.store_id;
    tkv_raftstore_get(st->rs, &h, cf, req.key, on_rs_done, q);
}

static void cl_raw_write(struct tkv_rpc_call *call, struct cluster_store *st,
                         const kvrpcpb_Context *ctx, bool has_ctx, struct tkv_slice cf_name,
                         struct tkv_slice key, const struct tkv_slice *value)
{
    struct tkv_rs_header h;
    enum tkv_cf cf;
    if (!check_cf(call, st, cf_name, &cf, kvrpcpb_RawPutResponse_fields))
        return;
    header_of(ctx, has_ctx, &h);
    struct cl_req *q = req_new(st, call, value ? REQ_PUT : REQ_DELETE);
    q->req_store_id = h.peer.store_id;
    if (value)
        tkv_raftstore_put(st->rs, &h, cf, key, *value, on_rs_done, q);
    else
        tkv_raftstore_delete(st->rs, &h, cf, key, on_rs_done, q);
}

static void on_cl_raw_put(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    kvrpcpb_RawPutRequest req;
    tkv_arena_reset(&core->arena);
    if (decode_req(call, &core->arena, kvrpcpb_RawPutRequest_fields, msg, &req))
        cl_raw_write(call, core->store, &req.context, req.has_context, req.cf, req.key,
                     &req.value);
}

static void on_cl_raw_delete(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    kvrpcpb_RawDeleteRequest req;
    tkv_arena_reset(&core->arena);
    if (decode_req(call, &core->arena, kvrpcpb_RawDeleteRequest_fields, msg, &req))
        cl_raw_write(call, core->store, &req.context, req.has_context, req.cf, req.key, NULL);
}

static void on_cl_raw_scan(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct cluster_store *st = core->store;
    kvrpcpb_RawScanRequest req;
    struct tkv_rs_header h;
    enum tkv_cf cf;
    tkv_arena_reset(&core->arena);
    if (!decode_req(call, &core->arena, kvrpcpb_RawScanRequest_fields, msg, &req) ||
        !check_cf(call, st, req.cf, &cf, kvrpcpb_RawScanResponse_fields))
        return;
    header_of(&req.context, req.has_context, &h);
    struct cl_req *q = req_new(st, call, REQ_SCAN);
    q->req_store_id = h.peer.store_id;
    tkv_raftstore_scan(st->rs, &h, cf, req.start_key, req.limit, on_rs_done, q);
}

/* ---- Kv* (transactions): txn's cluster driver, tkv/txn_cluster.h ---- */

struct kv_cmd_desc {
    enum tkv_txn_cmd cmd;
    const pb_msgdesc_t *req_fields, *resp_fields;
    size_t req_size, resp_size;
};

#define KV_CMD(c, Req, Resp)                                                                      \
    {c, kvrpcpb_##Req##_fields, kvrpcpb_##Resp##_fields, sizeof(kvrpcpb_##Req),                 \
     sizeof(kvrpcpb_##Resp)}
static const struct kv_cmd_desc kv_get_d = KV_CMD(TKV_TXN_GET, GetRequest, GetResponse);
static const struct kv_cmd_desc kv_scan_d = KV_CMD(TKV_TXN_SCAN, ScanRequest, ScanResponse);
static const struct kv_cmd_desc kv_prewrite_d =
    KV_CMD(TKV_TXN_PREWRITE, PrewriteRequest, PrewriteResponse);
static const struct kv_cmd_desc kv_commit_d = KV_CMD(TKV_TXN_COMMIT, CommitRequest, CommitResponse);
static const struct kv_cmd_desc kv_check_d =
    KV_CMD(TKV_TXN_CHECK_TXN_STATUS, CheckTxnStatusRequest, CheckTxnStatusResponse);
static const struct kv_cmd_desc kv_rollback_d =
    KV_CMD(TKV_TXN_BATCH_ROLLBACK, BatchRollbackRequest, BatchRollbackResponse);
static const struct kv_cmd_desc kv_resolve_d =
    KV_CMD(TKV_TXN_RESOLVE_LOCK, ResolveLockRequest, ResolveLockResponse);

/* Every Kv request starts with its Context, every response with its
 * region_error (kvrpcpb field 1). */
struct kv_req_head {
    bool has_context;
    kvrpcpb_Context context;
};
struct kv_resp_head {
    bool has_region_error;
    errorpb_Error region_error;
};

/* One Kv* command in flight: owns its arena (the request bytes, the decoded
 * request and the response live there until the driver's callback);
 * call is NULL once the client cancelled. */
struct kv_req {
    struct tkv_rpc_call *call;
    struct cluster_store *st;
    const struct kv_cmd_desc *d;
    uint64_t req_store_id;
    void *req, *resp;
    struct tkv_arena arena;
};

static void kv_req_free(struct kv_req *q)
{
    tkv_arena_close(&q->arena);
    tkv_free(q);
}

static void on_kv_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    struct kv_req *q = tkv_rpc_call_data(call);
    (void)why;
    if (q)
        q->call = NULL; /* the command goes on; its answer is dropped */
}

static void on_kv_done(void *arg, const struct tkv_txn_cluster_result *res)
{
    struct kv_req *q = arg;
    struct tkv_rpc_call *call = q->call;
    if (!call || q->st->closing) {
        kv_req_free(q);
        return;
    }
    tkv_rpc_call_set_data(call, NULL); /* the answer below ends the call */
    if (res->rv == 0 || res->rv == TKV_EREGION) {
        if (res->rv == TKV_EREGION && res->region_error) {
            struct kv_resp_head *h = q->resp;
            memset(q->resp, 0, q->d->resp_size);
            h->has_region_error = true;
            region_error_pb(&q->arena, q->st, q->req_store_id, res->region_error,
                            &h->region_error);
        }
        reply_pb(call, &q->arena, q->d->resp_fields, q->resp);
    } else if (res->rv == TKV_EINVAL) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, res->why ? res->why : "bad request");
    } else if (res->rv == TKV_ESHUTDOWN) {
        /* A write may have been proposed: outcome unknown (clients retry
         * Percolator commands, which are idempotent, on UNKNOWN too). */
        tkv_rpc_call_finish(call, TKV_GRPC_UNKNOWN,
                            "store is stopping: the command may or may not have been applied");
    } else {
        if (tkv_err_class(res->rv) == TKV_ERR_FATAL)
            TKV_PANIC("storage failed, stopping: %s", tkv_strerror(res->rv));
        char msg[160];
        snprintf(msg, sizeof(msg), "txn: %s", tkv_strerror(res->rv));
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, msg);
    }
    kv_req_free(q);
}

static void cl_kv(struct tkv_rpc_call *call, struct tkv_slice msg, const struct kv_cmd_desc *d)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct cluster_store *st = core->store;
    struct kv_req *q = tkv_xcalloc(1, sizeof(*q));
    tkv_arena_init(&q->arena, 0);
    q->st = st;
    q->d = d;
    /* The request bytes are the rpc layer's only during this call: the
     * command outlives it, so decode from a copy. */
    struct tkv_slice copy = tkv_pb_dup(&q->arena, msg.ptr, msg.len);
    q->req = tkv_arena_calloc(&q->arena, 1, d->req_size);
    q->resp = tkv_arena_calloc(&q->arena, 1, d->resp_size);
    if (!decode_req(call, &q->arena, d->req_fields, copy, q->req)) {
        kv_req_free(q);
        return;
    }
    const struct kv_req_head *rh = q->req;
    struct tkv_rs_header h;
    header_of(&rh->context, rh->has_context, &h);
    q->req_store_id = h.peer.store_id;
    q->call = call;
    tkv_rpc_call_set_data(call, q);
    tkv_txn_cluster_submit(st->txn, &h, d->cmd, q->req, q->resp, &q->arena, on_kv_done, q);
}

static void on_cl_kv_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    cl_kv(call, msg, &kv_get_d);
}
static void on_cl_kv_scan(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    cl_kv(call, msg, &kv_scan_d);
}
static void on_cl_kv_prewrite(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    cl_kv(call, msg, &kv_prewrite_d);
}
static void on_cl_kv_commit(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    cl_kv(call, msg, &kv_commit_d);
}
static void on_cl_kv_check(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    cl_kv(call, msg, &kv_check_d);
}
static void on_cl_kv_rollback(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    cl_kv(call, msg, &kv_rollback_d);
}
static void on_cl_kv_resolve(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    cl_kv(call, msg, &kv_resolve_d);
}

static void on_cl_unimplemented(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    char text[160];
    (void)msg;
    snprintf(text, sizeof(text), "%s is not served in cluster mode yet",
             tkv_rpc_call_path(call));
    tkv_rpc_call_finish(call, TKV_GRPC_UNIMPLEMENTED, text);
}

void server_cluster_methods(struct server_core *c, struct tkv_rpc_method *methods, size_t n)
{
    struct tkv_rpc_method tm[TKV_TRANSPORT_N_METHODS];
    if (c->store && c->store->tp) { /* Raft and Snapshot: the transport's handlers */
        tkv_transport_methods(c->store->tp, tm);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < TKV_TRANSPORT_N_METHODS; j++)
                if (strcmp(methods[i].path, tm[j].path) == 0)
                    methods[i] = tm[j];
    }
    for (size_t i = 0; i < n; i++) {
        const char *p = methods[i].path;
        void (*h)(struct tkv_rpc_call *, struct tkv_slice) = NULL;
        if (strcmp(p, "/tinykvpb.TinyKv/RawGet") == 0)
            h = on_cl_raw_get;
        else if (strcmp(p, "/tinykvpb.TinyKv/RawPut") == 0)
            h = on_cl_raw_put;
        else if (strcmp(p, "/tinykvpb.TinyKv/RawDelete") == 0)
            h = on_cl_raw_delete;
        else if (strcmp(p, "/tinykvpb.TinyKv/RawScan") == 0)
            h = on_cl_raw_scan;
        else if (strcmp(p, "/tinykvpb.TinyKv/KvGet") == 0)
            h = on_cl_kv_get;
        else if (strcmp(p, "/tinykvpb.TinyKv/KvScan") == 0)
            h = on_cl_kv_scan;
        else if (strcmp(p, "/tinykvpb.TinyKv/KvPrewrite") == 0)
            h = on_cl_kv_prewrite;
        else if (strcmp(p, "/tinykvpb.TinyKv/KvCommit") == 0)
            h = on_cl_kv_commit;
        else if (strcmp(p, "/tinykvpb.TinyKv/KvCheckTxnStatus") == 0)
            h = on_cl_kv_check;
        else if (strcmp(p, "/tinykvpb.TinyKv/KvBatchRollback") == 0)
            h = on_cl_kv_rollback;
        else if (strcmp(p, "/tinykvpb.TinyKv/KvResolveLock") == 0)
            h = on_cl_kv_resolve;
        else if (strncmp(p, "/tinykvpb.TinyKv/Kv", 19) == 0)
            h = on_cl_unimplemented;
        if (!h)
            continue;
        methods[i].on_message = h;
        methods[i].on_cancel = h == on_cl_unimplemented ? NULL
                               : strncmp(p, "/tinykvpb.TinyKv/Kv", 19) == 0 ? on_kv_cancel
                                                                           : on_req_cancel;
    }
}
