/* Bump arena over a list of tkv_xmalloc'ed chunks (see include/tkv/arena.h).
 * Under ASan, released space is poisoned so use-after-reset is caught. */
#include "tkv/arena.h"

#include <string.h>

#include "tkv/common.h"
#include "tkv/err.h"
#include "tkv/mem.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct tkv_arena_chunk {
    struct tkv_arena_chunk *next;
    size_t size; /* usable bytes after the header */
    _Alignas(TKV_ARENA_ALIGN) uint8_t data[];
};

/* Allocations above this fraction of a chunk get a chunk of their own, so a
 * big value does not waste the tail of the current chunk. */
#define BIG_DIVISOR 4u
#define MAX_ALIGN 4096u

static size_t chunk_size_of(const struct tkv_arena *a)
{
    return a->chunk_size ? a->chunk_size : TKV_ARENA_DEFAULT_CHUNK;
}

static struct tkv_arena_chunk *chunk_new(size_t size)
{
    if (size > SIZE_MAX - sizeof(struct tkv_arena_chunk))
        TKV_PANIC("arena: allocation of %zu bytes overflows", size);
    struct tkv_arena_chunk *c = tkv_xmalloc(sizeof(*c) + size);
    c->next = NULL;
    c->size = size;
    POISON(c->data, size);
    return c;
}

static uintptr_t align_up(uintptr_t v, size_t align)
{
    return (v + (align - 1)) & ~(uintptr_t)(align - 1);
}

void tkv_arena_init(struct tkv_arena *a, size_t chunk_size)
{
    memset(a, 0, sizeof(*a));
    a->chunk_size = chunk_size;
}

void tkv_arena_close(struct tkv_arena *a)
{
    struct tkv_arena_chunk *c = a->head;
    while (c) {
        struct tkv_arena_chunk *next = c->next;
        UNPOISON(c->data, c->size);
        tkv_free(c);
        c = next;
    }
    size_t cs = a->chunk_size;
    tkv_arena_init(a, cs);
}

void tkv_arena_reset(struct tkv_arena *a)
{
    size_t cs = chunk_size_of(a);
    struct tkv_arena_chunk *keep = NULL;
    struct tkv_arena_chunk *c = a->head;
    while (c) {
        struct tkv_arena_chunk *next = c->next;
        if (!keep && c->size == cs) {
            keep = c;
        } else {
            UNPOISON(c->data, c->size);
            tkv_free(c);
        }
        c = next;
    }
    a->head = keep;
    a->used = 0;
    a->last = NULL;
    if (keep) {
        keep->next = NULL;
        POISON(keep->data, keep->size);
        a->cur = keep->data;
        a->end = keep->data + keep->size;
    } else {
        a->cur = a->end = NULL;
    }
}

/* Space for a big allocation in a chunk of its own, linked behind head so the
 * current chunk keeps bumping. */
static void *alloc_big(struct tkv_arena *a, size_t size, size_t align)
{
    struct tkv_arena_chunk *c = chunk_new(size + (align > TKV_ARENA_ALIGN ? align : 0));
    uint8_t *p = (uint8_t *)align_up((uintptr_t)c->data, align);
    if (a->head) {
        c->next = a->head->next;
        a->head->next = c;
    } else {
        /* No regular chunk yet: the big one becomes head, full. */
        a->head = c;
        a->cur = a->end = c->data + c->size;
    }
    return p;
}

void *tkv_arena_alloc_aligned(struct tkv_arena *a, size_t size, size_t align)
{
    tkv_assert(align != 0 && (align & (align - 1)) == 0 && align <= MAX_ALIGN);
    if (align < TKV_ARENA_ALIGN)
        align = TKV_ARENA_ALIGN;
    size_t cs = chunk_size_of(a);
    size_t payload = size;
    if (size == 0)
        size = 1; /* distinct pointers even for empty allocations */
    uint8_t *p = NULL;
    if (a->cur) {
        uintptr_t at = align_up((uintptr_t)a->cur, align);
        if (at <= (uintptr_t)a->end && size <= (size_t)((uintptr_t)a->end - at))
            p = (uint8_t *)at;
    }
    if (!p) {
        if (size > cs / BIG_DIVISOR || size + align > cs) {
            p = alloc_big(a, size, align);
            UNPOISON(p, size);
            a->used += payload;
            a->last = NULL; /* not growable in place */
            return p;
        }
        struct tkv_arena_chunk *c = chunk_new(cs);
        c->next = a->head;
        a->head = c;
        a->cur = c->data;
        a->end = c->data + c->size;
        p = (uint8_t *)align_up((uintptr_t)a->cur, align);
    }
    a->cur = p + size;
    a->used += payload;
    a->last = p;
    UNPOISON(p, size);
    return p;
}

void *tkv_arena_alloc(struct tkv_arena *a, size_t size)
{
    return tkv_arena_alloc_aligned(a, size, TKV_ARENA_ALIGN);
}

void *tkv_arena_calloc(struct tkv_arena *a, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        TKV_PANIC("arena: calloc(%zu, %zu) overflows", n, size);
    void *p = tkv_arena_alloc(a, total);
    memset(p, 0, total);
    return p;
}

void *tkv_arena_memdup(struct tkv_arena *a, const void *p, size_t n)
{
    void *q = tkv_arena_alloc(a, n);
    if (n)
        memcpy(q, p, n);
    return q;
}

char *tkv_arena_strdup(struct tkv_arena *a, const char *s)
{
    return tkv_arena_memdup(a, s, strlen(s) + 1);
}

void *tkv_arena_grow(struct tkv_arena *a, void *p, size_t old_size, size_t new_size)
{
    if (!p)
        return tkv_arena_alloc(a, new_size);
    if (new_size <= old_size)
        return p;
    uint8_t *b = p;
    if (p == a->last && b + old_size == a->cur &&
        new_size - old_size <= (size_t)(a->end - a->cur)) {
        UNPOISON(a->cur, new_size - old_size);
        a->cur = b + new_size;
        a->used += new_size - old_size;
        return p;
    }
    void *q = tkv_arena_alloc(a, new_size);
    memcpy(q, p, old_size);
    return q;
}

size_t tkv_arena_used(const struct tkv_arena *a)
{
    return a->used;
}
