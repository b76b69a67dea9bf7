/* Helpers for building messages to encode: arena copies and formatted
 * strings for response fields (see include/tkv/pb.h). */
#include <stdarg.h>
#include <stdio.h>

#include "tkv/err.h"
#include "tkv/pb.h"

struct tkv_slice tkv_pb_dup(struct tkv_arena *arena, const void *p, size_t n)
{
    return TKV_SLICE(tkv_arena_memdup(arena, p, n), n);
}

struct tkv_slice tkv_pb_printf(struct tkv_arena *arena, const char *fmt, ...)
{
    va_list ap;
    char small[128];
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    tkv_assert(n >= 0);
    char *out = tkv_arena_alloc(arena, (size_t)n + 1);
    if ((size_t)n < sizeof(small)) {
        memcpy(out, small, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(out, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return TKV_SLICE(out, (size_t)n);
}
