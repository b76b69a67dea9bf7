/* Scalar types and tiny helpers shared by every tinykv module.
 * Header-only; safe to include from any core or thread. */
#ifndef TKV_COMMON_H
#define TKV_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t tkv_region_id;
typedef uint64_t tkv_store_id;
typedef uint64_t tkv_peer_id;
typedef uint64_t tkv_term;
typedef uint64_t tkv_index;
typedef uint64_t tkv_ts;

/* A borrowed byte range; the owner is whoever handed it out. */
struct tkv_slice {
    const uint8_t *ptr;
    size_t len;
};

#define TKV_SLICE(p, n) ((struct tkv_slice){.ptr = (const uint8_t *)(p), .len = (n)})
#define TKV_SLICE_STR(s) TKV_SLICE((s), sizeof(s) - 1)

#define TKV_LIKELY(x) __builtin_expect(!!(x), 1)
#define TKV_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TKV_UNUSED __attribute__((unused))
#define TKV_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TKV_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TKV_MAX(a, b) ((a) > (b) ? (a) : (b))
#define TKV_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
