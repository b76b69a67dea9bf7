/* libtinykv internals shared by the files of src/client. Everything here
 * belongs to the handle's core (see include/tinykv/client.h). */
#ifndef TKV_CLIENT_INT_H
#define TKV_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errorpb.pb.h"
#include "kvrpcpb.pb.h"
#include "metapb.pb.h"
#include "schedulerpb.pb.h"
#include "tinykv/client.h"
#include "tkv/arena.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

#define CLIENT_MS 1000000ull

/* ---- region cache (client_cache.c) ---- */

/* One cached region: its range, epoch, peers and the peer we believe leads. */
struct client_region {
    uint64_t id;
    uint8_t *start, *end; /* owned; end_len 0 = +infinity */
    size_t start_len, end_len;
    uint64_t conf_ver, version;
    metapb_Peer *peers; /* owned */
    size_t n_peers;
    metapb_Peer leader; /* id 0 = unknown */
};

/* Regions sorted by start key, never overlapping. */
struct client_region_cache {
    struct client_region **regions;
    size_t n, cap;
};

void client_cache_init(struct client_region_cache *c);
void client_cache_free(struct client_region_cache *c);
/* The cached region holding key, or NULL. */
struct client_region *client_cache_find(struct client_region_cache *c, struct tkv_slice key);
struct client_region *client_cache_find_id(struct client_region_cache *c, uint64_t id);
/* Insert a copy of r (leader may be NULL); every cached region overlapping
 * it is dropped (it is newer by construction: it comes from the scheduler or
 * from a store's EpochNotMatch). Returns the cached copy. */
struct client_region *client_cache_insert(struct client_region_cache *c, const metapb_Region *r,
                                          const metapb_Peer *leader);
void client_cache_drop(struct client_region_cache *c, uint64_t region_id);
/* True if key lies in [start, end) of r. */
bool client_region_contains(const struct client_region *r, struct tkv_slice key);

/* ---- connections (client_core.c) ---- */

struct client_conn {
    char *addr; /* "host:port", owned */
    char host[256];
    uint16_t port;
    struct tkv_rpc_client *cl;
    uint32_t inflight;
    struct client_conn *next;
};

/* ---- the handle ---- */

struct client_req;
struct client_sched;

struct client_store_addr {
    uint64_t store_id;
    char *addr;
};

struct tinykv {
    struct tkv_reactor *r;
    struct tinykv_config cfg; /* strings point at our copies below */
    char *pd_addrs, *store_addr, *tso_path;
    bool standalone, closing;
    struct client_conn *conns;   /* live connections by address */
    struct client_conn *retired; /* replaced, waiting for their calls to end */
    bool sweep_queued;
    struct client_region_cache cache;
    struct client_store_addr *stores;
    size_t n_stores, cap_stores;
    struct client_sched *sched; /* scheduler client; in standalone mode only the local TSO */
    _Atomic uint64_t *local_tso; /* standalone timestamp word (mmap) */
    struct client_req *reqs; /* live requests (doubly linked) */
    struct tinykv_txn *txns; /* open transactions */
    struct tinykv_stats stats;
    uint64_t rng;
    char errmsg[512];
    /* tinykv_run */
    bool run_mode;
    struct tkv_reactor_group *run_group;
};

void client_set_errmsg(struct tinykv *kv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t client_rand(struct tinykv *kv);
/* The wait before attempt n (n >= 1), with jitter. */
uint64_t client_backoff_ns(struct tinykv *kv, uint32_t n);
/* A usable connection to addr (made or replaced as needed), or NULL. */
struct client_conn *client_conn_get(struct tinykv *kv, const char *addr);
void client_conn_done(struct tinykv *kv, struct client_conn *c);
/* Drop the connection to addr (it failed): new calls get a fresh one. */
void client_conn_retire(struct tinykv *kv, struct client_conn *c);
/* Known address of a store, or NULL. */
const char *client_store_addr(struct tinykv *kv, uint64_t store_id);
void client_store_set(struct tinykv *kv, uint64_t store_id, struct tkv_slice addr);
void client_store_forget(struct tinykv *kv, uint64_t store_id);

/* ---- routed store requests with retries (client_core.c) ---- */

/* What a finished request reports. On 0, resp is the decoded response
 * (in the request's arena, valid during the callback). Batch requests
 * (keys of one region) end with TKV_EEPOCH on a region error that may have
 * moved their keys, after updating the cache, so the owner regroups. */
typedef void (*client_req_cb)(struct client_req *q, int rv, void *resp);

struct client_req {
    struct tinykv *kv;
    const char *path;
    const pb_msgdesc_t *req_fields, *resp_fields;
    void *req;     /* request struct in arena; context filled per attempt */
    void *resp;    /* response struct in arena */
    size_t resp_size;
    struct tkv_arena arena; /* request, response, keys: freed with the request */
    struct tkv_slice route_key; /* locates the region (encoded form for txn keys) */
    bool batch;
    /* Not idempotent (RawPut, RawDelete): never sent again once an attempt
     * may have reached the server; such an attempt ends the request with
     * TINYKV_EUNDETERMINED. Everything else (reads, Percolator commands)
     * is retried. */
    bool write_once;
    enum tkv_rpc_reach reach; /* how far the current attempt got */
    uint64_t region_id; /* the region of the current attempt */
    /* End key of that region (arena copy; region_end_len 0 = +infinity, or
     * standalone): where a scan continues. */
    uint8_t *region_end;
    size_t region_end_len;
    uint64_t deadline_ns;
    uint32_t attempts;
    bool in_rpc;
    int pending_rv; /* a failure parked for the next loop turn */
    struct client_conn *conn;
    struct tkv_timer timer;
    uint8_t *resp_bytes; /* copy of the last response */
    client_req_cb cb;
    void *user;
    struct client_req *prev, *next;
};

/* A new request in its own arena; req_size bytes of zeroed request struct
 * at q->req. deadline_ns absolute (reactor clock); 0 = op timeout from now. */
struct client_req *client_req_new(struct tinykv *kv, const char *path,
                                  const pb_msgdesc_t *req_fields, size_t req_size,
                                  const pb_msgdesc_t *resp_fields, size_t resp_size,
                                  uint64_t deadline_ns, client_req_cb cb, void *user);
/* Start (route_key set by the caller). Never calls cb synchronously. */
void client_req_start(struct client_req *q);
void client_req_free(struct client_req *q);
uint64_t client_now(struct tinykv *kv);
uint64_t client_deadline(struct tinykv *kv);

/* ---- scheduler client (client_sched.c) ---- */

typedef void (*client_region_cb)(void *user, int rv, struct client_region *region);
typedef void (*client_store_cb)(void *user, int rv);
typedef void (*client_tso_cb)(void *user, int rv, uint64_t ts);

int client_sched_new(struct tinykv *kv);
void client_sched_close(struct tinykv *kv);
/* The region of key (from the scheduler; cached on success). */
void client_sched_get_region(struct tinykv *kv, struct tkv_slice key, uint64_t deadline_ns,
                             client_region_cb cb, void *user);
/* Learn a store's address (cached on success). */
void client_sched_get_store(struct tinykv *kv, uint64_t store_id, uint64_t deadline_ns,
                            client_store_cb cb, void *user);
/* A timestamp: TSO stream, or the local source in standalone mode. Never
 * calls cb synchronously. */
void client_tso(struct tinykv *kv, uint64_t deadline_ns, client_tso_cb cb, void *user);
int client_local_tso_open(struct tinykv *kv);
void client_local_tso_close(struct tinykv *kv);
void client_sched_fail_all(struct tinykv *kv, int rv);

/* ---- transactions (client_txn.c) ---- */
void client_txn_close_all(struct tinykv *kv);

#endif
