/* tkv-sched-bench: load generator for the scheduler's TSO, and for the
 * obvious alternative, a single-key etcd v3 Txn round trip per allocation.
 *
 *   tkv-sched-bench --mode tso --addr H:P --streams S --depth D --count N
 *     S Tso bidi streams (one HTTP/2 connection each), D requests in flight
 *     per stream, N timestamps per request. Checks that every stream's
 *     timestamps strictly increase and that batches never overlap.
 *   tkv-sched-bench --mode region-hb --addr H:P --streams S --depth D --count K
 *     S RegionHeartbeat bidi streams (one connection each, one store each,
 *     256 regions per store), D windows in flight per stream; a window is K
 *     heartbeats followed by one stale heartbeat (version 0) whose error
 *     response proves the window was processed (the scheduler answers valid
 *     heartbeats with nothing). Every heartbeat changes its region's size,
 *     so each one updates the region tree and the store counters. Counts the
 *     K valid heartbeats per window (items_per_s; requests = windows).
 *   tkv-sched-bench --mode store-hb --addr H:P --streams C --depth D
 *     C connections, D unary StoreHeartbeats in flight each (one store per
 *     connection).
 *   (region-hb and store-hb bootstrap the cluster and register their stores
 *   first: ids 1000+i. Run the scheduler with TKV_SCHED_PREPARE_MS large so
 *   no operator traffic mixes in.)
 *   tkv-sched-bench --mode etcd-txn --addr H:P --streams C --depth D
 *     C connections, D unary /etcdserverpb.KV/Txn in flight each: one put of
 *     one key in the success branch (what a TSO or id allocator on etcd costs
 *     per allocation).
 *
 * One client reactor core. Prints one JSON line:
 * {"mode":..,"streams":..,"depth":..,"count":..,"secs":..,"requests":..,
 *  "requests_per_s":..,"items_per_s":..,"errors":..,"violations":..}
 * Exit 1 on errors or on an ordering violation. */
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "schedulerpb.pb.h"
#include "tkv/err.h"
#include "tkv/hostport.h"
#include "tkv/pb.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

#define MAX_STREAMS 64

static struct {
    int mode; /* 0 tso, 1 etcd-txn, 2 region-hb, 3 store-hb */
    char host[128];
    uint16_t port;
    uint32_t streams, depth, count;
    double duration_s, warmup_s;
} o = {.streams = 4, .depth = 32, .count = 1, .duration_s = 5, .warmup_s = 1};

static atomic_int g_measure; /* 0 warmup, 1 measuring, 2 stop */
static atomic_uint_fast64_t g_requests, g_errors, g_violations;
static atomic_int g_failed;

struct stream {
    struct tkv_rpc_client *cl;
    struct tkv_rpc_ccall *call; /* tso, region-hb */
    uint64_t last_ts;
    uint32_t inflight;
    uint32_t index;       /* stream number: store 1000+index */
    uint64_t next_region; /* region-hb: next of this store's regions to report */
};

#define HB_REGIONS 256 /* regions per store (region-hb) */
#define HB_STORE_BASE 1000

static struct stream streams[MAX_STREAMS];
static uint64_t cluster_id;
static uint8_t req_buf[256];
static size_t req_len;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void count_ok(void)
{
    if (atomic_load_explicit(&g_measure, memory_order_relaxed) == 1)
        atomic_fetch_add_explicit(&g_requests, 1, memory_order_relaxed);
}

static void load_start(void);
static void setup_stores(void);

/* ---- TSO ---- */

static void tso_send(struct stream *s)
{
    if (atomic_load_explicit(&g_measure, memory_order_relaxed) == 2)
        return;
    if (tkv_rpc_ccall_send(s->call, req_buf, req_len) == 0)
        s->inflight++;
}

static void on_tso_msg(struct tkv_rpc_ccall *c, void *user, struct tkv_slice msg)
{
    struct stream *s = user;
    schedulerpb_TsoResponse r;
    (void)c;
    s->inflight--;
    if (tkv_pb_decode(schedulerpb_TsoResponse_fields, &r, msg.ptr, msg.len, NULL) != 0 ||
        !r.has_timestamp) {
        atomic_fetch_add(&g_errors, 1);
        return;
    }
    uint64_t ts = ((uint64_t)r.timestamp.physical << 18) | (uint64_t)r.timestamp.logical;
    if (ts - r.count + 1 <= s->last_ts || r.count != o.count)
        atomic_fetch_add(&g_violations, 1);
    s->last_ts = ts;
    count_ok();
    tso_send(s);
}

static void on_tso_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status st,
                        const char *message)
{
    struct stream *s = user;
    (void)c;
    s->call = NULL;
    if (st != TKV_GRPC_OK && st != TKV_GRPC_CANCELLED && atomic_load(&g_measure) != 2) {
        fprintf(stderr, "tkv-sched-bench: Tso stream ended: %s %s\n", tkv_grpc_status_name(st),
                message);
        atomic_fetch_add(&g_errors, 1);
    }
}

static const struct tkv_rpc_stream_cbs tso_cbs = {on_tso_msg, on_tso_done};

static void on_members(void *user, enum tkv_grpc_status st, const char *message,
                       struct tkv_slice resp)
{
    schedulerpb_GetMembersResponse r;
    struct tkv_arena arena;
    (void)user;
    tkv_arena_init(&arena, 0);
    if (st != TKV_GRPC_OK ||
        tkv_pb_decode(schedulerpb_GetMembersResponse_fields, &r, resp.ptr, resp.len, &arena)) {
        fprintf(stderr, "tkv-sched-bench: GetMembers failed: %s %s\n", tkv_grpc_status_name(st),
                message);
        atomic_store(&g_failed, 1);
        tkv_arena_close(&arena);
        return;
    }
    cluster_id = r.header.cluster_id;
    tkv_arena_close(&arena);
    if (o.mode >= 2) {
        setup_stores();
        return;
    }
    schedulerpb_TsoRequest req = {
        .has_header = true, .header = {.cluster_id = cluster_id}, .count = o.count};
    if (tkv_pb_encode(schedulerpb_TsoRequest_fields, &req, req_buf, sizeof(req_buf), &req_len)) {
        atomic_store(&g_failed, 1);
        return;
    }
    for (uint32_t i = 0; i < o.streams; i++) {
        struct stream *s = &streams[i];
        if (tkv_rpc_client_start(s->cl, "/schedulerpb.Scheduler/Tso", 0, &tso_cbs, s, &s->call)) {
            atomic_store(&g_failed, 1);
            return;
        }
        for (uint32_t d = 0; d < o.depth; d++)
            tso_send(s);
    }
}

/* ---- heartbeats ---- */

static void fail(const char *what, enum tkv_grpc_status st, const char *message)
{
    fprintf(stderr, "tkv-sched-bench: %s failed: %s %s\n", what, tkv_grpc_status_name(st),
            message ? message : "");
    atomic_store(&g_failed, 1);
}

static uint32_t stores_put;

static void on_put_store(void *user, enum tkv_grpc_status st, const char *message,
                         struct tkv_slice resp)
{
    schedulerpb_PutStoreResponse r;
    struct tkv_arena arena;
    (void)user;
    tkv_arena_init(&arena, 0);
    if (st != TKV_GRPC_OK ||
        tkv_pb_decode(schedulerpb_PutStoreResponse_fields, &r, resp.ptr, resp.len, &arena) ||
        (r.has_header && r.header.has_error)) {
        fail("PutStore", st, message);
    } else if (++stores_put == o.streams) {
        load_start();
    }
    tkv_arena_close(&arena);
}

static void store_of(uint32_t i, char *addr, size_t cap, metapb_Store *out)
{
    snprintf(addr, cap, "127.0.0.1:%u", 40000 + i);
    memset(out, 0, sizeof(*out));
    out->id = HB_STORE_BASE + i;
    out->address = tkv_pb_str(addr);
}

/* Bootstrapped (or already): register one store per stream. */
static void on_bootstrap(void *user, enum tkv_grpc_status st, const char *message,
                         struct tkv_slice resp)
{
    (void)user;
    (void)resp;
    if (st != TKV_GRPC_OK) { /* "already bootstrapped" comes in the header: fine */
        fail("Bootstrap", st, message);
        return;
    }
    for (uint32_t i = 0; i < o.streams; i++) {
        char addr[32];
        uint8_t b[128];
        size_t n;
        schedulerpb_PutStoreRequest req = {.has_header = true,
                                           .header = {.cluster_id = cluster_id},
                                           .has_store = true};
        store_of(i, addr, sizeof(addr), &req.store);
        if (tkv_pb_encode(schedulerpb_PutStoreRequest_fields, &req, b, sizeof(b), &n) ||
            tkv_rpc_client_unary(streams[0].cl, "/schedulerpb.Scheduler/PutStore", b, n, 0,
                                 on_put_store, NULL)) {
            atomic_store(&g_failed, 1);
            return;
        }
    }
}

static void setup_stores(void)
{
    char addr[32];
    uint8_t b[128];
    size_t n;
    schedulerpb_BootstrapRequest req = {
        .has_header = true, .header = {.cluster_id = cluster_id}, .has_store = true};
    store_of(0, addr, sizeof(addr), &req.store);
    if (tkv_pb_encode(schedulerpb_BootstrapRequest_fields, &req, b, sizeof(b), &n) ||
        tkv_rpc_client_unary(streams[0].cl, "/schedulerpb.Scheduler/Bootstrap", b, n, 0,
                             on_bootstrap, NULL))
        atomic_store(&g_failed, 1);
}

/* One region heartbeat of stream s: region `which` of its store, version 1
 * (or 0: the stale marker); the size (1..64 MiB) changes on every pass over
 * the store's regions, so every heartbeat is an update of the tree. */
static int hb_region_send(struct stream *s, uint64_t which, uint64_t version)
{
    char start[16], end[17];
    uint8_t b[256];
    size_t n;
    uint64_t rid = 1000000 + (uint64_t)s->index * 10000 + which;
    snprintf(start, sizeof(start), "r%06u%06u", s->index, (unsigned)which);
    memcpy(end, start, 13);
    end[13] = '\x01';
    metapb_Peer peer = {.id = rid + 500000000ull, .store_id = HB_STORE_BASE + s->index};
    schedulerpb_RegionHeartbeatRequest req = {
        .has_header = true,
        .header = {.cluster_id = cluster_id},
        .has_region = true,
        .region = {.id = rid,
                   .start_key = {(const uint8_t *)start, 13},
                   .end_key = {(const uint8_t *)end, 14},
                   .has_region_epoch = true,
                   .region_epoch = {.conf_ver = 1, .version = version}},
        .has_leader = true,
        .leader = peer,
        .approximate_size = (1 + ((s->next_region / HB_REGIONS) % 64)) << 20};
    req.region.peers.items = &peer;
    req.region.peers.n = 1;
    if (tkv_pb_encode(schedulerpb_RegionHeartbeatRequest_fields, &req, b, sizeof(b), &n))
        return -1;
    return tkv_rpc_ccall_send(s->call, b, n);
}

static void hb_window(struct stream *s)
{
    if (atomic_load_explicit(&g_measure, memory_order_relaxed) == 2 || !s->call)
        return;
    for (uint32_t k = 0; k < o.count; k++) {
        if (hb_region_send(s, s->next_region % HB_REGIONS, 1))
            return;
        s->next_region++;
    }
    if (hb_region_send(s, 0, 0) == 0) /* stale: region 0 is cached with version 1 */
        s->inflight++;
}

static void on_hb_msg(struct tkv_rpc_ccall *c, void *user, struct tkv_slice msg)
{
    struct stream *s = user;
    schedulerpb_RegionHeartbeatResponse r;
    struct tkv_arena arena;
    (void)c;
    tkv_arena_init(&arena, 0);
    int rv = tkv_pb_decode(schedulerpb_RegionHeartbeatResponse_fields, &r, msg.ptr, msg.len,
                           &arena);
    bool marker = rv == 0 && r.has_header && r.header.has_error;
    tkv_arena_close(&arena);
    if (rv) {
        atomic_fetch_add(&g_errors, 1);
        return;
    }
    if (!marker)
        return; /* an operator's command: not ours to count */
    s->inflight--;
    count_ok();
    hb_window(s);
}

static void on_hb_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status st,
                       const char *message)
{
    struct stream *s = user;
    (void)c;
    s->call = NULL;
    if (st != TKV_GRPC_OK && st != TKV_GRPC_CANCELLED && atomic_load(&g_measure) != 2) {
        fprintf(stderr, "tkv-sched-bench: RegionHeartbeat stream ended: %s %s\n",
                tkv_grpc_status_name(st), message);
        atomic_fetch_add(&g_errors, 1);
    }
}

static const struct tkv_rpc_stream_cbs hb_cbs = {on_hb_msg, on_hb_done};

static void store_hb_issue(struct stream *s);

static void on_store_hb(void *user, enum tkv_grpc_status st, const char *message,
                        struct tkv_slice resp)
{
    struct stream *s = user;
    schedulerpb_StoreHeartbeatResponse r;
    struct tkv_arena arena;
    s->inflight--;
    tkv_arena_init(&arena, 0);
    bool ok = st == TKV_GRPC_OK &&
              tkv_pb_decode(schedulerpb_StoreHeartbeatResponse_fields, &r, resp.ptr, resp.len,
                            &arena) == 0 &&
              !(r.has_header && r.header.has_error);
    tkv_arena_close(&arena);
    if (!ok) {
        if (atomic_load(&g_measure) != 2) {
            fprintf(stderr, "tkv-sched-bench: StoreHeartbeat failed: %s %s\n",
                    tkv_grpc_status_name(st), message ? message : "(header error)");
            atomic_fetch_add(&g_errors, 1);
        }
        return;
    }
    count_ok();
    store_hb_issue(s);
}

static void store_hb_issue(struct stream *s)
{
    uint8_t b[128];
    size_t n;
    if (atomic_load_explicit(&g_measure, memory_order_relaxed) == 2)
        return;
    schedulerpb_StoreHeartbeatRequest req = {
        .has_header = true,
        .header = {.cluster_id = cluster_id},
        .has_stats = true,
        .stats = {.store_id = HB_STORE_BASE + s->index,
                  .capacity = 100ull << 30,
                  .available = (50ull << 30) + s->next_region++,
                  .region_count = HB_REGIONS}};
    if (tkv_pb_encode(schedulerpb_StoreHeartbeatRequest_fields, &req, b, sizeof(b), &n) == 0 &&
        tkv_rpc_client_unary(s->cl, "/schedulerpb.Scheduler/StoreHeartbeat", b, n, 0,
                             on_store_hb, s) == 0)
        s->inflight++;
}

static void load_start(void)
{
    for (uint32_t i = 0; i < o.streams; i++) {
        struct stream *s = &streams[i];
        if (o.mode == 2 &&
            tkv_rpc_client_start(s->cl, "/schedulerpb.Scheduler/RegionHeartbeat", 0, &hb_cbs, s,
                                 &s->call)) {
            atomic_store(&g_failed, 1);
            return;
        }
        for (uint32_t d = 0; d < o.depth; d++) {
            if (o.mode == 2)
                hb_window(s);
            else
                store_hb_issue(s);
        }
    }
}

/* ---- etcd Txn ---- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* TxnRequest{success: [RequestOp{request_put: PutRequest{key, value}}]} */
static size_t encode_txn(uint8_t *buf, const char *key, uint64_t value)
{
    uint8_t put[64], op[80];
    size_t np = 0, no = 0, n = 0, kl = strlen(key);
    put[np++] = 0x0a; /* key, field 1 LEN */
    np += put_varint(put + np, kl);
    memcpy(put + np, key, kl);
    np += kl;
    put[np++] = 0x12; /* value, field 2 LEN */
    put[np++] = 8;
    memcpy(put + np, &value, 8);
    np += 8;
    op[no++] = 0x12; /* request_put, field 2 LEN */
    no += put_varint(op + no, np);
    memcpy(op + no, put, np);
    no += np;
    buf[n++] = 0x12; /* success, field 2 LEN */
    n += put_varint(buf + n, no);
    memcpy(buf + n, op, no);
    return n + no;
}

static void txn_issue(struct stream *s);

static void on_txn(void *user, enum tkv_grpc_status st, const char *message, struct tkv_slice resp)
{
    struct stream *s = user;
    (void)resp;
    s->inflight--;
    if (st != TKV_GRPC_OK) {
        if (atomic_load(&g_measure) != 2) {
            fprintf(stderr, "tkv-sched-bench: Txn failed: %s %s\n", tkv_grpc_status_name(st),
                    message);
            atomic_fetch_add(&g_errors, 1);
        }
        return;
    }
    count_ok();
    txn_issue(s);
}

static void txn_issue(struct stream *s)
{
    static uint64_t n;
    if (atomic_load_explicit(&g_measure, memory_order_relaxed) == 2)
        return;
    size_t len = encode_txn(req_buf, "tso", ++n);
    if (tkv_rpc_client_unary(s->cl, "/etcdserverpb.KV/Txn", req_buf, len, 0, on_txn, s) == 0)
        s->inflight++;
}

/* ---- core ---- */

static void on_stop(void *arg)
{
    (void)arg;
    for (uint32_t i = 0; i < o.streams; i++) {
        if (streams[i].call)
            tkv_rpc_ccall_cancel(streams[i].call);
        streams[i].call = NULL;
        if (streams[i].cl)
            tkv_rpc_client_close(streams[i].cl);
        streams[i].cl = NULL;
    }
}

static int core_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    tkv_reactor_on_stop(r, on_stop, NULL);
    for (uint32_t i = 0; i < o.streams; i++) {
        int rv = tkv_rpc_client_connect(r, o.host, o.port, NULL, &streams[i].cl);
        if (rv)
            return rv;
        streams[i].index = i;
    }
    if (o.mode != 1) {
        schedulerpb_GetMembersRequest req = {0};
        uint8_t b[16];
        size_t n = 0;
        tkv_pb_encode(schedulerpb_GetMembersRequest_fields, &req, b, sizeof(b), &n);
        return tkv_rpc_client_unary(streams[0].cl, "/schedulerpb.Scheduler/GetMembers", b, n, 0,
                                    on_members, NULL);
    }
    for (uint32_t i = 0; i < o.streams; i++)
        for (uint32_t d = 0; d < o.depth; d++)
            txn_issue(&streams[i]);
    return 0;
}

static void core_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    on_stop(arg);
}

static void usage(void)
{
    fputs("usage: tkv-sched-bench --mode tso|region-hb|store-hb|etcd-txn --addr HOST:PORT\n"
          "                       [--streams S] [--depth D]\n"
          "                       [--count N] [--duration SECS] [--warmup SECS]\n",
          stderr);
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--mode"))
            o.mode = !strcmp(v, "tso")         ? 0
                     : !strcmp(v, "etcd-txn")  ? 1
                     : !strcmp(v, "region-hb") ? 2
                     : !strcmp(v, "store-hb")  ? 3
                                               : -1;
        else if (!strcmp(a, "--addr"))
            addr = v;
        else if (!strcmp(a, "--streams"))
            o.streams = (uint32_t)atoi(v);
        else if (!strcmp(a, "--depth"))
            o.depth = (uint32_t)atoi(v);
        else if (!strcmp(a, "--count"))
            o.count = (uint32_t)atoi(v);
        else if (!strcmp(a, "--duration"))
            o.duration_s = atof(v);
        else if (!strcmp(a, "--warmup"))
            o.warmup_s = atof(v);
        else {
            usage();
            return 2;
        }
    }
    if (!addr || o.mode < 0 || o.streams < 1 || o.streams > MAX_STREAMS || o.depth < 1 ||
        o.count < 1 || o.duration_s <= 0 ||
        tkv_hostport_split(addr, NULL, o.host, sizeof(o.host), &o.port)) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct tkv_reactor_config rcfg = {.n_cores = 1, .pin = false};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&rcfg, core_init, core_fini, NULL, &g);
    if (rv) {
        fprintf(stderr, "tkv-sched-bench: reactor start failed: %s\n", tkv_strerror(rv));
        return 1;
    }
    usleep((useconds_t)(o.warmup_s * 1e6));
    atomic_store(&g_measure, 1);
    uint64_t t0 = mono_ns();
    usleep((useconds_t)(o.duration_s * 1e6));
    atomic_store(&g_measure, 2);
    uint64_t t1 = mono_ns();
    tkv_reactor_group_stop(g);
    rv = tkv_reactor_group_wait(g);
    double secs = (double)(t1 - t0) / 1e9;
    uint64_t reqs = atomic_load(&g_requests), errs = atomic_load(&g_errors);
    uint64_t viol = atomic_load(&g_violations);
    static const char *const names[] = {"tso", "etcd-txn", "region-hb", "store-hb"};
    uint64_t per = o.mode == 0 || o.mode == 2 ? o.count : 1;
    printf("{\"mode\":\"%s\",\"streams\":%u,\"depth\":%u,\"count\":%u,\"secs\":%.3f,"
           "\"requests\":%" PRIu64 ",\"requests_per_s\":%.0f,\"items_per_s\":%.0f,"
           "\"errors\":%" PRIu64 ",\"violations\":%" PRIu64 "}\n",
           names[o.mode], o.streams, o.depth, per == 1 ? 1 : o.count, secs, reqs,
           (double)reqs / secs, (double)(reqs * per) / secs, errs, viol);
    return (rv || errs || viol || atomic_load(&g_failed) || reqs == 0) ? 1 : 0;
}
