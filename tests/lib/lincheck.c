/* Linearizability checker for key-value histories (see lincheck.h).
 *
 * Per key: Wing & Gong's search over the list of call/return events with
 * Lowe's memoisation (Porcupine's formulation). The search walks the event
 * list; at a call it tries to linearize that operation now (model step
 * succeeds and the configuration {linearized set, model state} is new), at a
 * return of an operation not yet linearized it backtracks. The history is
 * linearizable once every operation with a known completion is linearized:
 * indeterminate operations left over can always take effect at the end (or
 * never), where nothing observes them. */
#include "lincheck.h"

#include <stdlib.h>
#include <string.h>

#include "checker_util.h"

enum { OP_PENDING, OP_OK, OP_FAILED, OP_UNKNOWN };

struct lc_op {
    uint64_t call, ret;
    size_t key_off, key_len;
    size_t val_off, val_len; /* put/append: written value; get: value read */
    uint32_t client;
    uint8_t kind, status;
    bool found;
};

struct lc_history {
    struct lc_op *ops;
    size_t n, cap;
    unsigned char *buf;
    size_t buf_len, buf_cap;
};

struct lc_history *lc_history_new(void)
{
    return ck_xcalloc(1, sizeof(struct lc_history));
}

void lc_history_free(struct lc_history *h)
{
    if (!h)
        return;
    free(h->ops);
    free(h->buf);
    free(h);
}

size_t lc_history_size(const struct lc_history *h)
{
    return h->n;
}

static size_t hist_bytes(struct lc_history *h, const void *p, size_t len)
{
    size_t off = h->buf_len;
    ck_grow((void **)&h->buf, &h->buf_cap, h->buf_len + len + 1, 1);
    if (len)
        memcpy(h->buf + off, p, len);
    h->buf_len += len;
    return off;
}

size_t lc_invoke(struct lc_history *h, uint32_t client, enum lc_kind kind, const void *key, size_t key_len,
                 const void *val, size_t val_len, uint64_t t)
{
    ck_grow((void **)&h->ops, &h->cap, h->n + 1, sizeof(struct lc_op));
    struct lc_op *o = &h->ops[h->n];
    memset(o, 0, sizeof(*o));
    o->call = t;
    o->ret = LC_TIME_INFINITY;
    o->client = client;
    o->kind = (uint8_t)kind;
    o->status = OP_PENDING;
    o->key_off = hist_bytes(h, key, key_len);
    o->key_len = key_len;
    if (kind == LC_PUT || kind == LC_APPEND) {
        o->val_off = hist_bytes(h, val, val_len);
        o->val_len = val_len;
    }
    return h->n++;
}

static struct lc_op *op_at(struct lc_history *h, size_t op)
{
    if (op >= h->n) {
        fprintf(stderr, "lincheck: completion of unknown op %zu (history has %zu)\n", op, h->n);
        abort();
    }
    return &h->ops[op];
}

void lc_complete_ok(struct lc_history *h, size_t op, uint64_t t)
{
    struct lc_op *o = op_at(h, op);
    o->status = OP_OK;
    o->ret = t < o->call ? o->call : t;
}

void lc_complete_get(struct lc_history *h, size_t op, uint64_t t, bool found, const void *val, size_t val_len)
{
    struct lc_op *o = op_at(h, op);
    o->status = OP_OK;
    o->ret = t < o->call ? o->call : t;
    o->found = found;
    if (found) {
        o->val_off = hist_bytes(h, val, val_len);
        o->val_len = val_len;
    }
}

void lc_complete_failed(struct lc_history *h, size_t op)
{
    op_at(h, op)->status = OP_FAILED;
}

void lc_complete_unknown(struct lc_history *h, size_t op)
{
    struct lc_op *o = op_at(h, op);
    o->status = OP_UNKNOWN;
    o->ret = LC_TIME_INFINITY;
}

const char *lc_verdict_name(enum lc_verdict v)
{
    switch (v) {
    case LC_LINEARIZABLE:
        return "linearizable";
    case LC_NOT_LINEARIZABLE:
        return "NOT linearizable";
    case LC_UNKNOWN:
        return "unknown (search budget exhausted)";
    }
    return "?";
}

/* ---- interned model states: id 0 is "absent", others are byte strings ---- */

struct intern {
    unsigned char *buf;
    size_t buf_len, buf_cap;
    size_t *off, *len;
    uint64_t *hash;
    size_t n, cap;    /* ids, including 0 */
    uint32_t *slots; /* open addressing, id (0 = empty slot) */
    size_t n_slots;
    unsigned char *scratch;
    size_t scratch_cap;
};

static void intern_init(struct intern *in)
{
    memset(in, 0, sizeof(*in));
    ck_grow((void **)&in->off, &in->cap, 16, sizeof(size_t));
    in->len = ck_xcalloc(in->cap, sizeof(size_t));
    in->hash = ck_xcalloc(in->cap, sizeof(uint64_t));
    in->n = 1; /* id 0: absent */
    in->off[0] = 0;
    in->len[0] = 0;
    in->n_slots = 64;
    in->slots = ck_xcalloc(in->n_slots, sizeof(uint32_t));
}

static void intern_free(struct intern *in)
{
    free(in->buf);
    free(in->off);
    free(in->len);
    free(in->hash);
    free(in->slots);
    free(in->scratch);
}

static const unsigned char *intern_bytes(const struct intern *in, uint32_t id, size_t *len)
{
    *len = in->len[id];
    return in->buf + in->off[id];
}

static void intern_rehash(struct intern *in)
{
    free(in->slots);
    in->n_slots *= 2;
    in->slots = ck_xcalloc(in->n_slots, sizeof(uint32_t));
    for (uint32_t id = 1; id < in->n; id++) {
        size_t i = in->hash[id] & (in->n_slots - 1);
        while (in->slots[i])
            i = (i + 1) & (in->n_slots - 1);
        in->slots[i] = id;
    }
}

static uint32_t intern_get(struct intern *in, const void *p, size_t len)
{
    uint64_t hv = ck_hash_bytes(p, len, 0x5eed);
    size_t i = hv & (in->n_slots - 1);
    while (in->slots[i]) {
        uint32_t id = in->slots[i];
        if (in->hash[id] == hv && in->len[id] == len && (len == 0 || memcmp(in->buf + in->off[id], p, len) == 0))
            return id;
        i = (i + 1) & (in->n_slots - 1);
    }
    if (in->n + 1 > in->cap) {
        size_t old = in->cap;
        ck_grow((void **)&in->off, &in->cap, in->n + 1, sizeof(size_t));
        in->len = ck_xrealloc(in->len, in->cap * sizeof(size_t));
        in->hash = ck_xrealloc(in->hash, in->cap * sizeof(uint64_t));
        (void)old;
    }
    uint32_t id = (uint32_t)in->n++;
    size_t off = in->buf_len;
    ck_grow((void **)&in->buf, &in->buf_cap, in->buf_len + len + 1, 1);
    if (len)
        memcpy(in->buf + off, p, len);
    in->buf_len += len;
    in->off[id] = off;
    in->len[id] = len;
    in->hash[id] = hv;
    in->slots[i] = id;
    if (in->n * 2 > in->n_slots)
        intern_rehash(in);
    return id;
}

/* state ++ piece (an absent state counts as ""). */
static uint32_t intern_concat(struct intern *in, uint32_t state, uint32_t piece)
{
    size_t a = in->len[state], b = in->len[piece];
    ck_grow((void **)&in->scratch, &in->scratch_cap, a + b + 1, 1);
    /* Copy out before intern_get may move in->buf. */
    if (a)
        memcpy(in->scratch, in->buf + in->off[state], a);
    if (b)
        memcpy(in->scratch + a, in->buf + in->off[piece], b);
    return intern_get(in, in->scratch, a + b);
}

/* ---- one key's operations ---- */

struct kop {
    size_t id; /* lc_invoke id */
    uint64_t call, ret;
    uint32_t arg; /* get: expected state; put: value; append: piece */
    uint32_t client;
    uint8_t kind;
    bool det; /* completion known */
};

static bool model_step(struct intern *in, uint32_t state, const struct kop *o, uint32_t *next)
{
    switch (o->kind) {
    case LC_GET:
        *next = state;
        return state == o->arg;
    case LC_PUT:
        *next = o->arg;
        return true;
    case LC_DELETE:
        *next = 0;
        return true;
    case LC_APPEND:
        *next = intern_concat(in, state, o->arg);
        return true;
    }
    return false;
}

/* ---- memo: set of (linearized bitset, state) ---- */

struct memo {
    size_t nwords;
    uint64_t *pool; /* nwords per entry */
    uint64_t *h;
    uint32_t *state;
    size_t n, cap;
    uint32_t *slots; /* entry index + 1 */
    size_t n_slots;
};

static void memo_init(struct memo *m, size_t nwords)
{
    memset(m, 0, sizeof(*m));
    m->nwords = nwords;
    m->n_slots = 1024;
    m->slots = ck_xcalloc(m->n_slots, sizeof(uint32_t));
}

static void memo_free(struct memo *m)
{
    free(m->pool);
    free(m->h);
    free(m->state);
    free(m->slots);
}

static void memo_rehash(struct memo *m)
{
    free(m->slots);
    m->n_slots *= 2;
    m->slots = ck_xcalloc(m->n_slots, sizeof(uint32_t));
    for (size_t e = 0; e < m->n; e++) {
        size_t i = m->h[e] & (m->n_slots - 1);
        while (m->slots[i])
            i = (i + 1) & (m->n_slots - 1);
        m->slots[i] = (uint32_t)(e + 1);
    }
}

/* True if (bits, state) was not in the set (and is now). */
static bool memo_insert(struct memo *m, uint64_t hv, const uint64_t *bits, uint32_t state)
{
    hv ^= ck_mix64(state);
    size_t i = hv & (m->n_slots - 1);
    while (m->slots[i]) {
        size_t e = m->slots[i] - 1;
        if (m->h[e] == hv && m->state[e] == state &&
            memcmp(m->pool + e * m->nwords, bits, m->nwords * sizeof(uint64_t)) == 0)
            return false;
        i = (i + 1) & (m->n_slots - 1);
    }
    size_t cap = m->cap;
    ck_grow((void **)&m->h, &cap, m->n + 1, sizeof(uint64_t));
    if (cap != m->cap) {
        m->state = ck_xrealloc(m->state, cap * sizeof(uint32_t));
        m->pool = ck_xrealloc(m->pool, cap * m->nwords * sizeof(uint64_t));
        m->cap = cap;
    }
    size_t e = m->n++;
    m->h[e] = hv;
    m->state[e] = state;
    memcpy(m->pool + e * m->nwords, bits, m->nwords * sizeof(uint64_t));
    m->slots[i] = (uint32_t)(e + 1);
    if (m->n * 2 > m->n_slots)
        memo_rehash(m);
    return true;
}

/* ---- the search ---- */

struct event {
    uint64_t t;
    size_t op;
    bool is_ret;
};

static int event_cmp(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    /* At equal times calls come first: touching intervals are concurrent. */
    if (x->is_ret != y->is_ret)
        return x->is_ret ? 1 : -1;
    return x->op < y->op ? -1 : x->op > y->op;
}

struct search_out {
    enum lc_verdict verdict;
    uint64_t steps;
    size_t stuck; /* kop index whose completion the deepest branch could not reach; SIZE_MAX if none */
};

#define NIL SIZE_MAX

static void search(struct intern *in, const struct kop *ops, size_t m, uint64_t budget, struct search_out *out)
{
    out->verdict = LC_LINEARIZABLE;
    out->steps = 0;
    out->stuck = NIL;
    size_t remaining = 0;
    for (size_t i = 0; i < m; i++)
        remaining += ops[i].det;
    if (remaining == 0)
        return;

    size_t n_ev = 2 * m, head = n_ev;
    struct event *ev = ck_xmalloc(n_ev * sizeof(*ev));
    for (size_t i = 0; i < m; i++) {
        ev[2 * i] = (struct event){.t = ops[i].call, .op = i, .is_ret = false};
        ev[2 * i + 1] = (struct event){.t = ops[i].det ? ops[i].ret : LC_TIME_INFINITY, .op = i, .is_ret = true};
    }
    qsort(ev, n_ev, sizeof(*ev), event_cmp);
    size_t *next = ck_xmalloc((n_ev + 1) * sizeof(size_t));
    size_t *prev = ck_xmalloc((n_ev + 1) * sizeof(size_t));
    size_t *call_ev = ck_xmalloc(m * sizeof(size_t));
    size_t *ret_ev = ck_xmalloc(m * sizeof(size_t));
    for (size_t e = 0; e < n_ev; e++) {
        next[e] = e + 1 < n_ev ? e + 1 : NIL;
        prev[e] = e ? e - 1 : head;
        if (ev[e].is_ret)
            ret_ev[ev[e].op] = e;
        else
            call_ev[ev[e].op] = e;
    }
    next[head] = 0;
    prev[head] = NIL;

    size_t nwords = (m + 63) / 64;
    uint64_t *bits = ck_xcalloc(nwords, sizeof(uint64_t));
    uint64_t *zob = ck_xmalloc(m * sizeof(uint64_t));
    for (size_t i = 0; i < m; i++)
        zob[i] = ck_mix64(0x1234567ULL + i * 0x9e3779b97f4a7c15ULL);
    struct memo memo;
    memo_init(&memo, nwords);
    size_t *stk_op = ck_xmalloc(m * sizeof(size_t));
    uint32_t *stk_state = ck_xmalloc(m * sizeof(uint32_t));
    size_t depth = 0, best_depth = 0;
    uint32_t state = 0;
    uint64_t hv = 0;
    size_t entry = next[head];

    for (;;) {
        if (remaining == 0)
            break;
        if (++out->steps > budget) {
            out->verdict = LC_UNKNOWN;
            break;
        }
        if (entry == NIL) { /* cannot happen: a finite return precedes the infinite ones */
            out->verdict = LC_UNKNOWN;
            break;
        }
        size_t op = ev[entry].op;
        if (!ev[entry].is_ret) {
            uint32_t nstate;
            if (model_step(in, state, &ops[op], &nstate)) {
                bits[op / 64] |= 1ULL << (op % 64);
                if (memo_insert(&memo, hv ^ zob[op], bits, nstate)) {
                    stk_op[depth] = op;
                    stk_state[depth] = state;
                    depth++;
                    state = nstate;
                    hv ^= zob[op];
                    /* lift: unlink the call and its return */
                    size_t c = call_ev[op], r = ret_ev[op];
                    next[prev[c]] = next[c];
                    if (next[c] != NIL)
                        prev[next[c]] = prev[c];
                    next[prev[r]] = next[r];
                    if (next[r] != NIL)
                        prev[next[r]] = prev[r];
                    remaining -= ops[op].det;
                    entry = next[head];
                    continue;
                }
                bits[op / 64] &= ~(1ULL << (op % 64));
            }
            entry = next[entry];
        } else {
            /* A completion whose operation is not linearized yet. */
            if (depth >= best_depth) {
                best_depth = depth;
                out->stuck = op;
            }
            if (depth == 0) {
                out->verdict = LC_NOT_LINEARIZABLE;
                break;
            }
            depth--;
            size_t top = stk_op[depth];
            state = stk_state[depth];
            hv ^= zob[top];
            bits[top / 64] &= ~(1ULL << (top % 64));
            /* unlift: relink the return, then the call */
            size_t c = call_ev[top], r = ret_ev[top];
            next[prev[r]] = r;
            if (next[r] != NIL)
                prev[next[r]] = r;
            next[prev[c]] = c;
            if (next[c] != NIL)
                prev[next[c]] = c;
            remaining += ops[top].det;
            entry = next[c];
        }
    }
    free(ev);
    free(next);
    free(prev);
    free(call_ev);
    free(ret_ev);
    free(bits);
    free(zob);
    memo_free(&memo);
    free(stk_op);
    free(stk_state);
}

/* ---- counterexample: shrink, explain ---- */

struct key_ctx {
    const struct lc_history *h;
    struct intern in;
    struct kop *ops; /* all of this key's checked ops, by call time */
    size_t m;
    bool has_append;
    uint64_t budget;
};

/* Removing operation `drop` from `set` keeps "set not linearizable => the
 * key's history not linearizable" if it is a read, or a put/delete whose
 * resulting state no remaining read returned (any linearization of the
 * bigger set minus that write is then one of the smaller set). Appends
 * change every later state: they stay. */
static bool removable(const struct key_ctx *k, const struct kop *set, size_t n, size_t drop)
{
    const struct kop *o = &set[drop];
    if (o->kind == LC_GET)
        return true;
    if (o->kind == LC_APPEND)
        return false;
    uint32_t produced = o->kind == LC_PUT ? o->arg : 0;
    for (size_t i = 0; i < n; i++)
        if (i != drop && set[i].kind == LC_GET && set[i].arg == produced)
            return false;
    (void)k;
    return true;
}

static bool fails(struct key_ctx *k, const struct kop *set, size_t n)
{
    struct search_out so;
    search(&k->in, set, n, k->budget, &so);
    return so.verdict == LC_NOT_LINEARIZABLE;
}

/* Shrinks k->ops (known to fail, stuck at `stuck`) into a newly allocated
 * set; returns its size. */
static size_t shrink(struct key_ctx *k, size_t stuck, size_t shrink_limit, struct kop **out)
{
    struct kop *set = ck_xmalloc((k->m ? k->m : 1) * sizeof(struct kop));
    size_t n = 0;
    memcpy(set, k->ops, k->m * sizeof(struct kop));
    n = k->m;
    /* 1. Cut the history at the completion the search could not reach. */
    if (stuck != NIL && k->ops[stuck].det) {
        uint64_t T = k->ops[stuck].ret;
        struct kop *cut = ck_xmalloc(n * sizeof(struct kop));
        size_t c = 0;
        for (size_t i = 0; i < n; i++) {
            struct kop o = set[i];
            if (o.kind == LC_GET && (o.call > T || !o.det || o.ret > T))
                continue;
            if (o.kind != LC_GET && o.ret > T) {
                o.det = false;
                o.ret = LC_TIME_INFINITY;
            }
            cut[c++] = o;
        }
        /* Writes invoked after T go too, unless a remaining read returned their value. */
        size_t w = 0;
        for (size_t i = 0; i < c; i++) {
            if (cut[i].kind != LC_GET && cut[i].call > T && removable(k, cut, c, i))
                continue;
            cut[w++] = cut[i];
        }
        c = w;
        if (c < n && fails(k, cut, c)) {
            memcpy(set, cut, c * sizeof(struct kop));
            n = c;
        }
        free(cut);
    }
    /* 2. Drop operations one at a time while the rest still fails. */
    if (n <= shrink_limit) {
        struct kop *tmp = ck_xmalloc((n ? n : 1) * sizeof(struct kop));
        bool changed = true;
        for (int pass = 0; changed && pass < 4; pass++) {
            changed = false;
            for (size_t i = 0; i < n;) {
                if (!removable(k, set, n, i)) {
                    i++;
                    continue;
                }
                memcpy(tmp, set, i * sizeof(struct kop));
                memcpy(tmp + i, set + i + 1, (n - i - 1) * sizeof(struct kop));
                if (fails(k, tmp, n - 1)) {
                    memcpy(set, tmp, (n - 1) * sizeof(struct kop));
                    n--;
                    changed = true;
                } else {
                    i++;
                }
            }
        }
        free(tmp);
    }
    *out = set;
    return n;
}

static const char *kind_name(uint8_t kind)
{
    switch (kind) {
    case LC_GET:
        return "get";
    case LC_PUT:
        return "put";
    case LC_DELETE:
        return "delete";
    case LC_APPEND:
        return "append";
    }
    return "?";
}

static void print_time(struct ck_str *b, uint64_t t)
{
    if (t == LC_TIME_INFINITY)
        ck_str_printf(b, "?");
    else
        ck_str_printf(b, "%llu", (unsigned long long)t);
}

static void print_state(struct ck_str *b, const struct intern *in, uint32_t state)
{
    if (state == 0) {
        ck_str_printf(b, "<not found>");
        return;
    }
    size_t len;
    const unsigned char *p = intern_bytes(in, state, &len);
    ck_str_bytes(b, p, len, 48);
}

static void print_op(struct ck_str *b, const struct key_ctx *k, const struct kop *o)
{
    ck_str_printf(b, "    op %zu client %u %s", o->id, o->client, kind_name(o->kind));
    if (o->kind == LC_PUT || o->kind == LC_APPEND) {
        ck_str_printf(b, " ");
        print_state(b, &k->in, o->arg);
    }
    ck_str_printf(b, " [invoked ");
    print_time(b, o->call);
    ck_str_printf(b, ", completed ");
    print_time(b, o->det ? o->ret : LC_TIME_INFINITY);
    ck_str_printf(b, "]");
    if (o->kind == LC_GET) {
        ck_str_printf(b, " -> ");
        print_state(b, &k->in, o->arg);
    } else if (!o->det) {
        ck_str_printf(b, " (indeterminate)");
    }
    ck_str_printf(b, "\n");
}

/* A one-line reason for the shrunk set, for the common bug shapes. */
static void explain(struct ck_str *b, const struct key_ctx *k, const struct kop *set, size_t n)
{
    if (k->has_append) {
        ck_str_printf(b, "  why: no order of these appends and reads gives every read the value it returned\n");
        return;
    }
    for (size_t gi = 0; gi < n; gi++) {
        const struct kop *g = &set[gi];
        if (g->kind != LC_GET)
            continue;
        bool found = g->arg != 0;
        /* Writers of the value read, in the key's whole history. */
        size_t n_src_all = 0;
        for (size_t i = 0; i < k->m; i++)
            if (k->ops[i].kind != LC_GET && k->ops[i].kind == (found ? LC_PUT : LC_DELETE) &&
                k->ops[i].arg == g->arg)
                n_src_all++;
        if (found && n_src_all == 0) {
            ck_str_printf(b, "  why: value never written: op %zu (client %u) read ", g->id, g->client);
            print_state(b, &k->in, g->arg);
            ck_str_printf(b, ", which no put of this key ever wrote\n");
            return;
        }
        /* Writers of the value in the counterexample. */
        bool any_src = !found; /* not found may come from the initial state */
        bool all_future = found;
        for (size_t i = 0; i < n; i++) {
            const struct kop *s = &set[i];
            if (s->kind == LC_GET || s->kind != (found ? LC_PUT : LC_DELETE) || s->arg != g->arg)
                continue;
            any_src = true;
            if (s->call <= g->ret)
                all_future = false;
        }
        if (found && any_src && all_future) {
            ck_str_printf(b, "  why: read from the future: op %zu (client %u) completed at %llu and returned ", g->id,
                          g->client, (unsigned long long)g->ret);
            print_state(b, &k->in, g->arg);
            ck_str_printf(b, ", written only by a put invoked after that\n");
            return;
        }
        /* An acknowledged overwrite that completed before the read began and
         * surely follows every writer of the value read. */
        for (size_t wi = 0; wi < n; wi++) {
            const struct kop *w = &set[wi];
            if (w->kind == LC_GET || !w->det || w->ret >= g->call)
                continue;
            uint32_t wstate = w->kind == LC_PUT ? w->arg : 0;
            if (wstate == g->arg)
                continue;
            bool after_all = true;
            for (size_t i = 0; i < n; i++) {
                const struct kop *s = &set[i];
                if (s->kind == LC_GET || s->kind != (found ? LC_PUT : LC_DELETE) || s->arg != g->arg)
                    continue;
                if (!s->det || s->ret >= w->call)
                    after_all = false;
            }
            if (!after_all)
                continue;
            bool sourced = false;
            for (size_t i = 0; i < n; i++)
                if (set[i].kind == (found ? LC_PUT : LC_DELETE) && set[i].arg == g->arg)
                    sourced = true;
            if (!found && !sourced) {
                ck_str_printf(b, "  why: lost acknowledged write: op %zu (client %u %s) completed at %llu, "
                                 "op %zu (client %u) invoked at %llu found nothing, and no delete explains it\n",
                              w->id, w->client, kind_name(w->kind), (unsigned long long)w->ret, g->id, g->client,
                              (unsigned long long)g->call);
                return;
            }
            ck_str_printf(b, "  why: stale read: op %zu (client %u) invoked at %llu returned ", g->id, g->client,
                          (unsigned long long)g->call);
            print_state(b, &k->in, g->arg);
            ck_str_printf(b, ", but op %zu (client %u %s, invoked after every write of that value completed) "
                             "had completed at %llu\n",
                          w->id, w->client, kind_name(w->kind), (unsigned long long)w->ret);
            return;
        }
    }
    ck_str_printf(b, "  why: no order of these operations, each inside its interval, is consistent with one "
                     "register (every interleaving was tried)\n");
}

/* An indeterminate put or delete whose resulting state no read returned can
 * take effect "never" (at the end) whenever it can take effect at all:
 * nothing between it and the next write could have observed it. Dropping
 * such writes keeps the verdict and stops the operations that were in
 * flight at a crash, which stay concurrent with everything after, from
 * multiplying the search. (Not for appends: they change every later
 * state.) */
static void drop_unobserved_indeterminate_writes(struct key_ctx *k)
{
    bool *read = ck_xcalloc(k->in.n, sizeof(bool));
    for (size_t i = 0; i < k->m; i++)
        if (k->ops[i].kind == LC_GET)
            read[k->ops[i].arg] = true;
    size_t w = 0;
    for (size_t i = 0; i < k->m; i++) {
        const struct kop *o = &k->ops[i];
        if (!o->det && o->kind != LC_GET && !read[o->kind == LC_PUT ? o->arg : 0])
            continue;
        k->ops[w++] = *o;
    }
    k->m = w;
    free(read);
}

/* ---- the check ---- */

static const struct lc_history *sort_h;

static int by_key_then_call(const void *a, const void *b)
{
    const struct lc_op *x = &sort_h->ops[*(const size_t *)a], *y = &sort_h->ops[*(const size_t *)b];
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = n ? memcmp(sort_h->buf + x->key_off, sort_h->buf + y->key_off, n) : 0;
    if (c)
        return c;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    if (x->call != y->call)
        return x->call < y->call ? -1 : 1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

static bool same_key(const struct lc_history *h, size_t a, size_t b)
{
    const struct lc_op *x = &h->ops[a], *y = &h->ops[b];
    return x->key_len == y->key_len &&
           (x->key_len == 0 || memcmp(h->buf + x->key_off, h->buf + y->key_off, x->key_len) == 0);
}

enum lc_verdict lc_check(const struct lc_history *h, const struct lc_options *opts, struct lc_result *res)
{
    struct lc_options o = {0};
    if (opts)
        o = *opts;
    if (!o.max_steps_per_key)
        o.max_steps_per_key = 2000000;
    if (!o.shrink_limit)
        o.shrink_limit = 400;
    if (!o.max_reported_keys)
        o.max_reported_keys = 3;
    memset(res, 0, sizeof(*res));

    size_t *idx = ck_xmalloc((h->n ? h->n : 1) * sizeof(size_t));
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++) {
        const struct lc_op *op = &h->ops[i];
        if (op->status == OP_FAILED)
            continue;
        if (op->kind == LC_GET && op->status != OP_OK)
            continue; /* a read whose answer is unknown says nothing */
        idx[n++] = i;
    }
    sort_h = h;
    qsort(idx, n, sizeof(size_t), by_key_then_call);
    sort_h = NULL;
    res->n_ops = n;

    struct ck_str body = {0};
    for (size_t start = 0; start < n;) {
        size_t end = start + 1;
        while (end < n && same_key(h, idx[start], idx[end]))
            end++;
        res->n_keys++;

        struct key_ctx k = {.h = h, .m = end - start, .budget = o.max_steps_per_key};
        intern_init(&k.in);
        k.ops = ck_xmalloc(k.m * sizeof(struct kop));
        for (size_t j = 0; j < k.m; j++) {
            const struct lc_op *op = &h->ops[idx[start + j]];
            struct kop *ko = &k.ops[j];
            ko->id = idx[start + j];
            ko->call = op->call;
            ko->det = op->status == OP_OK;
            ko->ret = ko->det ? op->ret : LC_TIME_INFINITY;
            ko->kind = op->kind;
            ko->client = op->client;
            ko->arg = 0;
            if (op->kind == LC_PUT || op->kind == LC_APPEND || (op->kind == LC_GET && op->found))
                ko->arg = intern_get(&k.in, h->buf + op->val_off, op->val_len);
            if (op->kind == LC_APPEND)
                k.has_append = true;
        }
        if (!k.has_append)
            drop_unobserved_indeterminate_writes(&k);
        struct search_out so;
        search(&k.in, k.ops, k.m, k.budget, &so);
        res->steps += so.steps;
        if (so.verdict == LC_UNKNOWN) {
            res->n_keys_unknown++;
            if (res->n_keys_failed == 0 && res->n_keys_unknown <= o.max_reported_keys) {
                const struct lc_op *op0 = &h->ops[idx[start]];
                ck_str_printf(&body, "key ");
                ck_str_bytes(&body, h->buf + op0->key_off, op0->key_len, 64);
                ck_str_printf(&body, ": unknown: %zu operations, search budget of %llu steps exhausted\n", k.m,
                              (unsigned long long)k.budget);
            }
        } else if (so.verdict == LC_NOT_LINEARIZABLE) {
            res->n_keys_failed++;
            if (res->n_keys_failed <= o.max_reported_keys) {
                struct kop *set;
                size_t sn = shrink(&k, so.stuck, o.shrink_limit, &set);
                const struct lc_op *op0 = &h->ops[idx[start]];
                if (res->n_keys_failed == 1) {
                    /* The report leads with failures: drop unknown-key lines. */
                    free(body.s);
                    body = (struct ck_str){0};
                }
                ck_str_printf(&body, "key ");
                ck_str_bytes(&body, h->buf + op0->key_off, op0->key_len, 64);
                ck_str_printf(&body, ": not linearizable (%zu operations on the key; %zu of them are a "
                                     "counterexample on their own):\n",
                              k.m, sn);
                for (size_t j = 0; j < sn; j++)
                    print_op(&body, &k, &set[j]);
                explain(&body, &k, set, sn);
                if (res->n_keys_failed == 1) {
                    res->bad_key_len = op0->key_len;
                    res->bad_key = ck_xmalloc(op0->key_len ? op0->key_len : 1);
                    memcpy(res->bad_key, h->buf + op0->key_off, op0->key_len);
                    res->n_bad_ops = sn;
                    res->bad_ops = ck_xmalloc((sn ? sn : 1) * sizeof(size_t));
                    for (size_t j = 0; j < sn; j++)
                        res->bad_ops[j] = set[j].id;
                }
                free(set);
            }
        }
        free(k.ops);
        intern_free(&k.in);
        start = end;
    }
    free(idx);

    if (res->n_keys_failed)
        res->verdict = LC_NOT_LINEARIZABLE;
    else if (res->n_keys_unknown)
        res->verdict = LC_UNKNOWN;
    else
        res->verdict = LC_LINEARIZABLE;
    struct ck_str rep = {0};
    ck_str_printf(&rep, "%s: %zu operations on %zu keys, %zu keys not linearizable, %zu unknown, %llu search steps\n",
                  lc_verdict_name(res->verdict), res->n_ops, res->n_keys, res->n_keys_failed, res->n_keys_unknown,
                  (unsigned long long)res->steps);
    if (body.s)
        ck_str_printf(&rep, "%s", body.s);
    free(body.s);
    res->report = ck_str_take(&rep);
    return res->verdict;
}

void lc_result_free(struct lc_result *res)
{
    free(res->report);
    free(res->bad_key);
    free(res->bad_ops);
    memset(res, 0, sizeof(*res));
}
