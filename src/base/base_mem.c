/* The process-wide allocator hook (see include/tkv/mem.h). */
#include "tkv/mem.h"

#include <stdlib.h>
#include <string.h>

#include "tkv/err.h"

static struct tkv_allocator hook; /* zero: use libc */

void tkv_mem_set_allocator(const struct tkv_allocator *a)
{
    if (a)
        hook = *a;
    else
        memset(&hook, 0, sizeof(hook));
}

void *tkv_malloc(size_t size)
{
    return hook.malloc_fn ? hook.malloc_fn(hook.ctx, size) : malloc(size);
}

void *tkv_calloc(size_t n, size_t size)
{
    return hook.calloc_fn ? hook.calloc_fn(hook.ctx, n, size) : calloc(n, size);
}

void *tkv_realloc(void *ptr, size_t size)
{
    return hook.realloc_fn ? hook.realloc_fn(hook.ctx, ptr, size) : realloc(ptr, size);
}

void tkv_free(void *ptr)
{
    if (hook.free_fn)
        hook.free_fn(hook.ctx, ptr);
    else
        free(ptr);
}

void *tkv_xmalloc(size_t size)
{
    void *p = tkv_malloc(size ? size : 1);
    if (!p)
        TKV_PANIC("out of memory allocating %zu bytes", size);
    return p;
}

void *tkv_xcalloc(size_t n, size_t size)
{
    void *p = tkv_calloc(n ? n : 1, size ? size : 1);
    if (!p)
        TKV_PANIC("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *tkv_xrealloc(void *ptr, size_t size)
{
    void *p = tkv_realloc(ptr, size ? size : 1);
    if (!p)
        TKV_PANIC("out of memory reallocating %zu bytes", size);
    return p;
}

char *tkv_xstrdup(const char *s)
{
    return tkv_xmemdup(s, strlen(s) + 1);
}

void *tkv_xmemdup(const void *p, size_t n)
{
    void *q = tkv_xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}
