/* One-shot timers: a binary min-heap of borrowed struct tkv_timer ordered by
 * deadline; the loop's wait uses the earliest deadline as its timeout. */
#include <string.h>

#include "reactor_private.h"
#include "tkv/err.h"
#include "tkv/mem.h"

void tkv_timer_init(struct tkv_timer *t, tkv_timer_fn fn, void *data)
{
    t->fn = fn;
    t->data = data;
    t->deadline_ns = 0;
    t->heap_index = SIZE_MAX;
}

bool tkv_timer_armed(const struct tkv_timer *t)
{
    return t->heap_index != SIZE_MAX;
}

static void heap_set(struct tkv_reactor *r, size_t i, struct tkv_timer *t)
{
    r->heap[i] = t;
    t->heap_index = i;
}

static void sift_up(struct tkv_reactor *r, size_t i)
{
    struct tkv_timer *t = r->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (r->heap[p]->deadline_ns <= t->deadline_ns)
            break;
        heap_set(r, i, r->heap[p]);
        i = p;
    }
    heap_set(r, i, t);
}

static void sift_down(struct tkv_reactor *r, size_t i)
{
    struct tkv_timer *t = r->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= r->heap_len)
            break;
        if (c + 1 < r->heap_len && r->heap[c + 1]->deadline_ns < r->heap[c]->deadline_ns)
            c++;
        if (t->deadline_ns <= r->heap[c]->deadline_ns)
            break;
        heap_set(r, i, r->heap[c]);
        i = c;
    }
    heap_set(r, i, t);
}

static void heap_remove(struct tkv_reactor *r, struct tkv_timer *t)
{
    size_t i = t->heap_index;
    TKV_DASSERT(i < r->heap_len && r->heap[i] == t);
    t->heap_index = SIZE_MAX;
    struct tkv_timer *last = r->heap[--r->heap_len];
    if (last == t)
        return;
    heap_set(r, i, last);
    if (i > 0 && r->heap[(i - 1) / 2]->deadline_ns > last->deadline_ns)
        sift_up(r, i);
    else
        sift_down(r, i);
}

void tkv_timer_start(struct tkv_reactor *r, struct tkv_timer *t, uint64_t delay_ns)
{
    REACTOR_OWNER(r);
    if (tkv_timer_armed(t))
        heap_remove(r, t);
    /* at least 1 ns, so a timer re-armed with delay 0 from its own callback
     * fires on the next turn instead of looping inside this one */
    t->deadline_ns = r->now_ns + (delay_ns ? delay_ns : 1);
    if (t->deadline_ns < r->now_ns)
        t->deadline_ns = UINT64_MAX - 1; /* overflow: effectively never */
    if (r->heap_len == r->heap_cap) {
        r->heap_cap = r->heap_cap ? r->heap_cap * 2 : 64;
        r->heap = tkv_xrealloc(r->heap, r->heap_cap * sizeof(*r->heap));
    }
    r->heap_len++;
    heap_set(r, r->heap_len - 1, t);
    sift_up(r, r->heap_len - 1);
}

void tkv_timer_stop(struct tkv_reactor *r, struct tkv_timer *t)
{
    REACTOR_OWNER(r);
    if (tkv_timer_armed(t))
        heap_remove(r, t);
}

void reactor_timers_fire(struct tkv_reactor *r)
{
    uint64_t now = r->now_ns;
    while (r->heap_len > 0 && r->heap[0]->deadline_ns <= now) {
        struct tkv_timer *t = r->heap[0];
        heap_remove(r, t);
        t->fn(t);
    }
}

uint64_t reactor_timers_next(const struct tkv_reactor *r)
{
    return r->heap_len > 0 ? r->heap[0]->deadline_ns : UINT64_MAX;
}
