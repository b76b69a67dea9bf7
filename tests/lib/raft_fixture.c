/* Deterministic Raft cluster fixture and its invariant checker (see
 * raft_fixture.h). Harness memory uses libc malloc so that the failing
 * allocator hits only the library under test. */
#include "raft_fixture.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tkv/err.h"

struct rf_write {
    uint64_t at;
    bool has_hs, has_snap;
    struct tkv_raft_hard_state hs;
    struct tkv_raft_snapshot snap;
    struct tkv_raft_entry *ents;
    size_t n_ents;
    struct tkv_raft_msg *msgs;
    size_t n_msgs;
};

struct rf_inflight {
    uint64_t at, seq;
    struct tkv_raft_msg m;
};

struct rf_hash {
    uint64_t *keys_i, *keys_t, *vals;
    size_t cap, n;
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}

#define GROW(arr, n, cap)                                            \
    do {                                                             \
        if ((n) == (cap)) {                                          \
            (cap) = (cap) ? (cap) * 2 : 8;                           \
            (arr) = xrealloc((arr), (cap) * sizeof(*(arr)));         \
        }                                                            \
    } while (0)

void rf_fail(struct rf_cluster *c, const char *fmt, ...)
{
    if (c->failed)
        return;
    c->failed = true;
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(c->err, sizeof(c->err), "seed %llu t=%llu: ", (unsigned long long)c->seed,
                     (unsigned long long)c->now);
    vsnprintf(c->err + k, sizeof(c->err) - (size_t)k, fmt, ap);
    va_end(ap);
}

uint64_t rf_rand(struct rf_cluster *c)
{
    uint64_t z = (c->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rnd_range(struct rf_cluster *c, uint32_t lo, uint32_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + rf_rand(c) % (hi - lo + 1);
}

struct tkv_raft_buf *rf_buf(const void *p, size_t len)
{
    struct tkv_raft_buf *b;
    if (tkv_raft_buf_copy(p, len, &b) < 0)
        return NULL;
    return b;
}

/* ------------------------------------------------------------ hashing */

static uint64_t mix(uint64_t h, uint64_t x)
{
    h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 33);
}

static uint64_t entry_hash(uint64_t prev, const struct tkv_raft_entry *e)
{
    uint64_t h = mix(prev, e->term);
    h = mix(h, e->type);
    if (e->data) {
        uint64_t f = 1469598103934665603ULL;
        for (size_t i = 0; i < e->data->len; i++)
            f = (f ^ e->data->data[i]) * 1099511628211ULL;
        h = mix(h, f);
        h = mix(h, e->data->len);
    }
    return h;
}

static uint64_t snap_hash(const struct tkv_raft_snapshot *s)
{
    uint64_t h = 0;
    if (s->data && s->data->len >= 8)
        memcpy(&h, s->data->data, 8);
    return h;
}

static void chain_put(struct rf_cluster *c, uint64_t i, uint64_t t, uint64_t v, uint64_t node)
{
    struct rf_hash *hh = c->chain;
    if ((hh->n + 1) * 2 > hh->cap) {
        struct rf_hash nh = {.cap = hh->cap ? hh->cap * 2 : 1024};
        nh.keys_i = calloc(nh.cap, 8);
        nh.keys_t = calloc(nh.cap, 8);
        nh.vals = calloc(nh.cap, 8);
        if (!nh.keys_i || !nh.keys_t || !nh.vals)
            abort();
        for (size_t k = 0; k < hh->cap; k++) {
            if (!hh->keys_i[k])
                continue;
            size_t p = (size_t)mix(hh->keys_i[k], hh->keys_t[k]) & (nh.cap - 1);
            while (nh.keys_i[p])
                p = (p + 1) & (nh.cap - 1);
            nh.keys_i[p] = hh->keys_i[k];
            nh.keys_t[p] = hh->keys_t[k];
            nh.vals[p] = hh->vals[k];
            nh.n++;
        }
        free(hh->keys_i);
        free(hh->keys_t);
        free(hh->vals);
        *hh = nh;
    }
    size_t p = (size_t)mix(i, t) & (hh->cap - 1);
    while (hh->keys_i[p]) {
        if (hh->keys_i[p] == i && hh->keys_t[p] == t) {
            if (hh->vals[p] != v)
                rf_fail(c, "log matching violated: node %llu entry (index %llu, term %llu) has a "
                           "different prefix than another node's",
                        (unsigned long long)node, (unsigned long long)i, (unsigned long long)t);
            return;
        }
        p = (p + 1) & (hh->cap - 1);
    }
    hh->keys_i[p] = i;
    hh->keys_t[p] = t;
    hh->vals[p] = v;
    hh->n++;
}

/* ------------------------------------------------------------ mirror */

static void mirror_reset(struct rf_node *nd, tkv_index base, uint64_t h)
{
    nd->mirror_base = base;
    nd->n_mirror = 0;
    GROW(nd->mirror, nd->n_mirror, nd->cap_mirror);
    nd->mirror[nd->n_mirror++] = h;
}

static bool mirror_get(const struct rf_node *nd, tkv_index i, uint64_t *h)
{
    if (i < nd->mirror_base || i - nd->mirror_base >= nd->n_mirror)
        return false;
    *h = nd->mirror[i - nd->mirror_base];
    return true;
}

static void mirror_append(struct rf_cluster *c, struct rf_node *nd, const struct tkv_raft_entry *e,
                          size_t n)
{
    for (size_t k = 0; k < n; k++) {
        tkv_index i = e[k].index;
        if (i <= nd->mirror_base)
            continue;
        size_t pos = (size_t)(i - nd->mirror_base);
        if (pos > nd->n_mirror) {
            rf_fail(c, "node %llu: update appends index %llu past last %llu",
                    (unsigned long long)nd->id, (unsigned long long)i,
                    (unsigned long long)(nd->mirror_base + nd->n_mirror - 1));
            return;
        }
        nd->n_mirror = pos;
        uint64_t h = entry_hash(nd->mirror[pos - 1], &e[k]);
        GROW(nd->mirror, nd->n_mirror, nd->cap_mirror);
        nd->mirror[nd->n_mirror++] = h;
        chain_put(c, i, e[k].term, h, nd->id);
    }
}

/* ------------------------------------------------------------ messages */

static void msg_copy(struct tkv_raft_msg *d, const struct tkv_raft_msg *s)
{
    *d = *s;
    if (s->n_entries) {
        d->entries = xmalloc(s->n_entries * sizeof(*d->entries));
        for (size_t i = 0; i < s->n_entries; i++) {
            d->entries[i] = s->entries[i];
            tkv_raft_buf_ref(d->entries[i].data);
        }
    } else {
        d->entries = NULL;
    }
    if (s->snapshot) {
        d->snapshot = xmalloc(sizeof(*d->snapshot));
        *d->snapshot = *s->snapshot;
        tkv_raft_buf_ref(d->snapshot->data);
    }
}

static void msg_free(struct tkv_raft_msg *m)
{
    for (size_t i = 0; i < m->n_entries; i++)
        tkv_raft_buf_unref(m->entries[i].data);
    free(m->entries);
    if (m->snapshot) {
        tkv_raft_buf_unref(m->snapshot->data);
        free(m->snapshot);
    }
}

void rf_msgs_free(struct tkv_raft_msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        msg_free(&m[i]);
    free(m);
}

size_t rf_take_msgs(struct rf_cluster *c, uint64_t id, struct tkv_raft_msg **out)
{
    struct rf_node *nd = rf_node(c, id);
    size_t n = nd->n_outbox;
    *out = nd->outbox;
    nd->outbox = NULL;
    nd->n_outbox = nd->cap_outbox = 0;
    return n;
}

static void write_free(struct rf_write *w)
{
    for (size_t i = 0; i < w->n_ents; i++)
        tkv_raft_buf_unref(w->ents[i].data);
    free(w->ents);
    if (w->has_snap)
        tkv_raft_buf_unref(w->snap.data);
    for (size_t i = 0; i < w->n_msgs; i++)
        msg_free(&w->msgs[i]);
    free(w->msgs);
}

static void net_enqueue(struct rf_cluster *c, const struct tkv_raft_msg *m, uint64_t delay)
{
    GROW(c->q, c->n_q, c->cap_q);
    struct rf_inflight *f = &c->q[c->n_q++];
    f->at = c->now + delay;
    f->seq = c->seq++;
    msg_copy(&f->m, m);
}

static bool link_down(struct rf_cluster *c, uint64_t from, uint64_t to)
{
    if (from > RF_MAX_NODES || to > RF_MAX_NODES)
        return true;
    return c->cut[from][to];
}

static void report(struct rf_cluster *c, uint64_t to, uint32_t type, uint64_t node, bool failed)
{
    struct rf_node *nd = rf_node(c, to);
    if (!c->o.report_transport || !nd || !nd->alive)
        return;
    struct tkv_raft_event ev = {.type = type};
    ev.u.report.node = node;
    ev.u.report.failed = failed;
    rf_node_step(c, to, &ev);
}

static void net_send(struct rf_cluster *c, const struct tkv_raft_msg *m)
{
    if (link_down(c, m->from, m->to) || (c->ignore_types & (1u << m->type))) {
        c->n_dropped++;
        if (m->type == TKV_RAFT_MSG_SNAPSHOT)
            report(c, m->from, TKV_RAFT_EV_REPORT_SNAPSHOT, m->to, true);
        else if (link_down(c, m->from, m->to))
            report(c, m->from, TKV_RAFT_EV_REPORT_UNREACHABLE, m->to, false);
        return;
    }
    uint32_t dl = c->drop_link[m->from][m->to];
    if (dl && rf_rand(c) % 100 < dl) {
        c->n_dropped++;
        return;
    }
    if (c->o.drop_pct && rf_rand(c) % 100 < c->o.drop_pct) {
        c->n_dropped++;
        return;
    }
    net_enqueue(c, m, rnd_range(c, c->o.net_min, c->o.net_max));
    if (c->o.dup_pct && rf_rand(c) % 100 < c->o.dup_pct)
        net_enqueue(c, m, rnd_range(c, c->o.net_min, c->o.net_max));
}

/* ------------------------------------------------------------ nodes */

struct rf_node *rf_node(struct rf_cluster *c, uint64_t id)
{
    if (id == 0 || id > RF_MAX_NODES)
        return NULL;
    return &c->nodes[id - 1];
}

struct tkv_raft *rf_raft(struct rf_cluster *c, uint64_t id)
{
    return rf_node(c, id)->r;
}

static void commit_grow(struct rf_cluster *c, tkv_index i)
{
    if (i < c->n_commit)
        return;
    size_t nc = (size_t)i * 2 + 16;
    c->commit_hash = xrealloc(c->commit_hash, nc * 8);
    c->commit_minterm = xrealloc(c->commit_minterm, nc * 8);
    for (size_t k = c->n_commit; k < nc; k++) {
        c->commit_hash[k] = 0;
        c->commit_minterm[k] = UINT64_MAX;
    }
    c->n_commit = nc;
}

static void check_leaders(struct rf_cluster *c, struct rf_node *nd)
{
    struct tkv_raft_status st;
    tkv_raft_status(nd->r, &st);
    /* commit knowledge: committed prefixes must agree */
    tkv_index cm = st.hs.commit;
    if (cm > 0) {
        uint64_t h;
        if (mirror_get(nd, cm, &h)) {
            commit_grow(c, cm);
            if (c->commit_hash[cm] == 0)
                c->commit_hash[cm] = h;
            else if (c->commit_hash[cm] != h)
                rf_fail(c, "node %llu committed a different prefix at index %llu",
                        (unsigned long long)nd->id, (unsigned long long)cm);
            if (st.hs.term < c->commit_minterm[cm])
                c->commit_minterm[cm] = st.hs.term;
            if (cm > c->max_commit)
                c->max_commit = cm;
        }
    }
    bool is_leader = st.ss.role == TKV_RAFT_LEADER;
    if (is_leader) {
        tkv_term t = st.hs.term;
        if (t >= c->n_leader_of_term) {
            size_t nn = (size_t)t * 2 + 16;
            c->leader_of_term = xrealloc(c->leader_of_term, nn * 8);
            memset(c->leader_of_term + c->n_leader_of_term, 0, (nn - c->n_leader_of_term) * 8);
            c->n_leader_of_term = nn;
        }
        if (c->leader_of_term[t] && c->leader_of_term[t] != nd->id)
            rf_fail(c, "election safety: nodes %llu and %llu both leader in term %llu",
                    (unsigned long long)c->leader_of_term[t], (unsigned long long)nd->id,
                    (unsigned long long)t);
        c->leader_of_term[t] = nd->id;
        if (!nd->was_leader) {
            /* leader completeness: every index committed in an earlier
             * term is in the new leader's log with the same prefix */
            tkv_index top = TKV_MIN(c->max_commit, (tkv_index)(c->n_commit ? c->n_commit - 1 : 0));
            for (tkv_index i = top; i > 0; i--) {
                if (!c->commit_hash[i] || c->commit_minterm[i] >= t)
                    continue;
                uint64_t h;
                if (i < nd->mirror_base)
                    break; /* covered by our snapshot */
                if (!mirror_get(nd, i, &h) || h != c->commit_hash[i])
                    rf_fail(c, "leader completeness: new leader %llu (term %llu) lacks committed "
                               "index %llu",
                            (unsigned long long)nd->id, (unsigned long long)t,
                            (unsigned long long)i);
                break;
            }
        }
    }
    nd->was_leader = is_leader;
}

static void sm_apply(struct rf_cluster *c, struct rf_node *nd, const struct tkv_raft_entry *e)
{
    if (e->index != nd->applied + 1) {
        rf_fail(c, "node %llu applies index %llu after %llu", (unsigned long long)nd->id,
                (unsigned long long)e->index, (unsigned long long)nd->applied);
        return;
    }
    nd->sm_hash = entry_hash(nd->sm_hash, e);
    nd->applied = e->index;
    tkv_index i = e->index;
    if (i < c->n_commit && c->commit_hash[i] && c->commit_hash[i] != nd->sm_hash)
        rf_fail(c, "state machine safety: node %llu applied a different entry at %llu",
                (unsigned long long)nd->id, (unsigned long long)i);
    commit_grow(c, i);
    if (!c->commit_hash[i])
        c->commit_hash[i] = nd->sm_hash;
    if (c->o.record_applied) {
        GROW(nd->applied_log, nd->n_applied_log, nd->cap_applied_log);
        nd->applied_log[nd->n_applied_log++] = (struct rf_applied){
            e->index, e->term, e->type, tkv_raft_buf_ref(e->data)};
    }
}

static void handle_update(struct rf_cluster *c, struct rf_node *nd, struct tkv_raft_update *up);

int rf_node_step(struct rf_cluster *c, uint64_t id, const struct tkv_raft_event *ev)
{
    struct rf_node *nd = rf_node(c, id);
    if (!nd || !nd->alive)
        return TKV_EINVAL;
    struct tkv_raft_update up;
    int rv = tkv_raft_step(nd->r, ev, &up);
    /* A nested step (from inside handle_update) gets an empty update: its
     * output waits for the enclosing loop's advance. */
    while (up.flags && nd->alive) {
        handle_update(c, nd, &up);
        if (!nd->alive || !nd->r)
            break;
        tkv_raft_advance(nd->r, &up);
    }
    return rv;
}

static int trace_level = -1;

static bool tracing(void)
{
    if (trace_level < 0)
        trace_level = getenv("TKV_RF_TRACE") ? 1 : 0;
    return trace_level > 0;
}

static void trace_update(struct rf_cluster *c, struct rf_node *nd, const struct tkv_raft_update *up)
{
    struct tkv_raft_status s;
    tkv_raft_status(nd->r, &s);
    fprintf(stderr, "t=%llu n%llu role=%u term=%llu commit=%llu last=%llu", (unsigned long long)c->now,
            (unsigned long long)nd->id, s.ss.role, (unsigned long long)s.hs.term,
            (unsigned long long)s.hs.commit, (unsigned long long)s.last_index);
    if (up->snapshot)
        fprintf(stderr, " SNAP=%llu/%llu", (unsigned long long)up->snapshot->index,
                (unsigned long long)up->snapshot->term);
    if (up->n_entries)
        fprintf(stderr, " ENTS=%llu..%llu", (unsigned long long)up->entries[0].index,
                (unsigned long long)up->entries[up->n_entries - 1].index);
    if (up->n_committed)
        fprintf(stderr, " APPLY=%llu..%llu", (unsigned long long)up->committed[0].index,
                (unsigned long long)up->committed[up->n_committed - 1].index);
    for (size_t i = 0; i < up->n_msgs; i++)
        fprintf(stderr, " [%u->%llu t%llu i%llu lt%llu c%llu n%zu%s%s]", up->msgs[i].type,
                (unsigned long long)up->msgs[i].to, (unsigned long long)up->msgs[i].term,
                (unsigned long long)up->msgs[i].index, (unsigned long long)up->msgs[i].log_term,
                (unsigned long long)up->msgs[i].commit, up->msgs[i].n_entries,
                up->msgs[i].reject ? " rej" : "", up->msgs[i].snapshot ? " snap" : "");
    fprintf(stderr, "\n");
}

static void handle_update(struct rf_cluster *c, struct rf_node *nd, struct tkv_raft_update *up)
{
    c->n_events++;
    if (tracing())
        trace_update(c, nd, up);
    /* 1. stash the disk write (with the messages that wait for it) */
    struct rf_write w;
    memset(&w, 0, sizeof(w));
    if (up->flags & TKV_RAFT_UPDATE_HARD_STATE) {
        w.has_hs = true;
        w.hs = up->hard_state;
    }
    if (up->flags & TKV_RAFT_UPDATE_SNAPSHOT) {
        w.has_snap = true;
        w.snap = *up->snapshot;
        tkv_raft_buf_ref(w.snap.data);
        mirror_reset(nd, w.snap.index, snap_hash(&w.snap));
        if (c->n_commit > w.snap.index && c->commit_hash[w.snap.index] &&
            c->commit_hash[w.snap.index] != snap_hash(&w.snap))
            rf_fail(c, "node %llu got a snapshot at %llu that disagrees with the committed log",
                    (unsigned long long)nd->id, (unsigned long long)w.snap.index);
    }
    if (up->n_entries) {
        w.n_ents = up->n_entries;
        w.ents = xmalloc(w.n_ents * sizeof(*w.ents));
        for (size_t i = 0; i < w.n_ents; i++) {
            w.ents[i] = up->entries[i];
            tkv_raft_buf_ref(w.ents[i].data);
        }
        mirror_append(c, nd, up->entries, up->n_entries);
    }
    if (up->n_msgs) {
        w.n_msgs = up->n_msgs;
        w.msgs = xmalloc(w.n_msgs * sizeof(*w.msgs));
        for (size_t i = 0; i < w.n_msgs; i++)
            msg_copy(&w.msgs[i], &up->msgs[i]);
    }
    for (size_t i = 0; i < up->n_read_states; i++) {
        GROW(nd->reads, nd->n_reads, nd->cap_reads);
        nd->reads[nd->n_reads++] = up->read_states[i];
        for (size_t k = 0; k < c->n_rd; k++) {
            if (c->rd[k].ctx != up->read_states[i].ctx || c->rd[k].node != nd->id)
                continue;
            if (up->read_states[i].index < c->rd[k].min_index)
                rf_fail(c, "stale read on node %llu: read index %llu < %llu committed before "
                           "the read began",
                        (unsigned long long)nd->id, (unsigned long long)up->read_states[i].index,
                        (unsigned long long)c->rd[k].min_index);
            c->rd[k].done = true;
        }
    }
    bool empty = !w.has_hs && !w.has_snap && !w.n_ents && !w.n_msgs;
    if (!empty) {
        uint64_t at = c->now + rnd_range(c, c->o.disk_min, c->o.disk_max);
        if (nd->n_writes && nd->writes[nd->n_writes - 1].at > at)
            at = nd->writes[nd->n_writes - 1].at;
        w.at = at;
        GROW(nd->writes, nd->n_writes, nd->cap_writes);
        nd->writes[nd->n_writes++] = w;
    }
    /* 2. apply committed entries (durable already), in order even when
     * applying a conf change produces a nested update */
    for (size_t i = 0; i < up->n_committed; i++) {
        /* contract: committed entries handed out are durable locally */
        tkv_index ci = up->committed[i].index;
        if (ci > raft_memstore_last(&nd->ms) || ci <= nd->ms.snap.index ||
            nd->ms.ents[ci - nd->ms.snap.index - 1].term != up->committed[i].term)
            rf_fail(c, "node %llu was handed committed entry %llu that is not durable",
                    (unsigned long long)nd->id, (unsigned long long)ci);
        GROW(nd->aq, nd->n_aq, nd->cap_aq);
        nd->aq[nd->n_aq] = up->committed[i];
        tkv_raft_buf_ref(nd->aq[nd->n_aq].data);
        nd->n_aq++;
    }
    check_leaders(c, nd);
    if (nd->applying)
        return;
    nd->applying = true;
    while (nd->n_aq && nd->alive) {
        struct tkv_raft_entry e = nd->aq[0];
        memmove(nd->aq, nd->aq + 1, (nd->n_aq - 1) * sizeof(*nd->aq));
        nd->n_aq--;
        sm_apply(c, nd, &e);
        if (e.type == TKV_RAFT_ENTRY_CONF_CHANGE && nd->auto_conf && e.data && e.data->len >= 9) {
            uint64_t node;
            memcpy(&node, e.data->data + 1, 8);
            struct tkv_raft_event ev = {.type = TKV_RAFT_EV_APPLY_CONF_CHANGE};
            ev.u.conf_change.change_type = e.data->data[0];
            ev.u.conf_change.node_id = node;
            struct rf_node *target = rf_node(c, node);
            if (ev.u.conf_change.change_type == TKV_RAFT_CONF_ADD_NODE && target &&
                !target->exists)
                rf_add_node(c, node, NULL, 0);
            rf_node_step(c, nd->id, &ev);
        }
        tkv_raft_buf_unref(e.data);
        if (nd->n_aq == 0 && nd->alive) {
            struct tkv_raft_event ev = {.type = TKV_RAFT_EV_APPLIED, .u.applied = nd->applied};
            rf_node_step(c, nd->id, &ev);
        }
    }
    nd->applying = false;
}

static void process_write(struct rf_cluster *c, struct rf_node *nd)
{
    struct rf_write w = nd->writes[0];
    if (tracing())
        fprintf(stderr, "t=%llu n%llu DISK snap=%llu ents=%zu last=%llu\n", (unsigned long long)c->now,
                (unsigned long long)nd->id, (unsigned long long)(w.has_snap ? w.snap.index : 0),
                w.n_ents, (unsigned long long)(w.n_ents ? w.ents[w.n_ents - 1].index : 0));
    memmove(nd->writes, nd->writes + 1, (nd->n_writes - 1) * sizeof(*nd->writes));
    nd->n_writes--;
    if (w.has_snap)
        raft_memstore_apply_snapshot(&nd->ms, &w.snap);
    if (w.n_ents)
        raft_memstore_append(&nd->ms, w.ents, w.n_ents);
    if (w.has_hs)
        nd->ms.hs = w.hs;
    for (size_t i = 0; i < w.n_msgs; i++) {
        if (nd->capture) {
            GROW(nd->outbox, nd->n_outbox, nd->cap_outbox);
            msg_copy(&nd->outbox[nd->n_outbox++], &w.msgs[i]);
        } else {
            net_send(c, &w.msgs[i]);
        }
    }
    if (w.has_snap) {
        nd->sm_hash = snap_hash(&w.snap);
        nd->applied = w.snap.index;
        if (c->o.record_applied) {
            for (size_t i = 0; i < nd->n_applied_log; i++)
                tkv_raft_buf_unref(nd->applied_log[i].data);
            nd->n_applied_log = 0;
        }
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_SNAPSHOT_PERSISTED};
        ev.u.persisted.index = w.snap.index;
        rf_node_step(c, nd->id, &ev);
    }
    if (w.n_ents && nd->alive) {
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_LOG_PERSISTED};
        ev.u.persisted.index = w.ents[w.n_ents - 1].index;
        ev.u.persisted.term = w.ents[w.n_ents - 1].term;
        rf_node_step(c, nd->id, &ev);
    }
    write_free(&w);
}

static void node_start(struct rf_cluster *c, struct rf_node *nd)
{
    if (tracing())
        fprintf(stderr, "t=%llu n%llu START snap=%llu last=%llu\n", (unsigned long long)c->now,
                (unsigned long long)nd->id, (unsigned long long)nd->ms.snap.index,
                (unsigned long long)raft_memstore_last(&nd->ms));
    nd->cfg.storage = raft_memstore_storage(&nd->ms);
    nd->cfg.applied = nd->ms.snap.index;
    nd->cfg.seed = c->seed * 1000003u + nd->id * 7919u + c->now;
    int rv = tkv_raft_init(&nd->cfg, &nd->r);
    if (rv == TKV_ENOMEM) {
        nd->alive = false; /* stays down; a later restart may succeed */
        return;
    }
    if (rv < 0) {
        rf_fail(c, "node %llu: tkv_raft_init: %s", (unsigned long long)nd->id, tkv_strerror(rv));
        nd->alive = false;
        return;
    }
    nd->alive = true;
    nd->applied = nd->ms.snap.index;
    nd->sm_hash = snap_hash(&nd->ms.snap);
    /* the mirror restarts from what is durable */
    mirror_reset(nd, nd->ms.snap.index, nd->sm_hash);
    mirror_append(c, nd, nd->ms.ents, nd->ms.n);
    nd->next_tick = c->now + 1 + rnd_range(c, 0, c->o.tick_interval ? c->o.tick_interval - 1 : 0);
    nd->was_leader = false;
}

void rf_add_node(struct rf_cluster *c, uint64_t id, const uint64_t *peers, size_t n_peers)
{
    struct rf_node *nd = rf_node(c, id);
    memset(nd, 0, sizeof(*nd));
    nd->id = id;
    nd->exists = true;
    nd->auto_conf = true;
    raft_memstore_init(&nd->ms);
    nd->cfg = (struct tkv_raft_config){
        .id = id,
        .election_tick = c->o.election_tick,
        .heartbeat_tick = c->o.heartbeat_tick,
        .pre_vote = c->o.pre_vote,
        .check_quorum = c->o.check_quorum,
        .lease_read = c->o.lease_read,
        .max_msg_bytes = c->o.max_msg_bytes,
        .max_inflight_msgs = c->o.max_inflight,
    };
    for (size_t i = 0; i < n_peers; i++)
        nd->peers[i] = peers[i];
    nd->cfg.peers = nd->peers;
    nd->cfg.n_peers = n_peers;
    if (c->o.bootstrap_snapshot && n_peers) {
        struct tkv_raft_snapshot s = {.index = 5, .term = 5};
        s.conf_state.n_voters = (uint32_t)n_peers;
        for (size_t i = 0; i < n_peers; i++)
            s.conf_state.voters[i] = peers[i];
        uint64_t h = 0x5eed;
        s.data = rf_buf(&h, 8);
        raft_memstore_apply_snapshot(&nd->ms, &s);
        tkv_raft_buf_unref(s.data);
        nd->ms.hs = (struct tkv_raft_hard_state){.term = 5, .commit = 5};
    }
    if ((size_t)id > c->n)
        c->n = (size_t)id;
    node_start(c, nd);
}

struct rf_opts rf_default_opts(void)
{
    return (struct rf_opts){.election_tick = 10, .heartbeat_tick = 1, .max_inflight = 256};
}

void rf_init(struct rf_cluster *c, size_t n, const struct rf_opts *o, uint64_t seed)
{
    memset(c, 0, sizeof(*c));
    c->o = *o;
    c->seed = seed;
    c->rng = seed * 0x2545f4914f6cdd1dULL + 1;
    c->chain = calloc(1, sizeof(*c->chain));
    c->next_ctx = 100;
    uint64_t peers[RF_MAX_NODES];
    for (size_t i = 0; i < n; i++)
        peers[i] = i + 1;
    for (size_t i = 0; i < n; i++)
        rf_add_node(c, i + 1, peers, n);
}

static void node_destroy(struct rf_node *nd)
{
    for (size_t i = 0; i < nd->n_aq; i++)
        tkv_raft_buf_unref(nd->aq[i].data);
    nd->n_aq = 0;
    nd->applying = false;
    tkv_raft_close(nd->r);
    nd->r = NULL;
    for (size_t i = 0; i < nd->n_writes; i++)
        write_free(&nd->writes[i]);
    nd->n_writes = 0;
    nd->alive = false;
}

void rf_close(struct rf_cluster *c)
{
    for (size_t i = 0; i < RF_MAX_NODES; i++) {
        struct rf_node *nd = &c->nodes[i];
        if (!nd->exists)
            continue;
        node_destroy(nd);
        free(nd->writes);
        free(nd->aq);
        rf_msgs_free(nd->outbox, nd->n_outbox);
        for (size_t k = 0; k < nd->n_applied_log; k++)
            tkv_raft_buf_unref(nd->applied_log[k].data);
        free(nd->applied_log);
        free(nd->reads);
        free(nd->mirror);
        raft_memstore_free(&nd->ms);
    }
    for (size_t i = 0; i < c->n_q; i++)
        msg_free(&c->q[i].m);
    free(c->q);
    free(c->leader_of_term);
    free(c->commit_hash);
    free(c->commit_minterm);
    free(c->rd);
    if (c->chain) {
        free(c->chain->keys_i);
        free(c->chain->keys_t);
        free(c->chain->vals);
        free(c->chain);
    }
}

void rf_crash(struct rf_cluster *c, uint64_t id)
{
    struct rf_node *nd = rf_node(c, id);
    if (tracing())
        fprintf(stderr, "t=%llu n%llu CRASH\n", (unsigned long long)c->now, (unsigned long long)id);
    if (nd->alive)
        node_destroy(nd);
}

void rf_restart(struct rf_cluster *c, uint64_t id)
{
    struct rf_node *nd = rf_node(c, id);
    if (!nd->exists || nd->alive)
        return;
    node_start(c, nd);
}

int rf_compact(struct rf_cluster *c, uint64_t id)
{
    struct rf_node *nd = rf_node(c, id);
    if (!nd->alive || nd->n_writes || nd->applied <= nd->ms.snap.index)
        return TKV_EINVAL;
    if (nd->applied > raft_memstore_last(&nd->ms))
        return TKV_EINVAL;
    struct tkv_raft_status st;
    tkv_raft_status(nd->r, &st);
    struct tkv_raft_buf *d = rf_buf(&nd->sm_hash, 8);
    if (!d)
        return TKV_ENOMEM;
    int rv = raft_memstore_compact(&nd->ms, nd->applied, &st.conf, d);
    tkv_raft_buf_unref(d);
    (void)c;
    return rv;
}

/* ------------------------------------------------------------ driving */

static void deliver(struct rf_cluster *c, size_t qi)
{
    struct rf_inflight f = c->q[qi];
    c->q[qi] = c->q[--c->n_q];
    struct rf_node *nd = rf_node(c, f.m.to);
    if (nd && nd->alive && !link_down(c, f.m.from, f.m.to)) {
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &f.m};
        c->n_delivered++;
        rf_node_step(c, nd->id, &ev);
        if (f.m.type == TKV_RAFT_MSG_SNAPSHOT)
            report(c, f.m.from, TKV_RAFT_EV_REPORT_SNAPSHOT, f.m.to, false);
    } else {
        c->n_dropped++;
        if (f.m.type == TKV_RAFT_MSG_SNAPSHOT)
            report(c, f.m.from, TKV_RAFT_EV_REPORT_SNAPSHOT, f.m.to, true);
    }
    msg_free(&f.m);
}

/* The next event due at or before `limit`: 0 none, 1 msg, 2 write, 3 tick. */
static int next_event(struct rf_cluster *c, uint64_t limit, bool ticks, size_t *which, uint64_t *at)
{
    int kind = 0;
    uint64_t best = UINT64_MAX, best_seq = UINT64_MAX;
    for (size_t i = 0; i < c->n_q; i++) {
        if (c->q[i].at < best || (c->q[i].at == best && c->q[i].seq < best_seq)) {
            best = c->q[i].at;
            best_seq = c->q[i].seq;
            kind = 1;
            *which = i;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        struct rf_node *nd = &c->nodes[i];
        if (!nd->alive)
            continue;
        /* writes win ties: messages they release queue behind (etcd order) */
        if (nd->n_writes && (nd->writes[0].at < best || (nd->writes[0].at == best && kind == 1))) {
            best = nd->writes[0].at;
            kind = 2;
            *which = i;
        }
        if (ticks && nd->next_tick < best) {
            best = nd->next_tick;
            kind = 3;
            *which = i;
        }
    }
    if (kind == 0 || best > limit)
        return 0;
    *at = best;
    return kind;
}

static void run_event(struct rf_cluster *c, int kind, size_t which, uint64_t at)
{
    if (at > c->now)
        c->now = at;
    if (kind == 1) {
        deliver(c, which);
    } else if (kind == 2) {
        process_write(c, &c->nodes[which]);
    } else {
        struct rf_node *nd = &c->nodes[which];
        nd->next_tick += c->o.tick_interval;
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TICK};
        rf_node_step(c, nd->id, &ev);
    }
}

void rf_settle(struct rf_cluster *c)
{
    size_t which;
    uint64_t at;
    int kind;
    while ((kind = next_event(c, c->now, false, &which, &at)) != 0)
        run_event(c, kind, which, at);
}

void rf_step(struct rf_cluster *c)
{
    size_t which;
    uint64_t at;
    int kind = next_event(c, UINT64_MAX, true, &which, &at);
    if (kind)
        run_event(c, kind, which, at);
}

void rf_run(struct rf_cluster *c, uint64_t duration)
{
    uint64_t end = c->now + duration;
    size_t which;
    uint64_t at;
    int kind;
    while (!c->failed && (kind = next_event(c, end, true, &which, &at)) != 0)
        run_event(c, kind, which, at);
    if (c->now < end)
        c->now = end;
}

int rf_send(struct rf_cluster *c, const struct tkv_raft_msg *m)
{
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = m};
    int rv = rf_node_step(c, m->to, &ev);
    rf_settle(c);
    return rv;
}

void rf_campaign(struct rf_cluster *c, uint64_t id)
{
    struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_HUP, .to = id, .from = id};
    rf_send(c, &m);
}

int rf_propose(struct rf_cluster *c, uint64_t id, const void *data, size_t len)
{
    struct tkv_raft_buf *b = rf_buf(data, len);
    if (!b)
        return TKV_ENOMEM;
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE};
    ev.u.propose.data = &b;
    ev.u.propose.n = 1;
    int rv = rf_node_step(c, id, &ev);
    tkv_raft_buf_unref(b);
    rf_settle(c);
    return rv;
}

int rf_propose_conf(struct rf_cluster *c, uint64_t id, uint32_t type, uint64_t node)
{
    uint8_t d[9];
    d[0] = (uint8_t)type;
    memcpy(d + 1, &node, 8);
    struct tkv_raft_buf *b = rf_buf(d, 9);
    if (!b)
        return TKV_ENOMEM;
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE_CONF_CHANGE, .u.conf_change_data = b};
    int rv = rf_node_step(c, id, &ev);
    tkv_raft_buf_unref(b);
    rf_settle(c);
    return rv;
}

void rf_tick(struct rf_cluster *c, uint64_t id, int times)
{
    for (int i = 0; i < times; i++) {
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TICK};
        rf_node_step(c, id, &ev);
        rf_settle(c);
    }
}

int rf_read(struct rf_cluster *c, uint64_t id, uint64_t *ctx_out)
{
    uint64_t ctx = c->next_ctx++;
    GROW(c->rd, c->n_rd, c->cap_rd);
    c->rd[c->n_rd].ctx = ctx;
    c->rd[c->n_rd].node = id;
    c->rd[c->n_rd].min_index = c->max_commit;
    c->rd[c->n_rd].done = false;
    c->n_rd++;
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_READ_INDEX, .u.ctx = ctx};
    int rv = rf_node_step(c, id, &ev);
    if (ctx_out)
        *ctx_out = ctx;
    return rv;
}

void rf_isolate(struct rf_cluster *c, uint64_t id)
{
    for (uint64_t j = 1; j <= RF_MAX_NODES; j++) {
        if (j == id)
            continue;
        c->cut[id][j] = c->cut[j][id] = true;
    }
}

void rf_cut(struct rf_cluster *c, uint64_t a, uint64_t b)
{
    c->cut[a][b] = c->cut[b][a] = true;
}

void rf_heal(struct rf_cluster *c)
{
    memset(c->cut, 0, sizeof(c->cut));
    memset(c->drop_link, 0, sizeof(c->drop_link));
    c->ignore_types = 0;
}

void rf_drop(struct rf_cluster *c, uint64_t from, uint64_t to, uint32_t pct)
{
    c->drop_link[from][to] = pct;
}

void rf_ignore(struct rf_cluster *c, uint32_t msg_type)
{
    c->ignore_types |= 1u << msg_type;
}

uint64_t rf_leader(struct rf_cluster *c)
{
    uint64_t best = 0;
    tkv_term bt = 0;
    for (size_t i = 0; i < c->n; i++) {
        struct rf_node *nd = &c->nodes[i];
        if (!nd->alive)
            continue;
        struct tkv_raft_status st;
        tkv_raft_status(nd->r, &st);
        if (st.ss.role == TKV_RAFT_LEADER && st.hs.term >= bt) {
            bt = st.hs.term;
            best = nd->id;
        }
    }
    return best;
}
