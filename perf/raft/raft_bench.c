/* Raft library benchmark: a 3-node in-memory group committing N 64-byte
 * proposals (proposals/s, CPU ns and raft allocations per committed entry),
 * and tick passes over many idle groups on one core. See README.md. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft_memstore.h"
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

static uint64_t n_allocs;

static void *cnt_malloc(void *ctx, size_t n)
{
    (void)ctx;
    n_allocs++;
    return malloc(n);
}

static void *cnt_calloc(void *ctx, size_t n, size_t s)
{
    (void)ctx;
    n_allocs++;
    return calloc(n, s);
}

static void *cnt_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    n_allocs++;
    return realloc(p, n);
}

static void cnt_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what, int rv)
{
    fprintf(stderr, "%s: %s\n", what, tkv_strerror(rv));
    exit(1);
}

/* ---------------------------------------------------------- 3-node group */

struct bnode {
    struct tkv_raft *r;
    struct raft_memstore ms;
    tkv_index applied;
};

/* Messages in flight: copies holding payload references. */
struct qmsg {
    struct tkv_raft_msg m;
};

static struct qmsg *q;
static size_t q_head, q_len, q_cap;
static struct bnode nodes[4];
static uint64_t committed_entries;

static void q_push(const struct tkv_raft_msg *m)
{
    if (q_head + q_len == q_cap) {
        if (q_head) {
            memmove(q, q + q_head, q_len * sizeof(*q));
            q_head = 0;
        } else {
            q_cap = q_cap ? q_cap * 2 : 1024;
            q = realloc(q, q_cap * sizeof(*q));
        }
    }
    struct qmsg *d = &q[q_head + q_len++];
    d->m = *m;
    if (m->n_entries) {
        d->m.entries = malloc(m->n_entries * sizeof(*m->entries));
        for (size_t i = 0; i < m->n_entries; i++) {
            d->m.entries[i] = m->entries[i];
            tkv_raft_buf_ref(d->m.entries[i].data);
        }
    }
    d->m.snapshot = NULL; /* never needed: nobody lags behind compaction */
}

static void handle(struct bnode *n, struct tkv_raft_update *up)
{
    while (up->flags) {
        struct tkv_raft_update nested;
        if (up->n_entries)
            raft_memstore_append(&n->ms, up->entries, up->n_entries);
        if (up->flags & TKV_RAFT_UPDATE_HARD_STATE)
            n->ms.hs = up->hard_state;
        for (size_t i = 0; i < up->n_msgs; i++)
            q_push(&up->msgs[i]);
        if (up->n_entries) {
            struct tkv_raft_event pe = {.type = TKV_RAFT_EV_LOG_PERSISTED};
            pe.u.persisted.index = up->entries[up->n_entries - 1].index;
            pe.u.persisted.term = up->entries[up->n_entries - 1].term;
            int rv = tkv_raft_step(n->r, &pe, &nested);
            if (rv < 0)
                die("step", rv);
        }
        if (up->n_committed) {
            n->applied = up->committed[up->n_committed - 1].index;
            if (n == &nodes[1])
                committed_entries += up->n_committed;
            struct tkv_raft_event pe = {.type = TKV_RAFT_EV_APPLIED, .u.applied = n->applied};
            int rv = tkv_raft_step(n->r, &pe, &nested);
            if (rv < 0)
                die("step", rv);
        }
        tkv_raft_advance(n->r, up);
    }
}

static void step(struct bnode *n, const struct tkv_raft_event *ev)
{
    struct tkv_raft_update up;
    int rv = tkv_raft_step(n->r, ev, &up);
    if (rv < 0)
        die("step", rv);
    handle(n, &up);
}

static void deliver_all(void)
{
    while (q_len) {
        struct tkv_raft_msg m = q[q_head].m;
        q_head++;
        q_len--;
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &m};
        step(&nodes[m.to], &ev);
        for (size_t i = 0; i < m.n_entries; i++)
            tkv_raft_buf_unref(m.entries[i].data);
        free(m.entries);
    }
}

static void bench_commit(uint64_t total, size_t batch)
{
    uint64_t peers[] = {1, 2, 3};
    for (uint64_t id = 1; id <= 3; id++) {
        struct bnode *n = &nodes[id];
        raft_memstore_init(&n->ms);
        struct tkv_raft_config cfg = {.id = id, .election_tick = 10, .heartbeat_tick = 2,
                                      .storage = raft_memstore_storage(&n->ms), .peers = peers,
                                      .n_peers = 3, .seed = id, .max_inflight_msgs = 256};
        int rv = tkv_raft_init(&cfg, &n->r);
        if (rv < 0)
            die("init", rv);
    }
    struct tkv_raft_msg hup = {.type = TKV_RAFT_MSG_HUP, .to = 1};
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &hup};
    step(&nodes[1], &ev);
    deliver_all();
    committed_entries = 0;

    uint8_t payload[64];
    memset(payload, 'v', sizeof(payload));
    struct tkv_raft_buf **bufs = malloc(batch * sizeof(*bufs));
    uint64_t allocs0 = n_allocs;
    double c0 = cpu_ns(), w0 = wall_ns();
    uint64_t proposed = 0;
    while (proposed < total) {
        size_t b = (size_t)TKV_MIN((uint64_t)batch, total - proposed);
        for (size_t i = 0; i < b; i++) {
            memcpy(payload, &proposed, sizeof(proposed));
            if (tkv_raft_buf_copy(payload, sizeof(payload), &bufs[i]) < 0)
                die("buf", TKV_ENOMEM);
            proposed++;
        }
        struct tkv_raft_event pe = {.type = TKV_RAFT_EV_PROPOSE};
        pe.u.propose.data = bufs;
        pe.u.propose.n = b;
        step(&nodes[1], &pe);
        for (size_t i = 0; i < b; i++)
            tkv_raft_buf_unref(bufs[i]);
        deliver_all();
        /* keep memory flat: compact every store behind its applied index */
        if ((proposed / batch) % 256 == 0)
            for (int id = 1; id <= 3; id++) {
                struct tkv_raft_conf_state cs = {.n_voters = 3, .voters = {1, 2, 3}};
                raft_memstore_compact(&nodes[id].ms, nodes[id].applied, &cs, NULL);
            }
    }
    double c1 = cpu_ns(), w1 = wall_ns();
    uint64_t allocs = n_allocs - allocs0;
    printf("commit: %" PRIu64 " x 64-byte proposals, batch %zu, 3 nodes in one thread\n", total,
           batch);
    printf("  committed %" PRIu64 " entries in %.3f s: %.0f proposals/s\n", committed_entries,
           (w1 - w0) / 1e9, (double)committed_entries / ((w1 - w0) / 1e9));
    printf("  CPU %.0f ns per committed entry (all 3 nodes + harness)\n",
           (c1 - c0) / (double)committed_entries);
    printf("  %.2f tkv_malloc calls per committed entry (payload buffers included: 1)\n",
           (double)allocs / (double)committed_entries);
    free(bufs);
    for (int id = 1; id <= 3; id++) {
        tkv_raft_close(nodes[id].r);
        raft_memstore_free(&nodes[id].ms);
    }
    free(q);
    q = NULL;
    q_head = q_len = q_cap = 0;
}

/* ---------------------------------------------------------- idle ticks */

static void bench_ticks(size_t groups, int passes)
{
    struct tkv_raft **rs = malloc(groups * sizeof(*rs));
    struct raft_memstore *ms = malloc(groups * sizeof(*ms));
    uint64_t peers[] = {1, 2, 3};
    for (size_t g = 0; g < groups; g++) {
        raft_memstore_init(&ms[g]);
        struct tkv_raft_config cfg = {.id = 1, .election_tick = 10, .heartbeat_tick = 2,
                                      .storage = raft_memstore_storage(&ms[g]), .peers = peers,
                                      .n_peers = 3, .seed = g};
        int rv = tkv_raft_init(&cfg, &rs[g]);
        if (rv < 0)
            die("init", rv);
        /* leader of an idle group: heartbeats every other tick */
        struct tkv_raft_update up;
        struct tkv_raft_msg hup = {.type = TKV_RAFT_MSG_HUP};
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &hup};
        tkv_raft_step(rs[g], &ev, &up);
        tkv_raft_advance(rs[g], &up);
        struct tkv_raft_msg v = {.type = TKV_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 1};
        ev.u.msg = &v;
        tkv_raft_step(rs[g], &ev, &up);
        while (up.flags) {
            if (up.n_entries) {
                raft_memstore_append(&ms[g], up.entries, up.n_entries);
                struct tkv_raft_event pe = {.type = TKV_RAFT_EV_LOG_PERSISTED};
                struct tkv_raft_update nested;
                pe.u.persisted.index = up.entries[0].index;
                pe.u.persisted.term = up.entries[0].term;
                tkv_raft_step(rs[g], &pe, &nested);
            }
            tkv_raft_advance(rs[g], &up);
        }
    }
    double best = 1e18, sum = 0;
    uint64_t msgs = 0;
    for (int p = 0; p < passes; p++) {
        double c0 = cpu_ns();
        for (size_t g = 0; g < groups; g++) {
            struct tkv_raft_update up;
            struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TICK};
            tkv_raft_step(rs[g], &ev, &up);
            msgs += up.n_msgs;
            tkv_raft_advance(rs[g], &up);
        }
        double d = cpu_ns() - c0;
        sum += d;
        if (d < best)
            best = d;
    }
    printf("tick: %zu idle leader groups (3 members, heartbeat every 2 ticks), %d passes\n",
           groups, passes);
    printf("  one pass: best %.3f ms, mean %.3f ms (%.0f ns per group); %" PRIu64
           " heartbeats built\n",
           best / 1e6, sum / passes / 1e6, sum / passes / (double)groups, msgs);
    for (size_t g = 0; g < groups; g++) {
        tkv_raft_close(rs[g]);
        raft_memstore_free(&ms[g]);
    }
    free(rs);
    free(ms);
}

int main(int argc, char **argv)
{
    uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    size_t batch = argc > 2 ? strtoul(argv[2], NULL, 10) : 1;
    size_t groups = argc > 3 ? strtoul(argv[3], NULL, 10) : 10000;
    if (batch == 0)
        batch = 1;
    static const struct tkv_allocator a = {cnt_malloc, cnt_calloc, cnt_realloc, cnt_free, NULL};
    tkv_mem_set_allocator(&a);
    bench_commit(total, batch);
    bench_ticks(groups, 20);
    return 0;
}
