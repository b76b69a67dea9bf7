/* Bump arena: many small allocations freed all at once (one per RPC call,
 * STYLE.md 4.6 rule 6). Chunks come from tkv_xmalloc, so allocation never
 * fails (it aborts on OOM): an arena is a server-layer tool, not for raft/codec. */
#ifndef TKV_ARENA_H
#define TKV_ARENA_H

#include <stddef.h>
#include <stdint.h>

struct tkv_arena_chunk;

/* Caller-allocated (embed it or put it on the stack); zero-initialised or
 * tkv_arena_init()ed before use. One owner core; not thread-safe. */
struct tkv_arena {
    struct tkv_arena_chunk *head; /* chunk being bumped, then older ones */
    uint8_t *cur;                 /* next free byte in head */
    uint8_t *end;                 /* end of head's usable space */
    size_t chunk_size;            /* size of a regular chunk (0: default) */
    size_t used;                  /* bytes handed out since init/reset */
    void *last;                   /* most recent allocation, for tkv_arena_grow */
};

#define TKV_ARENA_DEFAULT_CHUNK 4096u
/* Default alignment: enough for any scalar type (max_align_t). */
#define TKV_ARENA_ALIGN 16u

/* Prepare a (possibly uninitialised) arena. chunk_size 0 picks the default;
 * no memory is allocated until the first allocation. Any core. */
void tkv_arena_init(struct tkv_arena *a, size_t chunk_size);

/* Free every chunk; the arena is empty and reusable afterwards (as after
 * init). Safe on a zeroed arena. Every pointer handed out becomes invalid. */
void tkv_arena_close(struct tkv_arena *a);

/* Drop all allocations but keep one regular chunk for reuse, so a per-call
 * arena stops touching malloc in steady state. Pointers become invalid. */
void tkv_arena_reset(struct tkv_arena *a);

/* size bytes aligned to TKV_ARENA_ALIGN; never NULL (size 0 gives a unique
 * valid pointer). Contents are uninitialised. Returned memory is owned by
 * the arena and valid until the next reset/close. */
void *tkv_arena_alloc(struct tkv_arena *a, size_t size);

/* As tkv_arena_alloc with a power-of-two alignment (up to 4096). */
void *tkv_arena_alloc_aligned(struct tkv_arena *a, size_t size, size_t align);

/* n * size zeroed bytes; aborts on multiplication overflow. */
void *tkv_arena_calloc(struct tkv_arena *a, size_t n, size_t size);

/* Copy of p[0..n) (n may be 0; p may be NULL when n is 0). */
void *tkv_arena_memdup(struct tkv_arena *a, const void *p, size_t n);

/* NUL-terminated copy of s. */
char *tkv_arena_strdup(struct tkv_arena *a, const char *s);

/* Resize an allocation from old_size to new_size bytes (default alignment),
 * keeping its contents. Grows in place when p is the most recent allocation
 * and the chunk has room, otherwise allocates and copies (the old space is
 * not reclaimed). p may be NULL (then it is tkv_arena_alloc). */
void *tkv_arena_grow(struct tkv_arena *a, void *p, size_t old_size, size_t new_size);

/* Bytes handed out since init/reset (payload, without alignment padding). */
size_t tkv_arena_used(const struct tkv_arena *a);

#endif
