/* libtinykv: the C client of tinykv. Region routing through the scheduler
 * (region cache, leader following, retries with bounded exponential backoff
 * under an overall deadline), the Raw API, and Percolator transactions
 * committed by two-phase commit. Standalone mode (no scheduler) talks to one
 * store address and sends no region context.
 *
 * Threading model (read this first). A handle (struct tinykv) belongs to ONE
 * reactor core: create it on that core (tkv_reactor callbacks), call every
 * function on that core, and every callback runs on that core. It holds no
 * locks and never blocks the core. Many operations may be in flight at once
 * (tinykv-bench keeps hundreds per core); a program with several cores makes
 * one handle per core (each has its own connections and caches). A simple
 * blocking program (tinykv-ctl) uses tinykv_run(): it starts one reactor
 * core, makes the handle, runs the caller's function there and returns when
 * that function's chain of callbacks calls tinykv_run_done().
 *
 * Callbacks: an operation that returns 0 calls its callback exactly once,
 * never from inside the starting call; an operation that returns a negative
 * code never calls it. Pointers handed to a callback (values, pairs, error
 * text) are valid until the callback returns.
 *
 * Errors: 0 or a negative code: tinykv's TKV_E* codes (tkv/err.h: e.g.
 * TKV_ETIMEDOUT when the deadline ran out, TKV_ENOTFOUND for a missing key,
 * TKV_EUNIMPL when the server does not implement a method) or the TINYKV_E*
 * codes below. tinykv_retryable() says whether running the same operation (a
 * transaction: the whole transaction) again may succeed.
 */
#ifndef TINYKV_CLIENT_H
#define TINYKV_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"

struct tkv_reactor;
struct tinykv;
struct tinykv_txn;

/* Client-level error codes (below tinykv's server codes). */
#define TINYKV_ECONFLICT -3001     /* write conflict: retry the transaction */
#define TINYKV_EABORTED -3002      /* the transaction was rolled back (lock expired and
                                      resolved by another client): retry it */
/* Outcome unknown: the write may or may not have been applied, now or
 * later. A raw put/delete ends with it when an attempt may have reached the
 * server and then its answer was lost (connection cut after the request was
 * sent, the attempt's deadline passed after sending, the store stopped with
 * the proposal pending -- gRPC UNKNOWN from tinykv-server --, or the server
 * answered some other outcome-unknown status). libtinykv never resends such
 * a write: applied twice, it could land after another client's write of the
 * key. A transaction's commit ends with it when the primary commit's
 * outcome is unknown: the transaction may or may not be committed. Not
 * retryable blindly: read the key (or the transaction's effect) first.
 * Every other error of a put/delete means no attempt was applied (refused
 * at connect, region errors, busy, deadline between attempts). */
#define TINYKV_EUNDETERMINED -3003
#define TINYKV_ETXNDONE -3004      /* the transaction was already committed or rolled back */

struct tinykv_config {
    /* Route through the scheduler at this address ("host:port", or a
     * comma-separated list; http:// prefixes are accepted). NULL: standalone. */
    const char *pd_addrs;
    /* Standalone mode: the store address ("host:port"). Ignored with pd_addrs. */
    const char *store_addr;
    /* Overall deadline of one operation, retries and backoff included
     * (a transaction's commit counts as one operation). 0 = 10 s. */
    uint64_t op_timeout_ms;
    /* Deadline of one RPC attempt. 0 = op_timeout_ms. */
    uint64_t rpc_timeout_ms;
    /* Bounded exponential backoff between retries: first wait, cap (ms).
     * 0 = 2 ms and 500 ms. Every wait gets up to 50% random jitter. */
    uint64_t backoff_base_ms, backoff_cap_ms;
    /* At most this many attempts per RPC (0 = 30); the deadline may end it first. */
    uint32_t max_attempts;
    /* Lock TTL for prewrites, ms (0 = 3000). */
    uint64_t lock_ttl_ms;
    /* Standalone timestamp source for transactions (no scheduler, so no
     * TSO): a file mapped into memory and advanced with an atomic
     * compare-and-swap, so timestamps are strictly increasing and unique
     * among all processes of this host that use the same file. NULL =
     * "/dev/shm/tinykv-local-tso". Timestamps are (wall ms << 18) + logical
     * like the scheduler's, so lock TTLs work. */
    const char *local_tso_path;
};

/* Make a handle on reactor r (the current core). Copies cfg (strings
 * included). Connections are opened lazily. Returns 0, or TKV_EINVAL (bad
 * address in cfg), -errno (the local TSO file). */
int tinykv_new(struct tkv_reactor *r, const struct tinykv_config *cfg, struct tinykv **out);

/* Close the handle: every operation still in flight completes with
 * TKV_ESHUTDOWN (synchronously, from inside this call; a callback must not
 * start new operations then), open transactions are abandoned (their locks,
 * if any, expire), connections are closed. kv is invalid on return. Call it
 * from the core's stop hook or fini at the latest, and never from inside one
 * of kv's own callbacks (defer it to a task: tkv_reactor_defer). */
void tinykv_close(struct tinykv *kv);

bool tinykv_standalone(const struct tinykv *kv);

/* Text of rv (TINYKV_E*, or tkv_strerror's). Static. */
const char *tinykv_strerror(int rv);
/* True if retrying may succeed: timeouts, unavailable servers, conflicts,
 * aborted transactions. */
bool tinykv_retryable(int rv);

/* Detail of the last failed operation on kv (e.g. the server's error string,
 * the gRPC status and message). Valid until the next operation fails. */
const char *tinykv_errmsg(const struct tinykv *kv);

/* Counters since the handle was made (tests and benchmarks). */
struct tinykv_stats {
    uint64_t rpcs;              /* store RPC attempts */
    uint64_t retries;           /* store RPC attempts after the first of an operation */
    uint64_t backoffs;          /* waits before a retry */
    uint64_t not_leader;        /* NotLeader answers */
    uint64_t not_leader_hinted; /* of which named a leader we then tried */
    uint64_t epoch_not_match;   /* EpochNotMatch answers */
    uint64_t other_region_errs; /* RegionNotFound, KeyNotInRegion, StoreNotMatch,
                                   StaleCommand, others */
    uint64_t rpc_failures;      /* gRPC status != OK or no connection */
    uint64_t sched_rpcs;        /* scheduler calls (GetRegion, GetStore, ...) */
    uint64_t region_cache_hits, region_cache_misses;
    uint64_t tso_batches, tso_timestamps;
    uint64_t locks_resolved; /* locks of other transactions checked and resolved */
    uint64_t lock_waits;     /* backoffs behind a live lock */
};
void tinykv_get_stats(const struct tinykv *kv, struct tinykv_stats *out);

/* ---- Raw API ---- */

struct tinykv_kv {
    struct tkv_slice key, value;
};

typedef void (*tinykv_done_cb)(void *user, int rv);
/* rv 0: value; TKV_ENOTFOUND: the key has no value (value empty). */
typedef void (*tinykv_get_cb)(void *user, int rv, struct tkv_slice value);
/* rv 0: n pairs in ascending key order. */
typedef void (*tinykv_scan_cb)(void *user, int rv, const struct tinykv_kv *kvs, size_t n);

/* cf: "default" (NULL or "" mean the same), "lock" or "write". key and value
 * are copied. Gets and scans are retried after any failure (they change
 * nothing); a put or delete is retried only while no attempt can have been
 * applied, otherwise it ends with TINYKV_EUNDETERMINED (see above). A write
 * still in flight when tinykv_close ends it with TKV_ESHUTDOWN may or may
 * not have been applied too. */
int tinykv_raw_get(struct tinykv *kv, const char *cf, struct tkv_slice key, tinykv_get_cb cb,
                   void *user);
int tinykv_raw_put(struct tinykv *kv, const char *cf, struct tkv_slice key, struct tkv_slice value,
                   tinykv_done_cb cb, void *user);
int tinykv_raw_delete(struct tinykv *kv, const char *cf, struct tkv_slice key, tinykv_done_cb cb,
                      void *user);
/* Up to limit pairs with key >= start, across region boundaries (a region
 * answers only its own keys; the scan continues in the next region). */
int tinykv_raw_scan(struct tinykv *kv, const char *cf, struct tkv_slice start, uint32_t limit,
                    tinykv_scan_cb cb, void *user);

/* ---- Transactions (Percolator, snapshot isolation) ----
 *
 * begin takes the start timestamp (scheduler TSO; standalone: the local
 * source above). Reads see the snapshot at start_ts plus the transaction's
 * own buffered writes. A read that meets another transaction's lock checks
 * that transaction's primary (KvCheckTxnStatus), resolves the lock if it was
 * committed, rolled back or expired (KvResolveLock), and otherwise waits with
 * backoff. set/delete only buffer. commit: prewrite the primary key's region
 * first, then the other regions' keys; take commit_ts; commit the primary
 * (the commit point); then the secondaries, region by region. A write
 * conflict rolls the prewritten keys back and fails with TINYKV_ECONFLICT.
 * commit and rollback end the transaction: it is freed after their callback
 * returns. Only one operation of a transaction may be in flight at a time
 * (TKV_EBUSY otherwise). */

typedef void (*tinykv_begin_cb)(void *user, int rv, struct tinykv_txn *txn);

int tinykv_txn_begin(struct tinykv *kv, tinykv_begin_cb cb, void *user);
uint64_t tinykv_txn_start_ts(const struct tinykv_txn *txn);
/* After a successful commit (valid inside the commit callback). */
uint64_t tinykv_txn_commit_ts(const struct tinykv_txn *txn);
int tinykv_txn_get(struct tinykv_txn *txn, struct tkv_slice key, tinykv_get_cb cb, void *user);
int tinykv_txn_scan(struct tinykv_txn *txn, struct tkv_slice start, uint32_t limit,
                    tinykv_scan_cb cb, void *user);
/* Buffer a write (copies key and value). Returns 0, TKV_EINVAL (empty key),
 * TINYKV_ETXNDONE. */
int tinykv_txn_set(struct tinykv_txn *txn, struct tkv_slice key, struct tkv_slice value);
int tinykv_txn_delete(struct tinykv_txn *txn, struct tkv_slice key);
int tinykv_txn_commit(struct tinykv_txn *txn, tinykv_done_cb cb, void *user);
int tinykv_txn_rollback(struct tinykv_txn *txn, tinykv_done_cb cb, void *user);

/* ---- Blocking use (one reactor core for the caller) ---- */

typedef void (*tinykv_run_fn)(struct tinykv *kv, void *arg);

/* Start a one-core reactor, make a handle from cfg on it, call fn(kv, arg)
 * there, and return once fn's work called tinykv_run_done(kv) (the handle is
 * closed and the core stopped by then). Returns 0, or the error of making
 * the reactor or the handle (fn is then not called). Main thread only. */
int tinykv_run(const struct tinykv_config *cfg, tinykv_run_fn fn, void *arg);
void tinykv_run_done(struct tinykv *kv);

#endif
