/* The tinykvpb.TinyKv service of the standalone server: RawGet, RawPut,
 * RawDelete and RawScan straight on the engine (TinyKV project 1, no region
 * checks), the Kv* commands from server_txn.c, and UNIMPLEMENTED for
 * Coprocessor, Raft and Snapshot. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "server_private.h"
#include "server_cluster.h"
#include "kvrpcpb.pb.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/pb.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/reactor.h"
#include "tkv/metrics.h"
#include <time.h>
#include <unistd.h>
#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
#include <fiu.h>
#endif

/* Errors a client caused (unknown cf, key or value too large) go in the
 * response's error string, as TinyKV's raw handlers do; engine failures are
 * a gRPC INTERNAL status; a fatal engine error stops the node, since a
 * store that cannot trust its disk must not limp on (STYLE.md 4.5). */
static bool is_client_error(int rv)
{
    return tkv_err_class(rv) == TKV_ERR_CLIENT; /* the one classification, base_err.c */
}

/* FATAL class (corruption, failed fsync, -EIO): stop. tkv_panic logs the
 * one FATAL line and aborts. */
static void check_fatal(int rv, const char *what)
{
    if (tkv_err_class(rv) == TKV_ERR_FATAL)
        TKV_PANIC("storage engine failed, stopping: %s: %s", what, tkv_strerror(rv));
}

static void finish_engine_error(struct tkv_rpc_call *call, int rv, const char *what)
{
    char msg[160];
    check_fatal(rv, what);
    TKV_LOG_WARN("engine call failed", TKV_LF_STR("op", what), TKV_LF_ERR(rv));
    snprintf(msg, sizeof(msg), "%s: storage engine: %s", what, tkv_strerror(rv));
    tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, msg);
}

/* Every handler finishes synchronously and tkv_rpc_call_reply copies the
 * response, so one arena per core, reset per call, holds decode arrays and
 * response bytes. */
static struct tkv_arena *call_arena(struct server_core *core)
{
    tkv_arena_reset(&core->arena);
    return &core->arena;
}

/* Encode resp and reply; INTERNAL if it cannot be encoded. */
static void reply(struct tkv_rpc_call *call, struct tkv_arena *arena, const pb_msgdesc_t *fields,
                  const void *resp)
{
    struct tkv_slice out;
    if (tkv_pb_encode_arena(fields, resp, arena, 0, &out) != 0) {
        tkv_rpc_call_finish(call, TKV_GRPC_INTERNAL, "cannot encode the response");
        return;
    }
    tkv_rpc_call_reply(call, out.ptr, out.len);
}

/* Decode or answer INVALID_ARGUMENT; returns false when the call is done. */
static bool decode(struct tkv_rpc_call *call, struct tkv_arena *arena, const pb_msgdesc_t *fields,
                   struct tkv_slice msg, void *req)
{
    const char *why = NULL;
    if (tkv_pb_decode_ex(fields, req, msg.ptr, msg.len, arena, &why) == 0)
        return true;
    char text[200];
    snprintf(text, sizeof(text), "cannot decode %s: %s", tkv_pb_msg_name(fields),
             why ? why : "malformed message");
    TKV_LOG_DEBUG("bad request", TKV_LF_STR("path", tkv_rpc_call_path(call)),
                  TKV_LF_STR("why", why ? why : ""));
    tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, text);
    return false;
}

/* name, quoted-printable: bytes outside printable ASCII as \xNN, at most
 * 64 input bytes (then "..."), so "lock\0x" is not reported as "lock". */
static void escape_name(char *out, size_t cap, struct tkv_slice name)
{
    size_t o = 0, n = TKV_MIN(name.len, 64);
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        uint8_t ch = name.ptr[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
    }
    if (name.len > n && o + 4 < cap)
        o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = 0;
}

/* The error string of a client error, naming the cf when it is unknown. */
static struct tkv_slice client_error(struct tkv_arena *arena, int rv, struct tkv_slice cf)
{
    if (rv == TKV_ECF) {
        char name[300];
        escape_name(name, sizeof(name), cf);
        return tkv_pb_printf(arena, "unknown column family \"%s\" (want default, lock or write)",
                             name);
    }
    return tkv_pb_printf(arena, "%s", tkv_strerror(rv));
}

static void on_raw_get(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = call_arena(core);
    kvrpcpb_RawGetRequest req;
    kvrpcpb_RawGetResponse resp = {0};
    struct tkv_slice value = {0};
    enum tkv_cf cf;
    int rv;

    if (!decode(call, arena, kvrpcpb_RawGetRequest_fields, msg, &req))
        return;
    rv = tkv_engine_cf_from_name(req.cf, &cf);
    if (rv == 0)
        rv = tkv_engine_get(core->session, cf, req.key, &value);
    if (rv == 0) {
        resp.value = value; /* valid until the next engine call: encoded below */
    } else if (rv == TKV_ENOTFOUND) {
        resp.not_found = true;
    } else if (is_client_error(rv)) {
        resp.error = client_error(arena, rv, req.cf);
    } else {
        finish_engine_error(call, rv, "RawGet");
        return;
    }
    reply(call, arena, kvrpcpb_RawGetResponse_fields, &resp);
}

/* RawPut and RawDelete: group commit. A write is checked and appended to
 * the core's batch when its request arrives; the before-sleep hook
 * (server_flush_writes) applies the whole batch with ONE tkv_engine_write
 * per loop turn -- one fsync in sync mode for every write that arrived in
 * the turn -- and only then answers those calls. So a write is still
 * acknowledged only once durable, and the core no longer pays an fsync per
 * request. Client errors (unknown cf, too large) are answered at once and
 * leave the batch unchanged. */
static void queue_write(struct server_core *core, struct tkv_rpc_call *call)
{
    if (core->n_pending == core->cap_pending) {
        core->cap_pending = core->cap_pending ? 2 * core->cap_pending : 64;
        core->pending = tkv_xrealloc(core->pending, core->cap_pending * sizeof(*core->pending));
    }
    core->pending[core->n_pending++] = call;
}

static void on_write_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    (void)why;
    /* The write stays in the batch (a cancelled write may or may not be
     * applied, as with any RPC); only its reply is dropped. */
    for (size_t i = 0; i < core->n_pending; i++)
        if (core->pending[i] == call)
            core->pending[i] = NULL;
}

void server_flush_writes(void *arg)
{
    struct server_core *core = arg;
    int rv;

#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
    /* Test builds: a core stuck in a blocking call for failinfo ms (default
     * 3 s) every turn, for the watchdog and /readyz tests
     * (tests/integration/server/test_status.py). */
    fiu_do_on("server/stall_core",
              usleep((useconds_t)((uintptr_t)fiu_failinfo() ? (uintptr_t)fiu_failinfo() : 3000) *
                     1000));
#endif
    if (core->n_pending == 0 && core->batch.n_ops == 0)
        return;
    const struct server_metrics *m = core->metrics;
    size_t n_ops = core->batch.n_ops, bytes = core->batch.data_bytes;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rv = 1;
#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
    /* Test builds: the engine answers ENOSPC without panicking (the batch
     * is not applied), as WiredTiger may when a commit's own eviction
     * cannot write (tests/integration/server/test_disk_full.py). */
    fiu_do_on("server/engine_enospc", rv = TKV_ENOSPACE);
    /* Test builds: the engine fails the batch with -EIO (class FATAL: the
     * node stops, for raw and transactional writes alike; test_disk_full.py). */
    fiu_do_on("server/engine_eio", rv = -EIO);
#endif
    if (rv == 1)
        rv = tkv_engine_write(core->session, &core->batch);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    tkv_engine_batch_clear(&core->batch);
    if (core->txn_flush)
        server_txn_after_flush(core, rv);
    if (m) {
        tkv_counter_inc(m->write_batches);
        tkv_histogram_observe(m->batch_ops, (double)n_ops);
        tkv_histogram_observe(m->batch_bytes, (double)bytes);
        tkv_histogram_observe(m->commit_duration, (double)(t1.tv_sec - t0.tv_sec) +
                                                      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        if (rv)
            tkv_counter_inc(m->write_errors);
    }
    if (rv == 0)
        server_disk_account(core->disk, n_ops, bytes);
    else if (rv == TKV_ENOSPACE)
        server_disk_note_enospc(core->disk);
    core->n_batches++;
    core->n_batched_writes += core->n_pending;
    for (size_t i = 0; i < core->n_pending; i++) {
        struct tkv_rpc_call *call = core->pending[i];
        if (!call)
            continue;
        if (rv == 0) { /* Raw{Put,Delete}Response with no error: zero bytes */
            tkv_rpc_call_reply(call, "", 0);
        } else if (rv == TKV_ENOSPACE) {
            /* ENOSPC that slipped past the threshold, and WiredTiger
             * could go on (no panic): not applied, said as for a refusal. */
            kvrpcpb_RawPutResponse resp = {.error = TKV_SLICE_STR(SERVER_DISK_FULL_MSG)};
            reply(call, &core->arena, kvrpcpb_RawPutResponse_fields, &resp);
        } else
            finish_engine_error(call, rv, "RawPut/RawDelete");
    }
    core->n_pending = 0;
}

static void raw_write(struct tkv_rpc_call *call, struct tkv_slice cf_name, struct tkv_slice key,
                      const struct tkv_slice *value)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = &core->arena;
    enum tkv_cf cf;
    int rv;

    rv = tkv_engine_cf_from_name(cf_name, &cf);
    if (rv == 0 && server_disk_full(core->disk)) {
        /* Refused before the engine or its log runs out of space; the
         * error string, as TinyKV's raw handlers report non-region
         * errors (README.md "Disk full"). */
        if (core->metrics)
            tkv_counter_inc(core->metrics->disk_full_refused);
        kvrpcpb_RawPutResponse resp = {.error = TKV_SLICE_STR(SERVER_DISK_FULL_MSG)};
        reply(call, arena, kvrpcpb_RawPutResponse_fields, &resp);
        return;
    }
    if (rv == 0)
        rv = value ? tkv_engine_batch_put(&core->batch, cf, key, *value)
                   : tkv_engine_batch_delete(&core->batch, cf, key);
    if (rv == 0) {
        queue_write(core, call);
        return;
    }
    if (!is_client_error(rv)) {
        finish_engine_error(call, rv, value ? "RawPut" : "RawDelete");
        return;
    }
    /* Same layout for both responses: error is field 2. */
    kvrpcpb_RawPutResponse resp = {.error = client_error(arena, rv, cf_name)};
    reply(call, arena, kvrpcpb_RawPutResponse_fields, &resp);
}

static void on_raw_put(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = call_arena(core);
    kvrpcpb_RawPutRequest req;

    if (decode(call, arena, kvrpcpb_RawPutRequest_fields, msg, &req))
        raw_write(call, req.cf, req.key, &req.value);
}

static void on_raw_delete(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = call_arena(core);
    kvrpcpb_RawDeleteRequest req;

    if (decode(call, arena, kvrpcpb_RawDeleteRequest_fields, msg, &req))
        raw_write(call, req.cf, req.key, NULL);
}

/* ---- RawScan: chunked, so one core keeps serving everyone ----
 *
 * A scan reads from ONE engine snapshot (TestIterWithRawDelete1), but in
 * chunks of at most SCAN_CHUNK_ROWS rows / SCAN_CHUNK_BYTES bytes: a first,
 * smaller chunk (SCAN_FIRST_*) runs inside the request's callback (a short
 * scan answers at once, and 64 pipelined requests per turn stay cheap);
 * a longer one becomes a job on the core's scan queue, which a deferred
 * task serves round-robin, at most SCAN_TURN_ROWS / SCAN_TURN_BYTES per loop
 * turn, so other connections are read and answered between chunks
 * (issue 13 item 4: pipelined full-range scans stalled a core for 24 s).
 * A job whose stream was reset or cancelled (on_cancel) is abandoned at its
 * next chunk; at shutdown every queued job is answered UNAVAILABLE at once
 * instead of being finished. */
#define SCAN_FIRST_ROWS 64u /* the chunk run inside the request's callback */
#define SCAN_FIRST_BYTES (64u * 1024)
#define SCAN_CHUNK_ROWS 512u
#define SCAN_CHUNK_BYTES (512u * 1024)
#define SCAN_TURN_ROWS 2048u
#define SCAN_TURN_BYTES (2u * 1024 * 1024)
/* Response bytes all scans of a core may hold while they are built; over
 * it only the oldest scan goes on (it finishes, hands its bytes to the
 * connection's quota, and the next one continues). */
#define SCAN_MEM_BUDGET (64u * 1024 * 1024)

struct scan_job {
    struct server_core *core;
    struct tkv_rpc_call *call; /* NULL once cancelled: drop at the next chunk */
    struct tkv_engine_snap *snap;
    struct tkv_engine_iter *it;
    uint32_t limit;
    size_t bytes; /* encoded size of resp.kvs so far */
    struct tkv_arena arena; /* keys and values of resp */
    kvrpcpb_RawScanResponse resp;
    struct scan_job *next;
};

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Exact bytes one KvPair (key and value set) adds to a RawScanResponse:
 * field 2 tag + length + the pair's own fields 2 (key) and 3 (value). */
static size_t pair_size(size_t key_len, size_t value_len)
{
    size_t inner = 1 + varint_len(key_len) + key_len + 1 + varint_len(value_len) + value_len;
    return 1 + varint_len(inner) + inner;
}

static void scan_job_free(struct scan_job *job)
{
    job->core->scan_bytes -= job->bytes;
    tkv_engine_iter_close(job->it);
    tkv_engine_snap_close(job->snap);
    tkv_arena_close(&job->arena);
    tkv_free(job);
}

/* Outcome of one chunk. */
enum scan_step { SCAN_MORE, SCAN_DONE };

/* Answer the call and free the job. */
static void scan_reply(struct scan_job *job)
{
    struct tkv_rpc_call *call = job->call;
    tkv_rpc_call_set_data(call, NULL);
    reply(call, &job->arena, kvrpcpb_RawScanResponse_fields, &job->resp);
    scan_job_free(job);
}

static void scan_fail(struct scan_job *job, int rv)
{
    struct tkv_rpc_call *call = job->call;
    tkv_rpc_call_set_data(call, NULL);
    scan_job_free(job);
    finish_engine_error(call, rv, "RawScan");
}

/* Collect up to max_rows more pairs (about max_bytes). A response stays
 * within max_send_msg: when the next pair would not fit, the scan ends
 * with the pairs it has (fewer than limit; the client continues after the
 * last key), so a value at the message limit is still readable by a scan
 * that starts at it. Only a first pair that alone exceeds the limit (the
 * limit was lowered after it was stored) is an error. Finishes the call
 * and frees the job unless it returns SCAN_MORE. */
static enum scan_step scan_chunk(struct scan_job *job, uint32_t max_rows, size_t max_bytes,
                                 uint32_t *rows_out, size_t *bytes_out)
{
    struct server_core *core = job->core;
    uint32_t rows = 0;
    size_t bytes = 0;
    int rv;

    /* A client that does not read its responses: give up before building
     * one its connection could not hold anyway. */
    if (tkv_rpc_call_conn_mem(job->call) + job->bytes > tkv_rpc_call_conn_mem_quota(job->call)) {
        struct tkv_rpc_call *call = job->call;
        tkv_rpc_call_set_data(call, NULL);
        scan_job_free(job);
        tkv_rpc_call_finish(call, TKV_GRPC_RESOURCE_EXHAUSTED,
                            "RawScan: the connection's memory quota is full of unsent responses "
                            "(the client does not read them)");
        return SCAN_DONE;
    }
    while (job->resp.kvs.n < job->limit && tkv_engine_iter_valid(job->it)) {
        if (rows >= max_rows || bytes >= max_bytes) {
            *rows_out += rows;
            *bytes_out += bytes;
            return SCAN_MORE;
        }
        struct tkv_slice k = tkv_engine_iter_key(job->it), v = tkv_engine_iter_value(job->it);
        size_t sz = pair_size(k.len, v.len);
        if (job->bytes + sz > core->max_send_msg) {
            if (job->resp.kvs.n > 0)
                break; /* fewer pairs: the next one would not fit */
            char ebuf[200];
            struct tkv_rpc_call *call = job->call;
            snprintf(ebuf, sizeof(ebuf),
                     "RawScan: the first pair (%zu-byte key, %zu-byte value) alone exceeds "
                     "max-grpc-send-msg-len (%llu bytes)",
                     k.len, v.len, (unsigned long long)core->max_send_msg);
            tkv_rpc_call_set_data(call, NULL);
            scan_job_free(job);
            tkv_rpc_call_finish(call, TKV_GRPC_RESOURCE_EXHAUSTED, ebuf);
            return SCAN_DONE;
        }
        job->bytes += sz;
        core->scan_bytes += sz;
        bytes += k.len + v.len;
        rows++;
        kvrpcpb_KvPair *kv = TKV_PB_PUSH(&job->arena, &job->resp.kvs);
        kv->key = tkv_pb_dup(&job->arena, k.ptr, k.len);
        kv->value = tkv_pb_dup(&job->arena, v.ptr, v.len);
        rv = tkv_engine_iter_next(job->it);
        if (rv != 0) {
            scan_fail(job, rv);
            return SCAN_DONE;
        }
    }
    *rows_out += rows;
    *bytes_out += bytes;
    scan_reply(job);
    return SCAN_DONE;
}

static void scan_pump(void *arg);

static void scan_enqueue(struct server_core *core, struct scan_job *job)
{
    job->next = NULL;
    if (core->scan_tail)
        core->scan_tail->next = job;
    else
        core->scan_head = job;
    core->scan_tail = job;
    core->n_scans_queued++;
    if (!core->scan_pump_queued) {
        core->scan_pump_queued = true;
        tkv_reactor_defer(core->reactor, scan_pump, core);
    }
}

static struct scan_job *scan_dequeue(struct server_core *core)
{
    struct scan_job *job = core->scan_head;
    if (!job)
        return NULL;
    core->scan_head = job->next;
    if (!core->scan_head)
        core->scan_tail = NULL;
    core->n_scans_queued--;
    return job;
}

/* Deferred task: one chunk per queued scan, round-robin, within the turn's
 * budget; re-deferred while jobs remain (a deferred task yields to I/O and
 * timers, so the other connections of the core are served in between). */
static void scan_pump(void *arg)
{
    struct server_core *core = arg;
    uint32_t rows = 0;
    size_t bytes = 0;
    struct scan_job *job;

    core->scan_pump_queued = false;
    while (rows < SCAN_TURN_ROWS && bytes < SCAN_TURN_BYTES && (job = scan_dequeue(core))) {
        if (!job->call) { /* reset or cancelled: abandon the rest */
            core->n_scans_abandoned++;
            scan_job_free(job);
            continue;
        }
        if (scan_chunk(job, SCAN_CHUNK_ROWS, SCAN_CHUNK_BYTES, &rows, &bytes) == SCAN_MORE) {
            if (core->scan_bytes >= SCAN_MEM_BUDGET) {
                /* over the memory budget: the oldest scan goes on alone */
                job->next = core->scan_head;
                core->scan_head = job;
                if (!core->scan_tail)
                    core->scan_tail = job;
            } else {
                job->next = NULL;
                if (core->scan_tail)
                    core->scan_tail->next = job;
                else
                    core->scan_head = job;
                core->scan_tail = job;
            }
            core->n_scans_queued++;
        }
    }
    if (core->scan_head && !core->scan_pump_queued) {
        core->scan_pump_queued = true;
        tkv_reactor_defer(core->reactor, scan_pump, core);
    }
}

static void on_scan_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    struct scan_job *job = tkv_rpc_call_data(call);
    (void)why;
    if (job)
        job->call = NULL; /* the pump drops it at its next chunk */
}

void server_abandon_scans(struct server_core *core)
{
    struct scan_job *job;
    while ((job = scan_dequeue(core))) {
        struct tkv_rpc_call *call = job->call;
        scan_job_free(job);
        if (call) {
            tkv_rpc_call_set_data(call, NULL);
            tkv_rpc_call_finish(call, TKV_GRPC_UNAVAILABLE,
                                "RawScan abandoned: the server is shutting down");
        }
        core->n_scans_abandoned++;
    }
}

static void on_raw_scan(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct server_core *core = tkv_rpc_call_method_data(call);
    struct tkv_arena *arena = call_arena(core);
    kvrpcpb_RawScanRequest req;
    kvrpcpb_RawScanResponse resp = {0};
    enum tkv_cf cf;
    int rv;

    if (!decode(call, arena, kvrpcpb_RawScanRequest_fields, msg, &req))
        return;
    rv = tkv_engine_cf_from_name(req.cf, &cf);
    if (rv != 0 || req.limit == 0) { /* limit 0 returns nothing (TINYKV-API.md 2.3) */
        if (rv != 0)
            resp.error = client_error(arena, rv, req.cf);
        reply(call, arena, kvrpcpb_RawScanResponse_fields, &resp);
        return;
    }
    if (core->stopping) {
        tkv_rpc_call_finish(call, TKV_GRPC_UNAVAILABLE, "the server is shutting down");
        return;
    }
    struct scan_job *job = tkv_xcalloc(1, sizeof(*job));
    job->core = core;
    job->call = call;
    job->limit = req.limit;
    tkv_arena_init(&job->arena, 0);
    rv = tkv_engine_snap_open(core->session, &job->snap);
    if (rv == 0)
        rv = tkv_engine_iter_open(job->snap, cf, req.start_key, TKV_SLICE(NULL, 0), &job->it);
    if (rv == 0)
        rv = tkv_engine_iter_seek(job->it, req.start_key);
    if (rv != 0) {
        scan_fail(job, rv);
        return;
    }
    tkv_rpc_call_set_data(call, job);
    uint32_t rows = 0;
    size_t bytes = 0;
    /* First chunk now (short scans answer at once) unless the core's scans
     * already hold their memory budget: then it waits its turn. */
    if (core->scan_bytes >= SCAN_MEM_BUDGET ||
        scan_chunk(job, SCAN_FIRST_ROWS, SCAN_FIRST_BYTES, &rows, &bytes) == SCAN_MORE)
        scan_enqueue(core, job);
}

/* Methods of tinykvpb.TinyKv that need Raft or a coprocessor: not built
 * yet, and they say so instead of pretending. */
static void unimplemented(struct tkv_rpc_call *call)
{
    char msg[200];
    snprintf(msg, sizeof(msg),
             "%s is not built yet: this tinykv-server serves the standalone Raw and "
             "transactional (Kv*) APIs only",
             tkv_rpc_call_path(call));
    tkv_rpc_call_finish(call, TKV_GRPC_UNIMPLEMENTED, msg);
}

static void on_unimplemented_message(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    (void)msg;
    unimplemented(call);
}

static const struct {
    const char *path;
    enum tkv_rpc_kind kind;
    void (*on_message)(struct tkv_rpc_call *call, struct tkv_slice msg);
} method_table[SERVER_N_METHODS] = {
    {"/tinykvpb.TinyKv/RawGet", TKV_RPC_UNARY, on_raw_get},
    {"/tinykvpb.TinyKv/RawPut", TKV_RPC_UNARY, on_raw_put},
    {"/tinykvpb.TinyKv/RawDelete", TKV_RPC_UNARY, on_raw_delete},
    {"/tinykvpb.TinyKv/RawScan", TKV_RPC_UNARY, on_raw_scan},
    {"/tinykvpb.TinyKv/KvGet", TKV_RPC_UNARY, server_on_kv_get},
    {"/tinykvpb.TinyKv/KvScan", TKV_RPC_UNARY, server_on_kv_scan},
    {"/tinykvpb.TinyKv/KvPrewrite", TKV_RPC_UNARY, server_on_kv_prewrite},
    {"/tinykvpb.TinyKv/KvCommit", TKV_RPC_UNARY, server_on_kv_commit},
    {"/tinykvpb.TinyKv/KvCheckTxnStatus", TKV_RPC_UNARY, server_on_kv_check_txn_status},
    {"/tinykvpb.TinyKv/KvBatchRollback", TKV_RPC_UNARY, server_on_kv_batch_rollback},
    {"/tinykvpb.TinyKv/KvResolveLock", TKV_RPC_UNARY, server_on_kv_resolve_lock},
    {"/tinykvpb.TinyKv/Coprocessor", TKV_RPC_UNARY, NULL},
    {"/tinykvpb.TinyKv/Raft", TKV_RPC_CLIENT_STREAM, NULL},
    {"/tinykvpb.TinyKv/Snapshot", TKV_RPC_CLIENT_STREAM, NULL},
};

/* Writes wait for the turn's group commit (raw) or for the txn core (Kv
 * writes); the rest finish synchronously inside on_message. */
static void (*on_cancel_of(void (*on_message)(struct tkv_rpc_call *,
                                              struct tkv_slice)))(struct tkv_rpc_call *,
                                                                  enum tkv_grpc_status)
{
    if (on_message == on_raw_put || on_message == on_raw_delete)
        return on_write_cancel;
    if (on_message == on_raw_scan)
        return on_scan_cancel;
    if (on_message == server_on_kv_prewrite || on_message == server_on_kv_commit ||
        on_message == server_on_kv_check_txn_status || on_message == server_on_kv_batch_rollback ||
        on_message == server_on_kv_resolve_lock)
        return server_txn_on_cancel;
    return NULL;
}

void server_methods(struct server_core *core, struct tkv_rpc_method *methods, size_t *n_out)
{
    for (size_t i = 0; i < SERVER_N_METHODS; i++) {
        methods[i] = (struct tkv_rpc_method){
            .path = method_table[i].path,
            .kind = method_table[i].kind,
            .on_message =
                method_table[i].on_message ? method_table[i].on_message : on_unimplemented_message,
            /* A streaming call with no message at all ends here. */
            .on_half_close = method_table[i].kind == TKV_RPC_CLIENT_STREAM ? unimplemented : NULL,
            .on_cancel = on_cancel_of(method_table[i].on_message),
            .data = core,
        };
    }
    *n_out = SERVER_N_METHODS;
    if (core->store)
        server_cluster_methods(core, methods, SERVER_N_METHODS);
}

struct tkv_slice server_raw_client_error(struct tkv_arena *arena, int rv, struct tkv_slice cf)
{
    return client_error(arena, rv, cf);
}

void server_metrics_init(struct server_metrics *m)
{
    struct tkv_metrics *reg = tkv_metrics_default();
    double ops[16], bytes[16], secs[20];
    tkv_metrics_exp_buckets(1, 2, 16, ops);         /* 1 .. 32768 writes */
    tkv_metrics_exp_buckets(64, 4, 16, bytes);      /* 64 B .. 64 GiB */
    tkv_metrics_exp_buckets(0.00005, 2, 20, secs);  /* 50 us .. 26 s */
    m->write_batches = tkv_metrics_counter(
        reg, "tinykv_engine_write_batches_total",
        "Engine write batches committed (one per event-loop turn with writes).", NULL);
    m->write_errors = tkv_metrics_counter(reg, "tinykv_engine_write_errors_total",
                                          "Engine write batches that failed.", NULL);
    m->disk_full_refused = tkv_metrics_counter(
        reg, "tinykv_disk_full_refused_writes_total",
        "Write requests refused because the disk is full (storage.reserve-space).", NULL);
    m->batch_ops = tkv_metrics_histogram(reg, "tinykv_engine_write_batch_ops",
                                         "Writes (puts and deletes) per engine write batch.",
                                         NULL, ops, 16);
    m->batch_bytes = tkv_metrics_histogram(reg, "tinykv_engine_write_batch_bytes",
                                           "Key and value bytes per engine write batch.", NULL,
                                           bytes, 16);
    m->commit_duration = tkv_metrics_histogram(
        reg, "tinykv_engine_commit_duration_seconds",
        "Duration of one engine write batch commit, including its log fsync (sync mode).", NULL,
        secs, 20);
}
