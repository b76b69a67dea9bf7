/* tinykv-bench: closed- or open-loop gRPC load generator for tinykv (raw
 * API) and etcd v3, on the project's rpc client and reactor. One JSON result
 * line per run on stdout, progress on stderr. See perf/README.md. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_hist.h"
#include "kvrpcpb.pb.h"
#include "bench_keys.h"
#include "bench_proc.h"
#include "bench_wire.h"
#include "tinykv/client.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/pb.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

#define MAX_PIDS 8
#define MAX_ADDRS 8
#define MAX_GAPS 32
#define KEY_MAX 256
#define NS 1000000000ull

enum backend { BK_TINYKV, BK_TINYKV_TXN, BK_ETCD };
enum workload { WL_LOAD, WL_PUT, WL_GET, WL_A, WL_B, WL_C, WL_SCAN };
enum op { OP_GET, OP_PUT, OP_SCAN };
enum phase { PH_WARMUP, PH_MEASURE, PH_STOP };

/* Error kinds: the 17 gRPC statuses, then answers that arrived OK at the
 * gRPC level but say something went wrong. */
enum {
    ERR_SUBMIT = TKV_GRPC_STATUS_COUNT, /* the client refused to start the call */
    ERR_DECODE,                         /* response did not parse */
    ERR_RESP,                           /* tinykv: error string in the response */
    ERR_REGION,                         /* tinykv: region_error set */
    ERR_NOT_FOUND,                      /* read of a loaded key found nothing */
    ERR_BAD_VALUE,                      /* value length differs from --value-size */
    ERR_CONFLICT,                       /* libtinykv: transaction conflict/abort (retryable) */
    ERR_UNKNOWN,                        /* libtinykv: write outcome unknown (TINYKV_EUNDETERMINED) */
    ERR_CLIENT,                         /* libtinykv: any other error of the operation */
    N_ERR
};

static const char *const extra_err_names[] = {"submit",    "decode",    "resp_error",
                                              "region_error", "not_found", "bad_value",
                                              "txn_conflict", "outcome_unknown", "client_error"};

static const char *err_name(int k)
{
    return k < TKV_GRPC_STATUS_COUNT ? tkv_grpc_status_name(k)
                                     : extra_err_names[k - TKV_GRPC_STATUS_COUNT];
}

static const char *const workload_names[] = {"load", "put", "get", "a", "b", "c", "scan"};
static const char *const backend_names[] = {"tinykv", "tinykv-txn", "etcd"};

struct addr {
    char host[128];
    uint16_t port;
};

struct opts {
    enum backend backend;
    enum workload workload;
    char host[128]; /* the first --addr (libtinykv's store_addr) */
    uint16_t port;
    struct addr addrs[MAX_ADDRS]; /* --addr a,b,c: a failed connection moves to the next */
    uint32_t n_addrs;
    uint64_t reconnect_ns; /* a connection that never came up waits this long to retry */
    uint64_t gap_ns;       /* --gap-ms: record pauses between acknowledgements this long */
    bool stop_after_gap;   /* end the run 1 s after a recorded pause that ended after SIGUSR1 */
    uint32_t threads, conns, depth;
    double rate; /* open loop ops/s in total; 0 = closed loop */
    uint64_t keys;
    uint32_t key_size, value_size, scan_len;
    enum bench_dist dist;
    double theta;
    double warmup_s, duration_s;
    bool linearizable;
    pid_t pids[MAX_PIDS];
    uint32_t n_pids;
    uint64_t seed;
    uint64_t timeout_ns;
    bool quiet;
    const char *label;
    const char *emit_body;
    const char *pd;      /* --pd: route through the scheduler with libtinykv */
    uint32_t txn_keys;   /* tinykv-txn: keys written per transaction */
    bool use_lib;        /* requests go through libtinykv (--pd or tinykv-txn) */
};

static struct opts o = {
    .backend = BK_TINYKV,
    .workload = WL_PUT,
    .host = "127.0.0.1",
    .port = 20160,
    .threads = 1,
    .conns = 8,
    .depth = 4,
    .keys = 100000,
    .key_size = 16,
    .value_size = 100,
    .scan_len = 10,
    .dist = BENCH_DIST_UNIFORM,
    .theta = 0.99,
    .warmup_s = 2,
    .duration_s = 10,
    .linearizable = true,
    .seed = 1,
    .timeout_ns = 10 * NS,
    .txn_keys = 1,
    .reconnect_ns = 200 * 1000000ull,
};

struct bench_core;

struct conn {
    struct tkv_rpc_client *cl;
    uint32_t addr;     /* index into o.addrs */
    uint32_t inflight;
    uint64_t next_connect_ns; /* reconnects to a dead server: one per 200 ms */
    bool worked;              /* an answer arrived since the last (re)connect */
};

struct slot {
    struct bench_core *core;
    struct conn *conn; /* closed loop: fixed; open loop: chosen per request */
    uint64_t start_ns; /* send time (closed) or intended send time (open) */
    uint64_t key;
    uint8_t op;
    uint8_t phase;
    bool retry_key; /* load: the last attempt failed, send the same key again */
    struct tkv_timer backoff;
    struct slot *next_free;
    struct tinykv_txn *txn; /* tinykv-txn: the transaction in flight */
};

struct bench_core {
    uint32_t id;
    struct tkv_reactor *r;
    struct conn *conns;
    uint32_t n_conns, rr;
    struct slot *slots;
    uint32_t n_slots;
    struct slot *free_slots; /* open loop */
    struct bench_keys keys;
    struct bench_rng rng;
    struct bench_hist hist;
    uint64_t errs[N_ERR];
    bool err_logged[N_ERR];
    uint64_t ok_reads, ok_writes, ok_scans, rows;
    /* read by the main thread for progress lines */
    _Atomic uint64_t progress_ok, progress_err;
    /* load phase: this core writes keys [load_next, load_end) */
    uint64_t load_next, load_end;
    bool load_done;
    /* open loop */
    double rate;
    uint64_t open_start_ns, issued;
    struct tkv_timer tick;
    uint64_t backlog_max;
    bool stopping;
    uint32_t inflight;
    uint32_t backing_off; /* slots waiting on their backoff timer */
    uint8_t *req;
    size_t req_cap;
    uint8_t *value;
    struct tinykv *kv; /* libtinykv handle of this core (use_lib) */
    /* pauses between consecutive acknowledgements (--gap-ms), on this core */
    uint64_t last_ok_ns;
    uint64_t gaps[MAX_GAPS][2]; /* [from, to] CLOCK_MONOTONIC ns */
    uint32_t n_gaps;
    _Atomic uint64_t armed_gap_end_ns; /* end of the first pause that ended after arming */
};

static struct bench_core **cores;
static _Atomic int g_phase = PH_WARMUP;
static _Atomic uint32_t g_cores_loaded;
static _Atomic int g_init_failed;
static volatile sig_atomic_t g_interrupted;
static volatile sig_atomic_t g_arm_signal;   /* SIGUSR1 arrived */
static _Atomic uint64_t g_armed_ns;          /* when it arrived (set by the handler) */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

/* ---- request encoding ---- */

static size_t format_key(char *buf, uint64_t i)
{
    size_t n = bench_key_format(buf, i);
    while (n < o.key_size)
        buf[n++] = 'x'; /* padding at the end keeps the numeric order */
    return n;
}

static const char *op_path(enum op op)
{
    if (o.backend == BK_ETCD)
        return op == OP_PUT ? "/etcdserverpb.KV/Put" : "/etcdserverpb.KV/Range";
    if (o.backend == BK_TINYKV_TXN)
        return op == OP_PUT   ? "txn: KvPrewrite + KvCommit"
               : op == OP_GET ? "txn: KvGet"
                              : "txn: KvScan";
    switch (op) {
    case OP_PUT:
        return "/tinykvpb.TinyKv/RawPut";
    case OP_GET:
        return "/tinykvpb.TinyKv/RawGet";
    default:
        return "/tinykvpb.TinyKv/RawScan";
    }
}

/* Encode the request for (op, key) into buf; returns its length (0 = does
 * not fit). value is value_size bytes. */
static size_t encode_request(uint8_t *buf, size_t cap, enum op op, uint64_t key,
                             const uint8_t *value)
{
    char kb[KEY_MAX + 20], eb[KEY_MAX + 20];
    size_t kl = format_key(kb, key);
    struct tkv_slice k = TKV_SLICE(kb, kl), v = TKV_SLICE(value, o.value_size);
    if (o.backend == BK_ETCD) {
        switch (op) {
        case OP_PUT:
            return bench_etcd_put_encode(buf, cap, k, v);
        case OP_GET:
            return bench_etcd_range_encode(buf, cap, k, (struct tkv_slice){0}, 0, !o.linearizable);
        default: {
            /* Bound the range by key + scan_len as well as by limit: etcd
             * 3.4 counts every key of the range even with a limit. */
            size_t el = format_key(eb, key + o.scan_len);
            return bench_etcd_range_encode(buf, cap, k, TKV_SLICE(eb, el), o.scan_len,
                                           !o.linearizable);
        }
        }
    }
    /* Encode straight into buf: nothing to free, no copy. */
    size_t n = 0;
    int rv;
    if (op == OP_PUT) {
        kvrpcpb_RawPutRequest r = {.key = k, .value = v};
        rv = tkv_pb_encode(kvrpcpb_RawPutRequest_fields, &r, buf, cap, &n);
    } else if (op == OP_GET) {
        kvrpcpb_RawGetRequest r = {.key = k};
        rv = tkv_pb_encode(kvrpcpb_RawGetRequest_fields, &r, buf, cap, &n);
    } else {
        kvrpcpb_RawScanRequest r = {.start_key = k, .limit = (uint32_t)o.scan_len};
        rv = tkv_pb_encode(kvrpcpb_RawScanRequest_fields, &r, buf, cap, &n);
    }
    return rv == 0 ? n : 0;
}

/* Every Raw* response carries region_error and an error string. */
static int raw_verdict(bool has_region_error, struct tkv_slice error)
{
    return has_region_error ? ERR_REGION : error.len ? ERR_RESP : -1;
}

/* Check a response; returns -1 if good, or an error kind. *rows: scan rows. */
static int check_response(enum op op, struct tkv_slice resp, uint64_t *rows)
{
    if (o.backend == BK_ETCD) {
        if (op == OP_PUT)
            return bench_etcd_put_decode(resp) == 0 ? -1 : ERR_DECODE;
        struct bench_etcd_range rr;
        if (bench_etcd_range_decode(resp, &rr) != 0)
            return ERR_DECODE;
        if (op == OP_SCAN) {
            *rows = rr.n_kvs;
            return -1;
        }
        if (rr.n_kvs == 0)
            return ERR_NOT_FOUND;
        return rr.first_value.len == o.value_size ? -1 : ERR_BAD_VALUE;
    }
    /* The arena holds only scan rows. */
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);
    int verdict;
    if (op == OP_PUT) {
        kvrpcpb_RawPutResponse r;
        verdict = tkv_pb_decode(kvrpcpb_RawPutResponse_fields, &r, resp.ptr, resp.len, &arena)
                      ? ERR_DECODE
                      : raw_verdict(r.has_region_error, r.error);
    } else if (op == OP_GET) {
        kvrpcpb_RawGetResponse r;
        verdict = tkv_pb_decode(kvrpcpb_RawGetResponse_fields, &r, resp.ptr, resp.len, &arena)
                      ? ERR_DECODE
                      : raw_verdict(r.has_region_error, r.error);
        if (verdict < 0 && r.not_found)
            verdict = ERR_NOT_FOUND;
        else if (verdict < 0 && r.value.len != o.value_size)
            verdict = ERR_BAD_VALUE;
    } else {
        kvrpcpb_RawScanResponse r;
        verdict = tkv_pb_decode(kvrpcpb_RawScanResponse_fields, &r, resp.ptr, resp.len, &arena)
                      ? ERR_DECODE
                      : raw_verdict(r.has_region_error, r.error);
        if (verdict < 0)
            *rows = r.kvs.n;
    }
    tkv_arena_close(&arena);
    return verdict;
}

/* ---- the request loop (runs on a client core) ---- */

static void slot_issue(struct slot *s);
static void open_pump(struct bench_core *c);

static int read_pct(void)
{
    switch (o.workload) {
    case WL_GET:
    case WL_C:
        return 100;
    case WL_A:
        return 50;
    case WL_B:
        return 95;
    default:
        return 0;
    }
}

static void count_error(struct bench_core *c, struct slot *s, int kind, const char *msg)
{
    atomic_fetch_add_explicit(&c->progress_err, 1, memory_order_relaxed);
    if (s->phase == PH_MEASURE || o.workload == WL_LOAD)
        c->errs[kind]++;
    if (!c->err_logged[kind]) {
        c->err_logged[kind] = true;
        fprintf(stderr, "tinykv-bench: core %u: first %s error (%s %s)%s%s\n", c->id,
                err_name(kind),
                s->op == OP_PUT   ? "put"
                : s->op == OP_GET ? "get"
                                  : "scan",
                op_path((enum op)s->op), msg && *msg ? ": " : "", msg ? msg : "");
    }
}

static void core_maybe_loaded(struct bench_core *c)
{
    if (o.workload == WL_LOAD && !c->load_done && c->load_next >= c->load_end && c->inflight == 0 &&
        c->backing_off == 0) {
        c->load_done = true;
        atomic_fetch_add(&g_cores_loaded, 1);
    }
}

static void on_backoff(struct tkv_timer *t)
{
    struct slot *s = t->data;
    s->core->backing_off--;
    slot_issue(s);
}

/* Closed loop: retry the slot later instead of spinning on a failing server. */
static void slot_backoff(struct slot *s)
{
    s->core->backing_off++;
    tkv_timer_start(s->core->r, &s->backoff, 10 * 1000000ull);
}

static void slot_release(struct slot *s)
{
    struct bench_core *c = s->core;
    if (o.rate > 0) {
        s->next_free = c->free_slots;
        c->free_slots = s;
    }
}

/* --gap-ms: an acknowledgement at now; a pause since the previous one that
 * was at least gap_ns long is recorded (the failover measurement: kill -9 of
 * the leader to the first acknowledged write after it). */
static void note_ack(struct bench_core *c, uint64_t now)
{
    if (o.gap_ns && c->last_ok_ns && now - c->last_ok_ns >= o.gap_ns) {
        if (c->n_gaps < MAX_GAPS) {
            c->gaps[c->n_gaps][0] = c->last_ok_ns;
            c->gaps[c->n_gaps][1] = now;
            c->n_gaps++;
        }
        uint64_t armed = atomic_load_explicit(&g_armed_ns, memory_order_relaxed);
        if (armed && now > armed && atomic_load(&c->armed_gap_end_ns) == 0)
            atomic_store(&c->armed_gap_end_ns, now);
    }
    c->last_ok_ns = now;
}

/* One request (or transaction) of slot s ended: kind < 0 = success, else an
 * error kind; cancelled = the client itself is shutting down. */
static void slot_complete(struct slot *s, int kind, const char *message, uint64_t rows,
                          bool cancelled)
{
    struct bench_core *c = s->core;
    c->inflight--;
    uint64_t now = mono_ns();
    bool stopping = c->stopping || atomic_load_explicit(&g_phase, memory_order_relaxed) == PH_STOP;
    if (kind < 0) {
        atomic_fetch_add_explicit(&c->progress_ok, 1, memory_order_relaxed);
        note_ack(c, now);
        if (s->phase == PH_MEASURE && !(stopping && o.workload != WL_LOAD)) {
            bench_hist_record(&c->hist, now - s->start_ns);
            if (s->op == OP_PUT)
                c->ok_writes++;
            else if (s->op == OP_GET)
                c->ok_reads++;
            else
                c->ok_scans++;
            c->rows += rows;
        }
        s->retry_key = false;
    } else if (!(stopping && cancelled)) {
        count_error(c, s, kind, message);
        s->retry_key = o.workload == WL_LOAD;
    }
    if (c->stopping)
        return;
    if (o.rate > 0) {
        slot_release(s);
        open_pump(c);
    } else if (kind >= 0) {
        slot_backoff(s);
    } else {
        slot_issue(s);
    }
    core_maybe_loaded(c);
}

static void on_reply(void *user, enum tkv_grpc_status status, const char *message,
                     struct tkv_slice resp)
{
    struct slot *s = user;
    s->conn->inflight--;
    uint64_t rows = 0;
    int kind = status != TKV_GRPC_OK ? (int)status : check_response((enum op)s->op, resp, &rows);
    if (kind < 0 || status == TKV_GRPC_OK)
        s->conn->worked = true;
    slot_complete(s, kind, message, rows, status == TKV_GRPC_CANCELLED);
}

/* ---- libtinykv paths (--pd, tinykv-txn) ---- */

static int lib_kind(int rv)
{
    switch (rv) {
    case 0:
        return -1;
    case TKV_ENOTFOUND:
        return ERR_NOT_FOUND;
    case TINYKV_ECONFLICT:
    case TINYKV_EABORTED:
        return ERR_CONFLICT;
    case TKV_ETIMEDOUT:
        return TKV_GRPC_DEADLINE_EXCEEDED;
    case TINYKV_EUNDETERMINED: /* may or may not have been applied: not resent */
        return ERR_UNKNOWN;
    default:
        return ERR_CLIENT;
    }
}

static void lib_complete(struct slot *s, int rv, uint64_t rows)
{
    struct bench_core *c = s->core;
    char msg[640];
    msg[0] = '\0';
    if (rv && rv != TKV_ESHUTDOWN)
        snprintf(msg, sizeof msg, "%s: %s", tinykv_strerror(rv), c->kv ? tinykv_errmsg(c->kv) : "");
    slot_complete(s, lib_kind(rv), msg, rows, rv == TKV_ESHUTDOWN);
}

static void lib_done(void *user, int rv)
{
    lib_complete(user, rv, 0);
}

static void lib_get(void *user, int rv, struct tkv_slice value)
{
    if (rv == 0 && value.len != o.value_size) {
        struct slot *s = user;
        slot_complete(s, ERR_BAD_VALUE, "value size", 0, false);
        return;
    }
    lib_complete(user, rv, 0);
}

static void lib_scan(void *user, int rv, const struct tinykv_kv *kvs, size_t n)
{
    (void)kvs;
    lib_complete(user, rv, n);
}

static void noop_done(void *user, int rv)
{
    (void)user;
    (void)rv;
}

/* A read-only transaction ends with a rollback (frees it; nothing to undo). */
static void txn_read_end(struct slot *s)
{
    if (s->txn && s->core->kv) { /* (a closing handle frees its transactions) */
        tinykv_txn_rollback(s->txn, noop_done, NULL);
        s->txn = NULL;
    }
}

static void txn_get_done(void *user, int rv, struct tkv_slice value)
{
    struct slot *s = user;
    txn_read_end(s);
    lib_get(user, rv, value);
}

static void txn_scan_done(void *user, int rv, const struct tinykv_kv *kvs, size_t n)
{
    struct slot *s = user;
    txn_read_end(s);
    lib_scan(user, rv, kvs, n);
}

static void txn_commit_done(void *user, int rv)
{
    struct slot *s = user;
    s->txn = NULL; /* commit ends the transaction */
    lib_complete(s, rv, 0);
}

static void txn_begun(void *user, int rv, struct tinykv_txn *txn)
{
    struct slot *s = user;
    struct bench_core *c = s->core;
    if (rv) {
        lib_complete(s, rv, 0);
        return;
    }
    s->txn = txn;
    char kb[KEY_MAX + 20];
    size_t kl = format_key(kb, s->key);
    struct tkv_slice k = TKV_SLICE(kb, kl);
    if (s->op == OP_GET) {
        rv = tinykv_txn_get(txn, k, txn_get_done, s);
    } else if (s->op == OP_SCAN) {
        rv = tinykv_txn_scan(txn, k, o.scan_len, txn_scan_done, s);
    } else {
        uint32_t n = o.workload == WL_LOAD ? 1 : o.txn_keys;
        for (uint32_t i = 0; i < n && rv == 0; i++) {
            if (i > 0)
                kl = format_key(kb, bench_keys_next(&c->keys));
            memcpy(c->value, kb, kl < o.value_size ? kl : o.value_size);
            rv = tinykv_txn_set(txn, TKV_SLICE(kb, kl), TKV_SLICE(c->value, o.value_size));
        }
        if (rv == 0)
            rv = tinykv_txn_commit(txn, txn_commit_done, s);
    }
    if (rv) {
        txn_read_end(s);
        lib_complete(s, rv, 0);
    }
}

/* Start slot s's operation through libtinykv. */
static int lib_issue(struct bench_core *c, struct slot *s)
{
    if (o.backend == BK_TINYKV_TXN)
        return tinykv_txn_begin(c->kv, txn_begun, s);
    char kb[KEY_MAX + 20];
    size_t kl = format_key(kb, s->key);
    struct tkv_slice k = TKV_SLICE(kb, kl);
    if (s->op == OP_PUT)
        return tinykv_raw_put(c->kv, NULL, k, TKV_SLICE(c->value, o.value_size), lib_done, s);
    if (s->op == OP_GET)
        return tinykv_raw_get(c->kv, NULL, k, lib_get, s);
    return tinykv_raw_scan(c->kv, NULL, k, o.scan_len, lib_scan, s);
}

static enum op choose_op(struct bench_core *c)
{
    if (o.workload == WL_SCAN)
        return OP_SCAN;
    if (o.workload == WL_LOAD || o.workload == WL_PUT)
        return OP_PUT;
    int pct = read_pct();
    return (int)(bench_rng_next(&c->rng) % 100) < pct ? OP_GET : OP_PUT;
}

/* Make sure the slot's connection can take a call: a connection that died
 * (or got GOAWAY) is replaced once its last call is over. */
static bool conn_ready(struct bench_core *c, struct conn *k)
{
    if (k->cl != NULL && tkv_rpc_client_usable(k->cl))
        return true;
    if (k->inflight > 0)
        return false;
    /* A connection that served calls is replaced at once (the peer sent
     * GOAWAY or reset it); one that never came up waits, so a dead server
     * is not hammered with connects. */
    uint64_t now = mono_ns();
    if (!k->worked && now < k->next_connect_ns)
        return false;
    k->next_connect_ns = now + o.reconnect_ns;
    k->worked = false;
    if (k->cl != NULL) {
        tkv_rpc_client_close(k->cl);
        /* This address failed: with several --addr, try the next one (an
         * etcd member that died; any member takes writes). */
        k->addr = (k->addr + 1) % o.n_addrs;
    }
    k->cl = NULL;
    const struct addr *ad = &o.addrs[k->addr];
    int rv = tkv_rpc_client_connect(c->r, ad->host, ad->port, NULL, &k->cl);
    if (rv != 0) {
        k->cl = NULL;
        return false;
    }
    return true;
}

/* Send the slot's next request (closed loop) or one due request (open loop,
 * start_ns already set). */
static void slot_issue(struct slot *s)
{
    struct bench_core *c = s->core;
    int ph = atomic_load_explicit(&g_phase, memory_order_relaxed);
    if (c->stopping || ph == PH_STOP) {
        slot_release(s);
        return;
    }
    if (o.workload == WL_LOAD) {
        if (!s->retry_key) {
            if (c->load_next >= c->load_end) {
                core_maybe_loaded(c);
                return;
            }
            s->key = c->load_next++;
        }
        s->op = OP_PUT;
    } else {
        s->op = (uint8_t)choose_op(c);
        s->key = bench_keys_next(&c->keys);
    }
    s->phase = (uint8_t)ph;
    if (o.rate > 0)
        s->conn = &c->conns[c->rr++ % c->n_conns];
    else
        s->start_ns = mono_ns();
    if (o.use_lib) {
        memcpy(c->value, &s->key, sizeof s->key < o.value_size ? sizeof s->key : o.value_size);
        int lrv = lib_issue(c, s);
        if (lrv != 0) {
            count_error(c, s, ERR_SUBMIT, tinykv_strerror(lrv));
            s->retry_key = o.workload == WL_LOAD;
            if (o.rate > 0)
                slot_release(s);
            else
                slot_backoff(s);
            return;
        }
        c->inflight++;
        return;
    }
    if (!conn_ready(c, s->conn)) {
        count_error(c, s, TKV_GRPC_UNAVAILABLE, "connection not usable");
        s->retry_key = o.workload == WL_LOAD;
        if (o.rate > 0)
            slot_release(s);
        else
            slot_backoff(s);
        return;
    }
    /* Vary the value a little so no layer can dedupe identical writes. */
    memcpy(c->value, &s->key, sizeof s->key < o.value_size ? sizeof s->key : o.value_size);
    size_t len = encode_request(c->req, c->req_cap, (enum op)s->op, s->key, c->value);
    int rv = len ? tkv_rpc_client_unary(s->conn->cl, op_path((enum op)s->op), c->req, len,
                                        o.timeout_ns, on_reply, s)
                 : TKV_EINVAL;
    if (rv != 0) {
        count_error(c, s, ERR_SUBMIT, "tkv_rpc_client_unary refused the call");
        s->retry_key = o.workload == WL_LOAD;
        if (o.rate > 0)
            slot_release(s);
        else
            slot_backoff(s);
        return;
    }
    s->conn->inflight++;
    c->inflight++;
}

/* Open loop: send every request whose intended time has come. A request
 * that finds no free slot waits, and its latency still counts from its
 * intended time (no coordinated omission). */
static void open_pump(struct bench_core *c)
{
    uint64_t now = mono_ns();
    double due_f = (double)(now - c->open_start_ns) * c->rate / 1e9;
    uint64_t due = (uint64_t)due_f;
    if (due > c->issued && due - c->issued > c->backlog_max)
        c->backlog_max = due - c->issued;
    while (c->issued < due && c->free_slots != NULL) {
        struct slot *s = c->free_slots;
        c->free_slots = s->next_free;
        s->start_ns = c->open_start_ns + (uint64_t)((double)c->issued * 1e9 / c->rate);
        c->issued++;
        slot_issue(s);
        if (c->stopping)
            return;
    }
}

static void on_tick(struct tkv_timer *t)
{
    struct bench_core *c = t->data;
    if (c->stopping)
        return;
    open_pump(c);
    tkv_timer_start(c->r, &c->tick, 200 * 1000ull);
}

static void core_on_stop(void *arg)
{
    struct bench_core *c = arg;
    c->stopping = true;
    tkv_timer_stop(c->r, &c->tick);
    for (uint32_t i = 0; i < c->n_slots; i++)
        tkv_timer_stop(c->r, &c->slots[i].backoff);
    for (uint32_t i = 0; i < c->n_conns; i++) {
        if (c->conns[i].cl != NULL) {
            struct tkv_rpc_client *cl = c->conns[i].cl;
            c->conns[i].cl = NULL;
            tkv_rpc_client_close(cl); /* in-flight calls complete with CANCELLED */
        }
    }
    if (c->kv != NULL) {
        struct tinykv *kv = c->kv;
        c->kv = NULL;
        tinykv_close(kv); /* in-flight operations complete with TKV_ESHUTDOWN */
    }
}

static void core_start(void *arg)
{
    struct bench_core *c = arg;
    if (o.rate > 0) {
        c->open_start_ns = mono_ns();
        on_tick(&c->tick);
        return;
    }
    for (uint32_t i = 0; i < c->n_slots; i++)
        slot_issue(&c->slots[i]);
    core_maybe_loaded(c);
}

static int core_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    struct bench_core *c = cores[core];
    c->r = r;
    if (o.use_lib) {
        char addr[160];
        snprintf(addr, sizeof addr, "%s:%u", o.host, o.port);
        struct tinykv_config cfg = {.pd_addrs = o.pd,
                                    .store_addr = addr,
                                    .op_timeout_ms = o.timeout_ns / 1000000};
        int rv = tinykv_new(r, &cfg, &c->kv);
        if (rv != 0) {
            fprintf(stderr, "tinykv-bench: libtinykv: %s\n", tinykv_strerror(rv));
            atomic_store(&g_init_failed, 1);
            return rv;
        }
    }
    for (uint32_t i = 0; i < c->n_conns && !o.use_lib; i++) {
        const struct addr *ad = &o.addrs[c->conns[i].addr];
        int rv = tkv_rpc_client_connect(r, ad->host, ad->port, NULL, &c->conns[i].cl);
        if (rv != 0) {
            fprintf(stderr, "tinykv-bench: connect %s:%u: %s\n", ad->host, ad->port,
                    tkv_strerror(rv));
            atomic_store(&g_init_failed, 1);
            return rv;
        }
    }
    tkv_timer_init(&c->tick, on_tick, c);
    for (uint32_t i = 0; i < c->n_slots; i++)
        tkv_timer_init(&c->slots[i].backoff, on_backoff, &c->slots[i]);
    tkv_reactor_on_stop(r, core_on_stop, c);
    tkv_reactor_defer(r, core_start, c);
    return 0;
}

static void core_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)arg;
    struct bench_core *c = cores[core];
    for (uint32_t i = 0; i < c->n_conns; i++)
        if (c->conns[i].cl != NULL) {
            tkv_rpc_client_close(c->conns[i].cl);
            c->conns[i].cl = NULL;
        }
    if (c->kv != NULL) {
        tinykv_close(c->kv);
        c->kv = NULL;
    }
}

/* ---- set-up ---- */

static struct bench_core *core_new(uint32_t id, const struct bench_keys *proto_keys)
{
    struct bench_core *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->id = id;
    /* Connections and in-flight depth split as evenly as possible. */
    c->n_conns = o.conns / o.threads + (id < o.conns % o.threads ? 1 : 0);
    c->n_slots = c->n_conns * o.depth;
    c->conns = calloc(c->n_conns, sizeof *c->conns);
    c->slots = calloc(c->n_slots, sizeof *c->slots);
    for (uint32_t i = 0; c->conns && i < c->n_conns; i++)
        c->conns[i].addr = i % o.n_addrs; /* every core starts on the first address */
    c->req_cap = (size_t)o.key_size * 2 + o.value_size + 64;
    c->req = malloc(c->req_cap);
    c->value = malloc(o.value_size ? o.value_size : 1);
    if (!c->conns || !c->slots || !c->req || !c->value)
        return NULL;
    c->keys = *proto_keys;
    bench_keys_reseed(&c->keys, o.seed * 7919 + id);
    bench_rng_seed(&c->rng, o.seed * 104729 + id);
    for (uint32_t i = 0; i < o.value_size; i++)
        c->value[i] = (uint8_t)('a' + bench_rng_next(&c->rng) % 26);
    bench_hist_init(&c->hist);
    for (uint32_t i = 0; i < c->n_slots; i++) {
        c->slots[i].core = c;
        c->slots[i].conn = &c->conns[i / o.depth];
        c->slots[i].next_free = c->free_slots;
        c->free_slots = &c->slots[i];
    }
    c->load_next = o.keys * id / o.threads;
    c->load_end = o.keys * (id + 1) / o.threads;
    c->rate = o.rate / o.threads;
    return c;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: tinykv-bench [options]\n"
            "  -b, --backend B        tinykv (raw API) | tinykv-txn (libtinykv transactions:\n"
            "                         put = begin, set --txn-keys keys, 2PC commit; get/scan =\n"
            "                         a snapshot read) | etcd   (default tinykv)\n"
            "  -w, --workload W       load | put | get | a (50%% get) | b (95%% get) | c (get)\n"
            "                         | scan   (default put); load writes keys 0..keys-1 once\n"
            "  -a, --addr HOST:PORT[,HOST:PORT...]  server (default 127.0.0.1:20160);\n"
            "                         several (up to %d): connection i starts on address\n"
            "                         i %% N and a failed connection moves to the next one\n"
            "      --pd HOST:PORT     route through the scheduler (libtinykv: region cache,\n"
            "                         leader following); instead of --addr\n"
            "      --txn-keys N       tinykv-txn: keys written per transaction (default 1)\n"
            "  -t, --threads N        client reactor cores (default 1)\n"
            "  -c, --conns N          connections in total (default 8)\n"
            "  -m, --depth M          requests in flight per connection (default 4)\n"
            "  -r, --rate R           open loop at R ops/s in total (default 0: closed loop)\n"
            "  -k, --keys N           key count (default 100000)\n"
            "      --key-size B       key bytes, >= 16: \"user\"+12 digits, padded (default 16)\n"
            "      --value-size B     value bytes (default 100)\n"
            "      --scan-len N       rows per scan (default 10)\n"
            "  -d, --dist D           uniform | zipfian (scrambled, theta 0.99) (default uniform)\n"
            "      --theta X          zipfian skew (default 0.99)\n"
            "      --warmup S         seconds before measuring (default 2)\n"
            "  -D, --duration S       seconds measured (default 10)\n"
            "      --serializable     etcd: serializable reads (default linearizable)\n"
            "      --linearizable     etcd: linearizable reads\n"
            "  -p, --server-pid PID   report this server process's CPU (repeatable, max %d)\n"
            "      --timeout-ms MS    per-request deadline (default 10000)\n"
            "      --reconnect-ms MS  wait before reconnecting a connection that never came\n"
            "                         up (default 200)\n"
            "      --gap-ms MS        record every pause of MS or more between two\n"
            "                         acknowledgements (CLOCK_MONOTONIC ns, in the JSON)\n"
            "      --stop-after-gap   with --gap-ms: SIGUSR1 arms; the run ends 1 s after\n"
            "                         the first recorded pause that ended after arming\n"
            "                         (failover: kill -9 the leader, then SIGUSR1, wait)\n"
            "      --seed N           random seed (default 1)\n"
            "      --label TEXT       copied into the JSON line\n"
            "      --emit-body FILE   write one gRPC-framed request of the workload's first\n"
            "                         op (key 0) to FILE for h2load -d, print its path, exit\n"
            "  -q, --quiet            no progress lines\n"
            "  -h, --help\n",
            MAX_ADDRS, MAX_PIDS);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max || *s == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double min, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min) || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int find_name(const char *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

/* --addr HOST:PORT[,HOST:PORT...] into o.addrs; the first is also o.host/o.port. */
static int parse_addrs(const char *arg)
{
    char buf[MAX_ADDRS * 160];
    if (strlen(arg) >= sizeof buf)
        return -1;
    strcpy(buf, arg);
    o.n_addrs = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o.n_addrs == MAX_ADDRS)
            return -1;
        struct addr *ad = &o.addrs[o.n_addrs];
        if (tkv_reactor_parse_hostport(t, ad->host, sizeof ad->host, &ad->port) != 0 ||
            ad->port == 0 || ad->host[0] == '\0')
            return -1;
        o.n_addrs++;
    }
    if (o.n_addrs == 0)
        return -1;
    memcpy(o.host, o.addrs[0].host, sizeof o.host);
    o.port = o.addrs[0].port;
    return 0;
}

static int bad(const char *opt, const char *val)
{
    fprintf(stderr, "tinykv-bench: bad value for %s: '%s' (see --help)\n", opt, val);
    return 2;
}

static int parse_opts(int argc, char **argv)
{
    enum {
        O_KEY_SIZE = 256,
        O_VALUE_SIZE,
        O_SCAN_LEN,
        O_THETA,
        O_WARMUP,
        O_SER,
        O_LIN,
        O_TIMEOUT,
        O_SEED,
        O_LABEL,
        O_EMIT,
        O_PD,
        O_TXN_KEYS,
        O_RECONNECT,
        O_GAP,
        O_STOP_GAP
    };
    static const struct option lo[] = {
        {"backend", 1, 0, 'b'},
        {"workload", 1, 0, 'w'},
        {"addr", 1, 0, 'a'},
        {"threads", 1, 0, 't'},
        {"conns", 1, 0, 'c'},
        {"depth", 1, 0, 'm'},
        {"rate", 1, 0, 'r'},
        {"keys", 1, 0, 'k'},
        {"key-size", 1, 0, O_KEY_SIZE},
        {"value-size", 1, 0, O_VALUE_SIZE},
        {"scan-len", 1, 0, O_SCAN_LEN},
        {"dist", 1, 0, 'd'},
        {"theta", 1, 0, O_THETA},
        {"warmup", 1, 0, O_WARMUP},
        {"duration", 1, 0, 'D'},
        {"serializable", 0, 0, O_SER},
        {"linearizable", 0, 0, O_LIN},
        {"server-pid", 1, 0, 'p'},
        {"timeout-ms", 1, 0, O_TIMEOUT},
        {"seed", 1, 0, O_SEED},
        {"label", 1, 0, O_LABEL},
        {"emit-body", 1, 0, O_EMIT},
        {"pd", 1, 0, O_PD},
        {"txn-keys", 1, 0, O_TXN_KEYS},
        {"reconnect-ms", 1, 0, O_RECONNECT},
        {"gap-ms", 1, 0, O_GAP},
        {"stop-after-gap", 0, 0, O_STOP_GAP},
        {"quiet", 0, 0, 'q'},
        {"help", 0, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch, idx;
    uint64_t v;
    while ((ch = getopt_long(argc, argv, "b:w:a:t:c:m:r:k:d:D:p:qh", lo, &idx)) != -1) {
        switch (ch) {
        case 'b': {
            int b = find_name(optarg, backend_names, 3);
            if (b < 0)
                return bad("--backend", optarg);
            o.backend = (enum backend)b;
            break;
        }
        case 'w': {
            int w = find_name(optarg, workload_names, 7);
            if (w < 0)
                return bad("--workload", optarg);
            o.workload = (enum workload)w;
            break;
        }
        case 'a':
            if (parse_addrs(optarg) != 0)
                return bad("--addr", optarg);
            break;
        case 't':
            if (parse_u64(optarg, 1, 64, &v))
                return bad("--threads", optarg);
            o.threads = (uint32_t)v;
            break;
        case 'c':
            if (parse_u64(optarg, 1, 10000, &v))
                return bad("--conns", optarg);
            o.conns = (uint32_t)v;
            break;
        case 'm':
            if (parse_u64(optarg, 1, 1000, &v))
                return bad("--depth", optarg);
            o.depth = (uint32_t)v;
            break;
        case 'r':
            if (parse_double(optarg, 0, &o.rate))
                return bad("--rate", optarg);
            break;
        case 'k':
            if (parse_u64(optarg, 1, 999999999999ull, &v))
                return bad("--keys", optarg);
            o.keys = v;
            break;
        case O_KEY_SIZE:
            if (parse_u64(optarg, 16, KEY_MAX, &v))
                return bad("--key-size", optarg);
            o.key_size = (uint32_t)v;
            break;
        case O_VALUE_SIZE:
            if (parse_u64(optarg, 8, 4u << 20, &v))
                return bad("--value-size", optarg);
            o.value_size = (uint32_t)v;
            break;
        case O_SCAN_LEN:
            if (parse_u64(optarg, 1, 100000, &v))
                return bad("--scan-len", optarg);
            o.scan_len = (uint32_t)v;
            break;
        case 'd':
            if (strcmp(optarg, "uniform") == 0)
                o.dist = BENCH_DIST_UNIFORM;
            else if (strcmp(optarg, "zipfian") == 0)
                o.dist = BENCH_DIST_ZIPFIAN;
            else
                return bad("--dist", optarg);
            break;
        case O_THETA:
            if (parse_double(optarg, 0.01, &o.theta) || o.theta >= 1 - 1e-9)
                return bad("--theta", optarg);
            break;
        case O_WARMUP:
            if (parse_double(optarg, 0, &o.warmup_s))
                return bad("--warmup", optarg);
            break;
        case 'D':
            if (parse_double(optarg, 0.1, &o.duration_s))
                return bad("--duration", optarg);
            break;
        case O_SER:
            o.linearizable = false;
            break;
        case O_LIN:
            o.linearizable = true;
            break;
        case 'p':
            if (o.n_pids == MAX_PIDS || parse_u64(optarg, 1, INT32_MAX, &v))
                return bad("--server-pid", optarg);
            o.pids[o.n_pids++] = (pid_t)v;
            break;
        case O_TIMEOUT:
            if (parse_u64(optarg, 1, 3600000, &v))
                return bad("--timeout-ms", optarg);
            o.timeout_ns = v * 1000000ull;
            break;
        case O_SEED:
            if (parse_u64(optarg, 0, UINT64_MAX, &v))
                return bad("--seed", optarg);
            o.seed = v;
            break;
        case O_LABEL:
            o.label = optarg;
            break;
        case O_EMIT:
            o.emit_body = optarg;
            break;
        case O_PD:
            o.pd = optarg;
            break;
        case O_RECONNECT:
            if (parse_u64(optarg, 1, 60000, &v))
                return bad("--reconnect-ms", optarg);
            o.reconnect_ns = v * 1000000ull;
            break;
        case O_GAP:
            if (parse_u64(optarg, 1, 3600000, &v))
                return bad("--gap-ms", optarg);
            o.gap_ns = v * 1000000ull;
            break;
        case O_STOP_GAP:
            o.stop_after_gap = true;
            break;
        case O_TXN_KEYS:
            if (parse_u64(optarg, 1, 1000, &v))
                return bad("--txn-keys", optarg);
            o.txn_keys = (uint32_t)v;
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tinykv-bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o.n_addrs == 0) { /* the default --addr */
        o.addrs[0] = (struct addr){.port = o.port};
        memcpy(o.addrs[0].host, o.host, sizeof o.host);
        o.n_addrs = 1;
    }
    if (o.stop_after_gap && !o.gap_ns) {
        fprintf(stderr, "tinykv-bench: --stop-after-gap needs --gap-ms\n");
        return 2;
    }
    if (o.threads > o.conns) {
        fprintf(stderr, "tinykv-bench: --threads %u needs at least as many --conns (%u)\n",
                o.threads, o.conns);
        return 2;
    }
    for (uint32_t i = 0; i < o.n_pids; i++)
        if (bench_pid_cpu_s(o.pids[i]) < 0) {
            fprintf(stderr, "tinykv-bench: cannot read /proc/%d/stat (--server-pid)\n",
                    (int)o.pids[i]);
            return 2;
        }
    return 0;
}

static int emit_body(void)
{
    enum op op = o.workload == WL_SCAN                                                ? OP_SCAN
                 : (o.workload == WL_GET || o.workload == WL_C || o.workload == WL_B) ? OP_GET
                                                                                      : OP_PUT;
    size_t cap = (size_t)o.key_size * 2 + o.value_size + 64;
    uint8_t *buf = malloc(cap + 5), *value = malloc(o.value_size);
    if (!buf || !value)
        return 1;
    memset(value, 'v', o.value_size);
    size_t len = encode_request(buf + 5, cap, op, 0, value);
    bench_grpc_prefix(buf, len);
    FILE *f = fopen(o.emit_body, "wb");
    if (f == NULL || fwrite(buf, 1, len + 5, f) != len + 5 || fclose(f) != 0) {
        fprintf(stderr, "tinykv-bench: cannot write %s: %s\n", o.emit_body, strerror(errno));
        return 1;
    }
    printf("%s\n", op_path(op));
    free(buf);
    free(value);
    return 0;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1) {
        /* clock_gettime is async-signal-safe; the atomic is lock-free */
        if (atomic_load(&g_armed_ns) == 0)
            atomic_store(&g_armed_ns, mono_ns());
        g_arm_signal = 1;
    } else
        g_interrupted = 1;
}

/* --stop-after-gap: did a pause that ended after arming end before t? */
static bool gap_closed_before(uint64_t t)
{
    for (uint32_t i = 0; i < o.threads; i++) {
        uint64_t end = atomic_load(&cores[i]->armed_gap_end_ns);
        if (end && end <= t)
            return true;
    }
    return false;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

struct cpu_snap {
    double self;
    double pid[MAX_PIDS];
};

static void cpu_snap(struct cpu_snap *s)
{
    s->self = bench_self_cpu_s();
    for (uint32_t i = 0; i < o.n_pids; i++)
        s->pid[i] = bench_pid_cpu_s(o.pids[i]);
}

static void print_json(double secs, const struct cpu_snap *a, const struct cpu_snap *b)
{
    struct bench_hist h;
    bench_hist_init(&h);
    uint64_t errs[N_ERR] = {0}, reads = 0, writes = 0, scans = 0, rows = 0, backlog = 0;
    for (uint32_t i = 0; i < o.threads; i++) {
        struct bench_core *c = cores[i];
        bench_hist_merge(&h, &c->hist);
        for (int k = 0; k < N_ERR; k++)
            errs[k] += c->errs[k];
        reads += c->ok_reads;
        writes += c->ok_writes;
        scans += c->ok_scans;
        rows += c->rows;
        if (c->backlog_max > backlog)
            backlog = c->backlog_max;
    }
    uint64_t ops = h.count, nerr = 0;
    for (int k = 0; k < N_ERR; k++)
        nerr += errs[k];
    double us = 1e-3;
    printf("{\"tool\":\"tinykv-bench\",\"backend\":\"%s\",\"workload\":\"%s\"",
           backend_names[o.backend], workload_names[o.workload]);
    if (o.label) {
        printf(",\"label\":\"");
        for (const char *p = o.label; *p; p++)
            if (*p == '"' || *p == '\\')
                printf("\\%c", *p);
            else if ((unsigned char)*p >= 0x20)
                putchar(*p);
        printf("\"");
    }
    printf(",\"addr\":\"%s:%u\",\"threads\":%u,\"conns\":%u,\"depth\":%u,\"mode\":\"%s\","
           "\"rate\":%.0f",
           o.host, o.port, o.threads, o.conns, o.depth, o.rate > 0 ? "open" : "closed", o.rate);
    if (o.pd)
        printf(",\"pd\":\"%s\"", o.pd);
    if (o.backend == BK_TINYKV_TXN)
        printf(",\"txn_keys\":%u", o.workload == WL_LOAD ? 1 : o.txn_keys);
    printf(",\"keys\":%" PRIu64 ",\"key_size\":%u,\"value_size\":%u,\"dist\":\"%s\"", o.keys,
           o.key_size, o.value_size, o.dist == BENCH_DIST_ZIPFIAN ? "zipfian" : "uniform");
    if (o.backend == BK_ETCD)
        printf(",\"reads\":\"%s\"", o.linearizable ? "linearizable" : "serializable");
    if (o.workload == WL_SCAN)
        printf(",\"scan_len\":%u,\"rows\":%" PRIu64, o.scan_len, rows);
    printf(",\"warmup_s\":%.1f,\"secs\":%.3f,\"ops\":%" PRIu64 ",\"ops_per_s\":%.1f", o.warmup_s,
           secs, ops, secs > 0 ? (double)ops / secs : 0.0);
    printf(",\"get_ops\":%" PRIu64 ",\"put_ops\":%" PRIu64 ",\"scan_ops\":%" PRIu64, reads, writes,
           scans);
    printf(",\"lat_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
           "\"max\":%.1f}",
           ops ? (double)h.sum / (double)ops * us : 0.0, (double)bench_hist_quantile(&h, 0.50) * us,
           (double)bench_hist_quantile(&h, 0.90) * us, (double)bench_hist_quantile(&h, 0.99) * us,
           (double)bench_hist_quantile(&h, 0.999) * us, (double)h.max * us);
    printf(",\"errors\":{\"total\":%" PRIu64, nerr);
    for (int k = 0; k < N_ERR; k++)
        if (errs[k])
            printf(",\"%s\":%" PRIu64, err_name(k), errs[k]);
    printf("}");
    if (o.rate > 0)
        printf(",\"open_backlog_max\":%" PRIu64, backlog);
    if (o.gap_ns) {
        /* CLOCK_MONOTONIC ns, comparable with any other process's clock */
        printf(",\"gap_ms\":%.0f,\"armed_ns\":%" PRIu64 ",\"gaps\":[", (double)o.gap_ns / 1e6,
               atomic_load(&g_armed_ns));
        bool first = true;
        for (uint32_t i = 0; i < o.threads; i++)
            for (uint32_t j = 0; j < cores[i]->n_gaps; j++) {
                printf("%s{\"from_ns\":%" PRIu64 ",\"to_ns\":%" PRIu64 ",\"ms\":%.1f}",
                       first ? "" : ",", cores[i]->gaps[j][0], cores[i]->gaps[j][1],
                       (double)(cores[i]->gaps[j][1] - cores[i]->gaps[j][0]) / 1e6);
                first = false;
            }
        printf("]");
    }
    double client = b->self - a->self, server = 0;
    printf(",\"client_cpu_s\":%.3f,\"servers\":[", client);
    for (uint32_t i = 0; i < o.n_pids; i++) {
        double d = (a->pid[i] >= 0 && b->pid[i] >= 0) ? b->pid[i] - a->pid[i] : -1;
        if (d > 0)
            server += d;
        printf("%s{\"pid\":%d,\"cpu_s\":%.3f}", i ? "," : "", (int)o.pids[i], d);
    }
    printf("],\"server_cpu_s\":%.3f", server);
    printf(",\"cpu_us_per_op\":{\"client\":%.2f,\"server\":%.2f}}\n",
           ops ? client / (double)ops * 1e6 : 0.0, ops ? server / (double)ops * 1e6 : 0.0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int rv = parse_opts(argc, argv);
    if (rv != 0)
        return rv;
    /* The rpc layer logs every failed connect at INFO; our own first-error
     * line per kind says the same once. */
    tkv_log_set_level(TKV_LOG_LEVEL_WARN);
    if (o.backend == BK_ETCD && o.pd) {
        fprintf(stderr, "tinykv-bench: --pd is for the tinykv backends\n");
        return 2;
    }
    o.use_lib = o.backend == BK_TINYKV_TXN || o.pd != NULL;
    if (o.backend == BK_TINYKV_TXN && o.emit_body) {
        fprintf(stderr, "tinykv-bench: --emit-body has no single request for tinykv-txn\n");
        return 2;
    }
    if (o.emit_body)
        return emit_body();

    struct bench_keys proto_keys;
    bench_keys_init(&proto_keys, o.dist, o.keys, o.theta, o.seed);
    cores = calloc(o.threads, sizeof *cores);
    if (cores == NULL)
        return 1;
    for (uint32_t i = 0; i < o.threads; i++)
        if ((cores[i] = core_new(i, &proto_keys)) == NULL) {
            fprintf(stderr, "tinykv-bench: out of memory\n");
            return 1;
        }

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    bool load = o.workload == WL_LOAD;
    atomic_store(&g_phase, (load || o.warmup_s == 0) ? PH_MEASURE : PH_WARMUP);
    struct cpu_snap c0, c1;
    uint64_t t0 = mono_ns(), tm = t0, te = 0;
    bool measuring = atomic_load(&g_phase) == PH_MEASURE;
    if (measuring)
        cpu_snap(&c0);

    struct tkv_reactor_config rcfg = {.n_cores = o.threads, .pin = false};
    struct tkv_reactor_group *g;
    rv = tkv_reactor_group_start(&rcfg, core_init, core_fini, NULL, &g);
    if (rv != 0) {
        fprintf(stderr, "tinykv-bench: reactor start failed: %s\n", tkv_strerror(rv));
        return 1;
    }

    uint64_t last_ok = 0, last_err = 0, next_print = t0 + NS;
    for (;;) {
        sleep_ms(20);
        uint64_t now = mono_ns();
        if (g_interrupted || atomic_load(&g_init_failed))
            break;
        if (o.stop_after_gap && gap_closed_before(now - NS))
            break;
        if (!measuring && (double)(now - t0) >= o.warmup_s * 1e9) {
            cpu_snap(&c0);
            tm = now;
            measuring = true;
            atomic_store(&g_phase, PH_MEASURE);
        }
        if (load && atomic_load(&g_cores_loaded) == o.threads)
            break;
        if (!load && measuring && (double)(now - tm) >= o.duration_s * 1e9)
            break;
        if (now >= next_print) {
            uint64_t ok = 0, er = 0;
            for (uint32_t i = 0; i < o.threads; i++) {
                ok += atomic_load_explicit(&cores[i]->progress_ok, memory_order_relaxed);
                er += atomic_load_explicit(&cores[i]->progress_err, memory_order_relaxed);
            }
            if (!o.quiet)
                fprintf(stderr,
                        "tinykv-bench: [%4.0fs] %-7s %s %-4s %9" PRIu64 " ops/s  %" PRIu64
                        " errors\n",
                        (double)(now - t0) / 1e9, measuring ? "measure" : "warmup",
                        backend_names[o.backend], workload_names[o.workload], ok - last_ok,
                        er - last_err);
            last_ok = ok;
            last_err = er;
            next_print += NS;
        }
    }
    te = mono_ns();
    atomic_store(&g_phase, PH_STOP);
    if (!measuring) {
        cpu_snap(&c0);
        tm = te;
    }
    cpu_snap(&c1);
    tkv_reactor_group_stop(g);
    rv = tkv_reactor_group_wait(g);
    if (rv != 0 || atomic_load(&g_init_failed)) {
        fprintf(stderr, "tinykv-bench: client cores failed: %s\n", tkv_strerror(rv));
        return 1;
    }
    print_json((double)(te - tm) / 1e9, &c0, &c1);
    uint64_t ops = 0;
    for (uint32_t i = 0; i < o.threads; i++)
        ops += cores[i]->hist.count;
    if (load && !g_interrupted) {
        uint64_t loaded = 0;
        for (uint32_t i = 0; i < o.threads; i++)
            loaded += cores[i]->ok_writes;
        if (loaded != o.keys) {
            fprintf(stderr, "tinykv-bench: load wrote %" PRIu64 " of %" PRIu64 " keys\n", loaded,
                    o.keys);
            return 1;
        }
    }
    return ops > 0 ? 0 : 1;
}
