/* Per-key latches (TINYKV-API.md 2.5): a command holds every key it will
 * write from before it reads until its writes are durable. Exact keys (no
 * hash slots, so unrelated keys never wait for each other), sorted
 * acquisition (no deadlock), FIFO hand-over (no starvation). */
#include <stdlib.h>
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/txn.h"

#define LATCH_BUCKETS 4096u

struct latch_slot {
    struct latch_slot *next; /* bucket chain */
    struct tkv_txn_latch_req *holder;
    struct tkv_txn_latch_req *wait_head, *wait_tail;
    uint64_t hash;
    size_t len;
    uint8_t key[];
};

struct tkv_txn_latches {
    struct latch_slot *buckets[LATCH_BUCKETS];
    size_t n_slots;
};

static uint64_t hash_key(struct tkv_slice k)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < k.len; i++) {
        h ^= k.ptr[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int cmp_slice(const void *a, const void *b)
{
    const struct tkv_slice *x = a, *y = b;
    int c = memcmp(x->ptr, y->ptr, TKV_MIN(x->len, y->len));
    if (c == 0 && x->len != y->len)
        c = x->len < y->len ? -1 : 1;
    return c;
}

void tkv_txn_latch_req_init(struct tkv_txn_latch_req *req, struct tkv_arena *arena,
                            const struct tkv_slice *keys, size_t n_keys)
{
    memset(req, 0, sizeof(*req));
    struct tkv_slice *k = tkv_arena_alloc(arena, (n_keys ? n_keys : 1) * sizeof(*k));
    for (size_t i = 0; i < n_keys; i++) {
        k[i] = TKV_SLICE(keys[i].len ? tkv_arena_memdup(arena, keys[i].ptr, keys[i].len) : "",
                         keys[i].len);
    }
    qsort(k, n_keys, sizeof(*k), cmp_slice);
    size_t n = 0;
    for (size_t i = 0; i < n_keys; i++)
        if (n == 0 || cmp_slice(&k[n - 1], &k[i]) != 0)
            k[n++] = k[i];
    req->keys = k;
    req->n_keys = n;
}

bool tkv_txn_latch_req_covers(const struct tkv_txn_latch_req *req, struct tkv_slice key)
{
    return bsearch(&key, req->keys, req->n_keys, sizeof(*req->keys), cmp_slice) != NULL;
}

struct tkv_txn_latches *tkv_txn_latches_new(void)
{
    return tkv_xcalloc(1, sizeof(struct tkv_txn_latches));
}

void tkv_txn_latches_free(struct tkv_txn_latches *l)
{
    if (!l)
        return;
    /* Shutdown may leave latches held or requests parked: drop them all
     * (the requests are their owners' memory and are not touched). */
    for (size_t i = 0; i < LATCH_BUCKETS; i++) {
        struct latch_slot *s = l->buckets[i];
        while (s) {
            struct latch_slot *next = s->next;
            tkv_free(s);
            s = next;
        }
    }
    tkv_free(l);
}

size_t tkv_txn_latches_held(const struct tkv_txn_latches *l)
{
    return l->n_slots;
}

static struct latch_slot **find(struct tkv_txn_latches *l, struct tkv_slice key, uint64_t h)
{
    struct latch_slot **pp = &l->buckets[h % LATCH_BUCKETS];
    while (*pp) {
        struct latch_slot *s = *pp;
        if (s->hash == h && s->len == key.len &&
            (key.len == 0 || !memcmp(s->key, key.ptr, key.len)))
            return pp;
        pp = &s->next;
    }
    return pp;
}

bool tkv_txn_latches_acquire(struct tkv_txn_latches *l, struct tkv_txn_latch_req *req)
{
    while (req->n_held < req->n_keys) {
        struct tkv_slice key = req->keys[req->n_held];
        uint64_t h = hash_key(key);
        struct latch_slot **pp = find(l, key, h);
        if (!*pp) {
            struct latch_slot *s = tkv_xcalloc(1, sizeof(*s) + key.len);
            s->hash = h;
            s->len = key.len;
            if (key.len)
                memcpy(s->key, key.ptr, key.len);
            *pp = s;
            l->n_slots++;
        }
        struct latch_slot *s = *pp;
        if (s->holder == NULL) {
            s->holder = req;
            req->n_held++;
            continue;
        }
        tkv_assert(s->holder != req);
        req->next_waiter = NULL;
        if (s->wait_tail)
            s->wait_tail->next_waiter = req;
        else
            s->wait_head = req;
        s->wait_tail = req;
        return false;
    }
    return true;
}

void tkv_txn_latches_release(struct tkv_txn_latches *l, struct tkv_txn_latch_req *req)
{
    struct tkv_txn_latch_req *resume_head = NULL, *resume_tail = NULL;

    for (size_t i = 0; i < req->n_held; i++) {
        struct tkv_slice key = req->keys[i];
        struct latch_slot **pp = find(l, key, hash_key(key));
        struct latch_slot *s = *pp;
        tkv_assert(s && s->holder == req);
        struct tkv_txn_latch_req *w = s->wait_head;
        if (w) {
            /* Hand the latch straight to the first waiter: it cannot be
             * overtaken by a newcomer. */
            s->wait_head = w->next_waiter;
            if (!s->wait_head)
                s->wait_tail = NULL;
            s->holder = w;
            w->n_held++;
            w->next_waiter = NULL;
            if (resume_tail)
                resume_tail->next_waiter = w;
            else
                resume_head = w;
            resume_tail = w;
        } else {
            *pp = s->next;
            tkv_free(s);
            l->n_slots--;
        }
    }
    req->n_held = 0;
    while (resume_head) {
        struct tkv_txn_latch_req *w = resume_head;
        resume_head = w->next_waiter;
        w->next_waiter = NULL;
        if (tkv_txn_latches_acquire(l, w))
            w->on_ready(w);
    }
}
