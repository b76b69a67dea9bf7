/* The transactional half of tinykvpb.TinyKv in standalone mode: KvGet and
 * KvScan run on the core that received them; the five writing commands
 * run on ONE core (the txn core, core 0), which owns the node's latch
 * table, so two cores can never interleave commands on the same key. See
 * README.md "Transactions". */
#include <stdio.h>
#include <string.h>

#include "server_private.h"
#include "kvrpcpb.pb.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/metrics.h"
#include "tkv/mem.h"
#include "tkv/pb.h"
#include "tkv/reactor.h"
#include "tkv/txn.h"

enum txn_cmd {
    TXN_PREWRITE,
    TXN_COMMIT,
    TXN_CHECK_TXN_STATUS,
    TXN_BATCH_ROLLBACK,
    TXN_RESOLVE_LOCK,
};

static const char *const cmd_name[] = {"KvPrewrite", "KvCommit", "KvCheckTxnStatus",
                                       "KvBatchRollback", "KvResolveLock"};

/* The cross-core message: allocated and freed by the home core (the one
 * that owns the gRPC call), carried to the txn core and back (STYLE.md 4.6
 * "messages return home"). The txn core fills status/resp; resp is the one
 * buffer it allocates for the home core to free. */
struct txn_call {
    struct server_core *home;
    struct tkv_rpc_call *call; /* NULL once cancelled; home core only */
    enum txn_cmd cmd;
    int status; /* enum tkv_grpc_status */
    char errmsg[200];
    uint8_t *resp;
    size_t resp_len;
    size_t msg_len;
    uint8_t msg[]; /* the request bytes */
};

/* A command's life on the txn core. */
struct txn_job {
    struct txn_call *tc;
    struct server_core *core; /* the txn core */
    struct tkv_arena arena;
    struct tkv_txn_latch_req latch;
    union {
        kvrpcpb_PrewriteRequest prewrite;
        kvrpcpb_CommitRequest commit;
        kvrpcpb_CheckTxnStatusRequest check;
        kvrpcpb_BatchRollbackRequest rollback;
        kvrpcpb_ResolveLockRequest resolve;
    } req;
    struct tkv_slice *resolve_keys;
    size_t n_resolve_keys;
    const pb_msgdesc_t *resp_fields;
    union {
        kvrpcpb_PrewriteResponse prewrite;
        kvrpcpb_CommitResponse commit;
        kvrpcpb_CheckTxnStatusResponse check;
        kvrpcpb_BatchRollbackResponse rollback;
        kvrpcpb_ResolveLockResponse resolve;
    } resp;
    struct txn_job *next;                /* ready queue / flush list */
    struct txn_job *all_prev, *all_next; /* every live job, for shutdown */
};

/* ---- home core side ---- */

static void home_reply(struct txn_call *tc)
{
    if (tc->call) {
        tkv_rpc_call_set_data(tc->call, NULL);
        if (tc->status == TKV_GRPC_OK)
            tkv_rpc_call_reply(tc->call, tc->resp, tc->resp_len);
        else
            tkv_rpc_call_finish(tc->call, tc->status, tc->errmsg);
    }
    tkv_free(tc->resp);
    tkv_free(tc);
}

static void on_home(void *arg)
{
    home_reply(arg);
}

void server_txn_on_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    struct txn_call *tc = tkv_rpc_call_data(call);
    (void)why;
    /* The command goes on (a cancelled write may or may not apply, as with
     * any RPC); only the reply is dropped when it comes home. */
    if (tc)
        tc->call = NULL;
}

/* ---- txn core side ---- */

static void job_free(struct txn_job *job)
{
    struct server_core *c = job->core;
    if (job->all_prev)
        job->all_prev->all_next = job->all_next;
    else
        c->txn_jobs = job->all_next;
    if (job->all_next)
        job->all_next->all_prev = job->all_prev;
    tkv_arena_close(&job->arena);
    tkv_free(job);
}

/* Send the outcome home (or answer at once when home is this core). */
static void job_finish(struct txn_job *job)
{
    struct txn_call *tc = job->tc;
    if (tc->status == TKV_GRPC_OK) {
        struct tkv_slice out;
        if (tkv_pb_encode_arena(job->resp_fields, &job->resp, &job->arena, 0, &out) != 0) {
            tc->status = TKV_GRPC_INTERNAL;
            snprintf(tc->errmsg, sizeof(tc->errmsg), "cannot encode the %s response",
                     cmd_name[tc->cmd]);
        } else {
            tc->resp = tkv_xmalloc(out.len ? out.len : 1);
            memcpy(tc->resp, out.ptr, out.len);
            tc->resp_len = out.len;
        }
    }
    struct server_core *c = job->core;
    job_free(job);
    if (tc->home == c)
        home_reply(tc);
    else
        tkv_reactor_post(c->reactor, tc->home->core, on_home, tc);
}

static void job_fail(struct txn_job *job, int status, const char *msg)
{
    job->tc->status = status;
    snprintf(job->tc->errmsg, sizeof(job->tc->errmsg), "%s: %s", cmd_name[job->tc->cmd], msg);
    job_finish(job);
}

/* The one classification (tkv_err_class, base_err.c), as server_raw.c:
 * class FATAL (a failed fsync, -EIO, an engine panic) stops the node, with
 * one FATAL line (TKV_PANIC logs it). Except TKV_ECORRUPT: here it means an
 * MVCC record that does not decode, and any client can write such bytes
 * into the lock or write CF with RawPut; answering INTERNAL for that key
 * keeps a client from stopping the node. */
static bool txn_fatal(int rv)
{
    return tkv_err_class(rv) == TKV_ERR_FATAL && rv != TKV_ECORRUPT;
}

static void job_engine_error(struct txn_job *job, int rv)
{
    char msg[160];
    if (txn_fatal(rv))
        TKV_PANIC("storage engine failed, stopping: %s: %s", cmd_name[job->tc->cmd],
                  tkv_strerror(rv));
    TKV_LOG_WARN("txn command failed", TKV_LF_STR("op", cmd_name[job->tc->cmd]), TKV_LF_ERR(rv));
    if (rv == TKV_ENOSPACE) { /* not applied: as a refusal (server_disk.c) */
        job_fail(job, TKV_GRPC_RESOURCE_EXHAUSTED, SERVER_DISK_FULL_MSG);
        return;
    }
    snprintf(msg, sizeof(msg), "%s%s", rv == TKV_ECORRUPT ? "MVCC data inconsistent: " : "",
             tkv_strerror(rv));
    job_fail(job, TKV_GRPC_INTERNAL, msg);
}

/* Run the command on a snapshot opened now (the latches are held, so no
 * other command can change these keys before our writes are durable). */
static void job_run(struct txn_job *job)
{
    struct server_core *c = job->core;
    struct tkv_txn_writes w = {0};
    struct tkv_engine_snap *snap = NULL;
    int rv;

    rv = tkv_engine_snap_open(c->session, &snap);
    if (rv == 0) {
        struct tkv_txn_ctx ctx = {.snap = snap, .arena = &job->arena, .region = NULL};
        switch (job->tc->cmd) {
        case TXN_PREWRITE:
            rv = tkv_txn_kv_prewrite(&ctx, &job->req.prewrite, &job->resp.prewrite, &w);
            break;
        case TXN_COMMIT:
            rv = tkv_txn_kv_commit(&ctx, &job->req.commit, &job->resp.commit, &w);
            break;
        case TXN_CHECK_TXN_STATUS:
            rv = tkv_txn_kv_check_txn_status(&ctx, &job->req.check, &job->resp.check, &w);
            break;
        case TXN_BATCH_ROLLBACK:
            rv = tkv_txn_kv_batch_rollback(&ctx, &job->req.rollback, &job->resp.rollback, &w);
            break;
        case TXN_RESOLVE_LOCK:
            rv = tkv_txn_kv_resolve_lock(&ctx, &job->req.resolve, job->resolve_keys,
                                         job->n_resolve_keys, &job->resp.resolve, &w);
            break;
        }
        if (rv == TKV_EINVAL) {
            tkv_engine_snap_close(snap);
            tkv_txn_latches_release(c->latches, &job->latch);
            job_fail(job, TKV_GRPC_INVALID_ARGUMENT, ctx.why ? ctx.why : "invalid argument");
            return;
        }
    }
    tkv_engine_snap_close(snap);
    if (rv == 0 && w.n > 0) {
        /* Into the turn's group-commit batch: answered, and unlatched, by
         * server_flush_writes once the batch is durable. */
        size_t mark_ops = c->batch.n_ops;
        rv = tkv_txn_writes_to_batch(&w, &c->batch);
        if (rv == 0) {
            job->next = NULL;
            *c->txn_flush_tail = job;
            c->txn_flush_tail = &job->next;
            return;
        }
        /* Cannot happen for checked requests (keys and values are within
         * the engine's limits); never leave half a command in the batch. */
        tkv_assert(c->batch.n_ops == mark_ops);
    }
    tkv_txn_latches_release(c->latches, &job->latch);
    if (rv != 0)
        job_engine_error(job, rv);
    else
        job_finish(job);
}

/* Latched jobs resumed by a release run from a deferred task, never inside
 * the release (which may be in the middle of the flush). */
static void run_ready(void *arg)
{
    struct server_core *c = arg;
    struct txn_job *job = c->txn_ready;
    c->txn_ready = NULL;
    c->txn_ready_tail = &c->txn_ready;
    c->txn_ready_scheduled = false;
    while (job) {
        struct txn_job *next = job->next;
        job_run(job);
        job = next;
    }
}

static void on_latched(struct tkv_txn_latch_req *req)
{
    struct txn_job *job = req->data;
    struct server_core *c = job->core;
    job->next = NULL;
    *c->txn_ready_tail = job;
    c->txn_ready_tail = &job->next;
    if (!c->txn_ready_scheduled) {
        c->txn_ready_scheduled = true;
        tkv_reactor_defer(c->reactor, run_ready, c);
    }
}

void server_txn_after_flush(struct server_core *c, int rv)
{
    struct txn_job *job = c->txn_flush;
    c->txn_flush = NULL;
    c->txn_flush_tail = &c->txn_flush;
    while (job) {
        struct txn_job *next = job->next;
        tkv_txn_latches_release(c->latches, &job->latch);
        if (rv == 0)
            job_finish(job);
        else
            job_engine_error(job, rv);
        job = next;
    }
}

static bool decode_req(struct txn_job *job, const pb_msgdesc_t *fields, void *req)
{
    const char *why = NULL;
    struct txn_call *tc = job->tc;
    if (tkv_pb_decode_ex(fields, req, tc->msg, tc->msg_len, &job->arena, &why) == 0)
        return true;
    char text[160];
    snprintf(text, sizeof(text), "cannot decode %s: %s", tkv_pb_msg_name(fields),
             why ? why : "malformed message");
    job_fail(job, TKV_GRPC_INVALID_ARGUMENT, text);
    return false;
}

/* Arrival on the txn core: decode, check, find the keys, latch. */
static void on_txn_core(void *arg)
{
    struct txn_call *tc = arg;
    struct server_core *c = tc->home->txn_core;
    struct txn_job *job = tkv_xcalloc(1, sizeof(*job));
    const char *why = NULL;
    struct tkv_slice *keys = NULL;
    size_t n_keys = 0;
    int rv = 0;

    job->tc = tc;
    job->core = c;
    tkv_arena_init(&job->arena, 0);
    job->all_next = c->txn_jobs;
    if (c->txn_jobs)
        c->txn_jobs->all_prev = job;
    c->txn_jobs = job;
    tc->status = TKV_GRPC_OK;

    switch (tc->cmd) {
    case TXN_PREWRITE:
        job->resp_fields = kvrpcpb_PrewriteResponse_fields;
        if (!decode_req(job, kvrpcpb_PrewriteRequest_fields, &job->req.prewrite))
            return;
        rv = tkv_txn_check_prewrite(&job->req.prewrite, &why);
        n_keys = job->req.prewrite.mutations.n;
        keys = tkv_arena_alloc(&job->arena, (n_keys ? n_keys : 1) * sizeof(*keys));
        for (size_t i = 0; rv == 0 && i < n_keys; i++)
            keys[i] = job->req.prewrite.mutations.items[i].key;
        break;
    case TXN_COMMIT:
        job->resp_fields = kvrpcpb_CommitResponse_fields;
        if (!decode_req(job, kvrpcpb_CommitRequest_fields, &job->req.commit))
            return;
        rv = tkv_txn_check_commit(&job->req.commit, &why);
        keys = job->req.commit.keys.items;
        n_keys = job->req.commit.keys.n;
        break;
    case TXN_CHECK_TXN_STATUS:
        job->resp_fields = kvrpcpb_CheckTxnStatusResponse_fields;
        if (!decode_req(job, kvrpcpb_CheckTxnStatusRequest_fields, &job->req.check))
            return;
        rv = tkv_txn_check_check_txn_status(&job->req.check, &why);
        keys = &job->req.check.primary_key;
        n_keys = 1;
        break;
    case TXN_BATCH_ROLLBACK:
        job->resp_fields = kvrpcpb_BatchRollbackResponse_fields;
        if (!decode_req(job, kvrpcpb_BatchRollbackRequest_fields, &job->req.rollback))
            return;
        rv = tkv_txn_check_rollback(&job->req.rollback, &why);
        keys = job->req.rollback.keys.items;
        n_keys = job->req.rollback.keys.n;
        break;
    case TXN_RESOLVE_LOCK:
        job->resp_fields = kvrpcpb_ResolveLockResponse_fields;
        if (!decode_req(job, kvrpcpb_ResolveLockRequest_fields, &job->req.resolve))
            return;
        rv = tkv_txn_check_resolve_lock(&job->req.resolve, &why);
        if (rv == 0) {
            /* Scan first, then latch (TINYKV-API.md 2.5); the command
             * re-checks each lock under the latch. */
            struct tkv_engine_snap *snap = NULL;
            bool truncated;
            rv = tkv_engine_snap_open(c->session, &snap);
            if (rv == 0)
                rv = tkv_txn_resolve_scan(snap, &job->arena, job->req.resolve.start_version, NULL,
                                          &job->resolve_keys, &job->n_resolve_keys, &truncated);
            tkv_engine_snap_close(snap);
            if (rv != 0) {
                job_engine_error(job, rv);
                return;
            }
            keys = job->resolve_keys;
            n_keys = job->n_resolve_keys;
        }
        break;
    }
    if (rv == TKV_EINVAL) {
        job_fail(job, TKV_GRPC_INVALID_ARGUMENT, why ? why : "invalid argument");
        return;
    }
    tkv_txn_latch_req_init(&job->latch, &job->arena, keys, n_keys);
    job->latch.on_ready = on_latched;
    job->latch.data = job;
    c->n_txn_cmds++;
    if (tkv_txn_latches_acquire(c->latches, &job->latch))
        job_run(job);
    else
        c->n_txn_waits++;
}

/* ---- entry points (home core) ---- */

static void submit(struct tkv_rpc_call *call, struct tkv_slice msg, enum txn_cmd cmd)
{
    struct server_core *home = tkv_rpc_call_method_data(call);
    if (server_disk_full(home->disk)) {
        /* A Kv response has no error string for this (KeyError is per
         * key, region_error would send clients to the scheduler): a gRPC
         * status, as TiKV's DiskFull is not a key error either. */
        if (home->metrics)
            tkv_counter_inc(home->metrics->disk_full_refused);
        tkv_rpc_call_finish(call, TKV_GRPC_RESOURCE_EXHAUSTED, SERVER_DISK_FULL_MSG);
        return;
    }
    struct txn_call *tc = tkv_xcalloc(1, sizeof(*tc) + msg.len);
    tc->home = home;
    tc->call = call;
    tc->cmd = cmd;
    tc->msg_len = msg.len;
    if (msg.len)
        memcpy(tc->msg, msg.ptr, msg.len);
    tkv_rpc_call_set_data(call, tc);
    if (home == home->txn_core)
        on_txn_core(tc);
    else
        tkv_reactor_post(home->reactor, home->txn_core->core, on_txn_core, tc);
}

void server_on_kv_prewrite(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    submit(call, msg, TXN_PREWRITE);
}

void server_on_kv_commit(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    submit(call, msg, TXN_COMMIT);
}

void server_on_kv_check_txn_status(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    submit(call, msg, TXN_CHECK_TXN_STATUS);
}

void server_on_kv_batch_rollback(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    submit(call, msg, TXN_BATCH_ROLLBACK);
}

void server_on_kv_resolve_lock(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    submit(call, msg, TXN_RESOLVE_LOCK);
}

/* ---- reads: on the receiving core, no latches ---- */

static bool read_begin(struct tkv_rpc_call *call, const pb_msgdesc_t *fields, struct tkv_slice msg,
                       void *req, struct server_core **core_out, struct tkv_arena **arena_out)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = &core->arena;
    const char *why = NULL;
    tkv_arena_reset(arena);
    if (tkv_pb_decode_ex(fields, req, msg.ptr, msg.len, arena, &why) != 0) {
        char text[200];
        snprintf(text, sizeof(text), "cannot decode %s: %s", tkv_pb_msg_name(fields),
                 why ? why : "malformed message");
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, text);
        return false;
    }
    *core_out = core;
    *arena_out = arena;
    return true;
}

static void read_end(struct tkv_rpc_call *call, struct tkv_arena *arena, int rv, const char *why,
                     const pb_msgdesc_t *fields, const void *resp, const char *name,
                     size_t max_bytes)
{
    char text[200];
    struct tkv_slice out;
    if (rv == TKV_EINVAL) {
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, why ? why : "invalid argument");
        return;
    }
    if (rv == TKV_ETOOBIG) {
        snprintf(text, sizeof(text), "%s response would exceed %zu bytes; use a smaller limit",
                 name, max_bytes);
        tkv_rpc_call_finish(call, TKV_GRPC_RESOURCE_EXHAUSTED, text);
        return;
    }
    if (txn_fatal(rv))
        TKV_PANIC("storage engine failed, stopping: %s: %s", name, tkv_strerror(rv));
    if (rv != 0) {
        TKV_LOG_WARN("txn read failed", TKV_LF_STR("op", name), TKV_LF_ERR(rv));
        snprintf(text, sizeof(text), "%s: %s%s", name,
                 rv == TKV_ECORRUPT ? "MVCC data inconsistent: " : "", tkv_strerror(rv));
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, text);
        return;
    }
    if (tkv_pb_encode_arena(fields, resp, arena, 0, &out) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "cannot encode the response");
        return;
    }
    tkv_rpc_call_reply(call, out.ptr, out.len);
}

void server_on_kv_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core;
    struct tkv_arena *arena;
    kvrpcpb_GetRequest req;
    kvrpcpb_GetResponse resp = {0};
    struct tkv_engine_snap *snap = NULL;
    int rv;

    if (!read_begin(call, kvrpcpb_GetRequest_fields, msg, &req, &core, &arena))
        return;
    struct tkv_txn_ctx ctx = {.arena = arena};
    rv = tkv_engine_snap_open(core->session, &snap);
    if (rv == 0) {
        ctx.snap = snap;
        rv = tkv_txn_kv_get(&ctx, &req, &resp);
    }
    tkv_engine_snap_close(snap);
    read_end(call, arena, rv, ctx.why, kvrpcpb_GetResponse_fields, &resp, "KvGet", 0);
}

void server_on_kv_scan(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core;
    struct tkv_arena *arena;
    kvrpcpb_ScanRequest req;
    kvrpcpb_ScanResponse resp = {0};
    struct tkv_engine_snap *snap = NULL;
    int rv;

    if (!read_begin(call, kvrpcpb_ScanRequest_fields, msg, &req, &core, &arena))
        return;
    struct tkv_txn_ctx ctx = {.arena = arena};
    rv = tkv_engine_snap_open(core->session, &snap);
    if (rv == 0) {
        ctx.snap = snap;
        rv = tkv_txn_kv_scan(&ctx, &req, core->max_send_msg, &resp);
    }
    tkv_engine_snap_close(snap);
    read_end(call, arena, rv, ctx.why, kvrpcpb_ScanResponse_fields, &resp, "KvScan",
             core->max_send_msg);
}

/* ---- per-core set-up and teardown ---- */

void server_txn_core_init(struct server_core *c, struct server_core *txn_core,
                          struct tkv_reactor *r)
{
    c->reactor = r;
    c->txn_core = txn_core;
    c->txn_flush = NULL;
    c->txn_flush_tail = &c->txn_flush;
    c->txn_ready = NULL;
    c->txn_ready_tail = &c->txn_ready;
    if (c == txn_core)
        c->latches = tkv_txn_latches_new();
}

/* After the loop ended: whatever is still parked or unflushed will never be
 * answered (the rpc layer has ended those calls); free the jobs. A
 * txn_call of another core stays that core's memory (its core may still be
 * cancelling the call): it is left behind, as is a message posted home to
 * a core that already left -- only when the node stops mid-command. Writes
 * already in the batch are still applied by the final flush. */
void server_txn_core_fini(struct server_core *c)
{
    while (c->txn_jobs) {
        struct txn_job *job = c->txn_jobs;
        struct txn_call *tc = job->tc;
        job_free(job);
        if (tc->home == c) {
            tkv_free(tc->resp);
            tkv_free(tc);
        }
    }
    c->txn_ready = NULL;
    c->txn_flush = NULL;
    if (c->latches) {
        if (c->n_txn_cmds)
            TKV_LOG_INFO("txn core stopped", TKV_LF_U64("core", c->core),
                         TKV_LF_U64("txn_commands", c->n_txn_cmds),
                         TKV_LF_U64("latch_waits", c->n_txn_waits));
        tkv_txn_latches_free(c->latches);
        c->latches = NULL;
    }
}
