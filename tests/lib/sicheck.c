/* Snapshot-isolation checkers: Elle-style list-append analysis and the bank
 * invariant (see sicheck.h). */
#include "sicheck.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker_util.h"

/* ---- recording ---- */

struct si_mop {
    bool is_read;
    uint32_t key;
    uint64_t value;          /* append */
    size_t list_off, list_n; /* read: into h->vals */
};

struct si_txn {
    uint32_t client;
    uint8_t status;
    bool ended;
    uint64_t start, end;
    struct si_mop *mops;
    size_t n_mops, cap_mops;
};

struct si_history {
    struct si_txn *txns;
    size_t n, cap;
    uint64_t *vals;
    size_t n_vals, cap_vals;
    /* interned keys */
    unsigned char *kbuf;
    size_t kbuf_len, kbuf_cap;
    size_t *koff, *klen;
    uint64_t *khash;
    size_t nkeys, capkeys;
    uint32_t *kslots; /* key id + 1 */
    size_t nkslots;
};

struct si_history *si_history_new(void)
{
    struct si_history *h = ck_xcalloc(1, sizeof(*h));
    h->nkslots = 64;
    h->kslots = ck_xcalloc(h->nkslots, sizeof(uint32_t));
    return h;
}

void si_history_free(struct si_history *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        free(h->txns[i].mops);
    free(h->txns);
    free(h->vals);
    free(h->kbuf);
    free(h->koff);
    free(h->klen);
    free(h->khash);
    free(h->kslots);
    free(h);
}

static void key_rehash(struct si_history *h)
{
    free(h->kslots);
    h->nkslots *= 2;
    h->kslots = ck_xcalloc(h->nkslots, sizeof(uint32_t));
    for (size_t id = 0; id < h->nkeys; id++) {
        size_t i = h->khash[id] & (h->nkslots - 1);
        while (h->kslots[i])
            i = (i + 1) & (h->nkslots - 1);
        h->kslots[i] = (uint32_t)(id + 1);
    }
}

static uint32_t key_id(struct si_history *h, const void *key, size_t len)
{
    uint64_t hv = ck_hash_bytes(key, len, 0xe11e);
    size_t i = hv & (h->nkslots - 1);
    while (h->kslots[i]) {
        size_t id = h->kslots[i] - 1;
        if (h->khash[id] == hv && h->klen[id] == len && (len == 0 || memcmp(h->kbuf + h->koff[id], key, len) == 0))
            return (uint32_t)id;
        i = (i + 1) & (h->nkslots - 1);
    }
    size_t cap = h->capkeys;
    ck_grow((void **)&h->koff, &cap, h->nkeys + 1, sizeof(size_t));
    if (cap != h->capkeys) {
        h->klen = ck_xrealloc(h->klen, cap * sizeof(size_t));
        h->khash = ck_xrealloc(h->khash, cap * sizeof(uint64_t));
        h->capkeys = cap;
    }
    size_t id = h->nkeys++;
    ck_grow((void **)&h->kbuf, &h->kbuf_cap, h->kbuf_len + len + 1, 1);
    if (len)
        memcpy(h->kbuf + h->kbuf_len, key, len);
    h->koff[id] = h->kbuf_len;
    h->klen[id] = len;
    h->khash[id] = hv;
    h->kbuf_len += len;
    h->kslots[i] = (uint32_t)(id + 1);
    if (h->nkeys * 2 > h->nkslots)
        key_rehash(h);
    return (uint32_t)id;
}

size_t si_txn_begin(struct si_history *h, uint32_t client, uint64_t t)
{
    ck_grow((void **)&h->txns, &h->cap, h->n + 1, sizeof(struct si_txn));
    struct si_txn *x = &h->txns[h->n];
    memset(x, 0, sizeof(*x));
    x->client = client;
    x->status = SI_UNKNOWN;
    x->start = t;
    x->end = UINT64_MAX;
    return h->n++;
}

static struct si_txn *txn_at(struct si_history *h, size_t txn)
{
    if (txn >= h->n) {
        fprintf(stderr, "sicheck: unknown transaction %zu (history has %zu)\n", txn, h->n);
        abort();
    }
    return &h->txns[txn];
}

static struct si_mop *new_mop(struct si_txn *x)
{
    ck_grow((void **)&x->mops, &x->cap_mops, x->n_mops + 1, sizeof(struct si_mop));
    struct si_mop *m = &x->mops[x->n_mops++];
    memset(m, 0, sizeof(*m));
    return m;
}

void si_txn_append(struct si_history *h, size_t txn, const void *key, size_t key_len, uint64_t value)
{
    uint32_t k = key_id(h, key, key_len);
    struct si_mop *m = new_mop(txn_at(h, txn));
    m->key = k;
    m->value = value;
}

void si_txn_read(struct si_history *h, size_t txn, const void *key, size_t key_len, const uint64_t *vals, size_t n)
{
    uint32_t k = key_id(h, key, key_len);
    struct si_txn *x = txn_at(h, txn);
    ck_grow((void **)&h->vals, &h->cap_vals, h->n_vals + n, sizeof(uint64_t));
    if (n)
        memcpy(h->vals + h->n_vals, vals, n * sizeof(uint64_t));
    struct si_mop *m = new_mop(x);
    m->is_read = true;
    m->key = k;
    m->list_off = h->n_vals;
    m->list_n = n;
    h->n_vals += n;
}

void si_txn_end(struct si_history *h, size_t txn, enum si_status status, uint64_t t)
{
    struct si_txn *x = txn_at(h, txn);
    x->status = (uint8_t)status;
    x->ended = true;
    x->end = status == SI_UNKNOWN ? UINT64_MAX : t;
}

const char *si_anomaly_name(enum si_anomaly a)
{
    static const char *names[SI_N_ANOMALIES] = {
        [SI_G0] = "G0 (write cycle)",
        [SI_G1A] = "G1a (aborted read)",
        [SI_G1B] = "G1b (intermediate read)",
        [SI_G1C] = "G1c (circular information flow)",
        [SI_G_SINGLE] = "G-single (read skew)",
        [SI_LOST_UPDATE] = "lost update",
        [SI_NONREPEATABLE_READ] = "non-repeatable read",
        [SI_GARBAGE_READ] = "garbage read",
        [SI_INCOMPATIBLE_ORDER] = "incompatible order",
        [SI_LOST_WRITE] = "lost write",
        [SI_G2] = "G2 (anti-dependency cycle, allowed by SI)",
    };
    return (unsigned)a < SI_N_ANOMALIES ? names[a] : "?";
}

/* ---- analysis ---- */

#define NONE SIZE_MAX

/* (key, value) -> writer transaction, its mop, its position in the key's
 * version order. */
struct wmap {
    uint32_t *key;
    uint64_t *value;
    size_t *txn, *mop, *pos;
    size_t n, cap;
    size_t *slots; /* entry + 1 */
    size_t n_slots;
};

static uint64_t wm_hash(uint32_t key, uint64_t value)
{
    return ck_mix64(value ^ ck_mix64(key + 0x51ULL));
}

static size_t wm_find(const struct wmap *w, uint32_t key, uint64_t value)
{
    size_t i = wm_hash(key, value) & (w->n_slots - 1);
    while (w->slots[i]) {
        size_t e = w->slots[i] - 1;
        if (w->key[e] == key && w->value[e] == value)
            return e;
        i = (i + 1) & (w->n_slots - 1);
    }
    return NONE;
}

/* Returns false if (key, value) was already there. */
static bool wm_add(struct wmap *w, uint32_t key, uint64_t value, size_t txn, size_t mop)
{
    size_t i = wm_hash(key, value) & (w->n_slots - 1);
    while (w->slots[i]) {
        size_t e = w->slots[i] - 1;
        if (w->key[e] == key && w->value[e] == value)
            return false;
        i = (i + 1) & (w->n_slots - 1);
    }
    size_t e = w->n++;
    w->key[e] = key;
    w->value[e] = value;
    w->txn[e] = txn;
    w->mop[e] = mop;
    w->pos[e] = NONE;
    w->slots[i] = e + 1;
    return true;
}

static size_t writer_of(const struct wmap *w, uint32_t key, uint64_t value)
{
    size_t e = wm_find(w, key, value);
    return e == NONE ? NONE : w->txn[e];
}

enum { E_WW = 1, E_WR = 2, E_RW = 4 };

struct edge {
    size_t from, to;
    uint32_t key;
    uint8_t type;
};

struct graph {
    size_t n;
    struct edge *e;
    size_t n_e, cap_e;
    size_t *first; /* CSR: edges of node v are e[first[v] .. first[v+1]) after sorting */
};

static void add_edge(struct graph *g, size_t from, size_t to, uint32_t key, uint8_t type)
{
    if (from == to)
        return;
    ck_grow((void **)&g->e, &g->cap_e, g->n_e + 1, sizeof(struct edge));
    g->e[g->n_e++] = (struct edge){.from = from, .to = to, .key = key, .type = type};
}

static int edge_cmp(const void *a, const void *b)
{
    const struct edge *x = a, *y = b;
    if (x->from != y->from)
        return x->from < y->from ? -1 : 1;
    if (x->to != y->to)
        return x->to < y->to ? -1 : 1;
    return (int)x->type - (int)y->type;
}

static void graph_index(struct graph *g)
{
    if (g->n_e)
        qsort(g->e, g->n_e, sizeof(struct edge), edge_cmp);
    /* drop exact duplicates */
    size_t w = 0;
    for (size_t i = 0; i < g->n_e; i++)
        if (w == 0 || edge_cmp(&g->e[w - 1], &g->e[i]) != 0)
            g->e[w++] = g->e[i];
    g->n_e = w;
    g->first = ck_xcalloc(g->n + 1, sizeof(size_t));
    for (size_t i = 0; i < g->n_e; i++)
        g->first[g->e[i].from + 1]++;
    for (size_t v = 0; v < g->n; v++)
        g->first[v + 1] += g->first[v];
}

/* Tarjan's SCC (iterative) over edges whose type is in `mask`; comp[v] gets
 * the component id, size[c] its size. Returns the number of components. */
static size_t scc(const struct graph *g, uint8_t mask, size_t *comp, size_t *size)
{
    size_t n = g->n;
    size_t *index = ck_xmalloc((n ? n : 1) * sizeof(size_t));
    size_t *low = ck_xmalloc((n ? n : 1) * sizeof(size_t));
    bool *on = ck_xcalloc(n ? n : 1, sizeof(bool));
    size_t *stack = ck_xmalloc((n ? n : 1) * sizeof(size_t));
    size_t *cs_v = ck_xmalloc((n ? n : 1) * sizeof(size_t));
    size_t *cs_e = ck_xmalloc((n ? n : 1) * sizeof(size_t));
    for (size_t v = 0; v < n; v++)
        index[v] = NONE;
    size_t idx = 0, sp = 0, nc = 0;
    for (size_t root = 0; root < n; root++) {
        if (index[root] != NONE)
            continue;
        size_t csp = 0;
        cs_v[csp] = root;
        cs_e[csp] = g->first[root];
        csp++;
        index[root] = low[root] = idx++;
        stack[sp++] = root;
        on[root] = true;
        while (csp) {
            size_t v = cs_v[csp - 1];
            size_t *ei = &cs_e[csp - 1];
            bool pushed = false;
            while (*ei < g->first[v + 1]) {
                const struct edge *e = &g->e[(*ei)++];
                if (!(e->type & mask))
                    continue;
                size_t w = e->to;
                if (index[w] == NONE) {
                    index[w] = low[w] = idx++;
                    stack[sp++] = w;
                    on[w] = true;
                    cs_v[csp] = w;
                    cs_e[csp] = g->first[w];
                    csp++;
                    pushed = true;
                    break;
                } else if (on[w] && index[w] < low[v]) {
                    low[v] = index[w];
                }
            }
            if (pushed)
                continue;
            if (low[v] == index[v]) {
                size_t c = nc++;
                size[c] = 0;
                size_t w;
                do {
                    w = stack[--sp];
                    on[w] = false;
                    comp[w] = c;
                    size[c]++;
                } while (w != v);
            }
            csp--;
            if (csp) {
                size_t u = cs_v[csp - 1];
                if (low[v] < low[u])
                    low[u] = low[v];
            }
        }
    }
    free(index);
    free(low);
    free(on);
    free(stack);
    free(cs_v);
    free(cs_e);
    return nc;
}

/* BFS from `src` to `dst` over edges of `mask`; on success fills path with
 * edge indices (in order) and returns its length, else 0. */
struct bfs {
    size_t *stamp, *via, *queue;
    size_t gen;
};

static size_t bfs_path(const struct graph *g, struct bfs *b, size_t src, size_t dst, uint8_t mask, size_t *path,
                       size_t path_cap)
{
    b->gen++;
    size_t qh = 0, qt = 0;
    b->queue[qt++] = src;
    b->stamp[src] = b->gen;
    b->via[src] = NONE;
    while (qh < qt) {
        size_t v = b->queue[qh++];
        for (size_t i = g->first[v]; i < g->first[v + 1]; i++) {
            const struct edge *e = &g->e[i];
            if (!(e->type & mask) || b->stamp[e->to] == b->gen)
                continue;
            b->stamp[e->to] = b->gen;
            b->via[e->to] = i;
            if (e->to == dst) {
                size_t len = 0;
                for (size_t x = dst; x != src; x = g->e[b->via[x]].from)
                    len++;
                if (!path)
                    return len;
                size_t k = len;
                for (size_t x = dst; x != src; x = g->e[b->via[x]].from)
                    if (--k < path_cap)
                        path[k] = b->via[x];
                return len;
            }
            b->queue[qt++] = e->to;
        }
    }
    return 0;
}

struct ctx {
    const struct si_history *h;
    struct si_options o;
    struct si_result *res;
    struct ck_str body[SI_N_ANOMALIES];
    struct wmap w;
    bool *eff; /* committed, or unknown with an observed append */
    /* per key: the longest committed read (version order) */
    size_t *vo_off, *vo_n, *vo_txn;
};

static const char *status_name(uint8_t s)
{
    return s == SI_COMMITTED ? "committed" : s == SI_ABORTED ? "aborted" : "unknown";
}

static void print_key(struct ck_str *b, const struct si_history *h, uint32_t k)
{
    ck_str_bytes(b, h->kbuf + h->koff[k], h->klen[k], 40);
}

static void print_list(struct ck_str *b, const uint64_t *v, size_t n)
{
    ck_str_printf(b, "[");
    size_t show = n <= 12 ? n : 10;
    for (size_t i = 0; i < show; i++)
        ck_str_printf(b, "%s%" PRIu64, i ? " " : "", v[i]);
    if (show < n)
        ck_str_printf(b, " ... %" PRIu64 "] (%zu elements)", v[n - 1], n);
    else
        ck_str_printf(b, "]");
}

static void print_txn(struct ck_str *b, const struct si_history *h, size_t t)
{
    const struct si_txn *x = &h->txns[t];
    ck_str_printf(b, "      T%zu (client %u, %s", t, x->client, status_name(x->status));
    if (x->end != UINT64_MAX)
        ck_str_printf(b, ", %" PRIu64 "..%" PRIu64, x->start, x->end);
    ck_str_printf(b, "):");
    size_t show = x->n_mops <= 8 ? x->n_mops : 8;
    for (size_t i = 0; i < show; i++) {
        const struct si_mop *m = &x->mops[i];
        ck_str_printf(b, "%s %s ", i ? ";" : "", m->is_read ? "read" : "append");
        print_key(b, h, m->key);
        if (m->is_read) {
            ck_str_printf(b, " -> ");
            print_list(b, h->vals + m->list_off, m->list_n);
        } else {
            ck_str_printf(b, " %" PRIu64, m->value);
        }
    }
    if (show < x->n_mops)
        ck_str_printf(b, "; ... (%zu micro-ops)", x->n_mops);
    ck_str_printf(b, "\n");
}

/* Counts one anomaly; true if an example should be printed. */
static bool found(struct ctx *c, enum si_anomaly a)
{
    return ++c->res->count[a] <= c->o.max_examples;
}

static void print_cycle(struct ctx *c, struct ck_str *b, const struct graph *g, const size_t *edges, size_t n)
{
    static const char *tn[8] = {"", "ww", "wr", "", "rw", "", "", ""};
    ck_str_printf(b, "    cycle: T%zu", g->e[edges[0]].from);
    for (size_t i = 0; i < n; i++) {
        const struct edge *e = &g->e[edges[i]];
        ck_str_printf(b, " -%s(", tn[e->type & 7]);
        print_key(b, c->h, e->key);
        ck_str_printf(b, ")-> T%zu", e->to);
    }
    ck_str_printf(b, "\n");
    for (size_t i = 0; i < n; i++)
        print_txn(b, c->h, g->e[edges[i]].from);
}

/* Length of a read's external part: the list without the trailing elements
 * the reading transaction appended itself. */
static size_t external_len(const struct ctx *c, size_t t, const struct si_mop *m)
{
    const uint64_t *L = c->h->vals + m->list_off;
    size_t p = m->list_n;
    while (p > 0 && writer_of(&c->w, m->key, L[p - 1]) == t)
        p--;
    return p;
}

static void check_internal(struct ctx *c, size_t t)
{
    const struct si_history *h = c->h;
    const struct si_txn *x = &h->txns[t];
    for (size_t i = 0; i < x->n_mops; i++) {
        const struct si_mop *r = &x->mops[i];
        if (!r->is_read)
            continue;
        /* The previous read of the same key and the appends since. */
        const struct si_mop *prev = NULL;
        size_t j = i;
        while (j-- > 0)
            if (x->mops[j].is_read && x->mops[j].key == r->key) {
                prev = &x->mops[j];
                break;
            }
        size_t from = prev ? (size_t)(prev - x->mops) + 1 : 0;
        size_t n_own = 0;
        for (size_t a = from; a < i; a++)
            if (!x->mops[a].is_read && x->mops[a].key == r->key)
                n_own++;
        const uint64_t *L = h->vals + r->list_off;
        bool bad = false;
        if (prev) {
            bad = r->list_n != prev->list_n + n_own ||
                  (prev->list_n && memcmp(L, h->vals + prev->list_off, prev->list_n * sizeof(uint64_t)) != 0);
        } else {
            bad = r->list_n < n_own;
        }
        if (!bad) {
            /* The tail must be our own appends, in order. */
            size_t k = r->list_n - n_own;
            for (size_t a = from; a < i && !bad; a++)
                if (!x->mops[a].is_read && x->mops[a].key == r->key)
                    bad = L[k++] != x->mops[a].value;
        }
        if (bad && found(c, SI_NONREPEATABLE_READ)) {
            struct ck_str *b = &c->body[SI_NONREPEATABLE_READ];
            ck_str_printf(b, "  T%zu read key ", t);
            print_key(b, h, r->key);
            if (prev)
                ck_str_printf(b, " twice with different results (micro-ops %zu and %zu; %zu own appends between)\n",
                              (size_t)(prev - x->mops), i, n_own);
            else
                ck_str_printf(b, " without its own %zu earlier append(s) at the end (micro-op %zu)\n", n_own, i);
            print_txn(b, h, t);
        }
    }
}

static void report_incompatible(struct ctx *c, uint32_t k, size_t t, const struct si_mop *m, const char *why)
{
    if (!found(c, SI_INCOMPATIBLE_ORDER))
        return;
    struct ck_str *b = &c->body[SI_INCOMPATIBLE_ORDER];
    ck_str_printf(b, "  key ");
    print_key(b, c->h, k);
    ck_str_printf(b, ": %s: T%zu read ", why, t);
    print_list(b, c->h->vals + m->list_off, m->list_n);
    ck_str_printf(b, ", the longest read (T%zu) is ", c->vo_txn[k]);
    print_list(b, c->h->vals + c->vo_off[k], c->vo_n[k]);
    ck_str_printf(b, "\n");
    print_txn(b, c->h, t);
    print_txn(b, c->h, c->vo_txn[k]);
}

bool si_check_append(const struct si_history *h, const struct si_options *opts, struct si_result *res)
{
    struct ctx c = {.h = h, .res = res};
    if (opts)
        c.o = *opts;
    if (!c.o.max_examples)
        c.o.max_examples = 3;
    if (!c.o.max_rw_searches)
        c.o.max_rw_searches = 200000;
    memset(res, 0, sizeof(*res));
    size_t nt = h->n, nk = h->nkeys;
    res->n_txns = nt;
    struct ck_str info = {0};

    /* Writers of every appended element. */
    size_t n_app = 0;
    for (size_t t = 0; t < nt; t++)
        for (size_t i = 0; i < h->txns[t].n_mops; i++)
            n_app += !h->txns[t].mops[i].is_read;
    c.w.cap = n_app ? n_app : 1;
    c.w.key = ck_xmalloc(c.w.cap * sizeof(uint32_t));
    c.w.value = ck_xmalloc(c.w.cap * sizeof(uint64_t));
    c.w.txn = ck_xmalloc(c.w.cap * sizeof(size_t));
    c.w.mop = ck_xmalloc(c.w.cap * sizeof(size_t));
    c.w.pos = ck_xmalloc(c.w.cap * sizeof(size_t));
    c.w.n_slots = 16;
    while (c.w.n_slots < 2 * c.w.cap)
        c.w.n_slots *= 2;
    c.w.slots = ck_xcalloc(c.w.n_slots, sizeof(size_t));
    size_t n_dup = 0;
    for (size_t t = 0; t < nt; t++)
        for (size_t i = 0; i < h->txns[t].n_mops; i++) {
            const struct si_mop *m = &h->txns[t].mops[i];
            if (!m->is_read && !wm_add(&c.w, m->key, m->value, t, i) && n_dup++ < c.o.max_examples) {
                ck_str_printf(&info, "  input: value %" PRIu64 " appended to key ", m->value);
                print_key(&info, h, m->key);
                ck_str_printf(&info, " more than once (T%zu and T%zu): values must be unique per key\n",
                              writer_of(&c.w, m->key, m->value), t);
            }
        }

    /* Which transactions took effect. */
    c.eff = ck_xcalloc(nt ? nt : 1, sizeof(bool));
    for (size_t t = 0; t < nt; t++) {
        const struct si_txn *x = &h->txns[t];
        if (x->status == SI_COMMITTED)
            res->n_committed++;
        else if (x->status == SI_ABORTED)
            res->n_aborted++;
        else
            res->n_unknown++;
        c.eff[t] = x->status == SI_COMMITTED;
    }
    for (size_t t = 0; t < nt; t++) {
        const struct si_txn *x = &h->txns[t];
        if (x->status != SI_COMMITTED)
            continue;
        for (size_t i = 0; i < x->n_mops; i++) {
            const struct si_mop *m = &x->mops[i];
            if (!m->is_read)
                continue;
            for (size_t j = 0; j < m->list_n; j++) {
                size_t wt = writer_of(&c.w, m->key, h->vals[m->list_off + j]);
                if (wt != NONE && h->txns[wt].status == SI_UNKNOWN)
                    c.eff[wt] = true;
            }
        }
    }

    /* Version order: the longest committed read of each key. */
    c.vo_off = ck_xcalloc(nk ? nk : 1, sizeof(size_t));
    c.vo_n = ck_xcalloc(nk ? nk : 1, sizeof(size_t));
    c.vo_txn = ck_xmalloc((nk ? nk : 1) * sizeof(size_t));
    for (size_t k = 0; k < nk; k++)
        c.vo_txn[k] = NONE;
    for (size_t t = 0; t < nt; t++) {
        const struct si_txn *x = &h->txns[t];
        if (x->status != SI_COMMITTED)
            continue;
        for (size_t i = 0; i < x->n_mops; i++) {
            const struct si_mop *m = &x->mops[i];
            if (m->is_read && (c.vo_txn[m->key] == NONE || m->list_n > c.vo_n[m->key])) {
                c.vo_off[m->key] = m->list_off;
                c.vo_n[m->key] = m->list_n;
                c.vo_txn[m->key] = t;
            }
        }
    }
    bool *key_ok = ck_xcalloc(nk ? nk : 1, sizeof(bool));
    for (size_t k = 0; k < nk; k++) {
        key_ok[k] = true;
        for (size_t j = 0; j < c.vo_n[k]; j++) {
            size_t e = wm_find(&c.w, (uint32_t)k, h->vals[c.vo_off[k] + j]);
            if (e == NONE)
                continue; /* garbage: reported per read below */
            if (c.w.pos[e] != NONE) {
                key_ok[k] = false;
                if (found(&c, SI_INCOMPATIBLE_ORDER)) {
                    struct ck_str *b = &c.body[SI_INCOMPATIBLE_ORDER];
                    ck_str_printf(b, "  key ");
                    print_key(b, h, (uint32_t)k);
                    ck_str_printf(b, ": element %" PRIu64 " appears twice in one read\n", c.w.value[e]);
                    print_txn(b, h, c.vo_txn[k]);
                }
                break;
            }
            c.w.pos[e] = j;
        }
    }

    /* Per read: compatibility, garbage, aborted and intermediate reads. */
    for (size_t t = 0; t < nt; t++) {
        const struct si_txn *x = &h->txns[t];
        if (x->status != SI_COMMITTED)
            continue;
        check_internal(&c, t);
        for (size_t i = 0; i < x->n_mops; i++) {
            const struct si_mop *m = &x->mops[i];
            if (!m->is_read)
                continue;
            const uint64_t *L = h->vals + m->list_off;
            uint32_t k = m->key;
            if (c.vo_txn[k] != t &&
                (m->list_n > c.vo_n[k] ||
                 (m->list_n && memcmp(L, h->vals + c.vo_off[k], m->list_n * sizeof(uint64_t)) != 0))) {
                key_ok[k] = false;
                report_incompatible(&c, k, t, m, "reads disagree on the order of versions (not prefixes of one another)");
            }
            bool garbage = false, aborted = false;
            for (size_t j = 0; j < m->list_n; j++) {
                size_t wt = writer_of(&c.w, k, L[j]);
                if (wt == NONE && !garbage) {
                    garbage = true;
                    if (found(&c, SI_GARBAGE_READ)) {
                        struct ck_str *b = &c.body[SI_GARBAGE_READ];
                        ck_str_printf(b, "  T%zu read %" PRIu64 " in key ", t, L[j]);
                        print_key(b, h, k);
                        ck_str_printf(b, ", which no transaction appended\n");
                        print_txn(b, h, t);
                    }
                } else if (wt != NONE && wt != t && h->txns[wt].status == SI_ABORTED && !aborted) {
                    aborted = true;
                    if (found(&c, SI_G1A)) {
                        struct ck_str *b = &c.body[SI_G1A];
                        ck_str_printf(b, "  T%zu read %" PRIu64 " in key ", t, L[j]);
                        print_key(b, h, k);
                        ck_str_printf(b, ", appended by aborted T%zu\n", wt);
                        print_txn(b, h, t);
                        print_txn(b, h, wt);
                    }
                }
            }
            size_t p = external_len(&c, t, m);
            if (p > 0) {
                size_t e = wm_find(&c.w, k, L[p - 1]);
                if (e != NONE && c.w.txn[e] != t) {
                    size_t wt = c.w.txn[e];
                    const struct si_txn *wx = &h->txns[wt];
                    bool later = false;
                    for (size_t a = c.w.mop[e] + 1; a < wx->n_mops; a++)
                        if (!wx->mops[a].is_read && wx->mops[a].key == k)
                            later = true;
                    if (later && found(&c, SI_G1B)) {
                        struct ck_str *b = &c.body[SI_G1B];
                        ck_str_printf(b, "  T%zu read key ", t);
                        print_key(b, h, k);
                        ck_str_printf(b, " ending at %" PRIu64 ", an intermediate append of T%zu\n", L[p - 1], wt);
                        print_txn(b, h, t);
                        print_txn(b, h, wt);
                    }
                }
            }
        }
    }

    /* Lost updates: two committed transactions read the same version of a
     * key (before appending to it) and both appended to it. */
    {
        struct lu {
            uint32_t key;
            size_t ver; /* length of the external read: names the version */
            size_t txn;
        } *lus = NULL;
        size_t n_lu = 0, cap_lu = 0;
        for (size_t t = 0; t < nt; t++) {
            const struct si_txn *x = &h->txns[t];
            if (x->status != SI_COMMITTED)
                continue;
            for (size_t i = 0; i < x->n_mops; i++) {
                const struct si_mop *m = &x->mops[i];
                if (!m->is_read || !key_ok[m->key])
                    continue;
                bool appended_before = false, appends_after = false, first_read = true;
                for (size_t j = 0; j < x->n_mops; j++) {
                    const struct si_mop *o = &x->mops[j];
                    if (o->key != m->key)
                        continue;
                    if (j < i && !o->is_read)
                        appended_before = true;
                    if (j < i && o->is_read)
                        first_read = false;
                    if (j > i && !o->is_read)
                        appends_after = true;
                }
                if (!first_read || appended_before || !appends_after)
                    continue;
                ck_grow((void **)&lus, &cap_lu, n_lu + 1, sizeof(*lus));
                lus[n_lu++] = (struct lu){.key = m->key, .ver = m->list_n, .txn = t};
            }
        }
        for (size_t i = 0; i < n_lu; i++) {
            size_t same = 0, other = NONE;
            for (size_t j = 0; j < n_lu; j++)
                if (j != i && lus[j].key == lus[i].key && lus[j].ver == lus[i].ver) {
                    same++;
                    if (other == NONE)
                        other = j;
                }
            if (same && other > i && found(&c, SI_LOST_UPDATE)) {
                struct ck_str *b = &c.body[SI_LOST_UPDATE];
                ck_str_printf(b, "  key ");
                print_key(b, h, lus[i].key);
                ck_str_printf(b, ": T%zu and T%zu both read version #%zu and both appended to it\n", lus[i].txn,
                              lus[other].txn, lus[i].ver);
                print_txn(b, h, lus[i].txn);
                print_txn(b, h, lus[other].txn);
            }
        }
        free(lus);
    }

    /* Lost writes (realtime): a committed append missing from a read of a
     * transaction that began after the append's transaction ended. */
    if (c.o.realtime) {
        /* Committed appends per key, to compare with each later read. */
        size_t *per_key = ck_xcalloc(nk + 1, sizeof(size_t));
        for (size_t e = 0; e < c.w.n; e++)
            if (h->txns[c.w.txn[e]].status == SI_COMMITTED)
                per_key[c.w.key[e] + 1]++;
        for (size_t k = 0; k < nk; k++)
            per_key[k + 1] += per_key[k];
        size_t *fill = ck_xmalloc((nk ? nk : 1) * sizeof(size_t));
        memcpy(fill, per_key, (nk ? nk : 1) * sizeof(size_t));
        size_t *apps = ck_xmalloc((c.w.n ? c.w.n : 1) * sizeof(size_t));
        for (size_t e = 0; e < c.w.n; e++)
            if (h->txns[c.w.txn[e]].status == SI_COMMITTED)
                apps[fill[c.w.key[e]]++] = e;
        for (size_t t = 0; t < nt; t++) {
            const struct si_txn *x = &h->txns[t];
            if (x->status != SI_COMMITTED)
                continue;
            for (size_t i = 0; i < x->n_mops; i++) {
                const struct si_mop *m = &x->mops[i];
                if (!m->is_read)
                    continue;
                for (size_t ai = per_key[m->key]; ai < per_key[m->key + 1]; ai++) {
                    size_t e = apps[ai];
                    size_t wt = c.w.txn[e];
                    const struct si_txn *wx = &h->txns[wt];
                    if (wt == t || wx->end >= x->start)
                        continue;
                    bool seen = false;
                    if (key_ok[m->key]) {
                        seen = c.w.pos[e] != NONE && c.w.pos[e] < m->list_n;
                    } else {
                        for (size_t j = 0; j < m->list_n && !seen; j++)
                            seen = h->vals[m->list_off + j] == c.w.value[e];
                    }
                    if (!seen && found(&c, SI_LOST_WRITE)) {
                        struct ck_str *b = &c.body[SI_LOST_WRITE];
                        ck_str_printf(b, "  T%zu committed append %" PRIu64 " to key ", wt, c.w.value[e]);
                        print_key(b, h, m->key);
                        ck_str_printf(b, " at %" PRIu64 "; T%zu began at %" PRIu64 " and read ", wx->end, t,
                                      x->start);
                        print_list(b, h->vals + m->list_off, m->list_n);
                        ck_str_printf(b, "\n");
                        print_txn(b, h, wt);
                        print_txn(b, h, t);
                    }
                }
            }
        }
        free(per_key);
        free(fill);
        free(apps);
    }

    /* Dependency graph among transactions that took effect. */
    struct graph g = {.n = nt};
    for (size_t k = 0; k < nk; k++) {
        if (!key_ok[k])
            continue;
        for (size_t j = 0; j + 1 < c.vo_n[k]; j++) {
            size_t a = writer_of(&c.w, (uint32_t)k, h->vals[c.vo_off[k] + j]);
            size_t b = writer_of(&c.w, (uint32_t)k, h->vals[c.vo_off[k] + j + 1]);
            if (a != NONE && b != NONE && c.eff[a] && c.eff[b])
                add_edge(&g, a, b, (uint32_t)k, E_WW);
        }
    }
    for (size_t t = 0; t < nt; t++) {
        const struct si_txn *x = &h->txns[t];
        if (x->status != SI_COMMITTED)
            continue;
        for (size_t i = 0; i < x->n_mops; i++) {
            const struct si_mop *m = &x->mops[i];
            if (!m->is_read || !key_ok[m->key])
                continue;
            size_t p = external_len(&c, t, m);
            if (p > 0) {
                size_t a = writer_of(&c.w, m->key, h->vals[m->list_off + p - 1]);
                if (a != NONE && c.eff[a])
                    add_edge(&g, a, t, m->key, E_WR);
            }
            if (p < c.vo_n[m->key]) {
                size_t b = writer_of(&c.w, m->key, h->vals[c.vo_off[m->key] + p]);
                if (b != NONE && c.eff[b])
                    add_edge(&g, t, b, m->key, E_RW);
            }
        }
    }
    graph_index(&g);
    for (size_t i = 0; i < g.n_e; i++)
        res->n_edges[g.e[i].type == E_WW ? 0 : g.e[i].type == E_WR ? 1 : 2]++;

    size_t *comp = ck_xmalloc((nt ? nt : 1) * sizeof(size_t));
    size_t *csize = ck_xmalloc((nt ? nt : 1) * sizeof(size_t));
    struct bfs b = {.stamp = ck_xcalloc(nt ? nt : 1, sizeof(size_t)),
                    .via = ck_xmalloc((nt ? nt : 1) * sizeof(size_t)),
                    .queue = ck_xmalloc((nt ? nt : 1) * sizeof(size_t))};
    size_t path_cap = nt + 1;
    size_t *path = ck_xmalloc(path_cap * sizeof(size_t));
    bool *in_cycle = ck_xcalloc(nt ? nt : 1, sizeof(bool));

    /* G0 and G1c: one cycle per strongly connected component. */
    static const struct {
        enum si_anomaly a;
        uint8_t mask, need;
    } classes[] = {{SI_G0, E_WW, E_WW}, {SI_G1C, E_WW | E_WR, E_WR}};
    for (size_t ci = 0; ci < 2; ci++) {
        size_t ncomp = scc(&g, classes[ci].mask, comp, csize);
        bool *done = ck_xcalloc(ncomp ? ncomp : 1, sizeof(bool));
        for (size_t i = 0; i < g.n_e; i++) {
            const struct edge *e = &g.e[i];
            if (!(e->type & classes[ci].need) || comp[e->from] != comp[e->to] || done[comp[e->from]])
                continue;
            done[comp[e->from]] = true;
            size_t len = bfs_path(&g, &b, e->to, e->from, classes[ci].mask, path + 1, path_cap - 1);
            if (!len)
                continue;
            path[0] = i;
            for (size_t j = 0; j <= len; j++)
                in_cycle[g.e[path[j]].from] = true;
            if (found(&c, classes[ci].a)) {
                struct ck_str *s = &c.body[classes[ci].a];
                ck_str_printf(s, "  %zu transactions in one cycle component\n", csize[comp[e->from]]);
                print_cycle(&c, s, &g, path, len + 1);
            }
        }
        free(done);
    }

    /* G-single: an rw edge a -> b closed by a ww/wr path b -> a. */
    size_t searches = 0;
    bool truncated = false;
    for (size_t i = 0; i < g.n_e; i++) {
        const struct edge *e = &g.e[i];
        if (e->type != E_RW)
            continue;
        if (searches++ >= c.o.max_rw_searches) {
            truncated = true;
            break;
        }
        size_t len = bfs_path(&g, &b, e->to, e->from, E_WW | E_WR, path + 1, path_cap - 1);
        if (!len)
            continue;
        path[0] = i;
        for (size_t j = 0; j <= len; j++)
            in_cycle[g.e[path[j]].from] = true;
        if (found(&c, SI_G_SINGLE)) {
            struct ck_str *s = &c.body[SI_G_SINGLE];
            ck_str_printf(s, "  a cycle with one anti-dependency:\n");
            print_cycle(&c, s, &g, path, len + 1);
        }
    }

    /* G2: other cycles through two or more rw edges (allowed by SI). */
    {
        size_t ncomp = scc(&g, E_WW | E_WR | E_RW, comp, csize);
        bool *done = ck_xcalloc(ncomp ? ncomp : 1, sizeof(bool));
        for (size_t v = 0; v < nt; v++)
            if (in_cycle[v])
                done[comp[v]] = true;
        for (size_t i = 0; i < g.n_e; i++) {
            const struct edge *e = &g.e[i];
            if (e->type != E_RW || comp[e->from] != comp[e->to] || done[comp[e->from]])
                continue;
            done[comp[e->from]] = true;
            size_t len = bfs_path(&g, &b, e->to, e->from, E_WW | E_WR | E_RW, path + 1, path_cap - 1);
            if (!len)
                continue;
            path[0] = i;
            if (found(&c, SI_G2)) {
                struct ck_str *s = &c.body[SI_G2];
                ck_str_printf(s, "  %zu transactions in one component, e.g.\n", csize[comp[e->from]]);
                print_cycle(&c, s, &g, path, len + 1);
            }
        }
        free(done);
    }

    res->ok = true;
    for (int a = 0; a < SI_N_ANOMALIES; a++)
        if (a != SI_G2 && res->count[a])
            res->ok = false;

    struct ck_str rep = {0};
    ck_str_printf(&rep, "%s: %zu transactions (%zu committed, %zu aborted, %zu unknown), edges ww %zu wr %zu rw %zu\n",
                  res->ok ? "snapshot isolation holds" : "snapshot isolation VIOLATED", nt, res->n_committed,
                  res->n_aborted, res->n_unknown, res->n_edges[0], res->n_edges[1], res->n_edges[2]);
    for (int a = 0; a < SI_N_ANOMALIES; a++) {
        if (!res->count[a])
            continue;
        ck_str_printf(&rep, "%s: %zu%s\n", si_anomaly_name((enum si_anomaly)a), res->count[a],
                      a == SI_G_SINGLE && truncated ? " (at least; search budget reached)" : "");
        if (c.body[a].s)
            ck_str_printf(&rep, "%s", c.body[a].s);
    }
    if (info.s)
        ck_str_printf(&rep, "%s", info.s);
    res->report = ck_str_take(&rep);

    for (int a = 0; a < SI_N_ANOMALIES; a++)
        free(c.body[a].s);
    free(info.s);
    free(c.w.key);
    free(c.w.value);
    free(c.w.txn);
    free(c.w.mop);
    free(c.w.pos);
    free(c.w.slots);
    free(c.eff);
    free(c.vo_off);
    free(c.vo_n);
    free(c.vo_txn);
    free(key_ok);
    free(g.e);
    free(g.first);
    free(comp);
    free(csize);
    free(b.stamp);
    free(b.via);
    free(b.queue);
    free(path);
    free(in_cycle);
    return res->ok;
}

void si_result_free(struct si_result *res)
{
    free(res->report);
    memset(res, 0, sizeof(*res));
}

/* ---- bank ---- */

struct bank_read {
    uint32_t client;
    uint64_t t;
    size_t off, n;
};

struct si_bank {
    size_t n_accounts;
    int64_t total;
    bool forbid_negative;
    int64_t *bal;
    size_t n_bal, cap_bal;
    struct bank_read *reads;
    size_t n, cap;
};

struct si_bank *si_bank_new(size_t n_accounts, int64_t total, bool forbid_negative)
{
    struct si_bank *b = ck_xcalloc(1, sizeof(*b));
    b->n_accounts = n_accounts;
    b->total = total;
    b->forbid_negative = forbid_negative;
    return b;
}

void si_bank_free(struct si_bank *b)
{
    if (!b)
        return;
    free(b->bal);
    free(b->reads);
    free(b);
}

void si_bank_read(struct si_bank *b, uint32_t client, uint64_t t, const int64_t *balances, size_t n)
{
    ck_grow((void **)&b->bal, &b->cap_bal, b->n_bal + n, sizeof(int64_t));
    if (n)
        memcpy(b->bal + b->n_bal, balances, n * sizeof(int64_t));
    ck_grow((void **)&b->reads, &b->cap, b->n + 1, sizeof(struct bank_read));
    b->reads[b->n++] = (struct bank_read){.client = client, .t = t, .off = b->n_bal, .n = n};
    b->n_bal += n;
}

bool si_bank_check(const struct si_bank *b, size_t max_examples, struct si_bank_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!max_examples)
        max_examples = 3;
    struct ck_str body = {0};
    size_t shown = 0;
    for (size_t i = 0; i < b->n; i++) {
        const struct bank_read *r = &b->reads[i];
        const int64_t *v = b->bal + r->off;
        int64_t sum = 0;
        bool neg = false;
        for (size_t j = 0; j < r->n; j++) {
            sum += v[j];
            neg |= v[j] < 0;
        }
        const char *why = NULL;
        if (r->n != b->n_accounts) {
            res->n_bad_shape++;
            why = "wrong number of accounts";
        } else if (sum != b->total) {
            res->n_bad_total++;
            why = "total changed";
        } else if (neg && b->forbid_negative) {
            res->n_bad_negative++;
            why = "negative balance";
        }
        if (why && shown++ < max_examples) {
            ck_str_printf(&body, "  read %zu (client %u at %" PRIu64 "): %s: sum %" PRId64 " (expected %" PRId64
                                 "), balances [",
                          i, r->client, r->t, why, sum, b->total);
            for (size_t j = 0; j < r->n; j++)
                ck_str_printf(&body, "%s%" PRId64, j ? " " : "", v[j]);
            ck_str_printf(&body, "]\n");
        }
    }
    res->n_reads = b->n;
    res->ok = !res->n_bad_total && !res->n_bad_negative && !res->n_bad_shape;
    struct ck_str rep = {0};
    ck_str_printf(&rep, "%s: %zu snapshot reads of %zu accounts (total %" PRId64 "): %zu with a wrong total, %zu "
                        "with a negative balance, %zu with a wrong number of accounts\n",
                  res->ok ? "bank invariant holds" : "bank invariant VIOLATED", b->n, b->n_accounts, b->total,
                  res->n_bad_total, res->n_bad_negative, res->n_bad_shape);
    if (body.s)
        ck_str_printf(&rep, "%s", body.s);
    free(body.s);
    res->report = ck_str_take(&rep);
    return res->ok;
}

void si_bank_result_free(struct si_bank_result *res)
{
    free(res->report);
    memset(res, 0, sizeof(*res));
}
