/* Memory: the allocator hook and the out-of-memory policy.
 *
 * Policy (STYLE.md 4.5): pure libraries (raft/, codec/, rings) call
 * tkv_malloc and friends, which may return NULL; they turn that into
 * TKV_ENOMEM and are tested with a failing allocator. Server layers call
 * tkv_xmalloc and friends, which abort the process on NULL: a storage node
 * out of memory stops rather than limps. The hook is process-wide; set it
 * before any thread starts (tests only). */
#ifndef TKV_MEM_H
#define TKV_MEM_H

#include <stddef.h>

struct tkv_allocator {
    void *(*malloc_fn)(void *ctx, size_t size);
    void *(*calloc_fn)(void *ctx, size_t n, size_t size);
    void *(*realloc_fn)(void *ctx, void *ptr, size_t size);
    void (*free_fn)(void *ctx, void *ptr);
    void *ctx;
};

/* Install a hook (NULL restores the libc allocator). Not thread-safe: call
 * before threads start. */
void tkv_mem_set_allocator(const struct tkv_allocator *a);

void *tkv_malloc(size_t size);
void *tkv_calloc(size_t n, size_t size);
void *tkv_realloc(void *ptr, size_t size);
void tkv_free(void *ptr);

/* Abort-on-failure variants for server layers. */
void *tkv_xmalloc(size_t size);
void *tkv_xcalloc(size_t n, size_t size);
void *tkv_xrealloc(void *ptr, size_t size);
char *tkv_xstrdup(const char *s);
void *tkv_xmemdup(const void *p, size_t n);

#endif
