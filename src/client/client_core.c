/* libtinykv core: the handle, the connection pool (one HTTP/2 connection per
 * store address), and the routed request with its retry loop: locate the
 * region (cache, else the scheduler), find the leader's address, send with
 * the region context, and on a region error update the cache and retry
 * (NotLeader with a hint: at once to the hinted leader; EpochNotMatch: from
 * the current regions; others: after a bounded exponential backoff), all
 * under the operation's deadline and an attempt cap. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "tkv/err.h"
#include "tkv/hostport.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/pb.h"

/* Every kvrpcpb request starts with the context, every response with the
 * region error (same members, same order): one routing path for all. */
struct req_prefix {
    bool has_context;
    kvrpcpb_Context context;
};
struct resp_prefix {
    bool has_region_error;
    errorpb_Error region_error;
};
_Static_assert(offsetof(kvrpcpb_RawGetRequest, context) == offsetof(struct req_prefix, context),
               "request layout");
_Static_assert(offsetof(kvrpcpb_PrewriteRequest, context) == offsetof(struct req_prefix, context),
               "request layout");
_Static_assert(offsetof(kvrpcpb_RawGetResponse, region_error) ==
                   offsetof(struct resp_prefix, region_error),
               "response layout");
_Static_assert(offsetof(kvrpcpb_PrewriteResponse, region_error) ==
                   offsetof(struct resp_prefix, region_error),
               "response layout");

uint64_t client_now(struct tinykv *kv)
{
    return tkv_now_ns(kv->r);
}

uint64_t client_deadline(struct tinykv *kv)
{
    return client_now(kv) + kv->cfg.op_timeout_ms * CLIENT_MS;
}

void client_set_errmsg(struct tinykv *kv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv->errmsg, sizeof kv->errmsg, fmt, ap);
    va_end(ap);
}

const char *tinykv_errmsg(const struct tinykv *kv)
{
    return kv->errmsg;
}

uint64_t client_rand(struct tinykv *kv)
{
    /* xorshift64*: jitter only. */
    uint64_t x = kv->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    kv->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t client_backoff_ns(struct tinykv *kv, uint32_t n)
{
    uint64_t base = kv->cfg.backoff_base_ms * CLIENT_MS, cap = kv->cfg.backoff_cap_ms * CLIENT_MS;
    uint64_t d = base;
    for (uint32_t i = 1; i < n && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    /* Jitter: a random part of up to half, so retrying clients spread out. */
    return d / 2 + client_rand(kv) % (d / 2 + 1);
}

const char *tinykv_strerror(int rv)
{
    switch (rv) {
    case TINYKV_ECONFLICT:
        return "write conflict (retry the transaction)";
    case TINYKV_EABORTED:
        return "transaction rolled back by another client (retry the transaction)";
    case TINYKV_EUNDETERMINED:
        return "outcome unknown (the write or commit may or may not have been applied)";
    case TINYKV_ETXNDONE:
        return "transaction already committed or rolled back";
    default:
        return tkv_strerror(rv);
    }
}

bool tinykv_retryable(int rv)
{
    switch (rv) {
    case TINYKV_ECONFLICT:
    case TINYKV_EABORTED:
    case TKV_ETIMEDOUT:
    case TKV_EUNAVAILABLE:
    case TKV_ENOTLEADER:
    case TKV_EEPOCH:
    case TKV_EBUSY:
    case TKV_ESTALE:
    case TKV_EREGION:
    case TKV_ECLOSED:
        return true;
    default:
        return false;
    }
}

void tinykv_get_stats(const struct tinykv *kv, struct tinykv_stats *out)
{
    *out = kv->stats;
}

bool tinykv_standalone(const struct tinykv *kv)
{
    return kv->standalone;
}

/* ---- store addresses ---- */

const char *client_store_addr(struct tinykv *kv, uint64_t store_id)
{
    for (size_t i = 0; i < kv->n_stores; i++)
        if (kv->stores[i].store_id == store_id)
            return kv->stores[i].addr;
    return NULL;
}

void client_store_set(struct tinykv *kv, uint64_t store_id, struct tkv_slice addr)
{
    char *a = tkv_xmalloc(addr.len + 1);
    memcpy(a, addr.ptr, addr.len);
    a[addr.len] = '\0';
    for (size_t i = 0; i < kv->n_stores; i++)
        if (kv->stores[i].store_id == store_id) {
            free(kv->stores[i].addr);
            kv->stores[i].addr = a;
            return;
        }
    if (kv->n_stores == kv->cap_stores) {
        kv->cap_stores = kv->cap_stores ? kv->cap_stores * 2 : 8;
        kv->stores = tkv_xrealloc(kv->stores, kv->cap_stores * sizeof *kv->stores);
    }
    kv->stores[kv->n_stores++] = (struct client_store_addr){.store_id = store_id, .addr = a};
}

void client_store_forget(struct tinykv *kv, uint64_t store_id)
{
    for (size_t i = 0; i < kv->n_stores; i++)
        if (kv->stores[i].store_id == store_id) {
            free(kv->stores[i].addr);
            kv->stores[i] = kv->stores[--kv->n_stores];
            return;
        }
}

/* ---- connections ---- */

static void sweep_retired(struct tkv_timer *t);

static struct tkv_timer *sweep_timer(struct tinykv *kv);

struct client_conn *client_conn_get(struct tinykv *kv, const char *addr)
{
    struct client_conn *c;
    for (c = kv->conns; c; c = c->next)
        if (strcmp(c->addr, addr) == 0)
            break;
    if (c && c->cl && tkv_rpc_client_usable(c->cl))
        return c;
    if (c)
        client_conn_retire(kv, c); /* dead or GOAWAY: a fresh one below */
    c = tkv_xcalloc(1, sizeof *c);
    c->addr = tkv_xstrdup(addr);
    if (tkv_hostport_split(addr, "127.0.0.1", c->host, sizeof c->host, &c->port) != 0 ||
        c->port == 0 || tkv_rpc_client_connect(kv->r, c->host, c->port, NULL, &c->cl) != 0) {
        client_set_errmsg(kv, "cannot connect to %s", addr);
        free(c->addr);
        free(c);
        return NULL;
    }
    c->next = kv->conns;
    kv->conns = c;
    return c;
}

void client_conn_done(struct tinykv *kv, struct client_conn *c)
{
    c->inflight--;
    if (c->inflight == 0 && !kv->closing) {
        for (struct client_conn *x = kv->retired; x; x = x->next)
            if (x == c) {
                struct tkv_timer *t = sweep_timer(kv);
                if (!tkv_timer_armed(t))
                    tkv_timer_start(kv->r, t, 0); /* not inside the client's callback */
                break;
            }
    }
}

void client_conn_retire(struct tinykv *kv, struct client_conn *c)
{
    struct client_conn **pp = &kv->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (!*pp)
        return; /* already retired */
    *pp = c->next;
    c->next = kv->retired;
    kv->retired = c;
    struct tkv_timer *t = sweep_timer(kv);
    if (!tkv_timer_armed(t))
        tkv_timer_start(kv->r, t, 0);
}

/* The sweep timer lives in a small static-free box hung off the handle. */
struct kv_timers {
    struct tkv_timer sweep;
};

static struct kv_timers *timers_of(struct tinykv *kv);

static struct tkv_timer *sweep_timer(struct tinykv *kv)
{
    return &timers_of(kv)->sweep;
}

static void sweep_retired(struct tkv_timer *t)
{
    struct tinykv *kv = t->data;
    struct client_conn **pp = &kv->retired;
    while (*pp) {
        struct client_conn *c = *pp;
        if (c->inflight == 0) {
            *pp = c->next;
            if (c->cl)
                tkv_rpc_client_close(c->cl);
            free(c->addr);
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

/* ---- the handle ---- */

struct tinykv_box {
    struct tinykv kv;
    struct kv_timers timers;
};

static struct kv_timers *timers_of(struct tinykv *kv)
{
    return &TKV_CONTAINER_OF(kv, struct tinykv_box, kv)->timers;
}

int tinykv_new(struct tkv_reactor *r, const struct tinykv_config *cfg, struct tinykv **out)
{
    struct tinykv_box *box = tkv_xcalloc(1, sizeof *box);
    struct tinykv *kv = &box->kv;
    kv->r = r;
    if (cfg)
        kv->cfg = *cfg;
    if (!kv->cfg.op_timeout_ms)
        kv->cfg.op_timeout_ms = 10000;
    if (!kv->cfg.rpc_timeout_ms)
        kv->cfg.rpc_timeout_ms = kv->cfg.op_timeout_ms;
    if (!kv->cfg.backoff_base_ms)
        kv->cfg.backoff_base_ms = 2;
    if (!kv->cfg.backoff_cap_ms)
        kv->cfg.backoff_cap_ms = 500;
    if (kv->cfg.backoff_cap_ms < kv->cfg.backoff_base_ms)
        kv->cfg.backoff_cap_ms = kv->cfg.backoff_base_ms;
    if (!kv->cfg.max_attempts)
        kv->cfg.max_attempts = 30;
    if (!kv->cfg.lock_ttl_ms)
        kv->cfg.lock_ttl_ms = 3000;
    kv->pd_addrs = cfg && cfg->pd_addrs && *cfg->pd_addrs ? tkv_xstrdup(cfg->pd_addrs) : NULL;
    kv->store_addr = cfg && cfg->store_addr ? tkv_xstrdup(cfg->store_addr) : NULL;
    kv->tso_path = tkv_xstrdup(cfg && cfg->local_tso_path ? cfg->local_tso_path
                                                          : "/dev/shm/tinykv-local-tso");
    kv->cfg.pd_addrs = kv->pd_addrs;
    kv->cfg.store_addr = kv->store_addr;
    kv->cfg.local_tso_path = kv->tso_path;
    kv->standalone = kv->pd_addrs == NULL;
    kv->rng = (uint64_t)(uintptr_t)kv ^ tkv_now_ns(r) ^ 0x9E3779B97F4A7C15ull;
    if (!kv->rng)
        kv->rng = 1;
    client_cache_init(&kv->cache);
    tkv_timer_init(&box->timers.sweep, sweep_retired, kv);
    int rv = 0;
    if (kv->standalone) {
        char host[256];
        uint16_t port;
        if (!kv->store_addr ||
            tkv_hostport_split(kv->store_addr, "127.0.0.1", host, sizeof host, &port) != 0 ||
            port == 0)
            rv = TKV_EINVAL;
    }
    if (rv == 0)
        rv = client_sched_new(kv);
    if (rv) {
        tinykv_close(kv);
        return rv;
    }
    *out = kv;
    return 0;
}

static void req_finish(struct client_req *q, int rv, void *resp);

void tinykv_close(struct tinykv *kv)
{
    kv->closing = true;
    tkv_timer_stop(kv->r, sweep_timer(kv));
    /* Closing a client cancels its calls synchronously: their requests end
     * with TKV_ESHUTDOWN through on_reply. */
    while (kv->conns || kv->retired) {
        struct client_conn *c = kv->conns ? kv->conns : kv->retired;
        if (c == kv->conns)
            kv->conns = c->next;
        else
            kv->retired = c->next;
        struct tkv_rpc_client *cl = c->cl;
        c->cl = NULL;
        c->inflight = 0;
        if (cl)
            tkv_rpc_client_close(cl);
        free(c->addr);
        free(c);
    }
    while (kv->reqs) {
        struct client_req *q = kv->reqs;
        tkv_timer_stop(kv->r, &q->timer);
        req_finish(q, TKV_ESHUTDOWN, NULL);
    }
    client_sched_fail_all(kv, TKV_ESHUTDOWN);
    client_txn_close_all(kv);
    client_sched_close(kv);
    client_local_tso_close(kv);
    client_cache_free(&kv->cache);
    for (size_t i = 0; i < kv->n_stores; i++)
        free(kv->stores[i].addr);
    free(kv->stores);
    free(kv->pd_addrs);
    free(kv->store_addr);
    free(kv->tso_path);
    free(TKV_CONTAINER_OF(kv, struct tinykv_box, kv));
}

/* ---- routed requests ---- */

static void req_attempt(struct client_req *q);

struct client_req *client_req_new(struct tinykv *kv, const char *path,
                                  const pb_msgdesc_t *req_fields, size_t req_size,
                                  const pb_msgdesc_t *resp_fields, size_t resp_size,
                                  uint64_t deadline_ns, client_req_cb cb, void *user)
{
    struct client_req *q = tkv_xcalloc(1, sizeof *q);
    q->kv = kv;
    q->path = path;
    q->req_fields = req_fields;
    q->resp_fields = resp_fields;
    q->resp_size = resp_size;
    tkv_arena_init(&q->arena, 0);
    q->req = tkv_arena_calloc(&q->arena, 1, req_size);
    q->deadline_ns = deadline_ns ? deadline_ns : client_deadline(kv);
    q->cb = cb;
    q->user = user;
    q->next = kv->reqs;
    if (kv->reqs)
        kv->reqs->prev = q;
    kv->reqs = q;
    return q;
}

void client_req_free(struct client_req *q)
{
    tkv_arena_close(&q->arena);
    free(q);
}

static void req_unlink(struct client_req *q)
{
    struct tinykv *kv = q->kv;
    if (q->prev)
        q->prev->next = q->next;
    else if (kv->reqs == q)
        kv->reqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void req_finish(struct client_req *q, int rv, void *resp)
{
    req_unlink(q);
    q->cb(q, rv, resp);
    client_req_free(q);
}

static void on_timer(struct tkv_timer *t)
{
    struct client_req *q = t->data;
    if (q->pending_rv) { /* a failure parked for the next turn */
        req_finish(q, q->pending_rv, NULL);
        return;
    }
    req_attempt(q);
}

/* End the request with rv on the next loop turn (never inside the call that
 * started it). */
static void req_fail_later(struct client_req *q, int rv)
{
    if (q->kv->closing) {
        req_finish(q, rv, NULL);
        return;
    }
    q->pending_rv = rv;
    tkv_timer_start(q->kv->r, &q->timer, 0);
}

void client_req_start(struct client_req *q)
{
    tkv_timer_init(&q->timer, on_timer, q);
    req_attempt(q);
}

/* Retry after a backoff, or fail if the deadline or the attempt cap
 * would be passed. */
static void req_retry(struct client_req *q, int why, bool backoff)
{
    struct tinykv *kv = q->kv;
    if (kv->closing) {
        req_finish(q, TKV_ESHUTDOWN, NULL);
        return;
    }
    if (q->attempts >= kv->cfg.max_attempts) {
        size_t n = strlen(kv->errmsg);
        snprintf(kv->errmsg + n, sizeof kv->errmsg - n, " (gave up after %u attempts)",
                 q->attempts);
        req_finish(q, why, NULL);
        return;
    }
    uint64_t now = client_now(kv);
    uint64_t wait = backoff ? client_backoff_ns(kv, q->attempts) : 0;
    if (now + wait >= q->deadline_ns) {
        size_t n = strlen(kv->errmsg);
        snprintf(kv->errmsg + n, sizeof kv->errmsg - n, " (deadline exceeded after %u attempts)",
                 q->attempts);
        req_finish(q, TKV_ETIMEDOUT, NULL);
        return;
    }
    if (backoff)
        kv->stats.backoffs++;
    tkv_timer_start(kv->r, &q->timer, wait);
}

static void on_reply(void *user, enum tkv_grpc_status status, const char *message,
                     struct tkv_slice resp);

static void req_send(struct client_req *q, const char *addr, const struct client_region *region)
{
    struct tinykv *kv = q->kv;
    struct req_prefix *p = q->req;
    if (region) {
        p->has_context = true;
        p->context = (kvrpcpb_Context){
            .region_id = region->id,
            .has_region_epoch = true,
            .region_epoch = {.conf_ver = region->conf_ver, .version = region->version},
            .has_peer = true,
            .peer = region->leader.id ? region->leader
                                      : (region->n_peers ? region->peers[0] : region->leader),
        };
        q->region_id = region->id;
        q->region_end = tkv_arena_memdup(&q->arena, region->end, region->end_len);
        q->region_end_len = region->end_len;
    } else {
        p->has_context = false;
        q->region_id = 0;
        q->region_end_len = 0;
    }
    struct tkv_slice enc;
    if (tkv_pb_encode_arena(q->req_fields, q->req, &q->arena, 0, &enc) != 0) {
        client_set_errmsg(kv, "cannot encode %s", q->path);
        req_fail_later(q, TKV_EINVAL);
        return;
    }
    q->attempts++;
    kv->stats.rpcs++;
    if (q->attempts > 1)
        kv->stats.retries++;
    struct client_conn *c = client_conn_get(kv, addr);
    if (!c) {
        kv->stats.rpc_failures++;
        req_retry(q, TKV_EUNAVAILABLE, true);
        return;
    }
    uint64_t now = client_now(kv), left = q->deadline_ns > now ? q->deadline_ns - now : 1;
    uint64_t tmo = kv->cfg.rpc_timeout_ms * CLIENT_MS;
    if (tmo > left)
        tmo = left;
    q->reach = TKV_RPC_NOT_SENT;
    int rv = tkv_rpc_client_unary_reach(c->cl, q->path, enc.ptr, enc.len, tmo, on_reply, q,
                                        &q->reach);
    if (rv) {
        client_set_errmsg(kv, "%s to %s: %s", q->path, addr, tkv_strerror(rv));
        kv->stats.rpc_failures++;
        if (rv == TKV_ECLOSED)
            client_conn_retire(kv, c);
        if (rv == TKV_ETOOBIG) {
            req_fail_later(q, rv);
            return;
        }
        req_retry(q, TKV_EUNAVAILABLE, true);
        return;
    }
    c->inflight++;
    q->conn = c;
    q->in_rpc = true;
}

static void on_region(void *user, int rv, struct client_region *region);
static void on_store(void *user, int rv);

static void req_attempt(struct client_req *q)
{
    struct tinykv *kv = q->kv;
    if (kv->closing) {
        req_fail_later(q, TKV_ESHUTDOWN);
        return;
    }
    if (kv->standalone) {
        req_send(q, kv->store_addr, NULL);
        return;
    }
    struct client_region *region = client_cache_find(&kv->cache, q->route_key);
    if (!region) {
        kv->stats.region_cache_misses++;
        client_sched_get_region(kv, q->route_key, q->deadline_ns, on_region, q);
        return;
    }
    kv->stats.region_cache_hits++;
    uint64_t store = region->leader.id   ? region->leader.store_id
                     : region->n_peers   ? region->peers[0].store_id
                                         : 0;
    if (!store) {
        client_cache_drop(&kv->cache, region->id);
        client_set_errmsg(kv, "region %llu has no peers", (unsigned long long)region->id);
        req_retry(q, TKV_EREGION, true);
        return;
    }
    const char *addr = client_store_addr(kv, store);
    if (!addr) {
        client_sched_get_store(kv, store, q->deadline_ns, on_store, q);
        return;
    }
    req_send(q, addr, region);
}

static void on_region(void *user, int rv, struct client_region *region)
{
    struct client_req *q = user;
    (void)region;
    if (rv) {
        if (rv == TKV_ESHUTDOWN || rv == TKV_ETIMEDOUT || q->kv->closing)
            req_finish(q, rv, NULL);
        else
            req_retry(q, rv, true);
        return;
    }
    req_attempt(q);
}

static void on_store(void *user, int rv)
{
    struct client_req *q = user;
    if (rv) {
        if (rv == TKV_ESHUTDOWN || rv == TKV_ETIMEDOUT || q->kv->closing)
            req_finish(q, rv, NULL);
        else
            req_retry(q, rv, true);
        return;
    }
    req_attempt(q);
}

/* A region error: update what we know, then retry (or hand a batch back). */
static void req_region_error(struct client_req *q, const errorpb_Error *e)
{
    struct tinykv *kv = q->kv;
    struct client_region_cache *cache = &kv->cache;
    if (kv->standalone) {
        kv->stats.other_region_errs++;
        client_set_errmsg(kv, "region error: %.*s", (int)e->message.len,
                          (const char *)e->message.ptr);
        req_retry(q, TKV_ESTALE, true);
        return;
    }
    if (e->has_not_leader) {
        kv->stats.not_leader++;
        struct client_region *r = client_cache_find_id(cache, q->region_id);
        const metapb_Peer *hint = e->not_leader.has_leader ? &e->not_leader.leader : NULL;
        client_set_errmsg(kv, "region %llu: not leader", (unsigned long long)q->region_id);
        if (r && hint && hint->id && hint->id != r->leader.id) {
            kv->stats.not_leader_hinted++;
            r->leader = *hint;
            req_retry(q, TKV_ENOTLEADER, false);
            return;
        }
        /* No (new) hint: an election may be on; ask the scheduler later. */
        client_cache_drop(cache, q->region_id);
        req_retry(q, TKV_ENOTLEADER, true);
        return;
    }
    if (e->has_epoch_not_match) {
        kv->stats.epoch_not_match++;
        client_set_errmsg(kv, "region %llu: epoch not match", (unsigned long long)q->region_id);
        const errorpb_EpochNotMatch *m = &e->epoch_not_match;
        if (m->current_regions.n == 0)
            client_cache_drop(cache, q->region_id);
        for (size_t i = 0; i < m->current_regions.n; i++)
            client_cache_insert(cache, &m->current_regions.items[i], NULL);
        if (q->batch) {
            req_finish(q, TKV_EEPOCH, NULL);
            return;
        }
        req_retry(q, TKV_EEPOCH, m->current_regions.n == 0);
        return;
    }
    kv->stats.other_region_errs++;
    if (e->has_stale_command) {
        client_set_errmsg(kv, "region %llu: stale command", (unsigned long long)q->region_id);
        req_retry(q, TKV_ESTALE, true);
        return;
    }
    if (e->has_store_not_match) {
        client_set_errmsg(kv, "store not match (request store %llu, actual %llu)",
                          (unsigned long long)e->store_not_match.request_store_id,
                          (unsigned long long)e->store_not_match.actual_store_id);
        client_store_forget(kv, e->store_not_match.request_store_id);
    } else if (e->has_region_not_found) {
        client_set_errmsg(kv, "region %llu not found", (unsigned long long)q->region_id);
    } else if (e->has_key_not_in_region) {
        client_set_errmsg(kv, "key not in region %llu", (unsigned long long)q->region_id);
    } else {
        client_set_errmsg(kv, "region %llu: %.*s", (unsigned long long)q->region_id,
                          (int)e->message.len, (const char *)e->message.ptr);
    }
    client_cache_drop(cache, q->region_id);
    if (q->batch) {
        req_finish(q, TKV_EEPOCH, NULL);
        return;
    }
    req_retry(q, e->has_region_not_found ? TKV_EREGION : TKV_EUNAVAILABLE, true);
}

static int grpc_to_err(enum tkv_grpc_status s)
{
    switch (s) {
    case TKV_GRPC_UNIMPLEMENTED:
        return TKV_EUNIMPL;
    case TKV_GRPC_INVALID_ARGUMENT:
    case TKV_GRPC_OUT_OF_RANGE:
        return TKV_EINVAL;
    case TKV_GRPC_RESOURCE_EXHAUSTED:
        return TKV_ETOOBIG;
    default:
        return TKV_EPROTO;
    }
}

/* May the server have applied an attempt that ended with status (not OK)?
 * The rpc layer says how far the request got; a status the server sent
 * itself is a definite refusal only for the codes tinykv-server sends before
 * acting: UNAVAILABLE (ServerIsBusy, not serving yet) and the bad-request
 * codes. Everything else after the request left -- the connection cut, our
 * deadline, the server's deadline while its proposal was in flight, UNKNOWN
 * (tinykv-server: the store stopped with the proposal pending, outcome
 * unknown), INTERNAL -- may have been applied. */
static bool attempt_ambiguous(enum tkv_rpc_reach reach, enum tkv_grpc_status status)
{
    if (reach == TKV_RPC_NOT_SENT)
        return false;
    if (reach == TKV_RPC_SENT)
        return true;
    switch (status) {
    case TKV_GRPC_UNAVAILABLE:
    case TKV_GRPC_UNIMPLEMENTED:
    case TKV_GRPC_INVALID_ARGUMENT:
    case TKV_GRPC_OUT_OF_RANGE:
    case TKV_GRPC_RESOURCE_EXHAUSTED:
        return false;
    default:
        return true;
    }
}

/* A write that may have been applied: end it, never resend it (a second
 * apply could land after another client's write of the key). */
static void req_undetermined(struct client_req *q)
{
    struct tinykv *kv = q->kv;
    size_t n = strlen(kv->errmsg);
    snprintf(kv->errmsg + n, sizeof kv->errmsg - n,
             " (outcome unknown: the write may or may not have been applied; not resent)");
    req_finish(q, TINYKV_EUNDETERMINED, NULL);
}

static void on_reply(void *user, enum tkv_grpc_status status, const char *message,
                     struct tkv_slice resp)
{
    struct client_req *q = user;
    struct tinykv *kv = q->kv;
    q->in_rpc = false;
    if (q->conn) {
        if (!kv->closing)
            client_conn_done(kv, q->conn);
        q->conn = NULL;
    }
    if (kv->closing) {
        req_finish(q, TKV_ESHUTDOWN, NULL);
        return;
    }
    if (status != TKV_GRPC_OK) {
        kv->stats.rpc_failures++;
        client_set_errmsg(kv, "%s: %s%s%s", q->path, tkv_grpc_status_name((int)status),
                          message && *message ? ": " : "", message ? message : "");
        if (q->write_once && attempt_ambiguous(q->reach, status)) {
            if (!kv->standalone && q->region_id)
                client_cache_drop(&kv->cache, q->region_id);
            req_undetermined(q);
            return;
        }
        switch (status) {
        case TKV_GRPC_UNAVAILABLE:
        case TKV_GRPC_CANCELLED:
        case TKV_GRPC_DEADLINE_EXCEEDED:
        case TKV_GRPC_ABORTED:
        case TKV_GRPC_UNKNOWN: /* the server's "outcome unknown": idempotent, so again */
            /* The store may be gone: in cluster mode ask the scheduler again. */
            if (!kv->standalone && q->region_id)
                client_cache_drop(&kv->cache, q->region_id);
            req_retry(q, status == TKV_GRPC_DEADLINE_EXCEEDED ? TKV_ETIMEDOUT : TKV_EUNAVAILABLE,
                      true);
            return;
        default:
            req_finish(q, grpc_to_err(status), NULL);
            return;
        }
    }
    uint8_t *copy = tkv_arena_memdup(&q->arena, resp.ptr, resp.len);
    void *msg = tkv_arena_alloc(&q->arena, q->resp_size);
    const char *why = NULL;
    if (tkv_pb_decode_ex(q->resp_fields, msg, copy, resp.len, &q->arena, &why) != 0) {
        client_set_errmsg(kv, "%s: undecodable response: %s", q->path, why ? why : "?");
        if (q->write_once) { /* an OK status: it was probably applied */
            req_undetermined(q);
            return;
        }
        req_finish(q, TKV_EPROTO, NULL);
        return;
    }
    struct resp_prefix *rp = msg;
    if (rp->has_region_error) {
        req_region_error(q, &rp->region_error);
        return;
    }
    req_finish(q, 0, msg);
}

/* ---- blocking use ---- */

static struct {
    const struct tinykv_config *cfg;
    tinykv_run_fn fn;
    void *arg;
    int rv;
    _Atomic(struct tkv_reactor_group *) group;
    struct tkv_timer stop_timer;
    struct tinykv *kv;
} run;

static void run_stop(struct tkv_timer *t)
{
    struct tkv_reactor_group *g = atomic_load(&run.group);
    if (g)
        tkv_reactor_group_stop(g);
    else
        tkv_timer_start(tkv_reactor_self(), t, 1000000);
}

static void run_close(void *arg)
{
    (void)arg;
    if (run.kv) {
        tinykv_close(run.kv);
        run.kv = NULL;
    }
    tkv_timer_init(&run.stop_timer, run_stop, NULL);
    run_stop(&run.stop_timer);
}

void tinykv_run_done(struct tinykv *kv)
{
    tkv_reactor_defer(kv->r, run_close, NULL);
}

static void run_start(void *arg)
{
    (void)arg;
    run.fn(run.kv, run.arg);
}

static int run_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    int rv = tinykv_new(r, run.cfg, &run.kv);
    if (rv) {
        run.rv = rv;
        return rv;
    }
    run.kv->run_mode = true;
    tkv_reactor_defer(r, run_start, NULL);
    return 0;
}

static void run_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
    if (run.kv) {
        tinykv_close(run.kv);
        run.kv = NULL;
    }
}

int tinykv_run(const struct tinykv_config *cfg, tinykv_run_fn fn, void *arg)
{
    run.cfg = cfg;
    run.fn = fn;
    run.arg = arg;
    run.rv = 0;
    atomic_store(&run.group, NULL);
    struct tkv_reactor_config rcfg = {.n_cores = 1, .pin = false};
    struct tkv_reactor_group *g = NULL;
    int rv = tkv_reactor_group_start(&rcfg, run_init, run_fini, NULL, &g);
    if (rv)
        return run.rv ? run.rv : rv;
    atomic_store(&run.group, g);
    rv = tkv_reactor_group_wait(g);
    return run.rv ? run.rv : rv;
}
