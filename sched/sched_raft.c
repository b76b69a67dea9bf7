/* The replicated scheduler (issue 9 item 7): the members of
 * --initial-cluster form one Raft group (src/raft) whose log lives in the
 * raft log engine (src/raftlog, group id 1, <data-dir>/raft). The state
 * machine is the scheduler's durable state: every write command of the
 * cluster core (tkv_sched_cmd_to_batch: cluster id, bootstrap, stores, id and
 * TSO bounds, GC safe point, config, region metas) is proposed by the
 * leader and applied on every member into its own engine together with the
 * applied index. Only the leader serves: once it has applied an entry of
 * its own term (so every earlier commit), it opens the cluster core from
 * its engine exactly as a restart would, which puts the ID allocator and
 * the TSO above the replicated bounds. It drops that in-memory core the
 * moment it stops leading.
 *
 * Reply barrier: the cluster core changes its memory first and proposes the
 * write (the writer below). No reply, stream message or stream end leaves
 * this member before every non-lazy command proposed before it is applied
 * (committed on a quorum). So an id or timestamp is never handed out under
 * a bound a new leader might not know. Queued replies are answered
 * UNAVAILABLE "not leader" when leadership is lost.
 *
 * Hosting follows the raftstore's Ready loop: step events into the raft,
 * pump the updates on a deferred task (never inside a cluster call), stage
 * entries and hard state into the raft log's group commit, apply committed
 * entries, and send the update's messages once the log's sync barrier
 * fires (persist before send).
 *
 * Peer transport: a client stream /tinyscheduler.Peer/Raft to each other
 * member's peer URL, on a separate rpc server listening on --peer-urls.
 * Each stream message is one frame (big endian; layout in README.md):
 *   u32 magic "TSR1", u64 from, u64 to, u16 len + sender's client URL,
 *   u32 n_msgs, then per message the fields of struct tkv_raft_msg, its
 *   entries (term, index, type, u32 len + data) and an optional snapshot
 *   point (no data: the log is never compacted).
 * Every frame is validated (lengths, counts, member ids) before stepping. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sched_server.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/hostport.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/pb.h"
#include "tkv/raft.h"
#include "tkv/raftlog.h"

#define GROUP_ID 1
#define TICK_NS (50ull * 1000000ull)
#define ELECTION_TICK 10 /* 0.5 .. 1 s */
#define HEARTBEAT_TICK 2
#define FRAME_MAGIC 0x54535231u /* "TSR1" */
#define PEER_PATH "/tinyscheduler.Peer/Raft"
#define MAX_FRAME_MSGS 4096
#define MAX_MSG_ENTRIES 8192
#define PEER_OUT_MAX (8u << 20)
#define RECONNECT_NS (500ull * 1000000ull)
#define KEY_APPLIED "schedraft/applied"

struct raft_peer {
    uint64_t id;
    char name[TKV_CONFIG_NAME_MAX];
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port;
    char client_url[TKV_CONFIG_URLS_MAX]; /* learned from its frames ("" = unknown) */
    char peer_url[TKV_CONFIG_URLS_MAX];
    struct tkv_rpc_client *cl;
    struct tkv_rpc_ccall *stream;
    uint64_t retry_at_ns;
};

/* Bytes being built for one destination. */
struct frame {
    uint8_t *p;
    size_t len, cap;
    uint32_t n_msgs;
};

/* Messages of one pump, sent when the raft log's sync barrier fires. */
struct turn {
    struct sched_raft *rs; /* NULL once the raft stopped */
    struct frame frames[TKV_RAFT_MAX_VOTERS];
    bool persisted;
    tkv_index last;
    tkv_term last_term;
    struct turn *next;
};

enum out_kind { OUT_REPLY, OUT_SEND, OUT_FINISH };

/* A reply held back by the barrier. */
struct out {
    struct tkv_rpc_call *call;
    enum out_kind kind;
    uint64_t index; /* released once applied >= index */
    struct out *next;
    size_t len;
    uint8_t data[];
};

struct sched_raft {
    struct sched_server *srv;
    struct raft_peer peers[TKV_RAFT_MAX_VOTERS];
    size_t n_peers, self;
    struct tkv_raftlog *log;
    struct tkv_raft *raft;
    struct tkv_rpc_server *peer_rpc;
    struct tkv_timer tick_timer;

    struct tkv_raft_update up;
    bool has_up, pump_scheduled;
    struct turn *cur;      /* being filled by this pump */
    struct turn *inflight; /* waiting for their sync */

    tkv_index applied;
    tkv_term term;
    uint64_t leader_id;
    bool is_leader;
    bool serving;
    uint64_t barrier; /* highest index of a non-lazy proposal while serving */
    struct out *out_head, *out_tail;
    uint64_t lead_start_ns;
    struct tkv_sched_cluster *empty; /* what the status port shows while not leading */
};

/* ---- small byte helpers ---- */

static void fr_bytes(struct frame *f, const void *p, size_t n)
{
    if (f->len + n > f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 512;
        while (cap < f->len + n)
            cap *= 2;
        f->p = tkv_xrealloc(f->p, cap);
        f->cap = cap;
    }
    if (n)
        memcpy(f->p + f->len, p, n);
    f->len += n;
}

static void fr_u8(struct frame *f, uint8_t v)
{
    fr_bytes(f, &v, 1);
}

static void fr_u32(struct frame *f, uint32_t v)
{
    uint8_t b[4];
    tkv_codec_put_u32be(b, v);
    fr_bytes(f, b, 4);
}

static void fr_u64(struct frame *f, uint64_t v)
{
    uint8_t b[8];
    tkv_codec_put_u64be(b, v);
    fr_bytes(f, b, 8);
}

struct rd {
    const uint8_t *p;
    size_t n;
    bool bad;
};

static const uint8_t *rd_take(struct rd *r, size_t n)
{
    if (r->bad || r->n < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->n -= n;
    return p;
}

static uint8_t rd_u8(struct rd *r)
{
    const uint8_t *p = rd_take(r, 1);
    return p ? p[0] : 0;
}

static uint16_t rd_u16(struct rd *r)
{
    const uint8_t *p = rd_take(r, 2);
    return p ? (uint16_t)((p[0] << 8) | p[1]) : 0;
}

static uint32_t rd_u32(struct rd *r)
{
    const uint8_t *p = rd_take(r, 4);
    return p ? tkv_codec_get_u32be(p) : 0;
}

static uint64_t rd_u64(struct rd *r)
{
    const uint8_t *p = rd_take(r, 8);
    return p ? tkv_codec_get_u64be(p) : 0;
}

static uint64_t fnv1a(const char *s, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The member id main.c derives for this member: FNV-1a over name, then
 * peer URL. */
static uint64_t member_id_of(const char *name, const char *url)
{
    uint64_t id = fnv1a(url, strlen(url), fnv1a(name, strlen(name), 0xcbf29ce484222325ull));
    return id ? id : 1;
}

static uint64_t now_ns(const struct sched_raft *rs)
{
    return tkv_now_ns(rs->srv->reactor);
}

/* ---- configuration ---- */

static int parse_url(const char *url, size_t n, char *host, size_t cap, uint16_t *port)
{
    char one[TKV_CONFIG_URLS_MAX];
    if (n >= 7 && strncmp(url, "http://", 7) == 0) {
        url += 7;
        n -= 7;
    }
    while (n && url[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof(one))
        return TKV_EINVAL;
    memcpy(one, url, n);
    one[n] = '\0';
    return tkv_hostport_split(one, "127.0.0.1", host, cap, port);
}

int sched_raft_members(const struct tkv_sched_config *cfg)
{
    int n = 0;
    if (!cfg->initial_cluster[0])
        return 1;
    for (const char *p = cfg->initial_cluster; *p; p++)
        if (*p == '=')
            n++;
    return n;
}

static int parse_members(struct sched_raft *rs, const char *list, const char *self_name)
{
    const char *p = list;
    bool have_self = false;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq || eq == p) {
            TKV_LOG_ERROR("bad initial-cluster entry (want name=peer-url)",
                          TKV_LF_STR("initial_cluster", list));
            return TKV_EINVAL;
        }
        size_t nl = (size_t)(eq - p), ul = n - nl - 1;
        if (rs->n_peers == TKV_RAFT_MAX_VOTERS || nl >= TKV_CONFIG_NAME_MAX ||
            ul >= TKV_CONFIG_URLS_MAX) {
            TKV_LOG_ERROR("too many or too long initial-cluster entries",
                          TKV_LF_STR("initial_cluster", list));
            return TKV_EINVAL;
        }
        struct raft_peer *m = &rs->peers[rs->n_peers];
        memset(m, 0, sizeof(*m));
        memcpy(m->name, p, nl);
        memcpy(m->peer_url, eq + 1, ul);
        if (parse_url(eq + 1, ul, m->host, sizeof(m->host), &m->port) != 0 || m->port == 0) {
            TKV_LOG_ERROR("bad peer URL in initial-cluster", TKV_LF_STR("member", m->name),
                          TKV_LF_STR("initial_cluster", list));
            return TKV_EINVAL;
        }
        m->id = member_id_of(m->name, m->peer_url);
        for (size_t i = 0; i < rs->n_peers; i++) {
            if (rs->peers[i].id == m->id || strcmp(rs->peers[i].name, m->name) == 0) {
                TKV_LOG_ERROR("duplicate member in initial-cluster", TKV_LF_STR("member", m->name));
                return TKV_EINVAL;
            }
        }
        if (strcmp(m->name, self_name) == 0) {
            rs->self = rs->n_peers;
            have_self = true;
        }
        rs->n_peers++;
        p += n + (e ? 1 : 0);
    }
    if (!have_self) {
        TKV_LOG_ERROR("initial-cluster does not list this member's name",
                      TKV_LF_STR("name", self_name), TKV_LF_STR("initial_cluster", list));
        return TKV_EINVAL;
    }
    return 0;
}

static struct raft_peer *peer_by_id(struct sched_raft *rs, uint64_t id)
{
    for (size_t i = 0; i < rs->n_peers; i++)
        if (rs->peers[i].id == id)
            return &rs->peers[i];
    return NULL;
}

/* ---- storage over the raft log ---- */

static int st_initial(void *ctx, struct tkv_raft_hard_state *hs, struct tkv_raft_conf_state *cs)
{
    struct sched_raft *rs = ctx;
    struct tkv_raftlog_hardstate h;
    int rv = tkv_raftlog_hardstate(rs->log, GROUP_ID, &h);
    if (rv)
        return rv;
    *hs = (struct tkv_raft_hard_state){.term = h.term, .vote = h.vote, .commit = h.commit};
    memset(cs, 0, sizeof(*cs));
    for (size_t i = 0; i < rs->n_peers; i++)
        cs->voters[cs->n_voters++] = rs->peers[i].id;
    return 0;
}

static int st_term(void *ctx, tkv_index i, tkv_term *t)
{
    struct sched_raft *rs = ctx;
    return tkv_raftlog_term(rs->log, GROUP_ID, i, t);
}

static int st_entries(void *ctx, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                      struct tkv_raft_entry *out, size_t *n_out)
{
    struct sched_raft *rs = ctx;
    struct tkv_raftlog_entry *ents = NULL;
    size_t n = 0;
    int rv = tkv_raftlog_read(rs->log, GROUP_ID, lo, hi, max_bytes, &ents, &n);
    if (rv < 0)
        return rv;
    for (size_t i = 0; i < n; i++) {
        out[i] = (struct tkv_raft_entry){
            .term = ents[i].term, .index = ents[i].index, .type = ents[i].type, .data = NULL};
        if (ents[i].data.len) {
            rv = tkv_raft_buf_copy(ents[i].data.ptr, ents[i].data.len, &out[i].data);
            if (rv < 0) {
                for (size_t k = 0; k < i; k++)
                    tkv_raft_buf_unref(out[k].data);
                tkv_free(ents);
                return rv;
            }
        }
    }
    tkv_free(ents);
    *n_out = n;
    return 0;
}

static tkv_index st_first(void *ctx)
{
    struct sched_raft *rs = ctx;
    return tkv_raftlog_first_index(rs->log, GROUP_ID);
}

static tkv_index st_last(void *ctx)
{
    struct sched_raft *rs = ctx;
    return tkv_raftlog_last_index(rs->log, GROUP_ID);
}

/* The log is never compacted (every member starts from the same genesis),
 * so no follower ever needs a snapshot. */
static int st_snapshot(void *ctx, struct tkv_raft_snapshot *out)
{
    (void)ctx;
    (void)out;
    return TKV_EUNAVAILABLE;
}

/* ---- the reply barrier ---- */

static bool call_in(struct tkv_rpc_call **list, size_t n, struct tkv_rpc_call *c)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == c)
            return true;
    return false;
}

static void out_release(struct sched_raft *rs)
{
    while (rs->out_head && rs->out_head->index <= rs->applied) {
        struct out *o = rs->out_head;
        rs->out_head = o->next;
        if (!rs->out_head)
            rs->out_tail = NULL;
        switch (o->kind) {
        case OUT_REPLY:
            tkv_rpc_call_reply(o->call, o->data, o->len);
            break;
        case OUT_SEND:
            (void)tkv_rpc_call_send(o->call, o->data, o->len);
            break;
        case OUT_FINISH:
            tkv_rpc_call_finish(o->call, TKV_GRPC_OK, NULL);
            break;
        }
        tkv_free(o);
    }
}

/* Leadership lost: nothing queued may go out as it is. */
static void out_fail_all(struct sched_raft *rs)
{
    struct tkv_rpc_call **done = NULL;
    size_t n_done = 0, cap = 0;
    while (rs->out_head) {
        struct out *o = rs->out_head;
        rs->out_head = o->next;
        if (!call_in(done, n_done, o->call)) {
            if (n_done == cap) {
                cap = cap ? cap * 2 : 16;
                done = tkv_xrealloc(done, cap * sizeof(*done));
            }
            done[n_done++] = o->call;
            tkv_rpc_call_finish(o->call, TKV_GRPC_UNAVAILABLE, "not leader");
        }
        tkv_free(o);
    }
    rs->out_tail = NULL;
    tkv_free(done);
}

static uint64_t wait_index(const struct sched_raft *rs)
{
    uint64_t w = rs->barrier > rs->applied ? rs->barrier : 0;
    if (rs->out_tail && rs->out_tail->index > w)
        w = rs->out_tail->index; /* keep the order of queued replies */
    return w;
}

uint64_t sched_raft_wait_index(const struct sched_server *srv)
{
    return srv->raft ? wait_index(srv->raft) : 0;
}

static void out_push(struct sched_raft *rs, struct tkv_rpc_call *call, enum out_kind kind,
                     const void *data, size_t len, uint64_t index)
{
    struct out *o = tkv_xmalloc(sizeof(*o) + len);
    o->call = call;
    o->kind = kind;
    o->index = index;
    o->next = NULL;
    o->len = len;
    if (len)
        memcpy(o->data, data, len);
    if (rs->out_tail)
        rs->out_tail->next = o;
    else
        rs->out_head = o;
    rs->out_tail = o;
}

void sched_out_reply(struct sched_server *srv, struct tkv_rpc_call *call, const void *msg,
                     size_t len)
{
    uint64_t w = sched_raft_wait_index(srv);
    if (w)
        out_push(srv->raft, call, OUT_REPLY, msg, len, w);
    else
        tkv_rpc_call_reply(call, msg, len);
}

int sched_out_send(struct sched_server *srv, struct tkv_rpc_call *call, const void *msg, size_t len)
{
    uint64_t w = sched_raft_wait_index(srv);
    if (!w)
        return tkv_rpc_call_send(call, msg, len);
    out_push(srv->raft, call, OUT_SEND, msg, len, w);
    return 0;
}

void sched_out_finish_ok(struct sched_server *srv, struct tkv_rpc_call *call)
{
    uint64_t w = sched_raft_wait_index(srv);
    if (w)
        out_push(srv->raft, call, OUT_FINISH, NULL, 0, w);
    else
        tkv_rpc_call_finish(call, TKV_GRPC_OK, NULL);
}

void sched_out_forget(struct sched_server *srv, struct tkv_rpc_call *call)
{
    struct sched_raft *rs = srv->raft;
    if (!rs)
        return;
    struct out **pp = &rs->out_head, *last = NULL;
    while (*pp) {
        struct out *o = *pp;
        if (o->call == call) {
            *pp = o->next;
            tkv_free(o);
        } else {
            last = o;
            pp = &o->next;
        }
    }
    rs->out_tail = last;
}

bool sched_raft_serving(const struct sched_server *srv)
{
    return !srv->raft || srv->raft->serving;
}

/* ---- leadership ---- */

static void step_down(struct sched_raft *rs, const char *why)
{
    struct sched_server *srv = rs->srv;
    if (!rs->serving)
        return;
    rs->serving = false;
    rs->barrier = 0;
    TKV_LOG_WARN("stopped serving as the scheduler leader", TKV_LF_STR("why", why),
                 TKV_LF_U64("term", rs->term), TKV_LF_U64("leader", rs->leader_id));
    out_fail_all(rs);
    sched_service_drop_streams(srv, TKV_GRPC_UNAVAILABLE, "not leader");
    /* The in-memory core may be ahead of what was committed: forget it. */
    tkv_sched_cluster_drop(srv->cluster);
    srv->cluster = NULL;
}

static int writer(void *ctx, struct tkv_slice cmd, bool lazy);

static void start_serving(struct sched_raft *rs)
{
    struct sched_server *srv = rs->srv;
    struct tkv_sched_options opts = srv->opts;
    opts.writer = writer;
    opts.writer_ctx = rs;
    uint64_t seed = srv->member_id ^ ((uint64_t)getpid() << 20) ^ now_ns(rs);
    /* serving first: the open may write (a new cluster id), which proposes. */
    rs->serving = true;
    int rv = tkv_sched_cluster_open(srv->sess, &opts, sched_wall_ms(), seed, now_ns(rs),
                                    &srv->cluster);
    if (rv) {
        rs->serving = false;
        srv->cluster = NULL;
        TKV_LOG_ERROR("cannot load the replicated scheduler state; not serving", TKV_LF_ERR(rv));
        return;
    }
    srv->start_ns = now_ns(rs);
    TKV_LOG_INFO("serving as the scheduler leader", TKV_LF_U64("term", rs->term),
                 TKV_LF_U64("applied", rs->applied),
                 TKV_LF_U64("cluster_id", tkv_sched_cluster_id(srv->cluster)),
                 TKV_LF_U64("elected_ms", (now_ns(rs) - rs->lead_start_ns) / 1000000u));
}

/* ---- stepping and pumping ---- */

static void pump(void *arg);

static void schedule_pump(struct sched_raft *rs)
{
    if (!rs->pump_scheduled) {
        rs->pump_scheduled = true;
        tkv_reactor_defer(rs->srv->reactor, pump, rs);
    }
}

static int rstep(struct sched_raft *rs, const struct tkv_raft_event *ev)
{
    struct tkv_raft_update up;
    int rv = tkv_raft_step(rs->raft, ev, &up);
    if (up.flags) {
        rs->up = up;
        rs->has_up = true;
    }
    if (rs->has_up)
        schedule_pump(rs);
    return rv;
}

static int writer(void *ctx, struct tkv_slice cmd, bool lazy)
{
    struct sched_raft *rs = ctx;
    struct tkv_raft_buf *buf;
    struct tkv_raft_status st;
    if (!rs->serving)
        return TKV_ENOTLEADER;
    int rv = tkv_raft_buf_copy(cmd.ptr, cmd.len, &buf);
    if (rv)
        return rv;
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE};
    ev.u.propose.data = &buf;
    ev.u.propose.n = 1;
    rv = rstep(rs, &ev);
    tkv_raft_buf_unref(buf);
    if (rv == TKV_EPROPOSALDROPPED)
        rv = TKV_ENOTLEADER;
    if (rv)
        return rv;
    tkv_raft_status(rs->raft, &st);
    if (!lazy && st.last_index > rs->barrier)
        rs->barrier = st.last_index;
    return 0;
}

static struct turn *cur_turn(struct sched_raft *rs)
{
    if (!rs->cur)
        rs->cur = tkv_xcalloc(1, sizeof(*rs->cur));
    return rs->cur;
}

static void encode_msg(struct frame *f, const struct tkv_raft_msg *m)
{
    fr_u32(f, m->type);
    fr_u64(f, m->to);
    fr_u64(f, m->from);
    fr_u64(f, m->term);
    fr_u64(f, m->log_term);
    fr_u64(f, m->index);
    fr_u64(f, m->commit);
    fr_u8(f, m->reject);
    fr_u64(f, m->reject_hint);
    fr_u64(f, m->ctx);
    fr_u32(f, (uint32_t)m->n_entries);
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct tkv_raft_entry *e = &m->entries[i];
        fr_u64(f, e->term);
        fr_u64(f, e->index);
        fr_u32(f, e->type);
        fr_u32(f, e->data ? (uint32_t)e->data->len : 0);
        if (e->data)
            fr_bytes(f, e->data->data, e->data->len);
    }
    fr_u8(f, m->snapshot ? 1 : 0);
    if (m->snapshot) {
        fr_u64(f, m->snapshot->index);
        fr_u64(f, m->snapshot->term);
        fr_u32(f, m->snapshot->conf_state.n_voters);
        for (uint32_t i = 0; i < m->snapshot->conf_state.n_voters; i++)
            fr_u64(f, m->snapshot->conf_state.voters[i]);
    }
}

static void queue_msg(struct sched_raft *rs, const struct tkv_raft_msg *m)
{
    struct raft_peer *p = peer_by_id(rs, m->to);
    if (!p || p == &rs->peers[rs->self])
        return;
    struct frame *f = &cur_turn(rs)->frames[p - rs->peers];
    f->n_msgs++;
    encode_msg(f, m);
}

static void apply_entries(struct sched_raft *rs, const struct tkv_raft_entry *ents, size_t n)
{
    struct sched_server *srv = rs->srv;
    bool own_term_applied = false;
    for (size_t i = 0; i < n; i++) {
        const struct tkv_raft_entry *e = &ents[i];
        if (e->index <= rs->applied)
            continue;
        if (e->type == TKV_RAFT_ENTRY_NORMAL && e->data && e->data->len) {
            struct tkv_engine_batch b;
            uint8_t idx[8];
            tkv_engine_batch_init(&b);
            int rv = tkv_sched_cmd_to_batch(TKV_SLICE(e->data->data, e->data->len), &b);
            if (rv) {
                /* Every member refuses it alike: skip, keep the order. */
                TKV_LOG_ERROR("committed scheduler command does not decode; skipped",
                              TKV_LF_U64("index", e->index));
                tkv_engine_batch_clear(&b);
            }
            tkv_codec_put_u64be(idx, e->index);
            rv = tkv_engine_batch_put(&b, TKV_CF_META, tkv_pb_str(KEY_APPLIED), TKV_SLICE(idx, 8));
            if (rv == 0)
                rv = tkv_engine_write(srv->sess, &b);
            tkv_engine_batch_close(&b);
            if (rv) {
                TKV_LOG_FATAL("cannot apply a committed scheduler command",
                              TKV_LF_U64("index", e->index), TKV_LF_ERR(rv));
                abort();
            }
        }
        rs->applied = e->index;
        if (rs->is_leader && e->term == rs->term)
            own_term_applied = true;
    }
    if (n) {
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_APPLIED};
        ev.u.applied = rs->applied;
        (void)rstep(rs, &ev);
    }
    if (own_term_applied && !rs->serving)
        start_serving(rs);
    out_release(rs);
}

static void handle_update(struct sched_raft *rs, const struct tkv_raft_update *up)
{
    if (up->flags & TKV_RAFT_UPDATE_SOFT_STATE) {
        bool was = rs->is_leader;
        rs->leader_id = up->soft_state.leader;
        rs->is_leader = up->soft_state.role == TKV_RAFT_LEADER;
        if (rs->is_leader && !was)
            rs->lead_start_ns = now_ns(rs);
        if (!rs->is_leader)
            step_down(rs, "raft role changed");
        TKV_LOG_INFO("scheduler raft role", TKV_LF_U64("leader", rs->leader_id),
                     TKV_LF_BOOL("is_leader", rs->is_leader));
    }
    if (up->flags & TKV_RAFT_UPDATE_HARD_STATE) {
        if (up->hard_state.term != rs->term && rs->serving)
            step_down(rs, "term changed");
        rs->term = up->hard_state.term;
    }
    if (up->snapshot && up->snapshot->index > rs->applied)
        TKV_LOG_ERROR("scheduler raft sent a snapshot; ignored (the log is never compacted)",
                      TKV_LF_U64("index", up->snapshot->index));
    if (up->n_entries || (up->flags & TKV_RAFT_UPDATE_HARD_STATE)) {
        struct tkv_raftlog_entry small[32];
        struct tkv_raftlog_entry *le =
            up->n_entries <= 32 ? small : tkv_xmalloc(up->n_entries * sizeof(*le));
        for (size_t i = 0; i < up->n_entries; i++) {
            const struct tkv_raft_entry *e = &up->entries[i];
            le[i] = (struct tkv_raftlog_entry){
                .index = e->index,
                .term = e->term,
                .type = e->type,
                .data = e->data ? TKV_SLICE(e->data->data, e->data->len) : TKV_SLICE(NULL, 0)};
        }
        struct tkv_raftlog_hardstate hs = {.term = up->hard_state.term,
                                           .vote = up->hard_state.vote,
                                           .commit = up->hard_state.commit};
        int rv = tkv_raftlog_append(rs->log, GROUP_ID, le, up->n_entries,
                                    (up->flags & TKV_RAFT_UPDATE_HARD_STATE) ? &hs : NULL, NULL,
                                    NULL);
        if (le != small)
            tkv_free(le);
        if (rv < 0) {
            TKV_LOG_FATAL("scheduler raft log append failed", TKV_LF_ERR(rv));
            abort();
        }
        struct turn *t = cur_turn(rs);
        if (up->n_entries) {
            t->persisted = true;
            t->last = up->entries[up->n_entries - 1].index;
            t->last_term = up->entries[up->n_entries - 1].term;
        }
    }
    for (size_t i = 0; i < up->n_msgs; i++)
        queue_msg(rs, &up->msgs[i]);
    if (up->n_committed)
        apply_entries(rs, up->committed, up->n_committed);
}

/* ---- transport ---- */

static void peer_stream_done(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status status,
                             const char *message)
{
    struct raft_peer *p = user;
    (void)message;
    if (p->stream == c)
        p->stream = NULL;
    if (status != TKV_GRPC_OK && status != TKV_GRPC_CANCELLED)
        TKV_LOG_DEBUG("scheduler peer stream ended", TKV_LF_STR("peer", p->name),
                      TKV_LF_STR("status", tkv_grpc_status_name(status)));
}

static void peer_stream_msg(struct tkv_rpc_ccall *c, void *user, struct tkv_slice msg)
{
    (void)c;
    (void)user;
    (void)msg;
}

static const struct tkv_rpc_stream_cbs peer_cbs = {peer_stream_msg, peer_stream_done};

static bool peer_ready(struct sched_raft *rs, struct raft_peer *p)
{
    uint64_t now = now_ns(rs);
    if (p->stream && p->cl && tkv_rpc_client_usable(p->cl))
        return true;
    if (p->stream) {
        tkv_rpc_ccall_cancel(p->stream);
        p->stream = NULL;
    }
    if (now < p->retry_at_ns)
        return false;
    p->retry_at_ns = now + RECONNECT_NS;
    if (p->cl && !tkv_rpc_client_usable(p->cl)) {
        tkv_rpc_client_close(p->cl);
        p->cl = NULL;
    }
    if (!p->cl && tkv_rpc_client_connect(rs->srv->reactor, p->host, p->port, NULL, &p->cl) != 0) {
        p->cl = NULL;
        return false;
    }
    if (tkv_rpc_client_start(p->cl, PEER_PATH, 0, &peer_cbs, p, &p->stream) != 0) {
        p->stream = NULL;
        return false;
    }
    return true;
}

static void send_frame(struct sched_raft *rs, size_t i, struct frame *f)
{
    struct raft_peer *p = &rs->peers[i];
    struct frame hdr = {0};
    const char *url = rs->srv->cfg.advertise_client_urls;
    size_t ul = strcspn(url, ",");
    if (ul > 0xffff)
        ul = 0;
    fr_u32(&hdr, FRAME_MAGIC);
    fr_u64(&hdr, rs->peers[rs->self].id);
    fr_u64(&hdr, p->id);
    fr_u8(&hdr, (uint8_t)(ul >> 8));
    fr_u8(&hdr, (uint8_t)ul);
    fr_bytes(&hdr, url, ul);
    fr_u32(&hdr, f->n_msgs);
    fr_bytes(&hdr, f->p, f->len);
    bool sent = false;
    if (peer_ready(rs, p) && tkv_rpc_ccall_out_bytes(p->stream) < PEER_OUT_MAX)
        sent = tkv_rpc_ccall_send(p->stream, hdr.p, hdr.len) == 0;
    tkv_free(hdr.p);
    if (!sent && rs->is_leader) {
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_REPORT_UNREACHABLE};
        ev.u.report.node = p->id;
        (void)rstep(rs, &ev);
    }
}

static void turn_free(struct turn *t)
{
    for (size_t i = 0; i < TKV_RAFT_MAX_VOTERS; i++)
        tkv_free(t->frames[i].p);
    tkv_free(t);
}

static void turn_synced(void *arg, int rv)
{
    struct turn *t = arg;
    struct sched_raft *rs = t->rs;
    if (rs) {
        struct turn **pp = &rs->inflight;
        while (*pp && *pp != t)
            pp = &(*pp)->next;
        if (*pp)
            *pp = t->next;
        if (rv < 0) {
            TKV_LOG_FATAL("scheduler raft log sync failed", TKV_LF_ERR(rv));
            abort();
        }
        if (t->persisted) {
            struct tkv_raft_event ev = {.type = TKV_RAFT_EV_LOG_PERSISTED};
            ev.u.persisted.index = t->last;
            ev.u.persisted.term = t->last_term;
            (void)rstep(rs, &ev);
        }
        for (size_t i = 0; i < rs->n_peers; i++)
            if (t->frames[i].n_msgs)
                send_frame(rs, i, &t->frames[i]);
    }
    turn_free(t);
}

static void pump(void *arg)
{
    struct sched_raft *rs = arg;
    rs->pump_scheduled = false;
    if (!rs->raft)
        return;
    for (int round = 0; rs->has_up && round < 64; round++) {
        struct tkv_raft_update up = rs->up;
        handle_update(rs, &up);
        tkv_raft_advance(rs->raft, &rs->up);
        rs->has_up = rs->up.flags != 0;
    }
    if (rs->has_up)
        schedule_pump(rs);
    struct turn *t = rs->cur;
    rs->cur = NULL;
    if (!t)
        return;
    t->rs = rs;
    t->next = rs->inflight;
    rs->inflight = t;
    int rv = tkv_raftlog_sync(rs->log, turn_synced, t);
    if (rv < 0) {
        TKV_LOG_FATAL("scheduler raft log sync refused", TKV_LF_ERR(rv));
        abort();
    }
}

static void on_tick(struct tkv_timer *timer)
{
    struct sched_raft *rs = timer->data;
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TICK};
    (void)rstep(rs, &ev);
    tkv_timer_start(rs->srv->reactor, timer, TICK_NS);
}

/* ---- receiving frames ---- */

static int decode_and_step(struct sched_raft *rs, struct tkv_slice msg, const char **why)
{
    struct rd r = {.p = msg.ptr, .n = msg.len};
    if (rd_u32(&r) != FRAME_MAGIC) {
        *why = "bad frame magic";
        return TKV_EPROTO;
    }
    uint64_t from = rd_u64(&r), to = rd_u64(&r);
    struct raft_peer *src = peer_by_id(rs, from);
    if (r.bad || !src || src == &rs->peers[rs->self] || to != rs->peers[rs->self].id) {
        *why = "frame from an unknown member or for another member";
        return TKV_EPROTO;
    }
    uint16_t ul = rd_u16(&r);
    const uint8_t *url = rd_take(&r, ul);
    if (r.bad || ul >= sizeof(src->client_url)) {
        *why = "bad client URL";
        return TKV_EPROTO;
    }
    memcpy(src->client_url, url, ul);
    src->client_url[ul] = '\0';
    uint32_t n = rd_u32(&r);
    if (r.bad || n > MAX_FRAME_MSGS) {
        *why = "too many messages";
        return TKV_EPROTO;
    }
    for (uint32_t k = 0; k < n; k++) {
        struct tkv_raft_msg m;
        struct tkv_raft_snapshot snap;
        memset(&m, 0, sizeof(m));
        m.type = rd_u32(&r);
        m.to = rd_u64(&r);
        m.from = rd_u64(&r);
        m.term = rd_u64(&r);
        m.log_term = rd_u64(&r);
        m.index = rd_u64(&r);
        m.commit = rd_u64(&r);
        m.reject = rd_u8(&r) != 0;
        m.reject_hint = rd_u64(&r);
        m.ctx = rd_u64(&r);
        uint32_t ne = rd_u32(&r);
        /* Each entry takes at least 24 bytes: refuse counts the frame
         * cannot hold before allocating. */
        if (r.bad || ne > MAX_MSG_ENTRIES || (size_t)ne * 24 > r.n || m.from != from ||
            m.to != to) {
            *why = "malformed raft message";
            return TKV_EPROTO;
        }
        if (ne)
            m.entries = tkv_xcalloc(ne, sizeof(*m.entries));
        for (uint32_t i = 0; i < ne && !r.bad; i++) {
            struct tkv_raft_entry *e = &m.entries[i];
            e->term = rd_u64(&r);
            e->index = rd_u64(&r);
            e->type = rd_u32(&r);
            uint32_t dl = rd_u32(&r);
            const uint8_t *d = rd_take(&r, dl);
            if (d && dl && tkv_raft_buf_copy(d, dl, &e->data) != 0)
                r.bad = true;
            m.n_entries = i + 1;
        }
        uint8_t has_snap = rd_u8(&r);
        if (has_snap) {
            memset(&snap, 0, sizeof(snap));
            snap.index = rd_u64(&r);
            snap.term = rd_u64(&r);
            snap.conf_state.n_voters = rd_u32(&r);
            if (snap.conf_state.n_voters > TKV_RAFT_MAX_VOTERS)
                r.bad = true;
            for (uint32_t i = 0; i < snap.conf_state.n_voters && !r.bad; i++)
                snap.conf_state.voters[i] = rd_u64(&r);
            m.snapshot = &snap;
        }
        int rv = 0;
        if (!r.bad && m.type != TKV_RAFT_MSG_HUP && m.type != TKV_RAFT_MSG_BEAT &&
            m.type != TKV_RAFT_MSG_PROPOSE) {
            struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE};
            ev.u.msg = &m;
            rv = rstep(rs, &ev);
        }
        for (size_t i = 0; i < m.n_entries; i++)
            tkv_raft_buf_unref(m.entries[i].data);
        tkv_free(m.entries);
        if (r.bad) {
            *why = "truncated raft message";
            return TKV_EPROTO;
        }
        if (rv == TKV_EPROTO)
            TKV_LOG_DEBUG("scheduler raft refused a peer message", TKV_LF_U64("from", from));
    }
    if (r.n) {
        *why = "trailing bytes after the messages";
        return TKV_EPROTO;
    }
    return 0;
}

static void on_peer_message(struct tkv_rpc_call *call, struct tkv_slice msg)
{
    struct sched_raft *rs = tkv_rpc_call_method_data(call);
    const char *why = "";
    if (!rs->raft)
        return;
    if (decode_and_step(rs, msg, &why) != 0) {
        TKV_LOG_WARN("bad scheduler peer frame; closing the stream", TKV_LF_STR("why", why));
        tkv_rpc_call_finish(call, TKV_GRPC_INVALID_ARGUMENT, why);
    }
}

static void on_peer_half_close(struct tkv_rpc_call *call)
{
    tkv_rpc_call_finish(call, TKV_GRPC_OK, NULL);
}

static void on_peer_cancel(struct tkv_rpc_call *call, enum tkv_grpc_status why)
{
    (void)call;
    (void)why;
}

/* ---- start / stop ---- */

static int write_genesis(struct sched_raft *rs, const char *dir)
{
    struct tkv_raftlog_config lc = {.dir = dir, .reactor = NULL, .segment_size = 16u << 20};
    struct tkv_raftlog *log = NULL;
    struct tkv_raftlog_corruption where;
    struct tkv_raftlog_hardstate hs;
    int rv = tkv_raftlog_open(&lc, &log, &where);
    if (rv) {
        TKV_LOG_ERROR("cannot open the scheduler raft log", TKV_LF_STR("dir", dir),
                      TKV_LF_ERR(rv), TKV_LF_STR("where", rv == TKV_ECORRUPT ? where.path : ""));
        return rv;
    }
    if (tkv_raftlog_hardstate(log, GROUP_ID, &hs) == TKV_ENOTFOUND) {
        /* Genesis (raft.h GENESIS): every initial member writes the same
         * state, so no member ever needs a snapshot. */
        hs = (struct tkv_raftlog_hardstate){
            .term = TKV_RAFT_INIT_TERM, .vote = 0, .commit = TKV_RAFT_INIT_INDEX};
        rv = tkv_raftlog_compact(log, GROUP_ID, TKV_RAFT_INIT_INDEX, TKV_RAFT_INIT_TERM, NULL, NULL);
        if (rv == 0)
            rv = tkv_raftlog_append(log, GROUP_ID, NULL, 0, &hs, NULL, NULL);
        if (rv == 0)
            rv = tkv_raftlog_flush(log);
        if (rv)
            TKV_LOG_ERROR("cannot write the scheduler raft genesis", TKV_LF_ERR(rv));
        else
            TKV_LOG_INFO("new scheduler raft group", TKV_LF_U64("members", rs->n_peers));
    }
    tkv_raftlog_close(log);
    return rv;
}

static int read_applied(struct sched_raft *rs, tkv_index *out)
{
    struct tkv_slice v;
    int rv = tkv_engine_get(rs->srv->sess, TKV_CF_META, tkv_pb_str(KEY_APPLIED), &v);
    *out = TKV_RAFT_INIT_INDEX;
    if (rv == TKV_ENOTFOUND)
        return 0;
    if (rv)
        return rv;
    if (v.len != 8)
        return TKV_ECORRUPT;
    *out = tkv_codec_get_u64be(v.ptr);
    return 0;
}

int sched_raft_start(struct sched_server *srv)
{
    struct sched_raft *rs = tkv_xcalloc(1, sizeof(*rs));
    char dir[TKV_CONFIG_PATH_MAX + 8];
    int rv;

    rs->srv = srv;
    srv->raft = rs;
    tkv_timer_init(&rs->tick_timer, on_tick, rs);
    rv = parse_members(rs, srv->cfg.initial_cluster, srv->cfg.name);
    if (rv)
        return rv;
    struct raft_peer *self = &rs->peers[rs->self];
    srv->member_id = self->id;
    snprintf(self->client_url, sizeof(self->client_url), "%.*s",
             (int)strcspn(srv->cfg.advertise_client_urls, ","), srv->cfg.advertise_client_urls);

    snprintf(dir, sizeof(dir), "%s/raft", srv->cfg.data_dir);
    rv = write_genesis(rs, dir);
    if (rv)
        return rv;
    struct tkv_raftlog_config lc = {.dir = dir, .reactor = srv->reactor, .segment_size = 16u << 20};
    struct tkv_raftlog_corruption where;
    rv = tkv_raftlog_open(&lc, &rs->log, &where);
    if (rv) {
        TKV_LOG_ERROR("cannot open the scheduler raft log", TKV_LF_ERR(rv));
        return rv;
    }
    rv = read_applied(rs, &rs->applied);
    if (rv) {
        TKV_LOG_ERROR("cannot read the scheduler's applied index", TKV_LF_ERR(rv));
        return rv;
    }
    struct tkv_raft_config rc = {
        .id = self->id,
        .election_tick = ELECTION_TICK,
        .heartbeat_tick = HEARTBEAT_TICK,
        .storage = {.ctx = rs,
                    .initial_state = st_initial,
                    .term = st_term,
                    .entries = st_entries,
                    .first_index = st_first,
                    .last_index = st_last,
                    .snapshot = st_snapshot},
        .applied = rs->applied,
        .seed = self->id ^ tkv_now_ns(srv->reactor) ^ ((uint64_t)getpid() << 32),
        .max_msg_bytes = 1u << 20,
        .pre_vote = true,
        .check_quorum = true,
    };
    rv = tkv_raft_init(&rc, &rs->raft);
    if (rv) {
        TKV_LOG_ERROR("cannot start the scheduler raft", TKV_LF_ERR(rv));
        return rv;
    }
    {
        struct tkv_raft_status st;
        tkv_raft_status(rs->raft, &st);
        rs->term = st.hs.term;
    }

    /* Peer listener: exclusive (no SO_REUSEPORT), on the first peer URL. */
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port = 0;
    if (parse_url(srv->cfg.peer_urls, strcspn(srv->cfg.peer_urls, ","), host, sizeof(host),
                  &port) != 0) {
        TKV_LOG_ERROR("bad peer-urls", TKV_LF_STR("peer_urls", srv->cfg.peer_urls));
        return TKV_EINVAL;
    }
    struct tkv_rpc_method m = {PEER_PATH, TKV_RPC_CLIENT_STREAM, on_peer_message,
                               on_peer_half_close, on_peer_cancel, rs};
    rv = tkv_rpc_server_new(NULL, &m, 1, &rs->peer_rpc);
    if (rv)
        return rv;
    int fd = tkv_reactor_listen_tcp(host, port, false, 64, &port);
    if (fd < 0) {
        TKV_LOG_ERROR("cannot listen on the peer URL", TKV_LF_STR("host", host),
                      TKV_LF_U64("port", port), TKV_LF_ERR(fd));
        return fd;
    }
    rv = tkv_rpc_server_listen_fd(rs->peer_rpc, srv->reactor, fd);
    if (rv) {
        close(fd);
        return rv;
    }
    tkv_timer_start(srv->reactor, &rs->tick_timer, TICK_NS);
    TKV_LOG_INFO("scheduler raft member started", TKV_LF_STR("name", self->name),
                 TKV_LF_U64("member_id", self->id), TKV_LF_U64("members", rs->n_peers),
                 TKV_LF_U64("term", rs->term), TKV_LF_U64("applied", rs->applied),
                 TKV_LF_STR("peer_host", host), TKV_LF_U64("peer_port", port));
    return 0;
}

void sched_raft_stop(struct sched_server *srv)
{
    struct sched_raft *rs = srv->raft;
    if (!rs)
        return;
    if (rs->peer_rpc) {
        tkv_rpc_server_free(rs->peer_rpc);
        rs->peer_rpc = NULL;
    }
    out_fail_all(rs);
    rs->serving = false;
    tkv_sched_cluster_drop(srv->cluster); /* no flush: it would propose */
    srv->cluster = NULL;
    if (srv->reactor)
        tkv_timer_stop(srv->reactor, &rs->tick_timer);
    for (size_t i = 0; i < rs->n_peers; i++) {
        struct raft_peer *p = &rs->peers[i];
        if (p->cl)
            tkv_rpc_client_close(p->cl); /* on_done(CANCELLED) clears the stream */
        p->cl = NULL;
        p->stream = NULL;
    }
    for (struct turn *t = rs->inflight; t; t = t->next)
        t->rs = NULL; /* their callbacks only free them */
    if (rs->cur)
        turn_free(rs->cur);
    rs->cur = NULL;
    tkv_raft_close(rs->raft);
    rs->raft = NULL;
    if (rs->log && tkv_raftlog_idle(rs->log))
        tkv_raftlog_close(rs->log);
    else if (rs->log)
        TKV_LOG_WARN("scheduler raft log busy at stop; left to the exit");
    rs->log = NULL;
    tkv_sched_cluster_drop(rs->empty);
    srv->raft = NULL;
    tkv_free(rs);
}

/* ---- GetMembers ---- */

size_t sched_raft_n_members(const struct sched_server *srv)
{
    return srv->raft ? srv->raft->n_peers : 0;
}

void sched_raft_member(const struct sched_server *srv, size_t i, struct sched_member_info *out)
{
    const struct raft_peer *p = &srv->raft->peers[i];
    out->name = p->name;
    out->id = p->id;
    out->peer_url = p->peer_url;
    out->client_url = p->client_url;
}

uint64_t sched_raft_leader(const struct sched_server *srv)
{
    return srv->raft ? srv->raft->leader_id : srv->member_id;
}

struct tkv_sched_cluster *sched_raft_view(struct sched_server *srv)
{
    struct sched_raft *rs = srv->raft;
    if (srv->cluster || !rs)
        return srv->cluster;
    if (!rs->empty)
        (void)tkv_sched_cluster_open(NULL, &srv->opts, 0, 1, 0, &rs->empty); /* cannot fail */
    return rs->empty;
}

uint64_t sched_raft_cluster_id(const struct sched_server *srv)
{
    struct tkv_slice v;
    if (srv->cluster)
        return tkv_sched_cluster_id(srv->cluster);
    if (srv->sess &&
        tkv_engine_get(srv->sess, TKV_CF_META, tkv_pb_str("sched/cluster_id"), &v) == 0 &&
        v.len == 8)
        return tkv_codec_get_u64be(v.ptr);
    return 0;
}
