/* The scheduler client: finds the scheduler leader (GetMembers on the
 * configured addresses, then the leader's client URL), learns the cluster
 * id, answers region and store lookups (GetRegion, GetStore) into the
 * handle's caches, and hands out timestamps from one Tso stream, batching
 * every waiter of a loop turn into one TsoRequest. In standalone mode only
 * the local timestamp source lives here. Retries use the handle's backoff
 * and every operation's deadline. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client_int.h"
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/pb.h"

enum sched_kind { OP_MEMBERS, OP_GET_REGION, OP_GET_STORE };

struct sched_op {
    struct tinykv *kv;
    enum sched_kind kind;
    uint8_t *key; /* GET_REGION: owned copy */
    size_t key_len;
    uint64_t store_id;
    uint64_t deadline_ns;
    uint32_t attempts;
    bool in_rpc, parked;
    bool follower; /* GET_REGION waiting for another lookup's answer */
    int pending_rv;
    struct client_conn *conn;
    struct tkv_timer timer;
    client_region_cb region_cb;
    client_store_cb store_cb;
    void *user;
    struct sched_op *prev, *next;
};

struct tso_waiter {
    client_tso_cb cb;
    void *user;
    uint64_t deadline_ns;
    struct tso_waiter *next;
};

struct client_sched {
    char **addrs; /* configured scheduler addresses */
    size_t n_addrs, rr;
    char *leader; /* leader's address, once known */
    uint64_t cluster_id;
    bool members_inflight;
    struct sched_op *ops;
    /* TSO */
    struct tso_waiter *queue, **queue_tail; /* not yet asked for */
    struct tso_waiter *batch;               /* asked for in the request in flight */
    uint32_t batch_n;
    struct tkv_rpc_ccall *stream;
    struct client_conn *stream_conn;
    struct tkv_timer tso_timer; /* batch deadline, or the retry/local-serve tick */
    uint32_t tso_failures;
};

static void op_attempt(struct sched_op *op);
static void members_done(struct tinykv *kv, int rv);

static void add_addr(struct client_sched *s, const char *a, size_t n)
{
    while (n && (*a == ' '))
        a++, n--;
    if (n >= 7 && strncmp(a, "http://", 7) == 0)
        a += 7, n -= 7;
    else if (n >= 8 && strncmp(a, "https://", 8) == 0)
        a += 8, n -= 8;
    while (n && (a[n - 1] == '/' || a[n - 1] == ' '))
        n--;
    if (!n)
        return;
    s->addrs = tkv_xrealloc(s->addrs, (s->n_addrs + 1) * sizeof *s->addrs);
    char *c = tkv_xmalloc(n + 1);
    memcpy(c, a, n);
    c[n] = '\0';
    s->addrs[s->n_addrs++] = c;
}

static void tso_tick(struct tkv_timer *t);

int client_sched_new(struct tinykv *kv)
{
    struct client_sched *s = tkv_xcalloc(1, sizeof *s);
    kv->sched = s;
    s->queue_tail = &s->queue;
    tkv_timer_init(&s->tso_timer, tso_tick, kv);
    if (kv->standalone)
        return 0;
    const char *p = kv->pd_addrs;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        add_addr(s, p, n);
        p += n + (comma ? 1 : 0);
    }
    if (s->n_addrs == 0)
        return TKV_EINVAL;
    return 0;
}

static void op_free(struct sched_op *op)
{
    free(op->key);
    free(op);
}

static void op_unlink(struct client_sched *s, struct sched_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else if (s->ops == op)
        s->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

static void tso_fail_all(struct tinykv *kv, int rv);

void client_sched_fail_all(struct tinykv *kv, int rv)
{
    struct client_sched *s = kv->sched;
    if (!s)
        return;
    tkv_timer_stop(kv->r, &s->tso_timer);
    if (s->stream) {
        tkv_rpc_ccall_cancel(s->stream);
        s->stream = NULL;
    }
    tso_fail_all(kv, rv);
    while (s->ops) {
        struct sched_op *op = s->ops;
        op_unlink(s, op);
        tkv_timer_stop(kv->r, &op->timer);
        if (op->region_cb)
            op->region_cb(op->user, rv, NULL);
        else if (op->store_cb)
            op->store_cb(op->user, rv);
        op_free(op);
    }
}

void client_sched_close(struct tinykv *kv)
{
    struct client_sched *s = kv->sched;
    if (!s)
        return;
    for (size_t i = 0; i < s->n_addrs; i++)
        free(s->addrs[i]);
    free(s->addrs);
    free(s->leader);
    free(s);
    kv->sched = NULL;
}

/* ---- operations ---- */

static void op_finish(struct sched_op *op, int rv, struct client_region *region)
{
    struct client_sched *s = op->kv->sched;
    op_unlink(s, op);
    if (op->region_cb)
        op->region_cb(op->user, rv, region);
    else if (op->store_cb)
        op->store_cb(op->user, rv);
    bool members = op->kind == OP_MEMBERS;
    struct tinykv *kv = op->kv;
    op_free(op);
    if (members) {
        s->members_inflight = false;
        members_done(kv, rv);
    }
}

static void op_timer(struct tkv_timer *t)
{
    struct sched_op *op = t->data;
    if (op->pending_rv) {
        op_finish(op, op->pending_rv, NULL);
        return;
    }
    op_attempt(op);
}

static void op_retry(struct sched_op *op, int why)
{
    struct tinykv *kv = op->kv;
    uint64_t wait = client_backoff_ns(kv, op->attempts ? op->attempts : 1);
    if (op->attempts >= kv->cfg.max_attempts || client_now(kv) + wait >= op->deadline_ns) {
        size_t n = strlen(kv->errmsg);
        snprintf(kv->errmsg + n, sizeof kv->errmsg - n, " (scheduler: gave up after %u attempts)",
                 op->attempts);
        op->pending_rv = op->attempts >= kv->cfg.max_attempts ? why : TKV_ETIMEDOUT;
        tkv_timer_start(kv->r, &op->timer, 0);
        return;
    }
    kv->stats.backoffs++;
    tkv_timer_start(kv->r, &op->timer, wait);
}

static struct sched_op *op_new(struct tinykv *kv, enum sched_kind kind, uint64_t deadline_ns)
{
    struct client_sched *s = kv->sched;
    struct sched_op *op = tkv_xcalloc(1, sizeof *op);
    op->kv = kv;
    op->kind = kind;
    op->deadline_ns = deadline_ns ? deadline_ns : client_deadline(kv);
    tkv_timer_init(&op->timer, op_timer, op);
    op->next = s->ops;
    if (s->ops)
        s->ops->prev = op;
    s->ops = op;
    return op;
}

static void members_done(struct tinykv *kv, int rv)
{
    /* Wake every op parked behind the discovery. */
    for (struct sched_op *op = kv->sched->ops; op; op = op->next)
        if (op->parked) {
            op->parked = false;
            if (rv == 0)
                tkv_timer_start(kv->r, &op->timer, 0);
            else
                op_retry(op, rv);
        }
    struct client_sched *s = kv->sched;
    if (s->queue && !s->stream && !tkv_timer_armed(&s->tso_timer))
        tkv_timer_start(kv->r, &s->tso_timer,
                        rv == 0 ? 0 : client_backoff_ns(kv, ++s->tso_failures));
}

static void need_members(struct tinykv *kv)
{
    struct client_sched *s = kv->sched;
    if (s->members_inflight)
        return;
    s->members_inflight = true;
    struct sched_op *m = op_new(kv, OP_MEMBERS, client_now(kv) + kv->cfg.rpc_timeout_ms * CLIENT_MS);
    m->attempts = kv->cfg.max_attempts - 1; /* one try; the waiters retry */
    tkv_timer_start(kv->r, &m->timer, 0);
}

static void on_sched_reply(void *user, enum tkv_grpc_status status, const char *message,
                           struct tkv_slice resp);

static void op_attempt(struct sched_op *op)
{
    struct tinykv *kv = op->kv;
    struct client_sched *s = kv->sched;
    const char *addr;
    if (op->kind == OP_MEMBERS) {
        addr = s->addrs[s->rr++ % s->n_addrs];
    } else {
        if (op->kind == OP_GET_REGION) {
            /* Concurrent misses (a burst of requests to a new region) share
             * one lookup: wait for the one in flight, then look again. */
            struct client_region *r =
                client_cache_find(&kv->cache, TKV_SLICE(op->key, op->key_len));
            if (r) {
                op_finish(op, 0, r);
                return;
            }
            for (struct sched_op *o = s->ops; o; o = o->next)
                if (o != op && o->kind == OP_GET_REGION && o->in_rpc) {
                    op->follower = true;
                    return;
                }
        }
        if (!s->leader) {
            op->parked = true;
            need_members(kv);
            return;
        }
        addr = s->leader;
    }
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);
    struct tkv_slice enc = {0};
    schedulerpb_RequestHeader hdr = {.cluster_id = s->cluster_id};
    const char *path;
    int rv;
    if (op->kind == OP_MEMBERS) {
        schedulerpb_GetMembersRequest r = {.has_header = true, .header = hdr};
        path = "/schedulerpb.Scheduler/GetMembers";
        rv = tkv_pb_encode_arena(schedulerpb_GetMembersRequest_fields, &r, &arena, 0, &enc);
    } else if (op->kind == OP_GET_REGION) {
        schedulerpb_GetRegionRequest r = {.has_header = true, .header = hdr,
                                          .region_key = TKV_SLICE(op->key, op->key_len)};
        path = "/schedulerpb.Scheduler/GetRegion";
        rv = tkv_pb_encode_arena(schedulerpb_GetRegionRequest_fields, &r, &arena, 0, &enc);
    } else {
        schedulerpb_GetStoreRequest r = {.has_header = true, .header = hdr,
                                         .store_id = op->store_id};
        path = "/schedulerpb.Scheduler/GetStore";
        rv = tkv_pb_encode_arena(schedulerpb_GetStoreRequest_fields, &r, &arena, 0, &enc);
    }
    op->attempts++;
    kv->stats.sched_rpcs++;
    struct client_conn *c = rv == 0 ? client_conn_get(kv, addr) : NULL;
    uint64_t now = client_now(kv), left = op->deadline_ns > now ? op->deadline_ns - now : 1;
    uint64_t tmo = kv->cfg.rpc_timeout_ms * CLIENT_MS;
    if (c)
        rv = tkv_rpc_client_unary(c->cl, path, enc.ptr, enc.len, tmo < left ? tmo : left,
                                  on_sched_reply, op);
    tkv_arena_close(&arena);
    if (!c || rv) {
        client_set_errmsg(kv, "scheduler %s: cannot call %s", addr, path);
        if (c && rv == TKV_ECLOSED)
            client_conn_retire(kv, c);
        if (op->kind != OP_MEMBERS) {
            free(s->leader);
            s->leader = NULL;
        }
        op_retry(op, TKV_EUNAVAILABLE);
        return;
    }
    c->inflight++;
    op->conn = c;
    op->in_rpc = true;
}

/* "http://127.0.0.1:2379" -> "127.0.0.1:2379" */
static char *url_to_addr(struct tkv_slice url)
{
    const char *p = (const char *)url.ptr;
    size_t n = url.len;
    if (n >= 7 && strncmp(p, "http://", 7) == 0)
        p += 7, n -= 7;
    else if (n >= 8 && strncmp(p, "https://", 8) == 0)
        p += 8, n -= 8;
    while (n && p[n - 1] == '/')
        n--;
    if (!n || n > 255)
        return NULL;
    char *a = tkv_xmalloc(n + 1);
    memcpy(a, p, n);
    a[n] = '\0';
    return a;
}

static int header_error(struct tinykv *kv, bool has, const schedulerpb_ResponseHeader *h)
{
    if (has && h->has_error && h->error.type != schedulerpb_ErrorType_OK) {
        client_set_errmsg(kv, "scheduler error %d: %.*s", (int)h->error.type,
                          (int)h->error.message.len, (const char *)h->error.message.ptr);
        return h->error.type == schedulerpb_ErrorType_REGION_NOT_FOUND ? TKV_EREGION
                                                                       : TKV_EUNAVAILABLE;
    }
    return 0;
}

static void on_sched_reply(void *user, enum tkv_grpc_status status, const char *message,
                           struct tkv_slice resp)
{
    struct sched_op *op = user;
    struct tinykv *kv = op->kv;
    struct client_sched *s = kv->sched;
    op->in_rpc = false;
    if (op->conn && !kv->closing)
        client_conn_done(kv, op->conn);
    op->conn = NULL;
    if (op->kind == OP_GET_REGION && !kv->closing)
        for (struct sched_op *o = s->ops; o; o = o->next)
            if (o->follower) {
                o->follower = false;
                tkv_timer_start(kv->r, &o->timer, 0);
            }
    if (kv->closing) {
        /* client_sched_fail_all ends the op. */
        return;
    }
    if (status != TKV_GRPC_OK) {
        client_set_errmsg(kv, "scheduler: %s%s%s", tkv_grpc_status_name((int)status),
                          *message ? ": " : "", message);
        if (op->kind != OP_MEMBERS && (status == TKV_GRPC_UNAVAILABLE ||
                                       status == TKV_GRPC_FAILED_PRECONDITION)) {
            /* Not the leader any more (or another cluster): find it again. */
            free(s->leader);
            s->leader = NULL;
        }
        op_retry(op, TKV_EUNAVAILABLE);
        return;
    }
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);
    int rv = 0;
    struct client_region *region = NULL;
    if (op->kind == OP_MEMBERS) {
        schedulerpb_GetMembersResponse r;
        rv = tkv_pb_decode(schedulerpb_GetMembersResponse_fields, &r, resp.ptr, resp.len, &arena)
                 ? TKV_EPROTO
                 : header_error(kv, r.has_header, &r.header);
        if (rv == 0) {
            s->cluster_id = r.header.cluster_id;
            char *leader = NULL;
            if (r.has_leader && r.leader.client_urls.n)
                leader = url_to_addr(r.leader.client_urls.items[0]);
            if (!leader) /* no leader named: use the member we asked */
                leader = tkv_xstrdup(s->addrs[(s->rr + s->n_addrs - 1) % s->n_addrs]);
            free(s->leader);
            s->leader = leader;
        }
    } else if (op->kind == OP_GET_REGION) {
        schedulerpb_GetRegionResponse r;
        rv = tkv_pb_decode(schedulerpb_GetRegionResponse_fields, &r, resp.ptr, resp.len, &arena)
                 ? TKV_EPROTO
                 : header_error(kv, r.has_header, &r.header);
        if (rv == 0 && (!r.has_region || r.region.id == 0)) {
            client_set_errmsg(kv, "scheduler knows no region for the key yet");
            rv = TKV_EREGION;
        }
        if (rv == 0) {
            region = client_cache_insert(&kv->cache, &r.region, r.has_leader ? &r.leader : NULL);
            if (!client_region_contains(region, TKV_SLICE(op->key, op->key_len))) {
                client_set_errmsg(kv, "scheduler answered region %llu, which does not hold the key",
                                  (unsigned long long)region->id);
                client_cache_drop(&kv->cache, region->id);
                region = NULL;
                rv = TKV_EREGION;
            }
        }
    } else {
        schedulerpb_GetStoreResponse r;
        rv = tkv_pb_decode(schedulerpb_GetStoreResponse_fields, &r, resp.ptr, resp.len, &arena)
                 ? TKV_EPROTO
                 : header_error(kv, r.has_header, &r.header);
        if (rv == 0 && (!r.has_store || r.store.address.len == 0 || r.store.address.len > 255)) {
            client_set_errmsg(kv, "scheduler has no address for store %llu",
                              (unsigned long long)op->store_id);
            rv = TKV_EREGION;
        }
        if (rv == 0)
            client_store_set(kv, op->store_id, r.store.address);
    }
    tkv_arena_close(&arena);
    if (rv == TKV_EPROTO)
        client_set_errmsg(kv, "scheduler: undecodable response");
    if (rv) {
        op_retry(op, rv);
        return;
    }
    op_finish(op, 0, region);
}

void client_sched_get_region(struct tinykv *kv, struct tkv_slice key, uint64_t deadline_ns,
                             client_region_cb cb, void *user)
{
    struct sched_op *op = op_new(kv, OP_GET_REGION, deadline_ns);
    op->key = tkv_xmemdup(key.ptr ? key.ptr : (const uint8_t *)"", key.len);
    op->key_len = key.len;
    op->region_cb = cb;
    op->user = user;
    tkv_timer_start(kv->r, &op->timer, 0); /* never call back synchronously */
}

void client_sched_get_store(struct tinykv *kv, uint64_t store_id, uint64_t deadline_ns,
                            client_store_cb cb, void *user)
{
    struct sched_op *op = op_new(kv, OP_GET_STORE, deadline_ns);
    op->store_id = store_id;
    op->store_cb = cb;
    op->user = user;
    tkv_timer_start(kv->r, &op->timer, 0);
}

/* ---- timestamps ---- */

int client_local_tso_open(struct tinykv *kv)
{
    if (kv->local_tso)
        return 0;
    int fd = open(kv->tso_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_size < 64 && ftruncate(fd, 64) != 0)) {
        int e = -errno;
        close(fd);
        return e;
    }
    void *m = mmap(NULL, 64, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -errno;
    kv->local_tso = m;
    return 0;
}

void client_local_tso_close(struct tinykv *kv)
{
    if (kv->local_tso)
        munmap((void *)kv->local_tso, 64);
    kv->local_tso = NULL;
}

/* Strictly increasing across every process mapping the same file: the
 * larger of (wall ms << 18) and last + 1, installed by compare-and-swap. */
static uint64_t local_tso_next(struct tinykv *kv)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t phys = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) << 18;
    uint64_t old = atomic_load(kv->local_tso), next;
    do {
        next = phys > old ? phys : old + 1;
    } while (!atomic_compare_exchange_weak(kv->local_tso, &old, next));
    return next;
}

static void tso_fail_list(struct tso_waiter *w, int rv)
{
    while (w) {
        struct tso_waiter *n = w->next;
        w->cb(w->user, rv, 0);
        free(w);
        w = n;
    }
}

static void tso_fail_all(struct tinykv *kv, int rv)
{
    struct client_sched *s = kv->sched;
    struct tso_waiter *b = s->batch, *q = s->queue;
    s->batch = NULL;
    s->batch_n = 0;
    s->queue = NULL;
    s->queue_tail = &s->queue;
    tso_fail_list(b, rv);
    tso_fail_list(q, rv);
}

/* Fail the waiters whose deadline passed (after a stream failure). */
static void tso_expire(struct tinykv *kv)
{
    struct client_sched *s = kv->sched;
    uint64_t now = client_now(kv);
    struct tso_waiter **pp = &s->queue, *dead = NULL;
    while (*pp) {
        struct tso_waiter *w = *pp;
        if (w->deadline_ns <= now) {
            *pp = w->next;
            w->next = dead;
            dead = w;
        } else {
            pp = &w->next;
        }
    }
    s->queue_tail = &s->queue;
    while (*s->queue_tail)
        s->queue_tail = &(*s->queue_tail)->next;
    tso_fail_list(dead, TKV_ETIMEDOUT);
}

/* Put the batch in flight back at the head of the queue. */
static void tso_requeue_batch(struct client_sched *s)
{
    if (!s->batch)
        return;
    struct tso_waiter *last = s->batch;
    while (last->next)
        last = last->next;
    last->next = s->queue;
    if (!s->queue)
        s->queue_tail = &last->next;
    s->queue = s->batch;
    s->batch = NULL;
    s->batch_n = 0;
}

static void tso_stream_failed(struct tinykv *kv, const char *why)
{
    struct client_sched *s = kv->sched;
    client_set_errmsg(kv, "scheduler Tso stream: %s", why);
    s->stream = NULL;
    s->stream_conn = NULL;
    tso_requeue_batch(s);
    s->tso_failures++;
    free(s->leader);
    s->leader = NULL;
    tso_expire(kv);
    if (s->queue)
        tkv_timer_start(kv->r, &s->tso_timer, client_backoff_ns(kv, s->tso_failures));
}

static void tso_send_batch(struct tinykv *kv);

static void on_tso_msg(struct tkv_rpc_ccall *c, void *user, struct tkv_slice msg)
{
    (void)c;
    struct tinykv *kv = user;
    struct client_sched *s = kv->sched;
    schedulerpb_TsoResponse r;
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);
    int rv = tkv_pb_decode(schedulerpb_TsoResponse_fields, &r, msg.ptr, msg.len, &arena);
    tkv_arena_close(&arena);
    bool bad = rv != 0 || !s->batch || header_error(kv, r.has_header, &r.header) != 0 ||
               r.count != s->batch_n || !r.has_timestamp || r.timestamp.physical <= 0 ||
               r.timestamp.logical < (int64_t)r.count || r.timestamp.logical >= (1 << 18);
    if (bad) {
        tkv_rpc_ccall_cancel(s->stream);
        tkv_timer_stop(kv->r, &s->tso_timer);
        tso_stream_failed(kv, "bad response");
        return;
    }
    tkv_timer_stop(kv->r, &s->tso_timer);
    s->tso_failures = 0;
    uint64_t last = ((uint64_t)r.timestamp.physical << 18) + (uint64_t)r.timestamp.logical;
    uint64_t first = last - r.count + 1;
    struct tso_waiter *w = s->batch;
    s->batch = NULL;
    s->batch_n = 0;
    kv->stats.tso_batches++;
    for (uint64_t i = 0; w; i++) {
        struct tso_waiter *n = w->next;
        kv->stats.tso_timestamps++;
        w->cb(w->user, 0, first + i);
        free(w);
        w = n;
    }
    if (s->queue && s->stream)
        tso_send_batch(kv);
}

static void on_tso_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status status,
                        const char *message)
{
    (void)c;
    struct tinykv *kv = user;
    kv->sched->stream = NULL;
    if (kv->closing)
        return;
    char why[256];
    snprintf(why, sizeof why, "%s%s%s", tkv_grpc_status_name((int)status), *message ? ": " : "",
             message);
    kv->sched->stream = NULL;
    tkv_timer_stop(kv->r, &kv->sched->tso_timer);
    tso_stream_failed(kv, why);
}

static void tso_send_batch(struct tinykv *kv)
{
    struct client_sched *s = kv->sched;
    if (s->batch || !s->queue)
        return;
    s->batch = s->queue;
    s->queue = NULL;
    s->queue_tail = &s->queue;
    s->batch_n = 0;
    for (struct tso_waiter *w = s->batch; w; w = w->next)
        s->batch_n++;
    schedulerpb_TsoRequest r = {.has_header = true,
                                .header = {.cluster_id = s->cluster_id},
                                .count = s->batch_n};
    uint8_t buf[64];
    size_t len = 0;
    int rv = tkv_pb_encode(schedulerpb_TsoRequest_fields, &r, buf, sizeof buf, &len);
    if (rv == 0)
        rv = tkv_rpc_ccall_send(s->stream, buf, len);
    if (rv) {
        tkv_rpc_ccall_cancel(s->stream);
        tso_stream_failed(kv, "send failed");
        return;
    }
    tkv_timer_start(kv->r, &s->tso_timer, kv->cfg.rpc_timeout_ms * CLIENT_MS);
}

static const struct tkv_rpc_stream_cbs tso_cbs = {.on_message = on_tso_msg,
                                                  .on_done = on_tso_done};

/* The TSO timer: serve local timestamps, (re)open the stream, or time out
 * the batch in flight. */
static void tso_tick(struct tkv_timer *t)
{
    struct tinykv *kv = t->data;
    struct client_sched *s = kv->sched;
    if (kv->standalone) {
        struct tso_waiter *w = s->queue;
        s->queue = NULL;
        s->queue_tail = &s->queue;
        while (w) {
            struct tso_waiter *n = w->next;
            kv->stats.tso_timestamps++;
            w->cb(w->user, 0, local_tso_next(kv));
            free(w);
            w = n;
        }
        return;
    }
    if (s->stream && s->batch) { /* the batch timed out */
        tkv_rpc_ccall_cancel(s->stream);
        tso_stream_failed(kv, "no answer before the RPC deadline");
        return;
    }
    tso_expire(kv);
    if (!s->queue)
        return;
    if (!s->stream) {
        if (!s->leader) {
            need_members(kv); /* members_done re-arms this timer */
            return;
        }
        struct client_conn *c = client_conn_get(kv, s->leader);
        if (!c || tkv_rpc_client_start(c->cl, "/schedulerpb.Scheduler/Tso", 0, &tso_cbs, kv,
                                       &s->stream) != 0) {
            s->stream = NULL;
            tso_stream_failed(kv, "cannot open the stream");
            return;
        }
        s->stream_conn = c;
    }
    tso_send_batch(kv);
}

void client_tso(struct tinykv *kv, uint64_t deadline_ns, client_tso_cb cb, void *user)
{
    struct client_sched *s = kv->sched;
    struct tso_waiter *w = tkv_xcalloc(1, sizeof *w);
    w->cb = cb;
    w->user = user;
    w->deadline_ns = deadline_ns ? deadline_ns : client_deadline(kv);
    *s->queue_tail = w;
    s->queue_tail = &w->next;
    /* Waiters of this loop turn share one request (next turn). */
    if (!s->batch && !tkv_timer_armed(&s->tso_timer))
        tkv_timer_start(kv->r, &s->tso_timer, 0);
}
