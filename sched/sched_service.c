/* The schedulerpb.Scheduler gRPC service (TINYKV-API.md 1.3, 2.15) over the
 * scheduler core. Every handler runs on the server's one core and finishes
 * synchronously, except the two bidi streams (Tso, RegionHeartbeat).
 *
 * Request checks, as PD: every method but GetMembers checks
 * header.cluster_id (a missing header is cluster id 0) and answers a
 * mismatch with gRPC FAILED_PRECONDITION; Tso checks it per message. Methods
 * that need a bootstrapped cluster answer header.error NOT_BOOTSTRAPPED
 * before it is. With several members (sched_raft.c) only the leader serves:
 * on the others every method but GetMembers answers gRPC UNAVAILABLE
 * "not leader", and every reply of the leader goes through the reply
 * barrier (sched_out_*), so nothing a client sees depends on an uncommitted
 * write. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sched_http.h"
#include "sched_int.h"
#include "sched_server.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/pb.h"

/* Every schedulerpb request and response starts with its header: the
 * generated structs share this initial sequence. */
struct req_head {
    bool has_header;
    schedulerpb_RequestHeader header;
};
struct resp_head {
    bool has_header;
    schedulerpb_ResponseHeader header;
};

uint64_t sched_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct sched_server *server_of(struct tkv_rpc_call *call)
{
    return tkv_rpc_call_method_data(call);
}

static uint64_t now_ns(const struct sched_server *srv)
{
    return tkv_now_ns(srv->reactor);
}

static void reply(struct tkv_rpc_call *call, const pb_msgdesc_t *fields, const void *resp)
{
    struct tkv_slice out;
    if (tkv_pb_encode_arena(fields, resp, tkv_rpc_call_arena(call), 0, &out) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "cannot encode the response");
        return;
    }
    sched_out_reply(server_of(call), call, out.ptr, out.len);
}

static void header_ok(struct sched_server *srv, void *resp)
{
    struct resp_head *h = resp;
    h->has_header = true;
    h->header.cluster_id = sched_raft_cluster_id(srv);
}

#define NOT_LEADER "not leader"

static void header_err(struct sched_server *srv, struct tkv_arena *arena, void *resp,
                       schedulerpb_ErrorType type, const char *msg)
{
    struct resp_head *h = resp;
    header_ok(srv, resp);
    h->header.has_error = true;
    h->header.error.type = type;
    h->header.error.message = tkv_pb_dup(arena, msg, strlen(msg));
}

/* Decode, check the cluster id and (when needs_boot) the bootstrap. Returns
 * true when the handler should go on; otherwise the call is answered. */
static bool begin(struct tkv_rpc_call *call, struct tkv_slice msg, const pb_msgdesc_t *req_fields,
                  void *req, const pb_msgdesc_t *resp_fields, void *resp, bool needs_boot)
{
    struct sched_server *srv = server_of(call);
    struct tkv_arena *arena = tkv_rpc_call_arena(call);
    const char *why = NULL;
    char text[200];

    if (!sched_raft_serving(srv)) {
        tkv_rpc_call_finish(call, TKV_GRPC_UNAVAILABLE, NOT_LEADER);
        return false;
    }
    if (tkv_pb_decode_ex(req_fields, req, msg.ptr, msg.len, arena, &why) != 0) {
        snprintf(text, sizeof(text), "cannot decode %s: %s", tkv_pb_msg_name(req_fields),
                 why ? why : "malformed message");
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, text);
        return false;
    }
    const struct req_head *h = req;
    uint64_t got = h->has_header ? h->header.cluster_id : 0;
    if (got != tkv_sched_cluster_id(srv->cluster)) {
        snprintf(text, sizeof(text), "mismatch cluster id, need %llu but got %llu",
                 (unsigned long long)tkv_sched_cluster_id(srv->cluster), (unsigned long long)got);
        tkv_rpc_call_finish(call, TKV_GRPC_FAILED_PRECONDITION, text);
        return false;
    }
    if (needs_boot && !tkv_sched_is_bootstrapped(srv->cluster)) {
        header_err(srv, arena, resp, schedulerpb_ErrorType_NOT_BOOTSTRAPPED,
                   "cluster is not bootstrapped");
        reply(call, resp_fields, resp);
        return false;
    }
    header_ok(srv, resp);
    return true;
}

/* An engine failure of a persisted change: INTERNAL, nothing changed. */
static void finish_engine(struct tkv_rpc_call *call, int rv, const char *what)
{
    char text[200];
    if (rv == TKV_ENOTLEADER) { /* the write could not be proposed */
        tkv_rpc_call_finish(call, TKV_GRPC_UNAVAILABLE, NOT_LEADER);
        return;
    }
    TKV_LOG_ERROR("scheduler storage failed", TKV_LF_STR("op", what), TKV_LF_ERR(rv));
    snprintf(text, sizeof(text), "%s: storage: %s", what, tkv_strerror(rv));
    tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, text);
}

#define HANDLER_BEGIN(REQ, RESP, BOOT)                                                             \
    struct sched_server *srv = server_of(call);                                                    \
    struct tkv_arena *arena = tkv_rpc_call_arena(call);                                            \
    schedulerpb_##REQ req;                                                                         \
    schedulerpb_##RESP resp;                                                                       \
    memset(&resp, 0, sizeof(resp));                                                                \
    if (!begin(call, msg, schedulerpb_##REQ##_fields, &req, schedulerpb_##RESP##_fields, &resp,    \
               BOOT))                                                                              \
        return;                                                                                    \
    (void)arena;                                                                                   \
    (void)srv

#define REPLY(RESP) reply(call, schedulerpb_##RESP##_fields, &resp)

/* ---- GetMembers ---- */

static void fill_urls(struct tkv_arena *arena, const char *list, void *rep_)
{
    TKV_PB_REP(struct tkv_slice) *rep = rep_;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n)
            *TKV_PB_PUSH(arena, rep) = tkv_pb_dup(arena, p, n);
        p += n + (e ? 1 : 0);
    }
}

static void fill_member(struct sched_server *srv, struct tkv_arena *arena, schedulerpb_Member *m)
{
    memset(m, 0, sizeof(*m));
    m->name = tkv_pb_str(srv->cfg.name);
    m->member_id = srv->member_id;
    fill_urls(arena, srv->cfg.advertise_peer_urls, &m->peer_urls);
    fill_urls(arena, srv->cfg.advertise_client_urls, &m->client_urls);
}

static void on_get_members(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct sched_server *srv = server_of(call);
    struct tkv_arena *arena = tkv_rpc_call_arena(call);
    schedulerpb_GetMembersRequest req;
    schedulerpb_GetMembersResponse resp;
    const char *why = NULL;

    memset(&resp, 0, sizeof(resp));
    if (tkv_pb_decode_ex(schedulerpb_GetMembersRequest_fields, &req, msg.ptr, msg.len, arena,
                         &why) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT,
                            "cannot decode schedulerpb.GetMembersRequest");
        return;
    }
    header_ok(srv, &resp);
    size_t n = sched_raft_n_members(srv);
    if (n == 0) { /* one member: always the leader */
        schedulerpb_Member *m = TKV_PB_PUSH(arena, &resp.members);
        fill_member(srv, arena, m);
        resp.has_leader = true;
        fill_member(srv, arena, &resp.leader);
        resp.has_etcd_leader = true;
        fill_member(srv, arena, &resp.etcd_leader);
    } else {
        uint64_t leader = sched_raft_leader(srv);
        for (size_t i = 0; i < n; i++) {
            struct sched_member_info mi;
            schedulerpb_Member m;
            sched_raft_member(srv, i, &mi);
            memset(&m, 0, sizeof(m));
            m.name = tkv_pb_str(mi.name);
            m.member_id = mi.id;
            fill_urls(arena, mi.peer_url, &m.peer_urls);
            fill_urls(arena, mi.client_url, &m.client_urls);
            *TKV_PB_PUSH(arena, &resp.members) = m;
            /* Named only once its client URL is known (from its frames):
             * a leader without one would send clients nowhere. */
            if (mi.id == leader && mi.client_url[0]) {
                resp.has_leader = resp.has_etcd_leader = true;
                resp.leader = resp.etcd_leader = m;
            }
        }
    }
    /* GetMembers is answered by every member at once: it depends on no write. */
    {
        struct tkv_slice out;
        if (tkv_pb_encode_arena(schedulerpb_GetMembersResponse_fields, &resp, arena, 0, &out) != 0)
            tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "cannot encode the response");
        else
            tkv_rpc_call_reply(call, out.ptr, out.len);
    }
}

/* ---- Tso (bidi) ---- */

static void on_tso(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct sched_server *srv = server_of(call);
    struct tkv_arena *arena = tkv_rpc_call_arena(call);
    schedulerpb_TsoRequest req;
    schedulerpb_TsoResponse resp;
    struct tkv_slice out;
    char text[160];
    int rv;

    tkv_arena_reset(arena); /* one arena for the whole stream: reuse per message */
    if (!sched_raft_serving(srv)) {
        sched_out_forget(srv, call);
        tkv_rpc_call_finish(call, TKV_GRPC_UNAVAILABLE, NOT_LEADER);
        return;
    }
    if (tkv_pb_decode(schedulerpb_TsoRequest_fields, &req, msg.ptr, msg.len, arena) != 0) {
        sched_out_forget(srv, call);
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT,
                            "cannot decode schedulerpb.TsoRequest");
        return;
    }
    uint64_t got = req.has_header ? req.header.cluster_id : 0;
    if (got != tkv_sched_cluster_id(srv->cluster)) {
        snprintf(text, sizeof(text), "mismatch cluster id, need %llu but got %llu",
                 (unsigned long long)tkv_sched_cluster_id(srv->cluster), (unsigned long long)got);
        sched_out_forget(srv, call);
        tkv_rpc_call_finish(call, TKV_GRPC_FAILED_PRECONDITION, text);
        return;
    }
    if (req.count == 0 || req.count > TKV_SCHED_MAX_TSO_COUNT) {
        snprintf(text, sizeof(text), "tso count should be between 1 and %u, got %u",
                 TKV_SCHED_MAX_TSO_COUNT, req.count);
        sched_out_forget(srv, call);
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, text);
        return;
    }
    memset(&resp, 0, sizeof(resp));
    header_ok(srv, &resp);
    rv = tkv_sched_tso(srv->cluster, req.count, sched_wall_ms(), srv->cfg.tso_save_interval_ms,
                       &resp.timestamp.physical, &resp.timestamp.logical);
    if (rv) {
        sched_out_forget(srv, call);
        finish_engine(call, rv, "Tso");
        return;
    }
    resp.has_timestamp = true;
    resp.count = req.count;
    if (tkv_pb_encode_arena(schedulerpb_TsoResponse_fields, &resp, arena, 0, &out) != 0 ||
        sched_out_send(srv, call, out.ptr, out.len) != 0) {
        sched_out_forget(srv, call);
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "cannot send the TSO response");
    }
}

static void on_stream_half_close(struct tkv_rpc_call *call)
{
    sched_out_finish_ok(server_of(call), call);
}

/* A call ended by the client or the server's stop: forget its held replies. */
static void on_call_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    (void)why;
    sched_out_forget(server_of(call), call);
}

/* ---- bootstrap, ids ---- */

static void on_bootstrap(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(BootstrapRequest, BootstrapResponse, false);
    const char *why = "";
    if (tkv_sched_is_bootstrapped(srv->cluster)) {
        header_err(srv, arena, &resp, schedulerpb_ErrorType_ALREADY_BOOTSTRAPPED,
                   "cluster is already bootstrapped");
        REPLY(BootstrapResponse);
        return;
    }
    if (!req.has_store) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, "Bootstrap without a store");
        return;
    }
    int rv = tkv_sched_bootstrap(srv->cluster, &req.store, now_ns(srv), &why);
    if (rv == TKV_EINVAL) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, why);
        return;
    }
    if (rv) {
        finish_engine(call, rv, "Bootstrap");
        return;
    }
    REPLY(BootstrapResponse);
}

static void on_is_bootstrapped(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(IsBootstrappedRequest, IsBootstrappedResponse, false);
    resp.bootstrapped = tkv_sched_is_bootstrapped(srv->cluster);
    REPLY(IsBootstrappedResponse);
}

static void on_alloc_id(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(AllocIDRequest, AllocIDResponse, false);
    int rv = tkv_sched_alloc_id(srv->cluster, &resp.id);
    if (rv) {
        finish_engine(call, rv, "AllocID");
        return;
    }
    REPLY(AllocIDResponse);
}

/* ---- stores ---- */

static void on_get_store(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(GetStoreRequest, GetStoreResponse, true);
    const struct tkv_sched_store *s = tkv_sched_get_store(srv->cluster, req.store_id);
    if (!s) {
        char text[96];
        snprintf(text, sizeof(text), "invalid store ID %llu, not found",
                 (unsigned long long)req.store_id);
        header_err(srv, arena, &resp, schedulerpb_ErrorType_UNKNOWN, text);
        REPLY(GetStoreResponse);
        return;
    }
    resp.has_store = true;
    tkv_sched_store_to_pb(arena, s, &resp.store);
    resp.has_stats = true;
    resp.stats.store_id = s->id;
    resp.stats.capacity = s->capacity;
    resp.stats.available = s->available;
    resp.stats.used_size = s->used_size;
    resp.stats.region_count = s->reported_region_count;
    resp.stats.is_busy = s->is_busy;
    REPLY(GetStoreResponse);
}

static void on_put_store(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(PutStoreRequest, PutStoreResponse, true);
    const char *why = "";
    if (!req.has_store) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, "PutStore without a store");
        return;
    }
    int rv = tkv_sched_put_store(srv->cluster, &req.store, now_ns(srv), &why);
    if (rv == TKV_ESTALE) {
        header_err(srv, arena, &resp, schedulerpb_ErrorType_STORE_TOMBSTONE, why);
    } else if (rv == TKV_EINVAL || rv == TKV_ECONFLICT) {
        header_err(srv, arena, &resp, schedulerpb_ErrorType_UNKNOWN, why);
    } else if (rv) {
        finish_engine(call, rv, "PutStore");
        return;
    } else {
        TKV_LOG_INFO("store registered", TKV_LF_U64("store_id", req.store.id),
                     TKV_LF_HEX("address", req.store.address.ptr, req.store.address.len));
    }
    REPLY(PutStoreResponse);
}

static void on_get_all_stores(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(GetAllStoresRequest, GetAllStoresResponse, true);
    size_t n = tkv_sched_n_stores(srv->cluster);
    TKV_PB_RESERVE(arena, &resp.stores, n);
    for (size_t i = 0; i < n; i++) {
        const struct tkv_sched_store *s = tkv_sched_store_at(srv->cluster, i);
        if (req.exclude_tombstone_stores && s->state == metapb_StoreState_Tombstone)
            continue;
        metapb_Store *pb = TKV_PB_PUSH(arena, &resp.stores);
        tkv_sched_store_to_pb(arena, s, pb);
    }
    REPLY(GetAllStoresResponse);
}

static void on_store_heartbeat(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(StoreHeartbeatRequest, StoreHeartbeatResponse, true);
    if (!req.has_stats || req.stats.store_id == 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT,
                            "StoreHeartbeat without stats.store_id");
        return;
    }
    int rv = tkv_sched_store_heartbeat(srv->cluster, &req.stats, now_ns(srv));
    if (rv == TKV_ENOTFOUND) {
        char text[96];
        snprintf(text, sizeof(text), "store %llu not found",
                 (unsigned long long)req.stats.store_id);
        header_err(srv, arena, &resp, schedulerpb_ErrorType_UNKNOWN, text);
    } else if (rv == TKV_ESTALE) {
        header_err(srv, arena, &resp, schedulerpb_ErrorType_STORE_TOMBSTONE,
                   "store is a tombstone");
    }
    REPLY(StoreHeartbeatResponse);
}

/* ---- RegionHeartbeat (bidi) ---- */

static void hb_unlink(struct sched_server *srv, struct sched_hb_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    tkv_free(s);
}

static struct sched_hb_stream *hb_stream_of_store(struct sched_server *srv, uint64_t store_id)
{
    for (struct sched_hb_stream *s = srv->streams; s; s = s->next)
        if (s->store_id == store_id)
            return s;
    return NULL;
}

/* Queue a response on a heartbeat stream; dropped when the peer does not
 * read (over 4 MiB queued): heartbeats re-derive commands anyway. */
static void hb_send(struct sched_hb_stream *s, struct tkv_arena *arena,
                    const schedulerpb_RegionHeartbeatResponse *resp)
{
    struct tkv_slice out;
    if (tkv_rpc_call_out_bytes(s->call) > (4u << 20))
        return;
    if (tkv_pb_encode_arena(schedulerpb_RegionHeartbeatResponse_fields, resp, arena, 0, &out) == 0)
        (void)tkv_rpc_call_send(s->call, out.ptr, out.len);
}

static void hb_finish(struct sched_server *srv, struct sched_hb_stream *s, enum tkv_grpc_status st,
                      const char *text)
{
    struct tkv_rpc_call *call = s->call;
    hb_unlink(srv, s);
    tkv_rpc_call_finish(call, st, text);
}

static void on_region_heartbeat(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct sched_server *srv = server_of(call);
    struct tkv_arena *arena = tkv_rpc_call_arena(call);
    struct sched_hb_stream *s = tkv_rpc_call_data(call);
    schedulerpb_RegionHeartbeatRequest req;
    schedulerpb_RegionHeartbeatResponse resp;
    const char *why = "";
    char text[200];
    int rv;

    if (!s) {
        s = tkv_xcalloc(1, sizeof(*s));
        s->call = call;
        s->next = srv->streams;
        if (srv->streams)
            srv->streams->prev = s;
        srv->streams = s;
        tkv_rpc_call_set_data(call, s);
    }
    tkv_arena_reset(arena);
    if (!sched_raft_serving(srv)) {
        hb_finish(srv, s, TKV_GRPC_UNAVAILABLE, NOT_LEADER);
        return;
    }
    if (tkv_pb_decode(schedulerpb_RegionHeartbeatRequest_fields, &req, msg.ptr, msg.len, arena)) {
        hb_finish(srv, s, TKV_GRPC_INVALID_ARGUMENT,
                  "cannot decode schedulerpb.RegionHeartbeatRequest");
        return;
    }
    uint64_t got = req.has_header ? req.header.cluster_id : 0;
    if (got != tkv_sched_cluster_id(srv->cluster)) {
        snprintf(text, sizeof(text), "mismatch cluster id, need %llu but got %llu",
                 (unsigned long long)tkv_sched_cluster_id(srv->cluster), (unsigned long long)got);
        hb_finish(srv, s, TKV_GRPC_FAILED_PRECONDITION, text);
        return;
    }
    memset(&resp, 0, sizeof(resp));
    if (!tkv_sched_is_bootstrapped(srv->cluster)) {
        header_err(srv, arena, &resp, schedulerpb_ErrorType_NOT_BOOTSTRAPPED,
                   "cluster is not bootstrapped");
        hb_send(s, arena, &resp);
        hb_finish(srv, s, TKV_GRPC_OK, NULL);
        return;
    }
    uint64_t store_id = req.has_leader ? req.leader.store_id : 0;
    const struct tkv_sched_store *st = tkv_sched_get_store(srv->cluster, store_id);
    if (!st) {
        snprintf(text, sizeof(text), "invalid store ID %llu, not found",
                 (unsigned long long)store_id);
        hb_finish(srv, s, TKV_GRPC_UNKNOWN, text);
        return;
    }
    if (s->store_id != store_id) {
        /* Bind this stream to the leader's store; a newer stream of the same
         * store takes over from an older one. */
        struct sched_hb_stream *old = hb_stream_of_store(srv, store_id);
        if (old && old != s)
            old->store_id = 0;
        s->store_id = store_id;
    }
    rv = tkv_sched_region_heartbeat(srv->cluster, &req, NULL, &why);
    if (rv) {
        if (rv != TKV_ESTALE)
            TKV_LOG_DEBUG("bad region heartbeat", TKV_LF_STR("why", why),
                          TKV_LF_U64("region_id", req.region.id));
        header_err(srv, arena, &resp, schedulerpb_ErrorType_UNKNOWN, why);
        resp.has_target_peer = req.has_leader;
        resp.target_peer = req.leader;
        resp.region_id = req.region.id;
        hb_send(s, arena, &resp);
        return;
    }
    /* Commands wait while a write is uncommitted (their peer ids may come
     * from a new id window); the next heartbeat carries them. */
    if (sched_raft_wait_index(srv) == 0 &&
        tkv_sched_dispatch(srv->cluster, req.region.id, now_ns(srv), &resp)) {
        struct sched_hb_stream *to = hb_stream_of_store(srv, resp.target_peer.store_id);
        hb_send(to ? to : s, arena, &resp);
    }
}

static void on_region_heartbeat_half_close(struct tkv_rpc_call *call)
{
    struct sched_hb_stream *s = tkv_rpc_call_data(call);
    if (s)
        hb_unlink(server_of(call), s);
    tkv_rpc_call_finish(call, TKV_GRPC_OK, NULL);
}

static void on_region_heartbeat_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    struct sched_hb_stream *s = tkv_rpc_call_data(call);
    (void)why;
    if (s)
        hb_unlink(server_of(call), s);
}

/* ---- regions ---- */

static void fill_region(struct tkv_arena *arena, const struct tkv_sched_region *r,
                        schedulerpb_GetRegionResponse *resp)
{
    if (!r)
        return;
    resp->has_region = true;
    tkv_sched_region_to_pb(arena, r, &resp->region);
    if (r->leader.id) {
        resp->has_leader = true;
        resp->leader.id = r->leader.id;
        resp->leader.store_id = r->leader.store_id;
    }
}

static void on_get_region(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(GetRegionRequest, GetRegionResponse, true);
    fill_region(arena, tkv_sched_region_by_key(srv->cluster, req.region_key), &resp);
    REPLY(GetRegionResponse);
}

static void on_get_prev_region(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(GetRegionRequest, GetRegionResponse, true);
    fill_region(arena, tkv_sched_prev_region(srv->cluster, req.region_key), &resp);
    REPLY(GetRegionResponse);
}

static void on_get_region_by_id(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(GetRegionByIDRequest, GetRegionResponse, true);
    fill_region(arena, tkv_sched_region_by_id(srv->cluster, req.region_id), &resp);
    REPLY(GetRegionResponse);
}

/* At most this many regions per ScanRegions answer (limit <= 0 or larger). */
#define SCAN_MAX 10000

static void on_scan_regions(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(ScanRegionsRequest, ScanRegionsResponse, true);
    size_t limit = req.limit <= 0 ? SCAN_MAX : TKV_MIN((size_t)req.limit, (size_t)SCAN_MAX);
    size_t n = tkv_sched_n_regions(srv->cluster);
    for (size_t i = tkv_sched_region_seek(srv->cluster, req.start_key);
         i < n && resp.regions.n < limit; i++) {
        const struct tkv_sched_region *r = tkv_sched_region_at(srv->cluster, i);
        if (req.end_key.len && sched_key_cmp(r->start_key, req.end_key) >= 0)
            break;
        metapb_Region *pr = TKV_PB_PUSH(arena, &resp.regions);
        tkv_sched_region_to_pb(arena, r, pr);
        metapb_Peer *l = TKV_PB_PUSH(arena, &resp.leaders);
        l->id = r->leader.id;
        l->store_id = r->leader.store_id;
    }
    REPLY(ScanRegionsResponse);
}

static void on_ask_split(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(AskSplitRequest, AskSplitResponse, true);
    uint64_t ids[TKV_SCHED_MAX_PEERS];
    size_t n = 0;
    const char *why = "";
    if (!req.has_region) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, "AskSplit without a region");
        return;
    }
    int rv = tkv_sched_ask_split(srv->cluster, &req.region, &resp.new_region_id, ids, &n, &why);
    if (rv == TKV_EINVAL) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, why);
        return;
    }
    if (rv == TKV_EREGION || rv == TKV_ESTALE) {
        header_err(srv, arena, &resp,
                   rv == TKV_EREGION ? schedulerpb_ErrorType_REGION_NOT_FOUND
                                     : schedulerpb_ErrorType_UNKNOWN,
                   why);
        REPLY(AskSplitResponse);
        return;
    }
    if (rv) {
        finish_engine(call, rv, "AskSplit");
        return;
    }
    resp.new_peer_ids.items = ids;
    resp.new_peer_ids.n = n;
    REPLY(AskSplitResponse);
}

/* ---- config, scatter, GC, operators ---- */

static void on_get_cluster_config(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(GetClusterConfigRequest, GetClusterConfigResponse, true);
    resp.has_cluster = true;
    tkv_sched_get_config(srv->cluster, &resp.cluster);
    REPLY(GetClusterConfigResponse);
}

static void on_put_cluster_config(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(PutClusterConfigRequest, PutClusterConfigResponse, true);
    const char *why = "";
    if (!req.has_cluster) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, "PutClusterConfig without a cluster");
        return;
    }
    int rv = tkv_sched_put_config(srv->cluster, &req.cluster, &why);
    if (rv == TKV_EINVAL) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, why);
        return;
    }
    if (rv) {
        finish_engine(call, rv, "PutClusterConfig");
        return;
    }
    REPLY(PutClusterConfigResponse);
}

static void on_scatter_region(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(ScatterRegionRequest, ScatterRegionResponse, true);
    REPLY(ScatterRegionResponse); /* TinyKV's scheduler: a no-op */
}

static void on_get_gc_safe_point(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(GetGCSafePointRequest, GetGCSafePointResponse, true);
    resp.safe_point = tkv_sched_gc_safe_point(srv->cluster);
    REPLY(GetGCSafePointResponse);
}

static void on_update_gc_safe_point(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(UpdateGCSafePointRequest, UpdateGCSafePointResponse, true);
    int rv = tkv_sched_update_gc_safe_point(srv->cluster, req.safe_point, &resp.new_safe_point);
    if (rv) {
        finish_engine(call, rv, "UpdateGCSafePoint");
        return;
    }
    REPLY(UpdateGCSafePointResponse);
}

static void on_get_operator(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    HANDLER_BEGIN(GetOperatorRequest, GetOperatorResponse, true);
    const struct tkv_sched_operator *op = tkv_sched_get_operator(srv->cluster, req.region_id);
    resp.region_id = req.region_id;
    if (!op) {
        header_err(srv, arena, &resp, schedulerpb_ErrorType_REGION_NOT_FOUND,
                   "no operator for the region");
        REPLY(GetOperatorResponse);
        return;
    }
    resp.desc = tkv_pb_str(op->desc);
    resp.status = (schedulerpb_OperatorStatus)op->status;
    resp.kind = tkv_pb_str(op->kind == TKV_SCHED_OP_LEADER   ? "leader"
                           : op->kind == TKV_SCHED_OP_REGION ? "region"
                                                             : "replica");
    REPLY(GetOperatorResponse);
}

/* ---- method table ---- */

#define M(name, fn)                                                                                \
    {                                                                                              \
        "/schedulerpb.Scheduler/" name, TKV_RPC_UNARY, fn, NULL, on_call_cancel, srv               \
    }

void sched_methods(struct sched_server *srv, struct tkv_rpc_method *methods, size_t *n_out)
{
    const struct tkv_rpc_method table[SCHED_N_METHODS] = {
        M("GetMembers", on_get_members),
        {"/schedulerpb.Scheduler/Tso", TKV_RPC_BIDI, on_tso, on_stream_half_close, on_call_cancel,
         srv},
        M("Bootstrap", on_bootstrap),
        M("IsBootstrapped", on_is_bootstrapped),
        M("AllocID", on_alloc_id),
        M("GetStore", on_get_store),
        M("PutStore", on_put_store),
        M("GetAllStores", on_get_all_stores),
        M("StoreHeartbeat", on_store_heartbeat),
        {"/schedulerpb.Scheduler/RegionHeartbeat", TKV_RPC_BIDI, on_region_heartbeat,
         on_region_heartbeat_half_close, on_region_heartbeat_cancel, srv},
        M("GetRegion", on_get_region),
        M("GetPrevRegion", on_get_prev_region),
        M("GetRegionByID", on_get_region_by_id),
        M("ScanRegions", on_scan_regions),
        M("AskSplit", on_ask_split),
        M("GetClusterConfig", on_get_cluster_config),
        M("PutClusterConfig", on_put_cluster_config),
        M("ScatterRegion", on_scatter_region),
        M("GetGCSafePoint", on_get_gc_safe_point),
        M("UpdateGCSafePoint", on_update_gc_safe_point),
        M("GetOperator", on_get_operator),
    };
    memcpy(methods, table, sizeof(table));
    *n_out = SCHED_N_METHODS;
}

/* ---- timers ---- */

static void on_patrol(struct tkv_timer *t)
{
    struct sched_server *srv = t->data;
    uint64_t now = now_ns(srv);
    if (srv->cluster && tkv_sched_is_bootstrapped(srv->cluster) &&
        now - srv->start_ns >= srv->prepare_ns) {
        struct timespec t0, t1; /* vDSO clock reads, not syscalls */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tkv_sched_patrol(srv->cluster, now, &srv->rng, 64);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        sched_http_patrol_done(srv, (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll +
                                               (t1.tv_nsec - t0.tv_nsec)));
    }
    tkv_timer_start(srv->reactor, t, srv->cfg.schedule.patrol_region_interval_ms * 1000000ull);
}

static void on_flush(struct tkv_timer *t)
{
    struct sched_server *srv = t->data;
    if (srv->cluster)
        (void)tkv_sched_flush_regions(srv->cluster);
    tkv_timer_start(srv->reactor, t, 100ull * 1000000ull);
}

void sched_service_start(struct sched_server *srv)
{
    srv->start_ns = now_ns(srv);
    tkv_timer_init(&srv->patrol_timer, on_patrol, srv);
    tkv_timer_init(&srv->flush_timer, on_flush, srv);
    tkv_timer_start(srv->reactor, &srv->patrol_timer,
                    srv->cfg.schedule.patrol_region_interval_ms * 1000000ull);
    tkv_timer_start(srv->reactor, &srv->flush_timer, 100ull * 1000000ull);
}

void sched_service_drop_streams(struct sched_server *srv, enum tkv_grpc_status st,
                                const char *text)
{
    while (srv->streams)
        hb_finish(srv, srv->streams, st, text);
}

void sched_service_stop(struct sched_server *srv)
{
    tkv_timer_stop(srv->reactor, &srv->patrol_timer);
    tkv_timer_stop(srv->reactor, &srv->flush_timer);
    while (srv->streams)
        hb_unlink(srv, srv->streams);
}
