/* tinyscheduler-server's status port, metrics, PD HTTP API and watchdog
 * (sched_http.h). The JSON documents are built on the scheduler core and
 * read on the HTTP thread; see the top of sched_http.h for the hand-off. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <unistd.h>

#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
#include <fiu-control.h>
#include <fiu.h>
#endif


#include "sched_http.h"
#include "sched_server.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/metrics.h"
#include "tkv/status.h"

#define TICK_NS (50ull * 1000000ull)        /* snapshot and metrics tick on the core */
#define ANSWER_TIMEOUT_NS (2000000000ull)   /* a request waits this long for the core */
#define STALL_LIMIT_MIN_NS (2000000000ull)  /* /readyz: the core turns at least once a second */
#define FRESH ((uintptr_t)1)                /* middle slot holds a snapshot the reader has not taken */
#define N_KINDS 3
/* The documents a request needs: the core builds only those (the regions
 * list is O(regions); the dashboard's refresh needs only the stores). */
#define DOC_STORES 1u
#define DOC_REGIONS 2u
#define DOC_OPERATORS 4u

/* What the core built for one request generation. Owned by exactly one
 * side at a time (see struct sched_http). */
struct sched_snapshot {
    uint64_t gen;
    json_t *stores;    /* {"count": n, "stores": [{"store": {...}, "status": {...}}]} */
    json_t *regions;   /* {"count": n, "regions": [...]} */
    json_t *operators; /* [...] running operators */
};

/* One request the HTTP thread hands to the core (an operator to add, a
 * region to look up by key) and the core's answer. The slot belongs to
 * whoever `state` names: REQ_FREE and REQ_ANSWERED the HTTP side (under
 * reader_mu), REQ_POSTED the core, which polls it on its 50 ms tick. One
 * slot: HTTP requests are served one at a time anyway (reader_mu), so the
 * hand-off is bounded and never queues. A request the core did not take in
 * time stays REQ_POSTED; the next request waits for the core's answer to
 * it (and drops it) before posting its own. */
enum { REQ_FREE, REQ_POSTED, REQ_ANSWERED };
enum core_req_kind { REQ_ADD_OPERATOR, REQ_REGION_BY_KEY };

struct core_request {
    _Atomic int state;
    enum core_req_kind kind;
    enum tkv_sched_admin_kind op_kind;
    uint64_t region_id, store_id;
    uint8_t *key; /* REQ_REGION_BY_KEY, tkv_malloc'ed by the HTTP side */
    size_t key_len;
    /* answer (core) */
    unsigned code;
    json_t *answer;
};

struct sched_http {
    struct sched_server *srv;
    struct tkv_status_server *status;

    /* Triple buffer: the core owns `back`, the reader owns `front`, and
     * `middle` (a pointer, low bit FRESH) is exchanged atomically by both. */
    struct sched_snapshot slots[3];
    struct sched_snapshot *back, *front;
    _Atomic uintptr_t middle;
    _Atomic uint64_t wanted; /* highest generation a reader asked for */
    _Atomic unsigned wanted_docs; /* DOC_* bits readers need (set before wanted) */
    uint64_t built;          /* core: generation of the last snapshot built */
    pthread_mutex_t reader_mu; /* HTTP side only (route handlers); the core never takes it */
    struct core_request req;   /* HTTP -> core requests (see struct core_request) */

    /* Published by the core every tick for /status and /readyz. */
    _Atomic uint64_t cluster_id, n_stores, n_regions;
    _Atomic bool bootstrapped, serving, stopping;

    /* Main thread and HTTP thread: the group for the stall check. */
    pthread_mutex_t group_mu;
    struct tkv_reactor_group *group;
    uint64_t stall_limit_ns;

    struct tkv_timer tick;
    bool ticking;
    int64_t wall_minus_mono_ns; /* core: wall clock - monotonic clock, taken at start */

    /* Metrics (written by the core only). */
    struct tkv_sched_stats last; /* what has been added to the counters */
    struct tkv_counter *tso_requests, *tso_timestamps, *ids, *store_hbs, *region_hbs, *stale_hbs,
        *region_updates, *ops_cancelled;
    struct tkv_counter *ops[N_KINDS][3]; /* [kind][created, finished, timeout] */
    struct tkv_gauge *stores_by_state[4]; /* up, down, offline, tombstone */
    struct tkv_gauge *regions, *running[N_KINDS], *bootstrapped_g;
    struct tkv_histogram *patrol;
};

static const char *const kind_names[N_KINDS] = {"leader", "region", "replica"};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}


/* ---- metrics (core) ---- */

static void metrics_register(struct sched_http *h)
{
    struct tkv_metrics *reg = tkv_metrics_default();
    tkv_metrics_register_process(reg);
    h->tso_requests = tkv_metrics_counter(reg, "tinyscheduler_tso_requests_total",
                                          "Tso requests answered (one per stream message)", NULL);
    h->tso_timestamps = tkv_metrics_counter(reg, "tinyscheduler_tso_timestamps_total",
                                            "Timestamps handed out (sum of Tso counts)", NULL);
    h->ids = tkv_metrics_counter(reg, "tinyscheduler_alloc_ids_total",
                                 "Ids handed out (AllocID, AskSplit, replica checker)", NULL);
    h->store_hbs = tkv_metrics_counter(reg, "tinyscheduler_heartbeats_received_total",
                                       "Heartbeats received (region: each one that reached the region tree checks)",
                                       (const char *[]){"type", "store", NULL});
    h->region_hbs = tkv_metrics_counter(reg, "tinyscheduler_heartbeats_received_total",
                                        "Heartbeats received (region: each one that reached the region tree checks)",
                                        (const char *[]){"type", "region", NULL});
    h->stale_hbs = tkv_metrics_counter(reg, "tinyscheduler_region_heartbeats_stale_total",
                                       "Region heartbeats rejected as stale (older epoch)", NULL);
    h->region_updates = tkv_metrics_counter(
        reg, "tinyscheduler_region_updates_total",
        "Region heartbeats that changed the region tree (epoch, leader, peers, size, range)", NULL);
    h->ops_cancelled = tkv_metrics_counter(reg, "tinyscheduler_operators_cancelled_total",
                                           "Operators cancelled (region changed under them)", NULL);
    static const char *const events[3] = {"created", "finished", "timeout"};
    for (int k = 0; k < N_KINDS; k++) {
        for (int e = 0; e < 3; e++)
            h->ops[k][e] = tkv_metrics_counter(
                reg, "tinyscheduler_operators_total",
                "Operators by kind (leader, region, replica) and event (created, finished, timeout)",
                (const char *[]){"kind", kind_names[k], "event", events[e], NULL});
        h->running[k] = tkv_metrics_gauge(reg, "tinyscheduler_operators_running",
                                          "Operators running now, by kind",
                                          (const char *[]){"kind", kind_names[k], NULL});
    }
    static const char *const states[4] = {"up", "down", "offline", "tombstone"};
    for (int s = 0; s < 4; s++)
        h->stores_by_state[s] = tkv_metrics_gauge(
            reg, "tinyscheduler_stores",
            "Stores by state (down: Up but silent for max-store-down-time)",
            (const char *[]){"state", states[s], NULL});
    h->regions = tkv_metrics_gauge(reg, "tinyscheduler_regions", "Regions in the region tree", NULL);
    h->bootstrapped_g = tkv_metrics_gauge(reg, "tinyscheduler_cluster_bootstrapped",
                                          "1 once the cluster is bootstrapped", NULL);
    double bounds[16];
    tkv_metrics_exp_buckets(0.00005, 2, 16, bounds); /* 50 us .. 1.6 s */
    h->patrol = tkv_metrics_histogram(reg, "tinyscheduler_patrol_duration_seconds",
                                      "One scheduling pass (replica checker, balance-region, "
                                      "balance-leader) on the scheduler core",
                                      NULL, bounds, 16);
}

static void add_delta(struct tkv_counter *c, uint64_t now, uint64_t *last)
{
    if (now > *last)
        tkv_counter_add(c, now - *last);
    *last = now;
}

static void metrics_publish(struct sched_http *h)
{
    struct tkv_sched_cluster *c = sched_raft_view(h->srv); /* empty on a follower */
    struct tkv_sched_stats st;
    tkv_sched_get_stats(c, &st);
    add_delta(h->tso_requests, st.tso_requests, &h->last.tso_requests);
    add_delta(h->tso_timestamps, st.tso_timestamps, &h->last.tso_timestamps);
    add_delta(h->ids, st.ids_allocated, &h->last.ids_allocated);
    add_delta(h->store_hbs, st.store_heartbeats, &h->last.store_heartbeats);
    add_delta(h->region_hbs, st.heartbeats, &h->last.heartbeats);
    add_delta(h->stale_hbs, st.stale_heartbeats, &h->last.stale_heartbeats);
    add_delta(h->region_updates, st.region_updates, &h->last.region_updates);
    add_delta(h->ops_cancelled, st.ops_cancelled, &h->last.ops_cancelled);
    for (int k = 0; k < N_KINDS; k++) {
        add_delta(h->ops[k][0], st.ops_created_by_kind[k], &h->last.ops_created_by_kind[k]);
        add_delta(h->ops[k][1], st.ops_finished_by_kind[k], &h->last.ops_finished_by_kind[k]);
        add_delta(h->ops[k][2], st.ops_timed_out_by_kind[k], &h->last.ops_timed_out_by_kind[k]);
        tkv_gauge_set(h->running[k], (double)tkv_sched_running_operators(c, 1u << k));
    }
    uint64_t now = tkv_now_ns(h->srv->reactor);
    double by_state[4] = {0, 0, 0, 0};
    size_t n = tkv_sched_n_stores(c);
    for (size_t i = 0; i < n; i++) {
        const struct tkv_sched_store *s = tkv_sched_store_at(c, i);
        if (s->state == metapb_StoreState_Tombstone)
            by_state[3] += 1;
        else if (s->state == metapb_StoreState_Offline)
            by_state[2] += 1;
        else if (tkv_sched_store_available(c, s, now))
            by_state[0] += 1;
        else
            by_state[1] += 1;
    }
    for (int s = 0; s < 4; s++)
        tkv_gauge_set(h->stores_by_state[s], by_state[s]);
    tkv_gauge_set(h->regions, (double)tkv_sched_n_regions(c));
    tkv_gauge_set(h->bootstrapped_g, tkv_sched_is_bootstrapped(c) ? 1 : 0);
    atomic_store(&h->cluster_id, sched_raft_cluster_id(h->srv));
    atomic_store(&h->n_stores, n);
    atomic_store(&h->n_regions, tkv_sched_n_regions(c));
    atomic_store(&h->bootstrapped, tkv_sched_is_bootstrapped(c));
}

void sched_http_patrol_done(struct sched_server *srv, uint64_t ns)
{
    if (srv->http)
        tkv_histogram_observe(srv->http->patrol, (double)ns / 1e9);
}

/* ---- JSON documents (core) ---- */

/* PD's byte sizes: "96.73GiB" (binary units, 4 significant digits). */
static json_t *size_text(uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    size_t u = 0;
    char buf[32];
    while (v >= 1024.0 && u + 1 < TKV_ARRAY_LEN(units)) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, sizeof(buf), "%.4g%s", v, units[u]);
    return json_string(buf);
}

static json_t *hex_key(struct tkv_slice k)
{
    static const char digits[] = "0123456789ABCDEF";
    char *buf = tkv_xmalloc(k.len * 2 + 1);
    for (size_t i = 0; i < k.len; i++) {
        buf[2 * i] = digits[k.ptr[i] >> 4];
        buf[2 * i + 1] = digits[k.ptr[i] & 15];
    }
    buf[k.len * 2] = '\0';
    json_t *s = json_string(buf);
    tkv_free(buf);
    return s;
}

/* A JSON string of untrusted text (store addresses and labels come from
 * PutStore and are not checked for UTF-8): bytes that are not valid UTF-8
 * become '?' (jansson refuses them, which would silently drop the label). */
static json_t *text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    size_t n = strlen(s);
    char *copy = tkv_xmalloc(n + 1);
    for (size_t i = 0; i <= n; i++)
        copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    j = json_string(copy);
    tkv_free(copy);
    return j;
}

static json_t *peer_json(const struct tkv_sched_peer *p)
{
    return json_pack("{sIsI}", "id", (json_int_t)p->id, "store_id", (json_int_t)p->store_id);
}

static const char *store_state_name(const struct tkv_sched_cluster *c,
                                    const struct tkv_sched_store *s, uint64_t now_ns)
{
    switch (s->state) {
    case metapb_StoreState_Offline:
        return "Offline";
    case metapb_StoreState_Tombstone:
        return "Tombstone";
    default:
        return tkv_sched_store_available(c, s, now_ns) ? "Up" : "Down";
    }
}

static json_t *build_stores(struct tkv_sched_cluster *c, uint64_t now_ns, int64_t wall_minus_mono)
{
    json_t *arr = json_array();
    size_t n = tkv_sched_n_stores(c);
    for (size_t i = 0; i < n; i++) {
        const struct tkv_sched_store *s = tkv_sched_store_at(c, i);
        json_t *labels = json_array();
        for (uint32_t l = 0; l < s->n_labels; l++)
            json_array_append_new(labels, json_pack("{soso}", "key", text(s->labels[l].key),
                                                    "value", text(s->labels[l].value)));
        /* Monotonic heartbeat time -> wall clock (the offset of start-up,
         * so the same heartbeat always reads the same), as PD reports it. */
        int64_t hb = (int64_t)s->last_heartbeat_ns + wall_minus_mono;
        uint64_t hb_wall_ns = hb > 0 ? (uint64_t)hb : 0;
        time_t hb_s = (time_t)(hb_wall_ns / 1000000000ull);
        struct tm tm;
        char ts[40];
        gmtime_r(&hb_s, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_t *store = json_pack("{sIsososIsssI}", "id", (json_int_t)s->id, "address",
                                  text(s->address), "labels", labels, "state", (json_int_t)s->state,
                                  "state_name", store_state_name(c, s, now_ns), "last_heartbeat",
                                  (json_int_t)hb_wall_ns);
        /* Counts from the region tree; sizes in MiB as PD's *_size; scores
         * are the counts/sizes themselves (weight 1, no space pressure). */
        json_t *status = json_object();
        json_object_set_new(status, "capacity", size_text(s->capacity));
        json_object_set_new(status, "available", size_text(s->available));
        json_object_set_new(status, "used_size", size_text(s->used_size));
        json_object_set_new(status, "leader_count", json_integer((json_int_t)s->leader_count));
        json_object_set_new(status, "leader_weight", json_integer(1));
        json_object_set_new(status, "leader_score", json_integer((json_int_t)s->leader_count));
        json_object_set_new(status, "leader_size", json_integer((json_int_t)s->leader_size));
        json_object_set_new(status, "region_count", json_integer((json_int_t)s->region_count));
        json_object_set_new(status, "region_weight", json_integer(1));
        json_object_set_new(status, "region_score", json_integer((json_int_t)s->region_size));
        json_object_set_new(status, "region_size", json_integer((json_int_t)s->region_size));
        json_object_set_new(status, "pending_peer_count",
                            json_integer((json_int_t)s->pending_peer_count));
        json_object_set_new(status, "is_busy", json_boolean(s->is_busy));
        json_object_set_new(status, "last_heartbeat_ts", json_string(ts));
        json_array_append_new(arr, json_pack("{soso}", "store", store, "status", status));
    }
    return json_pack("{sIso}", "count", (json_int_t)n, "stores", arr);
}

static json_t *region_json(const struct tkv_sched_region *r)
{
    json_t *peers = json_array(), *pending = json_array();
    for (uint32_t i = 0; i < r->n_peers; i++)
        json_array_append_new(peers, peer_json(&r->peers[i]));
    for (uint32_t i = 0; i < r->n_pending; i++)
        json_array_append_new(pending, peer_json(&r->pending[i]));
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)r->id));
    json_object_set_new(o, "start_key", hex_key(r->start_key));
    json_object_set_new(o, "end_key", hex_key(r->end_key));
    json_object_set_new(o, "epoch", json_pack("{sIsI}", "conf_ver", (json_int_t)r->conf_ver,
                                              "version", (json_int_t)r->version));
    json_object_set_new(o, "peers", peers);
    if (r->leader.id)
        json_object_set_new(o, "leader", peer_json(&r->leader));
    json_object_set_new(o, "down_peers", json_array());
    json_object_set_new(o, "pending_peers", pending);
    json_object_set_new(o, "approximate_size", json_integer((json_int_t)r->approximate_size));
    return o;
}

static json_t *build_regions(struct tkv_sched_cluster *c)
{
    json_t *arr = json_array();
    size_t n = tkv_sched_n_regions(c);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, region_json(tkv_sched_region_at(c, i)));
    return json_pack("{sIso}", "count", (json_int_t)n, "regions", arr);
}

static json_t *operator_json(const struct tkv_sched_operator *op, uint64_t now_ns)
{
    static const char *const step_names[] = {"add_peer", "remove_peer", "transfer_leader"};
    json_t *steps = json_array();
    for (uint32_t s = 0; s < op->n_steps && s < TKV_SCHED_MAX_STEPS; s++) {
        const struct tkv_sched_step *st = &op->steps[s];
        json_t *j = json_pack("{sssI}", "type", step_names[st->kind % 3], "store_id",
                              (json_int_t)st->store_id);
        if (st->kind == TKV_SCHED_STEP_ADD_PEER)
            json_object_set_new(j, "peer_id", json_integer((json_int_t)st->peer_id));
        json_array_append_new(steps, j);
    }
    unsigned k = op->kind == TKV_SCHED_OP_LEADER ? 0 : op->kind == TKV_SCHED_OP_REGION ? 1 : 2;
    double age = now_ns > op->created_ns ? (double)(now_ns - op->created_ns) / 1e9 : 0;
    return json_pack("{sIsssssssosIsf}", "region_id", (json_int_t)op->region_id, "desc", op->desc,
                     "kind", kind_names[k], "status", "RUNNING", "steps", steps, "current_step",
                     (json_int_t)op->current, "age_seconds", age);
}

static json_t *build_operators(struct tkv_sched_cluster *c, uint64_t now_ns)
{
    json_t *arr = json_array();
    size_t n = tkv_sched_n_regions(c);
    for (size_t i = 0; i < n; i++) {
        const struct tkv_sched_operator *op =
            tkv_sched_get_operator(c, tkv_sched_region_at(c, i)->id);
        if (op && op->status == schedulerpb_OperatorStatus_RUNNING)
            json_array_append_new(arr, operator_json(op, now_ns));
    }
    return arr;
}

/* Core: answer the HTTP side's request (struct core_request). */
static void serve_core_request(struct sched_http *h)
{
    struct core_request *q = &h->req;
    struct sched_server *srv = h->srv;
    uint64_t now = tkv_now_ns(srv->reactor);
    char why[256] = "";

    if (q->kind == REQ_REGION_BY_KEY) {
        const struct tkv_sched_region *r =
            tkv_sched_region_by_key(sched_raft_view(srv), TKV_SLICE(q->key, q->key_len));
        q->code = r ? 200 : 404;
        q->answer = r ? region_json(r) : json_string("no region holds this key");
        return;
    }
    /* Operators live only on the serving member (a follower's are gone at
     * the next leader change anyway). */
    if (!srv->cluster || !sched_raft_serving(srv)) {
        q->code = 503;
        q->answer = json_string("this scheduler member does not lead: send the request to the leader");
        return;
    }
    struct tkv_sched_operator op;
    int rv = tkv_sched_admin_operator(srv->cluster, q->op_kind, q->region_id, q->store_id, now,
                                      &op, why, sizeof(why));
    if (rv == 0)
        rv = tkv_sched_add_admin_operator(srv->cluster, &op, now);
    if (rv) {
        if (rv == TKV_EBUSY && !why[0])
            snprintf(why, sizeof(why), "region already has a running operator");
        q->code = rv == TKV_EINVAL || rv == TKV_ENOTFOUND || rv == TKV_EBUSY ? 400 : 500;
        q->answer = json_string(why);
        TKV_LOG_INFO("operator refused", TKV_LF_U64("region_id", q->region_id),
                     TKV_LF_U64("store_id", q->store_id), TKV_LF_STR("why", why));
        return;
    }
    TKV_LOG_INFO("operator added by request", TKV_LF_U64("region_id", op.region_id),
                 TKV_LF_STR("desc", op.desc), TKV_LF_U64("store_id", q->store_id));
    q->code = 200;
    q->answer = operator_json(tkv_sched_get_operator(srv->cluster, op.region_id), now);
}

static void snapshot_clear(struct sched_snapshot *s)
{
    json_decref(s->stores);
    json_decref(s->regions);
    json_decref(s->operators);
    s->stores = s->regions = s->operators = NULL;
}

static void on_tick(struct tkv_timer *t)
{
    struct sched_http *h = t->data;
    struct sched_server *srv = h->srv;
#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
    /* Test builds: the core stuck in a blocking call for failinfo ms
     * (default 3 s) every tick, for the watchdog and /readyz test
     * (tests/integration/sched/test_sched_http.py). */
    fiu_do_on("sched/stall_core",
              usleep((useconds_t)((uintptr_t)fiu_failinfo() ? (uintptr_t)fiu_failinfo() : 3000) *
                     1000));
#endif
    metrics_publish(h);
    if (atomic_load_explicit(&h->req.state, memory_order_acquire) == REQ_POSTED) {
        serve_core_request(h);
        atomic_store_explicit(&h->req.state, REQ_ANSWERED, memory_order_release);
    }
    uint64_t want = atomic_load_explicit(&h->wanted, memory_order_acquire);
    if (want > h->built) {
        struct sched_snapshot *b = h->back;
        uint64_t now = tkv_now_ns(srv->reactor);
        /* A bit set after this exchange belongs to a later generation; a
         * reader whose bit went into an older snapshot asks again. */
        unsigned docs = atomic_exchange_explicit(&h->wanted_docs, 0, memory_order_acq_rel);
        snapshot_clear(b);
        b->gen = want;
        struct tkv_sched_cluster *c = sched_raft_view(srv); /* empty on a follower */
        if (docs & DOC_STORES)
            b->stores = build_stores(c, now, h->wall_minus_mono_ns);
        if (docs & DOC_REGIONS)
            b->regions = build_regions(c);
        if (docs & DOC_OPERATORS)
            b->operators = build_operators(c, now);
        uintptr_t old = atomic_exchange_explicit(&h->middle, (uintptr_t)b | FRESH,
                                                 memory_order_acq_rel);
        h->back = (struct sched_snapshot *)(old & ~FRESH);
        h->built = want;
    }
    tkv_timer_start(srv->reactor, t, TICK_NS);
}

void sched_http_core_start(struct sched_server *srv)
{
    struct sched_http *h = srv->http;
    if (!h)
        return;
    metrics_publish(h);
    h->wall_minus_mono_ns = (int64_t)(sched_wall_ms() * 1000000ull) - (int64_t)tkv_now_ns(srv->reactor);
    tkv_timer_init(&h->tick, on_tick, h);
    tkv_timer_start(srv->reactor, &h->tick, TICK_NS);
    h->ticking = true;
    atomic_store(&h->serving, true);
}

void sched_http_core_stop(struct sched_server *srv)
{
    struct sched_http *h = srv->http;
    if (!h)
        return;
    atomic_store(&h->serving, false);
    atomic_store(&h->stopping, true);
    if (h->ticking && srv->reactor)
        tkv_timer_stop(srv->reactor, &h->tick);
    h->ticking = false;
}

/* ---- the HTTP side ---- */

static bool has_docs(const struct sched_snapshot *s, unsigned docs)
{
    return (!(docs & DOC_STORES) || s->stores) && (!(docs & DOC_REGIONS) || s->regions) &&
           (!(docs & DOC_OPERATORS) || s->operators);
}

/* A snapshot with the documents `docs`, built after this call began, owned
 * by the reader until the next call; NULL when the core did not answer in
 * time. reader_mu held. */
static struct sched_snapshot *fresh_snapshot(struct sched_http *h, unsigned docs)
{
    uint64_t deadline = mono_ns() + ANSWER_TIMEOUT_NS;
    atomic_fetch_or_explicit(&h->wanted_docs, docs, memory_order_acq_rel);
    uint64_t want = atomic_fetch_add_explicit(&h->wanted, 1, memory_order_acq_rel) + 1;
    for (;;) {
        if (atomic_load_explicit(&h->middle, memory_order_acquire) & FRESH) {
            uintptr_t old = atomic_exchange_explicit(&h->middle, (uintptr_t)h->front,
                                                     memory_order_acq_rel);
            h->front = (struct sched_snapshot *)(old & ~FRESH);
        }
        if (h->front->gen >= want) {
            if (has_docs(h->front, docs))
                return h->front;
            /* Our bits were taken by a build for an earlier generation. */
            atomic_fetch_or_explicit(&h->wanted_docs, docs, memory_order_acq_rel);
            want = atomic_fetch_add_explicit(&h->wanted, 1, memory_order_acq_rel) + 1;
        }
        if (mono_ns() > deadline)
            return NULL;
        struct timespec ts = {0, 2000000}; /* the HTTP thread may sleep; the core ticks every 50 ms */
        nanosleep(&ts, NULL);
    }
}

static int reply_json(struct tkv_status_reply *reply, unsigned code, const json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
    if (!text)
        return TKV_ENOMEM;
    size_t n = strlen(text);
    reply->body = tkv_malloc(n + 2);
    if (!reply->body) {
        free(text);
        return TKV_ENOMEM;
    }
    memcpy(reply->body, text, n);
    reply->body[n] = '\n';
    reply->body[n + 1] = '\0';
    free(text);
    reply->len = n + 1;
    reply->code = code;
    reply->content_type = "application/json";
    return 0;
}

/* PD answers errors as a JSON string. */
static int reply_error(struct tkv_status_reply *reply, unsigned code, const char *msg)
{
    json_t *s = json_string(msg);
    int rv = reply_json(reply, code, s);
    json_decref(s);
    return rv;
}

/* Strict decimal id, 1..UINT64_MAX, nothing after it. */
static bool parse_id(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s || strlen(s) > 20)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return v != 0;
}

static json_t *find_by_id(json_t *arr, const char *inner, uint64_t id)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        json_t *o = inner ? json_object_get(e, inner) : e;
        if ((uint64_t)json_integer_value(json_object_get(o, "id")) == id)
            return e;
    }
    return NULL;
}

/* Hand q's request (kind and arguments filled by the caller into h->req
 * through fill) to the core and wait for its answer. Returns the answer's
 * code and JSON (owned by the caller), or 0 when the core did not answer
 * within 2 s. reader_mu held. */
static unsigned core_call(struct sched_http *h, void (*fill)(struct core_request *, const void *),
                          const void *arg, json_t **answer)
{
    struct core_request *q = &h->req;
    uint64_t deadline = mono_ns() + ANSWER_TIMEOUT_NS;
    struct timespec nap = {0, 2000000}; /* the HTTP thread may sleep; the core ticks every 50 ms */
    *answer = NULL;
    /* A request that timed out earlier may still be the core's: wait for it. */
    while (atomic_load_explicit(&q->state, memory_order_acquire) == REQ_POSTED) {
        if (mono_ns() > deadline)
            return 0;
        nanosleep(&nap, NULL);
    }
    json_decref(q->answer); /* an answer nobody waited for */
    q->answer = NULL;
    tkv_free(q->key);
    q->key = NULL;
    q->key_len = 0;
    fill(q, arg);
    atomic_store_explicit(&q->state, REQ_POSTED, memory_order_release);
    while (atomic_load_explicit(&q->state, memory_order_acquire) != REQ_ANSWERED) {
        if (mono_ns() > deadline)
            return 0;
        nanosleep(&nap, NULL);
    }
    *answer = q->answer;
    q->answer = NULL;
    atomic_store_explicit(&q->state, REQ_FREE, memory_order_relaxed);
    return q->code;
}

struct op_args {
    enum tkv_sched_admin_kind kind;
    uint64_t region_id, store_id;
};

static void fill_operator(struct core_request *q, const void *arg)
{
    const struct op_args *a = arg;
    q->kind = REQ_ADD_OPERATOR;
    q->op_kind = a->kind;
    q->region_id = a->region_id;
    q->store_id = a->store_id;
}

struct key_arg {
    uint8_t *key;
    size_t len;
};

static void fill_region_by_key(struct core_request *q, const void *arg)
{
    const struct key_arg *a = arg;
    q->kind = REQ_REGION_BY_KEY;
    q->key = a->key; /* the slot owns it now */
    q->key_len = a->len;
}

static int reply_answer(struct tkv_status_reply *reply, unsigned code, json_t *answer)
{
    if (!code)
        return reply_error(reply, 503, "the scheduler core did not answer within 2 s");
    int rv = reply_json(reply, code, answer);
    json_decref(answer);
    return rv;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decode a path segment (PD's url-escaped key; the status server
 * hands us the path undecoded, so "%00" survives). false on a bad escape. */
static bool percent_decode(const char *s, uint8_t **out, size_t *len)
{
    size_t n = strlen(s), o = 0;
    uint8_t *buf = tkv_xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hex_digit(s[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                tkv_free(buf);
                return false;
            }
            buf[o++] = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else {
            buf[o++] = (uint8_t)s[i];
        }
    }
    *out = buf;
    *len = o;
    return true;
}

/* GET /pd/api/v1/region/key/<url-escaped key>: the region holding key. */
static int serve_region_by_key(struct sched_http *h, const char *escaped,
                               struct tkv_status_reply *reply)
{
    struct key_arg a;
    if (!percent_decode(escaped, &a.key, &a.len))
        return reply_error(reply, 400, "invalid key: bad percent escape");
    if (a.len > TKV_SCHED_MAX_KEY_LEN) {
        tkv_free(a.key);
        return reply_error(reply, 400, "invalid key: longer than 64 KiB");
    }
    json_t *answer;
    unsigned code = core_call(h, fill_region_by_key, &a, &answer);
    return reply_answer(reply, code, answer);
}

/* POST /pd/api/v1/operators with PD's bodies:
 *   {"name":"transfer-leader","region_id":N,"to_store_id":M}
 *   {"name":"add-peer","region_id":N,"store_id":M}
 *   {"name":"remove-peer","region_id":N,"store_id":M} */
static int serve_add_operator(struct sched_http *h, const char *body, size_t len,
                              struct tkv_status_reply *reply)
{
    json_error_t err;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    char msg[300];
    struct op_args a = {0};
    if (!j || !json_is_object(j)) {
        json_decref(j);
        snprintf(msg, sizeof(msg), "invalid JSON body: %s", j ? "expected an object" : err.text);
        return reply_error(reply, 400, msg);
    }
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *store_field = "store_id";
    if (!name) {
        json_decref(j);
        return reply_error(reply, 400, "missing \"name\" (transfer-leader, add-peer or remove-peer)");
    }
    if (strcmp(name, "transfer-leader") == 0) {
        a.kind = TKV_SCHED_ADMIN_TRANSFER_LEADER;
        store_field = "to_store_id";
    } else if (strcmp(name, "add-peer") == 0) {
        a.kind = TKV_SCHED_ADMIN_ADD_PEER;
    } else if (strcmp(name, "remove-peer") == 0) {
        a.kind = TKV_SCHED_ADMIN_REMOVE_PEER;
    } else {
        snprintf(msg, sizeof(msg),
                 "unknown operator name \"%.64s\": this scheduler accepts transfer-leader, "
                 "add-peer and remove-peer", name);
        json_decref(j);
        return reply_error(reply, 400, msg);
    }
    json_t *rid = json_object_get(j, "region_id"), *sid = json_object_get(j, store_field);
    if (!json_is_integer(rid) || json_integer_value(rid) <= 0 || !json_is_integer(sid) ||
        json_integer_value(sid) <= 0) {
        snprintf(msg, sizeof(msg), "%s needs \"region_id\" and \"%s\" as positive integers",
                 name, store_field);
        json_decref(j);
        return reply_error(reply, 400, msg);
    }
    a.region_id = (uint64_t)json_integer_value(rid);
    a.store_id = (uint64_t)json_integer_value(sid);
    json_decref(j);
    json_t *answer;
    unsigned code = core_call(h, fill_operator, &a, &answer);
    return reply_answer(reply, code, answer);
}

static int serve_api(struct sched_http *h, const char *url, struct tkv_status_reply *reply)
{
    static const char prefix[] = "/pd/api/v1/";
    const char *path = url + sizeof(prefix) - 1;
    uint64_t id = 0;
    enum { STORES, STORE, REGIONS, REGION, OPERATORS } what;

    if (strcmp(path, "stores") == 0)
        what = STORES;
    else if (strcmp(path, "regions") == 0)
        what = REGIONS;
    else if (strcmp(path, "operators") == 0)
        what = OPERATORS;
    else if (strncmp(path, "region/key/", 11) == 0)
        return serve_region_by_key(h, path + 11, reply);
    else if (strncmp(path, "store/", 6) == 0)
        what = STORE;
    else if (strncmp(path, "region/id/", 10) == 0)
        what = REGION;
    else
        return reply_error(reply, 404, "not found: this scheduler serves /pd/api/v1/stores, "
                                       "store/<id>, regions, region/id/<id>, region/key/<key> "
                                       "and operators");
    if ((what == STORE && !parse_id(path + 6, &id)) || (what == REGION && !parse_id(path + 10, &id)))
        return reply_error(reply, 400, "invalid id: expected a decimal number from 1 to 2^64-1");

    unsigned docs = what == STORES || what == STORE     ? DOC_STORES
                    : what == REGIONS || what == REGION ? DOC_REGIONS
                                                        : DOC_OPERATORS;
    struct sched_snapshot *s = fresh_snapshot(h, docs);
    if (!s)
        return reply_error(reply, 503, "the scheduler core did not answer within 2 s");
    char msg[96];
    json_t *found;
    switch (what) {
    case STORES:
        return reply_json(reply, 200, s->stores);
    case REGIONS:
        return reply_json(reply, 200, s->regions);
    case OPERATORS:
        return reply_json(reply, 200, s->operators);
    case STORE:
        found = find_by_id(json_object_get(s->stores, "stores"), "store", id);
        snprintf(msg, sizeof(msg), "store %" PRIu64 " not found", id);
        return found ? reply_json(reply, 200, found) : reply_error(reply, 404, msg);
    case REGION:
        found = find_by_id(json_object_get(s->regions, "regions"), NULL, id);
        snprintf(msg, sizeof(msg), "region %" PRIu64 " not found", id);
        return found ? reply_json(reply, 200, found) : reply_error(reply, 404, msg);
    }
    return TKV_EINVAL;
}

static int on_api(void *arg, const char *method, const char *url, struct tkv_status_reply *reply)
{
    struct sched_http *h = arg;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_error(reply, 405, "only GET is served (and POST on /pd/api/v1/operators)");
    pthread_mutex_lock(&h->reader_mu);
    int rv = serve_api(h, url, reply);
    pthread_mutex_unlock(&h->reader_mu);
    return rv;
}

/* /pd/api/v1/operators: GET lists, POST adds (the one write of the API). */
static int on_operators(void *arg, const char *method, const char *url, const char *body,
                        size_t len, struct tkv_status_reply *reply)
{
    struct sched_http *h = arg;
    if (strcmp(url, "/pd/api/v1/operators") != 0)
        return reply_error(reply, 404, "not found");
    if (strcmp(method, "POST") != 0)
        return on_api(arg, method, url, reply);
    pthread_mutex_lock(&h->reader_mu);
    int rv = serve_add_operator(h, body, len, reply);
    pthread_mutex_unlock(&h->reader_mu);
    return rv;
}

/* sched_dashboard.c */
extern const char sched_dashboard_head[], sched_dashboard_tail[];

static int on_dashboard(void *arg, const char *method, const char *url,
                        struct tkv_status_reply *reply)
{
    struct sched_http *h = arg;
    if (strcmp(url, "/dashboard") != 0 && strcmp(url, "/dashboard/") != 0)
        return reply_error(reply, 404, "not found");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_error(reply, 405, "only GET is served");
    /* The page carries the current stores as JSON (so it renders without a
     * round trip) and then refreshes them from /pd/api/v1/stores. */
    pthread_mutex_lock(&h->reader_mu);
    struct sched_snapshot *s = fresh_snapshot(h, DOC_STORES);
    char *data = s ? json_dumps(s->stores, JSON_COMPACT | JSON_ESCAPE_SLASH | JSON_ENSURE_ASCII)
                   : NULL;
    pthread_mutex_unlock(&h->reader_mu);
    if (!s)
        return reply_error(reply, 503, "the scheduler core did not answer within 2 s");
    if (!data)
        return TKV_ENOMEM;
    char cid[32];
    snprintf(cid, sizeof(cid), "%" PRIu64, atomic_load(&h->cluster_id));
    size_t nh = strlen(sched_dashboard_head), nd = strlen(data), nt = strlen(sched_dashboard_tail);
    size_t nc = strlen(cid);
    /* head, then: var INITIAL = <data>; var CLUSTER = "<cid>"; var NAME = <json name>; tail */
    json_t *name = json_string(h->srv->cfg.name);
    char *name_js = json_dumps(name, JSON_ENCODE_ANY | JSON_ESCAPE_SLASH | JSON_ENSURE_ASCII);
    json_decref(name);
    if (!name_js) {
        free(data);
        return TKV_ENOMEM;
    }
    size_t cap = nh + nd + nc + strlen(name_js) + nt + 128;
    char *body = tkv_malloc(cap);
    if (!body) {
        free(data);
        free(name_js);
        return TKV_ENOMEM;
    }
    int len = snprintf(body, cap, "%svar INITIAL = %s;\nvar CLUSTER_ID = \"%s\";\nvar NAME = %s;\n%s",
                       sched_dashboard_head, data, cid, name_js, sched_dashboard_tail);
    free(data);
    free(name_js);
    reply->body = body;
    reply->len = (size_t)len < cap ? (size_t)len : cap - 1;
    reply->code = 200;
    reply->content_type = "text/html; charset=utf-8";
    return 0;
}

static int http_ready(void *arg, char *reason, size_t cap)
{
    struct sched_http *h = arg;
    int rv = 0;
    if (atomic_load(&h->stopping)) {
        snprintf(reason, cap, "shutting down");
        return 1;
    }
    if (!atomic_load(&h->serving)) {
        snprintf(reason, cap, "starting: the scheduler core is not serving yet");
        return 1;
    }
    pthread_mutex_lock(&h->group_mu);
    if (h->group) {
        uint64_t stall = tkv_reactor_group_core_stall_ns(h->group, 0);
        if (stall > h->stall_limit_ns) {
            snprintf(reason, cap, "scheduler core: event loop has not turned for %.1f s",
                     stall == UINT64_MAX ? 0.0 : (double)stall / 1e9);
            rv = 1;
        }
    }
    pthread_mutex_unlock(&h->group_mu);
    return rv;
}

static void http_status_fill(void *arg, json_t *o)
{
    struct sched_http *h = arg;
    char reason[160] = "";
    char cid[32];
    snprintf(cid, sizeof(cid), "%" PRIu64, atomic_load(&h->cluster_id));
    json_object_set_new(o, "mode", json_string("scheduler"));
    json_object_set_new(o, "name", json_string(h->srv->cfg.name));
    json_object_set_new(o, "client_urls", json_string(h->srv->cfg.client_urls));
    json_object_set_new(o, "cores", json_integer(1));
    /* A string: cluster ids use all 64 bits, beyond JSON's exact integers. */
    json_object_set_new(o, "cluster_id", json_string(cid));
    json_object_set_new(o, "bootstrapped", json_boolean(atomic_load(&h->bootstrapped)));
    json_object_set_new(o, "stores", json_integer((json_int_t)atomic_load(&h->n_stores)));
    json_object_set_new(o, "regions", json_integer((json_int_t)atomic_load(&h->n_regions)));
    bool ready = http_ready(h, reason, sizeof(reason)) == 0;
    json_object_set_new(o, "ready", json_boolean(ready));
    if (!ready)
        json_object_set_new(o, "not_ready_reason", json_string(reason));
}

static char *http_config_json(void *arg)
{
    struct sched_http *h = arg;
    size_t n = tkv_config_sched_dump(&h->srv->cfg, TKV_CONFIG_DUMP_JSON, NULL, 0);
    char *buf = tkv_malloc(n + 1);
    if (buf)
        tkv_config_sched_dump(&h->srv->cfg, TKV_CONFIG_DUMP_JSON, buf, n + 1);
    return buf;
}

void sched_http_start(struct sched_server *srv)
{
    struct sched_http *h = tkv_xcalloc(1, sizeof(*h));
    h->srv = srv;
    h->back = &h->slots[0];
    h->front = &h->slots[1];
    atomic_store(&h->middle, (uintptr_t)&h->slots[2]);
    pthread_mutex_init(&h->reader_mu, NULL);
    pthread_mutex_init(&h->group_mu, NULL);
    h->stall_limit_ns = STALL_LIMIT_MIN_NS;
    srv->http = h;

#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
    fiu_init(0);
    if (getenv("TKV_FIU_CTRL") && fiu_rc_fifo(getenv("TKV_FIU_CTRL")) < 0)
        TKV_LOG_WARN("cannot open the fiu control FIFO", TKV_LF_STR("prefix", getenv("TKV_FIU_CTRL")));
#endif
    if (tkv_metrics_default_init(1) < 0)
        TKV_LOG_WARN("metrics registry already set up");
    metrics_register(h);
    if (!srv->cfg.status_addr[0])
        return;
    struct tkv_status_info info = {
        .component = "tinyscheduler-server", .version = TKV_VERSION, .git_hash = TKV_GIT_HASH,
        .build_time = TKV_BUILD_TIME, .ready = http_ready, .status_fill = http_status_fill,
        .config_json = http_config_json, .arg = h};
    int rv = tkv_status_start(srv->cfg.status_addr, &info, &h->status);
    if (rv) {
        TKV_LOG_ERROR("cannot start the status server; serving without it",
                      TKV_LF_STR("status_addr", srv->cfg.status_addr), TKV_LF_ERR(rv));
        h->status = NULL;
        return;
    }
    tkv_status_add_route(h->status, "/pd/api/v1/", on_api, h);
    tkv_status_add_body_route(h->status, "/pd/api/v1/operators", on_operators, h, 4096);
    tkv_status_add_route(h->status, "/dashboard", on_dashboard, h);
    TKV_LOG_INFO("status server listening", TKV_LF_STR("status_addr", srv->cfg.status_addr),
                 TKV_LF_U64("status_port", tkv_status_port(h->status)));
}

/* Main thread, every half watchdog interval: feed systemd only while the
 * core serves and turns, so a stuck core gets the process restarted. */
static void watchdog_tick(void *arg)
{
    struct sched_http *h = arg;
    static bool warned;
    tkv_status_sd_watchdog_feed(http_ready, h, atomic_load(&h->stopping), &warned);
}

static void on_reload(void *arg)
{
    struct sched_http *h = arg;
    tkv_status_sd_reload_log(h->srv->cfg.log.file.filename);
}

int sched_http_run(struct sched_server *srv, struct tkv_reactor_group *group)
{
    struct sched_http *h = srv->http;
    uint64_t wd = tkv_status_sd_watchdog_ns();
    pthread_mutex_lock(&h->group_mu);
    h->group = group;
    if (wd)
        h->stall_limit_ns = wd / 2 > STALL_LIMIT_MIN_NS ? wd / 2 : STALL_LIMIT_MIN_NS;
    pthread_mutex_unlock(&h->group_mu);
    if (wd)
        TKV_LOG_INFO("systemd watchdog enabled", TKV_LF_U64("interval_ms", wd / 1000000),
                     TKV_LF_U64("stall_limit_ms", h->stall_limit_ns / 1000000));
    struct tkv_reactor_run_hooks hooks = {
        .tick_ns = wd / 2, .on_tick = wd ? watchdog_tick : NULL, .on_reload = on_reload, .arg = h};
    int rv = tkv_reactor_group_run(group, &hooks);
    pthread_mutex_lock(&h->group_mu);
    h->group = NULL; /* freed by tkv_reactor_group_run */
    pthread_mutex_unlock(&h->group_mu);
    atomic_store(&h->stopping, true);
    return rv;
}

void sched_http_stop(struct sched_server *srv)
{
    struct sched_http *h = srv->http;
    if (!h)
        return;
    tkv_status_stop(h->status); /* joins the HTTP thread: nobody reads the slots after this */
    for (int i = 0; i < 3; i++)
        snapshot_clear(&h->slots[i]);
    json_decref(h->req.answer); /* the core is gone: nobody else holds the slot */
    tkv_free(h->req.key);
    pthread_mutex_destroy(&h->reader_mu);
    pthread_mutex_destroy(&h->group_mu);
    tkv_free(h);
    srv->http = NULL;
}
