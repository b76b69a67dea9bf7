/* Bump arena: alignment, big allocations, in-place growth, reset reuse. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "tkv/arena.h"

Test(arena, zeroed_arena_allocates_aligned_and_distinct)
{
    struct tkv_arena a = {0};
    uint8_t *prev = NULL;
    for (size_t i = 0; i < 1000; i++) {
        size_t n = (i * 7) % 97;
        uint8_t *p = tkv_arena_alloc(&a, n);
        cr_assert_not_null(p);
        cr_assert_eq((uintptr_t)p % TKV_ARENA_ALIGN, 0, "alloc %zu not aligned: %p", i, (void *)p);
        cr_assert_neq(p, prev, "alloc %zu returned the previous pointer", i);
        memset(p, 0xab, n); /* ASan flags overlap with poisoned space */
        prev = p;
    }
    tkv_arena_close(&a);
}

Test(arena, used_counts_payload_bytes)
{
    struct tkv_arena a;
    tkv_arena_init(&a, 256);
    tkv_arena_alloc(&a, 10);
    tkv_arena_alloc(&a, 1000); /* big: own chunk */
    tkv_arena_alloc(&a, 5);
    cr_assert_eq(tkv_arena_used(&a), 1015);
    tkv_arena_reset(&a);
    cr_assert_eq(tkv_arena_used(&a), 0);
    tkv_arena_close(&a);
}

Test(arena, explicit_alignment_is_honoured)
{
    struct tkv_arena a;
    tkv_arena_init(&a, 1024);
    static const size_t aligns[] = {1, 2, 8, 16, 64, 256, 4096};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        tkv_arena_alloc(&a, 3);
        void *p = tkv_arena_alloc_aligned(&a, 40, aligns[i]);
        cr_assert_eq((uintptr_t)p % aligns[i], 0, "align %zu violated", aligns[i]);
        memset(p, 1, 40);
    }
    tkv_arena_close(&a);
}

Test(arena, big_allocation_keeps_current_chunk_bumping)
{
    struct tkv_arena a;
    tkv_arena_init(&a, 1024);
    uint8_t *x = tkv_arena_alloc(&a, 16);
    uint8_t *big = tkv_arena_alloc(&a, 1 << 20);
    memset(big, 7, 1 << 20);
    uint8_t *y = tkv_arena_alloc(&a, 16);
    cr_assert_eq(y, x + 16, "small allocation after a big one left the current chunk");
    tkv_arena_close(&a);
}

Test(arena, calloc_zeroes_and_memdup_copies)
{
    struct tkv_arena a = {0};
    uint64_t *z = tkv_arena_calloc(&a, 100, sizeof(uint64_t));
    for (int i = 0; i < 100; i++)
        cr_assert_eq(z[i], 0);
    const char msg[] = "hello arena";
    char *d = tkv_arena_memdup(&a, msg, sizeof(msg));
    cr_assert_str_eq(d, msg);
    cr_assert_neq(d, msg);
    char *s = tkv_arena_strdup(&a, "abc");
    cr_assert_str_eq(s, "abc");
    cr_assert_not_null(tkv_arena_memdup(&a, NULL, 0));
    tkv_arena_close(&a);
}

Test(arena, grow_in_place_then_by_copy)
{
    struct tkv_arena a;
    tkv_arena_init(&a, 512);
    uint8_t *p = tkv_arena_alloc(&a, 8);
    memcpy(p, "abcdefgh", 8);
    uint8_t *q = tkv_arena_grow(&a, p, 8, 64);
    cr_assert_eq(q, p, "last allocation should grow in place");
    memset(q + 8, 'x', 56);
    uint8_t *other = tkv_arena_alloc(&a, 8);
    (void)other;
    uint8_t *r = tkv_arena_grow(&a, q, 64, 100);
    cr_assert_neq(r, q, "not the last allocation: must move");
    cr_assert_eq(memcmp(r, "abcdefgh", 8), 0);
    cr_assert_eq(r[63], 'x');
    /* Growing past the chunk moves to new space and keeps contents. */
    uint8_t *s = tkv_arena_grow(&a, r, 100, 5000);
    cr_assert_eq(memcmp(s, "abcdefgh", 8), 0);
    memset(s, 0, 5000);
    cr_assert_eq(tkv_arena_grow(&a, NULL, 0, 4) != NULL, 1);
    tkv_arena_close(&a);
}

Test(arena, reset_reuses_one_chunk)
{
    struct tkv_arena a;
    tkv_arena_init(&a, 1024);
    uint8_t *first = tkv_arena_alloc(&a, 100);
    for (int i = 0; i < 50; i++)
        tkv_arena_alloc(&a, 100);
    tkv_arena_alloc(&a, 100000);
    tkv_arena_reset(&a);
    uint8_t *again = tkv_arena_alloc(&a, 100);
    cr_assert_not_null(again);
    /* The kept chunk is one of the regular ones; allocation starts at its base. */
    cr_assert_eq((uintptr_t)again % TKV_ARENA_ALIGN, 0);
    (void)first;
    memset(again, 0, 100);
    tkv_arena_reset(&a);
    tkv_arena_reset(&a); /* idempotent */
    tkv_arena_close(&a);
    tkv_arena_close(&a); /* safe twice */
}
