/* The transport: outgoing Raft streams with bounded per-destination queues
 * flushed once per loop turn, Snapshot streams in 1 MiB chunks, reconnect
 * with exponential backoff, and the server-side Raft / Snapshot handlers
 * that validate and reassemble what other stores send. One core, no locks,
 * no blocking: a destination that does not read costs its bounded queue. */
#include <stdio.h>
#include <string.h>

#include "raft_serverpb.pb.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/metrics.h"
#include "tkv/pb.h"
#include "tkv/reactor.h"
#include "tkv/transport.h"

#define MS 1000000ull
#define ADDR_MAX 256
/* While a stream holds more than stream_max_out_bytes unsent, or a snapshot
 * is being chunked, the queues are pumped again after this long (the rpc
 * client has no "writable" callback). */
#define PUMP_NS (2 * MS)
/* Distinct (region, peer) unreachable reports made per pass: a dead store
 * with thousands of regions is reported a bounded amount per pass. */
#define REPORTS_MAX 1024
#define RECENT_MAX 64
/* The name our snapshot payload goes by in RaftSnapshotData.meta: the
 * raftstore's own format (region + three CFs + CRC32C), not Badger SSTs. */
#define SNAP_CF_NAME "tinykv"

enum dest_state {
    DEST_IDLE,    /* no stream: resolve and connect at the next flush */
    DEST_UP,      /* client + Raft stream started */
    DEST_BACKOFF, /* the stream failed or the address is not known yet */
};

struct qitem {
    struct qitem *next;
    uint64_t region_id, to_peer;
    size_t len;
    uint8_t data[];
};

struct tkv_transport;
struct dest;

struct snap_out {
    struct snap_out *next;
    struct dest *d;
    struct tkv_rs_msg msg; /* clone: holds a reference on the payload */
    struct tkv_rpc_client *cl;
    struct tkv_rpc_ccall *call;
    size_t off, total;
    bool header_sent, closed_send, done;
};

struct dest {
    struct tkv_transport *t;
    uint64_t store_id;
    enum dest_state state;
    char addr[ADDR_MAX];
    bool have_addr;
    struct tkv_rpc_client *cl;
    struct tkv_rpc_ccall *call;
    struct qitem *head, *tail;
    uint32_t n;
    size_t bytes;
    bool progress; /* the current stream moved bytes to the socket */
    bool sent_in_stream;
    uint64_t backoff_ns;
    struct tkv_timer timer;
    struct snap_out *snaps;
    uint32_t n_snaps;
    /* distinct (region, peer) pairs sent on the current stream: reported
     * unreachable when it fails (what rpc held unsent is lost with it) */
    struct {
        uint64_t region_id, peer;
    } recent[RECENT_MAX];
    uint32_t n_recent;
};

struct report {
    bool snapshot, failed;
    uint64_t region_id, peer;
};

struct closing_client {
    struct tkv_rpc_client *cl;
};

struct metrics {
    struct tkv_counter *queued, *sent, *dropped_full, *dropped_unreachable, *batches;
    struct tkv_counter *stream_failures, *received, *delivered;
    struct tkv_counter *rejects[TKV_TRANSPORT_REJECT_COUNT];
    struct tkv_counter *snaps_sent, *snaps_send_failed, *snaps_received;
    struct tkv_gauge *queued_bytes;
};

/* What the server-side handlers reach through their method data. It
 * outlives the transport while snapshots are still being received, so the
 * host may free the transport and the rpc server in either order: a call
 * cancelled after the transport is gone frees its own state here. */
struct inbound {
    struct tkv_transport *t; /* NULL once the transport is freed */
    uint32_t refs;           /* the transport's + one per snapshot being received */
};

static void inbound_unref(struct inbound *in)
{
    if (--in->refs == 0)
        tkv_free(in);
}

struct tkv_transport {
    struct tkv_reactor *r;
    struct inbound *in;
    struct tkv_transport_config cfg;
    struct tkv_transport_host host;
    struct dest **dests;
    size_t n_dests, cap_dests;
    struct tkv_arena scratch;
    bool flush_scheduled, stopping;
    struct tkv_timer pump;
    struct report *reports;
    size_t n_reports, cap_reports;
    struct tkv_rpc_client **closing;
    size_t n_closing, cap_closing;
    uint32_t recv_snaps;
    struct tkv_transport_stats st;
    struct metrics m;
};

static void schedule_flush(struct tkv_transport *t);

/* ------------------------------------------------------------ metrics */

static void metrics_init(struct metrics *m)
{
    struct tkv_metrics *reg = tkv_metrics_default();
    m->queued = tkv_metrics_counter(reg, "tinykv_transport_messages_queued_total",
                                    "Raft messages accepted for sending to another store.", NULL);
    m->sent = tkv_metrics_counter(reg, "tinykv_transport_messages_sent_total",
                                  "Raft messages handed to a Raft stream.", NULL);
    m->dropped_full = tkv_metrics_counter(
        reg, "tinykv_transport_messages_dropped_total",
        "Raft messages dropped before sending (as a lossy network).",
        (const char *[]){"reason", "queue_full", NULL});
    m->dropped_unreachable = tkv_metrics_counter(
        reg, "tinykv_transport_messages_dropped_total",
        "Raft messages dropped before sending (as a lossy network).",
        (const char *[]){"reason", "unreachable", NULL});
    m->batches = tkv_metrics_counter(reg, "tinykv_transport_batches_total",
                                     "Per-turn batches of Raft messages sent to one store.", NULL);
    m->stream_failures = tkv_metrics_counter(reg, "tinykv_transport_stream_failures_total",
                                             "Outgoing Raft streams that ended (reconnect follows).",
                                             NULL);
    m->received = tkv_metrics_counter(reg, "tinykv_transport_messages_received_total",
                                      "Raft messages received from other stores.", NULL);
    m->delivered = tkv_metrics_counter(reg, "tinykv_transport_messages_delivered_total",
                                       "Received Raft messages handed to the raftstore.", NULL);
    for (int i = 1; i < TKV_TRANSPORT_REJECT_COUNT; i++)
        m->rejects[i] = tkv_metrics_counter(
            reg, "tinykv_transport_rejected_total",
            "Received RaftMessages / SnapshotChunks refused, by reason.",
            (const char *[]){"reason", tkv_transport_reject_name(i), NULL});
    m->snaps_sent = tkv_metrics_counter(reg, "tinykv_transport_snapshots_total",
                                        "Snapshot streams by direction and outcome.",
                                        (const char *[]){"dir", "send", "result", "ok", NULL});
    m->snaps_send_failed = tkv_metrics_counter(
        reg, "tinykv_transport_snapshots_total", "Snapshot streams by direction and outcome.",
        (const char *[]){"dir", "send", "result", "failed", NULL});
    m->snaps_received = tkv_metrics_counter(
        reg, "tinykv_transport_snapshots_total", "Snapshot streams by direction and outcome.",
        (const char *[]){"dir", "recv", "result", "ok", NULL});
    m->queued_bytes = tkv_metrics_gauge(reg, "tinykv_transport_queued_bytes",
                                        "Bytes of Raft messages queued for other stores.", NULL);
}

static void count_reject(struct tkv_transport *t, int reason)
{
    if (reason <= 0 || reason >= TKV_TRANSPORT_REJECT_COUNT)
        return;
    t->st.rejects[reason]++;
    tkv_counter_inc(t->m.rejects[reason]);
}

/* ------------------------------------------------------------ reports */

static void add_report(struct tkv_transport *t, bool snapshot, uint64_t region_id, uint64_t peer,
                       bool failed)
{
    if (!snapshot) {
        if (!t->host.report_unreachable)
            return;
        for (size_t i = 0; i < t->n_reports; i++)
            if (!t->reports[i].snapshot && t->reports[i].region_id == region_id &&
                t->reports[i].peer == peer)
                return;
        if (t->n_reports >= REPORTS_MAX)
            return;
    } else if (!t->host.report_snapshot) {
        return;
    }
    if (t->n_reports == t->cap_reports) {
        t->cap_reports = t->cap_reports ? 2 * t->cap_reports : 16;
        t->reports = tkv_xrealloc(t->reports, t->cap_reports * sizeof(*t->reports));
    }
    t->reports[t->n_reports++] =
        (struct report){.snapshot = snapshot, .failed = failed, .region_id = region_id, .peer = peer};
    schedule_flush(t);
}

static void deliver_reports(struct tkv_transport *t)
{
    /* the host may send from a report: take the list first */
    struct report *rs = t->reports;
    size_t n = t->n_reports;
    t->reports = NULL;
    t->n_reports = t->cap_reports = 0;
    for (size_t i = 0; i < n; i++) {
        if (rs[i].snapshot) {
            t->st.reports_snapshot++;
            t->host.report_snapshot(t->host.ctx, rs[i].region_id, rs[i].peer, rs[i].failed);
        } else {
            t->st.reports_unreachable++;
            t->host.report_unreachable(t->host.ctx, rs[i].region_id, rs[i].peer);
        }
    }
    tkv_free(rs);
}

/* Clients are closed outside of their own callbacks. */
static void close_later(struct tkv_transport *t, struct tkv_rpc_client *cl)
{
    if (!cl)
        return;
    if (t->n_closing == t->cap_closing) {
        t->cap_closing = t->cap_closing ? 2 * t->cap_closing : 8;
        t->closing = tkv_xrealloc(t->closing, t->cap_closing * sizeof(*t->closing));
    }
    t->closing[t->n_closing++] = cl;
    schedule_flush(t);
}

static void close_pending_clients(struct tkv_transport *t)
{
    while (t->n_closing) {
        struct tkv_rpc_client *cl = t->closing[--t->n_closing];
        tkv_rpc_client_close(cl);
    }
}

/* ------------------------------------------------------------ queues */

static void queue_gauge(struct tkv_transport *t)
{
    tkv_gauge_set(t->m.queued_bytes, (double)t->st.queued_bytes);
}

static void pop_head(struct dest *d)
{
    struct qitem *q = d->head;
    d->head = q->next;
    if (!d->head)
        d->tail = NULL;
    d->n--;
    d->bytes -= q->len;
    d->t->st.queued_bytes -= q->len;
    tkv_free(q);
}

/* Drop every queued message of d as unreachable and report each (region,
 * peer) once. */
static void drop_queue(struct dest *d)
{
    struct tkv_transport *t = d->t;
    while (d->head) {
        add_report(t, false, d->head->region_id, d->head->to_peer, true);
        t->st.msgs_dropped_unreachable++;
        tkv_counter_inc(t->m.dropped_unreachable);
        pop_head(d);
    }
    queue_gauge(t);
}

static struct dest *dest_get(struct tkv_transport *t, uint64_t store_id);
static void dest_timer_cb(struct tkv_timer *tm);

static struct dest *dest_get(struct tkv_transport *t, uint64_t store_id)
{
    for (size_t i = 0; i < t->n_dests; i++)
        if (t->dests[i]->store_id == store_id)
            return t->dests[i];
    struct dest *d = tkv_xcalloc(1, sizeof(*d));
    d->t = t;
    d->store_id = store_id;
    d->state = DEST_IDLE;
    d->backoff_ns = t->cfg.backoff_min_ns;
    tkv_timer_init(&d->timer, dest_timer_cb, d);
    if (t->n_dests == t->cap_dests) {
        t->cap_dests = t->cap_dests ? 2 * t->cap_dests : 8;
        t->dests = tkv_xrealloc(t->dests, t->cap_dests * sizeof(*t->dests));
    }
    t->dests[t->n_dests++] = d;
    return d;
}

/* ------------------------------------------------------------ Raft stream */

static void raft_stream_message(struct tkv_rpc_ccall *c, void *user, struct tkv_slice msg)
{
    (void)c;
    (void)user;
    (void)msg; /* Done comes only at the end */
}

static void enter_backoff(struct dest *d)
{
    struct tkv_transport *t = d->t;
    d->state = DEST_BACKOFF;
    if (t->stopping)
        return;
    tkv_timer_start(t->r, &d->timer, d->backoff_ns);
    uint64_t next = d->backoff_ns * 2;
    d->backoff_ns = next > t->cfg.backoff_max_ns ? t->cfg.backoff_max_ns : next;
}

static void raft_stream_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status status,
                             const char *message)
{
    (void)c;
    struct dest *d = user;
    struct tkv_transport *t = d->t;
    d->call = NULL;
    close_later(t, d->cl);
    d->cl = NULL;
    t->st.stream_failures++;
    tkv_counter_inc(t->m.stream_failures);
    if (!t->stopping)
        TKV_LOG_DEBUG("raft stream ended", TKV_LF_U64("store", d->store_id),
                      TKV_LF_STR("status", tkv_grpc_status_name((int)status)),
                      TKV_LF_STR("message", message ? message : ""));
    /* a stream that moved bytes was up: start the backoff afresh; one that
     * never did may have a stale address (the store moved): resolve again */
    if (d->progress)
        d->backoff_ns = t->cfg.backoff_min_ns;
    else
        d->have_addr = false;
    d->progress = false;
    d->sent_in_stream = false;
    for (uint32_t i = 0; i < d->n_recent; i++)
        add_report(t, false, d->recent[i].region_id, d->recent[i].peer, true);
    d->n_recent = 0;
    drop_queue(d);
    enter_backoff(d);
}

static const struct tkv_rpc_stream_cbs raft_stream_cbs = {
    .on_message = raft_stream_message,
    .on_done = raft_stream_done,
};

static int split_addr(const char *addr, char *host, size_t cap, uint16_t *port)
{
    return tkv_reactor_parse_hostport(addr, host, cap, port);
}

/* Resolve and connect d. Returns true when the stream is up. */
static bool dest_connect(struct dest *d)
{
    struct tkv_transport *t = d->t;
    if (!d->have_addr) {
        int rv = t->host.resolve(t->host.ctx, d->store_id, d->addr, sizeof(d->addr));
        if (rv == TKV_EUNAVAILABLE) {
            enter_backoff(d); /* queue kept (bounded): the address may come */
            return false;
        }
        if (rv < 0) {
            drop_queue(d);
            enter_backoff(d);
            return false;
        }
        d->addr[sizeof(d->addr) - 1] = 0;
        d->have_addr = true;
    }
    char host[ADDR_MAX];
    uint16_t port = 0;
    struct tkv_rpc_client *cl = NULL;
    int rv = split_addr(d->addr, host, sizeof(host), &port);
    if (rv == 0)
        rv = tkv_rpc_client_connect(t->r, host[0] ? host : "127.0.0.1", port, NULL, &cl);
    if (rv < 0) {
        TKV_LOG_WARN("cannot connect to store", TKV_LF_U64("store", d->store_id),
                     TKV_LF_STR("addr", d->addr), TKV_LF_ERR(rv));
        d->have_addr = false; /* ask again: the store may have moved */
        drop_queue(d);
        enter_backoff(d);
        return false;
    }
    rv = tkv_rpc_client_start(cl, "/tinykvpb.TinyKv/Raft", 0, &raft_stream_cbs, d, &d->call);
    if (rv < 0) {
        tkv_rpc_client_close(cl);
        drop_queue(d);
        enter_backoff(d);
        return false;
    }
    d->cl = cl;
    d->state = DEST_UP;
    d->n_recent = 0;
    d->progress = false;
    d->sent_in_stream = false;
    t->st.streams_started++;
    return true;
}

static void dest_timer_cb(struct tkv_timer *tm)
{
    struct dest *d = tm->data;
    if (d->state == DEST_BACKOFF) {
        d->state = DEST_IDLE;
        /* a store that never became resolvable keeps asking; one whose
         * stream failed reconnects only when there is something to send */
        if (d->head || d->snaps)
            schedule_flush(d->t);
    }
}

static void remember(struct dest *d, uint64_t region_id, uint64_t peer)
{
    for (uint32_t i = 0; i < d->n_recent; i++)
        if (d->recent[i].region_id == region_id && d->recent[i].peer == peer)
            return;
    if (d->n_recent < RECENT_MAX) {
        d->recent[d->n_recent].region_id = region_id;
        d->recent[d->n_recent].peer = peer;
        d->n_recent++;
    }
}

/* Hand queued messages to the stream while it holds less than the limit.
 * Returns true when messages remain blocked behind the limit. */
static bool pump_raft(struct dest *d)
{
    struct tkv_transport *t = d->t;
    if (d->state != DEST_UP || !d->call)
        return false;
    size_t out = tkv_rpc_ccall_out_bytes(d->call);
    if (out == 0 && d->sent_in_stream)
        d->progress = true;
    if (out == 0 && d->progress)
        d->backoff_ns = t->cfg.backoff_min_ns;
    uint64_t sent = 0;
    while (d->head && out < t->cfg.stream_max_out_bytes) {
        struct qitem *q = d->head;
        int rv = tkv_rpc_ccall_send(d->call, q->data, q->len);
        if (rv < 0)
            break; /* the stream is ending: on_done drops the rest */
        out += q->len;
        sent++;
        remember(d, q->region_id, q->to_peer);
        pop_head(d);
    }
    if (sent) {
        d->sent_in_stream = true;
        t->st.msgs_sent += sent;
        t->st.batches++;
        tkv_counter_add(t->m.sent, sent);
        tkv_counter_inc(t->m.batches);
        queue_gauge(t);
    }
    return d->head != NULL || out > 0;
}

/* ------------------------------------------------------------ snapshots out */

static void snap_free(struct snap_out *s)
{
    tkv_rs_msg_release(&s->msg);
    tkv_free(s);
}

static void snap_unlink(struct snap_out *s)
{
    struct dest *d = s->d;
    for (struct snap_out **pp = &d->snaps; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            d->n_snaps--;
            return;
        }
    }
}

static void snap_finish(struct snap_out *s, bool ok)
{
    struct tkv_transport *t = s->d->t;
    if (ok) {
        t->st.snaps_sent++;
        tkv_counter_inc(t->m.snaps_sent);
    } else {
        t->st.snaps_send_failed++;
        tkv_counter_inc(t->m.snaps_send_failed);
    }
    add_report(t, true, s->msg.region_id, s->msg.to.id, !ok);
    snap_unlink(s);
    close_later(t, s->cl);
    snap_free(s);
}

static void snap_stream_message(struct tkv_rpc_ccall *c, void *user, struct tkv_slice msg)
{
    (void)c;
    (void)user;
    (void)msg; /* Done: the outcome comes with on_done */
}

static void snap_stream_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status status,
                             const char *message)
{
    (void)c;
    struct snap_out *s = user;
    s->call = NULL;
    bool ok = status == TKV_GRPC_OK && s->closed_send;
    if (!ok && !s->d->t->stopping)
        TKV_LOG_WARN("snapshot not delivered", TKV_LF_U64("store", s->d->store_id),
                     TKV_LF_U64("region", s->msg.region_id),
                     TKV_LF_STR("status", tkv_grpc_status_name((int)status)),
                     TKV_LF_STR("message", message ? message : ""));
    snap_finish(s, ok);
}

static const struct tkv_rpc_stream_cbs snap_stream_cbs = {
    .on_message = snap_stream_message,
    .on_done = snap_stream_done,
};

/* The first chunk: the RaftMessage whose snapshot data is the
 * RaftSnapshotData describing the payload (size, CRC32C) that follows. */
static int snap_header(struct tkv_transport *t, struct snap_out *s, struct tkv_slice *out)
{
    const struct tkv_raft_snapshot *sn = s->msg.msg.snapshot;
    struct tkv_slice payload = TKV_SLICE(sn->data ? sn->data->data : NULL, s->total);
    raft_serverpb_SnapshotCFFile file = {
        .cf = tkv_pb_str(SNAP_CF_NAME),
        .size = s->total,
        .checksum = tkv_codec_crc32c(0, payload.ptr, payload.len),
    };
    raft_serverpb_RaftSnapshotData rsd = {0};
    rsd.file_size = s->total;
    rsd.has_meta = true;
    rsd.meta.cf_files.items = &file;
    rsd.meta.cf_files.n = 1;
    struct tkv_slice meta;
    int rv = tkv_pb_encode_arena(raft_serverpb_RaftSnapshotData_fields, &rsd, &t->scratch, 0, &meta);
    if (rv < 0)
        return rv;
    struct tkv_raft_buf *mb = NULL;
    if (tkv_raft_buf_copy(meta.ptr, meta.len, &mb) < 0)
        return TKV_ENOMEM;
    struct tkv_raft_snapshot hs = *sn;
    hs.data = mb;
    struct tkv_rs_msg hm = s->msg;
    hm.msg.snapshot = &hs;
    struct tkv_slice msg;
    rv = tkv_transport_encode(&hm, &t->scratch, &msg);
    tkv_raft_buf_unref(mb);
    if (rv < 0)
        return rv;
    /* SnapshotChunk{message}: the RaftMessage bytes framed as field 1 by
     * hand (one encoder for the envelope) */
    uint8_t *p = tkv_arena_alloc(&t->scratch, msg.len + 16);
    size_t n = 0;
    p[n++] = 0x0a; /* SnapshotChunk.message: field 1, wire type 2 */
    n += tkv_codec_put_uvarint(p + n, msg.len);
    memcpy(p + n, msg.ptr, msg.len);
    n += msg.len;
    *out = TKV_SLICE(p, n);
    return 0;
}

/* Move one snapshot forward. Returns true when it waits for the socket. */
static bool pump_snap(struct tkv_transport *t, struct snap_out *s)
{
    if (!s->call || s->closed_send)
        return false;
    if (!s->header_sent) {
        struct tkv_slice hdr;
        int rv = snap_header(t, s, &hdr);
        if (rv == 0)
            rv = tkv_rpc_ccall_send(s->call, hdr.ptr, hdr.len); /* copies */
        tkv_arena_reset(&t->scratch);
        if (rv < 0) {
            tkv_rpc_ccall_cancel(s->call);
            s->call = NULL;
            snap_finish(s, false);
            return false;
        }
        s->header_sent = true;
    }
    const uint8_t *data = s->msg.msg.snapshot->data ? s->msg.msg.snapshot->data->data : NULL;
    uint8_t *frame = NULL;
    while (s->off < s->total &&
           tkv_rpc_ccall_out_bytes(s->call) < t->cfg.stream_max_out_bytes) {
        size_t len = s->total - s->off;
        if (len > TKV_TRANSPORT_SNAP_CHUNK)
            len = TKV_TRANSPORT_SNAP_CHUNK;
        if (!frame)
            frame = tkv_xmalloc(TKV_TRANSPORT_SNAP_CHUNK + 16);
        size_t n = 0;
        frame[n++] = 0x12; /* SnapshotChunk.data: field 2, wire type 2 */
        n += tkv_codec_put_uvarint(frame + n, len);
        memcpy(frame + n, data + s->off, len);
        n += len;
        if (tkv_rpc_ccall_send(s->call, frame, n) < 0)
            break;
        s->off += len;
    }
    tkv_free(frame);
    if (s->off == s->total) {
        tkv_rpc_ccall_close_send(s->call);
        s->closed_send = true;
        return false;
    }
    return true;
}

/* Returns false when the snapshot failed (and is freed). */
static bool snap_start(struct dest *d, struct snap_out *s)
{
    struct tkv_transport *t = d->t;
    char host[ADDR_MAX];
    uint16_t port = 0;
    int rv = split_addr(d->addr, host, sizeof(host), &port);
    if (rv == 0)
        rv = tkv_rpc_client_connect(t->r, host[0] ? host : "127.0.0.1", port, NULL, &s->cl);
    if (rv == 0) {
        rv = tkv_rpc_client_start(s->cl, "/tinykvpb.TinyKv/Snapshot", t->cfg.snapshot_timeout_ns,
                                  &snap_stream_cbs, s, &s->call);
        if (rv < 0) {
            tkv_rpc_client_close(s->cl);
            s->cl = NULL;
        }
    }
    if (rv < 0) {
        snap_finish(s, false);
        return false;
    }
    return true;
}

static bool pump_snaps(struct dest *d)
{
    struct tkv_transport *t = d->t;
    bool blocked = false;
    struct snap_out *next;
    for (struct snap_out *s = d->snaps; s; s = next) {
        next = s->next;
        if (!s->cl) {
            if (!d->have_addr)
                continue; /* dest_connect resolves first */
            if (!snap_start(d, s))
                continue; /* failed and freed */
        }
        if (pump_snap(t, s))
            blocked = true;
    }
    return blocked;
}

/* ------------------------------------------------------------ flush */

static void flush_dest(struct dest *d, bool *blocked)
{
    if (!d->head && !d->snaps)
        return;
    if (d->state == DEST_IDLE && !dest_connect(d)) {
        /* not resolved yet / failed: snapshots cannot wait for ever */
        if (d->state == DEST_BACKOFF && !d->have_addr) {
            while (d->snaps) {
                struct snap_out *s = d->snaps;
                snap_finish(s, false);
            }
        }
        return;
    }
    if (d->state == DEST_UP && pump_raft(d))
        *blocked = true;
    if (d->have_addr && pump_snaps(d))
        *blocked = true;
}

static void flush(struct tkv_transport *t)
{
    bool blocked = false;
    t->flush_scheduled = false;
    close_pending_clients(t);
    if (!t->stopping)
        for (size_t i = 0; i < t->n_dests; i++)
            flush_dest(t->dests[i], &blocked);
    deliver_reports(t);
    close_pending_clients(t);
    if (blocked && !t->stopping && !tkv_timer_armed(&t->pump))
        tkv_timer_start(t->r, &t->pump, PUMP_NS);
}

static void flush_task(void *arg)
{
    flush(arg);
}

static void pump_cb(struct tkv_timer *tm)
{
    flush(tm->data);
}

static void schedule_flush(struct tkv_transport *t)
{
    if (t->flush_scheduled)
        return;
    t->flush_scheduled = true;
    tkv_reactor_defer(t->r, flush_task, t);
}

/* ------------------------------------------------------------ send */

static void send_snapshot(struct tkv_transport *t, struct dest *d, const struct tkv_rs_msg *m)
{
    if (d->n_snaps >= t->cfg.max_send_snapshots || t->stopping) {
        t->st.snaps_send_failed++;
        tkv_counter_inc(t->m.snaps_send_failed);
        add_report(t, true, m->region_id, m->to.id, true);
        return;
    }
    struct snap_out *s = tkv_xcalloc(1, sizeof(*s));
    s->d = d;
    tkv_rs_msg_clone(&s->msg, m);
    s->total = m->msg.snapshot->data ? m->msg.snapshot->data->len : 0;
    s->next = d->snaps;
    d->snaps = s;
    d->n_snaps++;
    schedule_flush(t);
}

void tkv_transport_send(struct tkv_transport *t, uint64_t to_store, const struct tkv_rs_msg *m)
{
    if (!m || to_store == 0)
        return;
    struct dest *d = dest_get(t, to_store);
    if (m->msg.type == TKV_RAFT_MSG_SNAPSHOT && m->msg.snapshot) {
        send_snapshot(t, d, m);
        return;
    }
    if (d->n >= t->cfg.queue_max_msgs) {
        t->st.msgs_dropped_full++;
        tkv_counter_inc(t->m.dropped_full);
        if (d->state != DEST_UP)
            add_report(t, false, m->region_id, m->to.id, true);
        return;
    }
    struct tkv_slice enc;
    int rv = tkv_transport_encode(m, &t->scratch, &enc);
    if (rv < 0 || d->bytes + enc.len > t->cfg.queue_max_bytes) {
        tkv_arena_reset(&t->scratch);
        t->st.msgs_dropped_full++;
        tkv_counter_inc(t->m.dropped_full);
        if (d->state != DEST_UP)
            add_report(t, false, m->region_id, m->to.id, true);
        return;
    }
    struct qitem *q = tkv_xmalloc(sizeof(*q) + enc.len);
    q->next = NULL;
    q->region_id = m->region_id;
    q->to_peer = m->to.id;
    q->len = enc.len;
    memcpy(q->data, enc.ptr, enc.len);
    tkv_arena_reset(&t->scratch);
    if (d->tail)
        d->tail->next = q;
    else
        d->head = q;
    d->tail = q;
    d->n++;
    d->bytes += q->len;
    t->st.queued_bytes += q->len;
    t->st.msgs_queued++;
    tkv_counter_inc(t->m.queued);
    schedule_flush(t);
}

void tkv_transport_env_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m)
{
    tkv_transport_send(ctx, to_store, m);
}

/* ------------------------------------------------------------ inbound: Raft */

static void deliver(struct tkv_transport *t, const struct tkv_rs_msg *m)
{
    t->st.msgs_delivered++;
    tkv_counter_inc(t->m.delivered);
    t->host.deliver(t->host.ctx, m);
}

static struct tkv_transport *call_transport(struct tkv_rpc_call *call)
{
    struct inbound *in = tkv_rpc_call_method_data(call);
    return in->t;
}

static void on_raft_message(struct tkv_rpc_call *call, struct tkv_slice bytes)
{
    struct tkv_transport *t = call_transport(call);
    if (!t)
        return; /* the store is closing */
    t->st.msgs_received++;
    tkv_counter_inc(t->m.received);
    struct tkv_rs_msg m;
    int reason = tkv_transport_decode(bytes, t->cfg.store_id, &t->scratch, &m);
    tkv_arena_reset(&t->scratch);
    if (reason == TKV_TRANSPORT_OK && m.msg.type == TKV_RAFT_MSG_SNAPSHOT) {
        /* only the Snapshot stream checks a payload's size and checksum */
        tkv_rs_msg_release(&m);
        reason = TKV_TRANSPORT_REJECT_SNAP_ON_RAFT;
    }
    if (reason != TKV_TRANSPORT_OK) {
        /* one bad message does not end the stream: a lossy network */
        count_reject(t, reason);
        return;
    }
    deliver(t, &m);
    tkv_rs_msg_release(&m);
}

static void reply_done(struct tkv_rpc_call *call)
{
    /* raft_serverpb.Done is empty: zero bytes */
    tkv_rpc_call_reply(call, "", 0);
}

static void on_raft_half_close(struct tkv_rpc_call *call)
{
    reply_done(call);
}

/* ------------------------------------------------------------ inbound: Snapshot */

struct snap_in {
    struct inbound *in;    /* holds a reference */
    struct tkv_rs_msg msg; /* the envelope (snapshot data = its meta, replaced) */
    uint8_t *buf;
    size_t off, total;
    uint32_t n_files;
    struct {
        size_t size;
        uint32_t crc;
    } files[4];
};

static void snap_in_free(struct snap_in *s)
{
    if (!s)
        return;
    struct inbound *in = s->in;
    tkv_rs_msg_release(&s->msg);
    tkv_free(s->buf);
    if (in->t) {
        in->t->st.recv_snap_bytes -= s->total;
        in->t->recv_snaps--;
    }
    tkv_free(s);
    inbound_unref(in);
}

static void snap_refuse(struct tkv_transport *t, struct tkv_rpc_call *call, int reason)
{
    struct snap_in *s = tkv_rpc_call_data(call);
    snap_in_free(s);
    tkv_rpc_call_set_data(call, NULL);
    if (!t) {
        tkv_rpc_call_finish(call, TKV_GRPC_UNAVAILABLE, "store closing");
        return;
    }
    count_reject(t, reason);
    enum tkv_grpc_status st = TKV_GRPC_INVALID_ARGUMENT;
    if (reason == TKV_TRANSPORT_REJECT_SNAP_CHECKSUM)
        st = TKV_GRPC_DATA_LOSS;
    else if (reason == TKV_TRANSPORT_REJECT_SNAP_BUSY)
        st = TKV_GRPC_RESOURCE_EXHAUSTED;
    char why[96];
    snprintf(why, sizeof(why), "snapshot refused: %s", tkv_transport_reject_name(reason));
    tkv_rpc_call_finish(call, st, why);
}

static void on_snap_message(struct tkv_rpc_call *call, struct tkv_slice bytes)
{
    struct tkv_transport *t = call_transport(call);
    struct snap_in *s = tkv_rpc_call_data(call);
    if (!t) {
        snap_refuse(NULL, call, TKV_TRANSPORT_REJECT_SNAP_BUSY);
        return;
    }
    raft_serverpb_SnapshotChunk ch;
    if (tkv_pb_decode(raft_serverpb_SnapshotChunk_fields, &ch, bytes.ptr, bytes.len,
                      &t->scratch) < 0) {
        tkv_arena_reset(&t->scratch);
        snap_refuse(t, call, TKV_TRANSPORT_REJECT_MALFORMED);
        return;
    }
    if (s) {
        /* a data chunk: non-empty, no message, within what was announced */
        int reason = TKV_TRANSPORT_OK;
        if (ch.has_message || ch.data.len == 0 || ch.data.len > s->total - s->off)
            reason = TKV_TRANSPORT_REJECT_SNAP_CHUNK;
        else {
            memcpy(s->buf + s->off, ch.data.ptr, ch.data.len);
            s->off += ch.data.len;
        }
        tkv_arena_reset(&t->scratch);
        if (reason)
            snap_refuse(t, call, reason);
        return;
    }
    /* the first chunk: the RaftMessage only */
    if (!ch.has_message || ch.data.len) {
        tkv_arena_reset(&t->scratch);
        snap_refuse(t, call, TKV_TRANSPORT_REJECT_SNAP_CHUNK);
        return;
    }
    /* Decode the envelope with the transport's decoder (the same checks as
     * the Raft stream): re-encode the embedded message, which nanopb
     * decoded in place. */
    struct tkv_slice env;
    int reason = TKV_TRANSPORT_OK;
    if (tkv_pb_encode_arena(raft_serverpb_RaftMessage_fields, &ch.message, &t->scratch, 0, &env) <
        0)
        reason = TKV_TRANSPORT_REJECT_MALFORMED;
    struct tkv_rs_msg m;
    memset(&m, 0, sizeof(m));
    if (!reason)
        reason = tkv_transport_decode(env, t->cfg.store_id, &t->scratch, &m);
    if (!reason && m.msg.type != TKV_RAFT_MSG_SNAPSHOT)
        reason = TKV_TRANSPORT_REJECT_SNAP_CHUNK;
    raft_serverpb_RaftSnapshotData rsd;
    if (!reason) {
        const struct tkv_raft_buf *md = m.msg.snapshot->data;
        if (!md || tkv_pb_decode(raft_serverpb_RaftSnapshotData_fields, &rsd, md->data, md->len,
                                 &t->scratch) < 0 ||
            !rsd.has_meta || rsd.meta.cf_files.n == 0 || rsd.meta.cf_files.n > 4)
            reason = TKV_TRANSPORT_REJECT_SNAP_CHUNK;
    }
    size_t total = 0;
    if (!reason) {
        for (size_t i = 0; i < rsd.meta.cf_files.n; i++) {
            uint64_t sz = rsd.meta.cf_files.items[i].size;
            if (sz > t->cfg.max_snapshot_bytes || total + sz > t->cfg.max_snapshot_bytes) {
                reason = TKV_TRANSPORT_REJECT_TOO_BIG;
                break;
            }
            total += (size_t)sz;
        }
        if (!reason && (total == 0 || (rsd.file_size && rsd.file_size != total)))
            reason = TKV_TRANSPORT_REJECT_SNAP_CHUNK;
    }
    if (!reason && (t->recv_snaps >= t->cfg.max_recv_snapshots ||
                    t->st.recv_snap_bytes + total > t->cfg.max_recv_snapshot_mem))
        reason = TKV_TRANSPORT_REJECT_SNAP_BUSY;
    uint8_t *buf = NULL;
    if (!reason && !(buf = tkv_malloc(total)))
        reason = TKV_TRANSPORT_REJECT_SNAP_BUSY;
    if (reason) {
        tkv_rs_msg_release(&m);
        tkv_arena_reset(&t->scratch);
        snap_refuse(t, call, reason);
        return;
    }
    s = tkv_xcalloc(1, sizeof(*s));
    s->in = t->in;
    t->in->refs++;
    s->msg = m;
    s->buf = buf;
    s->total = total;
    s->n_files = (uint32_t)rsd.meta.cf_files.n;
    for (size_t i = 0; i < rsd.meta.cf_files.n; i++) {
        s->files[i].size = (size_t)rsd.meta.cf_files.items[i].size;
        s->files[i].crc = rsd.meta.cf_files.items[i].checksum;
    }
    tkv_arena_reset(&t->scratch);
    t->recv_snaps++;
    t->st.recv_snap_bytes += total;
    tkv_rpc_call_set_data(call, s);
}

static void raft_buf_free_fn(void *ctx, uint8_t *data)
{
    (void)ctx;
    tkv_free(data);
}

static void on_snap_half_close(struct tkv_rpc_call *call)
{
    struct tkv_transport *t = call_transport(call);
    struct snap_in *s = tkv_rpc_call_data(call);
    if (!t || !s) {
        snap_refuse(t, call, TKV_TRANSPORT_REJECT_SNAP_CHUNK); /* no message at all */
        return;
    }
    bool good = s->off == s->total;
    size_t pos = 0;
    for (uint32_t i = 0; good && i < s->n_files; i++) {
        if (tkv_codec_crc32c(0, s->buf + pos, s->files[i].size) != s->files[i].crc)
            good = false;
        pos += s->files[i].size;
    }
    if (!good) {
        snap_refuse(t, call, TKV_TRANSPORT_REJECT_SNAP_CHECKSUM);
        return;
    }
    /* the payload becomes the snapshot's data; the raftstore checks its own
     * framing and checksum again before raft sees it */
    struct tkv_raft_buf *b = NULL;
    if (tkv_raft_buf_wrap(s->buf, s->total, raft_buf_free_fn, NULL, &b) < 0) {
        snap_refuse(t, call, TKV_TRANSPORT_REJECT_SNAP_BUSY);
        return;
    }
    s->buf = NULL;
    tkv_raft_buf_unref(s->msg.msg.snapshot->data);
    s->msg.msg.snapshot->data = b;
    t->st.snaps_received++;
    tkv_counter_inc(t->m.snaps_received);
    t->st.msgs_received++;
    tkv_counter_inc(t->m.received);
    deliver(t, &s->msg);
    snap_in_free(s);
    tkv_rpc_call_set_data(call, NULL);
    reply_done(call);
}

static void on_snap_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    (void)why;
    snap_in_free(tkv_rpc_call_data(call));
    tkv_rpc_call_set_data(call, NULL);
}

void tkv_transport_methods(struct tkv_transport *t, struct tkv_rpc_method out[TKV_TRANSPORT_N_METHODS])
{
    out[0] = (struct tkv_rpc_method){
        .path = "/tinykvpb.TinyKv/Raft",
        .kind = TKV_RPC_CLIENT_STREAM,
        .on_message = on_raft_message,
        .on_half_close = on_raft_half_close,
        .on_cancel = NULL,
        .data = t->in,
    };
    out[1] = (struct tkv_rpc_method){
        .path = "/tinykvpb.TinyKv/Snapshot",
        .kind = TKV_RPC_CLIENT_STREAM,
        .on_message = on_snap_message,
        .on_half_close = on_snap_half_close,
        .on_cancel = on_snap_cancel,
        .data = t->in,
    };
}

/* ------------------------------------------------------------ lifecycle */

static void close_all(struct tkv_transport *t)
{
    t->stopping = true;
    tkv_timer_stop(t->r, &t->pump);
    for (size_t i = 0; i < t->n_dests; i++) {
        struct dest *d = t->dests[i];
        tkv_timer_stop(t->r, &d->timer);
        if (d->cl) {
            struct tkv_rpc_client *cl = d->cl;
            d->cl = NULL;
            tkv_rpc_client_close(cl); /* on_done(CANCELLED) runs inside */
        }
        d->call = NULL;
        while (d->snaps) {
            struct snap_out *s = d->snaps;
            if (s->call) {
                tkv_rpc_ccall_cancel(s->call);
                s->call = NULL;
            }
            snap_finish(s, false);
        }
    }
    close_pending_clients(t);
}

static void on_stop(void *arg)
{
    struct tkv_transport *t = arg;
    close_all(t);
    deliver_reports(t);
}

int tkv_transport_new(struct tkv_reactor *r, const struct tkv_transport_config *cfg,
                      const struct tkv_transport_host *host, struct tkv_transport **out)
{
    if (!r || !cfg || !host || cfg->store_id == 0 || !host->resolve || !host->deliver)
        return TKV_EINVAL;
    struct tkv_transport *t = tkv_xcalloc(1, sizeof(*t));
    t->r = r;
    t->cfg = *cfg;
    t->host = *host;
    struct tkv_transport_config *c = &t->cfg;
    if (!c->queue_max_msgs)
        c->queue_max_msgs = 4096;
    if (!c->queue_max_bytes)
        c->queue_max_bytes = 16u << 20;
    if (!c->stream_max_out_bytes)
        c->stream_max_out_bytes = 4u << 20;
    if (!c->backoff_min_ns)
        c->backoff_min_ns = 50 * MS;
    if (!c->backoff_max_ns)
        c->backoff_max_ns = 5000 * MS;
    if (c->backoff_max_ns < c->backoff_min_ns)
        c->backoff_max_ns = c->backoff_min_ns;
    if (!c->max_send_snapshots)
        c->max_send_snapshots = 2;
    if (!c->max_recv_snapshots)
        c->max_recv_snapshots = 4;
    if (!c->max_snapshot_bytes)
        c->max_snapshot_bytes = (size_t)1 << 30;
    if (!c->max_recv_snapshot_mem)
        c->max_recv_snapshot_mem = (size_t)2 << 30;
    if (!c->snapshot_timeout_ns)
        c->snapshot_timeout_ns = 600000 * MS;
    t->in = tkv_xcalloc(1, sizeof(*t->in));
    t->in->t = t;
    t->in->refs = 1;
    tkv_arena_init(&t->scratch, 0);
    tkv_timer_init(&t->pump, pump_cb, t);
    metrics_init(&t->m);
    tkv_reactor_on_stop(r, on_stop, t);
    *out = t;
    return 0;
}

void tkv_transport_free(struct tkv_transport *t)
{
    if (!t)
        return;
    if (!t->stopping)
        close_all(t);
    /* reports are not delivered any more: the host is going away */
    tkv_free(t->reports);
    for (size_t i = 0; i < t->n_dests; i++) {
        struct dest *d = t->dests[i];
        while (d->head)
            pop_head(d);
        tkv_free(d);
    }
    tkv_free(t->dests);
    tkv_free(t->closing);
    t->in->t = NULL; /* calls still alive in the rpc server see a closed store */
    inbound_unref(t->in);
    tkv_arena_close(&t->scratch);
    tkv_free(t);
}

void tkv_transport_stats(const struct tkv_transport *t, struct tkv_transport_stats *out)
{
    *out = t->st;
    size_t rpc_out = 0;
    for (size_t i = 0; i < t->n_dests; i++)
        if (t->dests[i]->call)
            rpc_out += tkv_rpc_ccall_out_bytes(t->dests[i]->call);
    out->rpc_out_bytes = rpc_out;
}
