/* Small helpers shared by the history checkers (lincheck, sicheck) and their
 * command-line tools: allocation that aborts on exhaustion (a checker has no
 * way to continue without memory, and its callers are tests), a growable
 * string for reports, and printing of byte strings. */
#ifndef TKV_TEST_CHECKER_UTIL_H
#define TKV_TEST_CHECKER_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

void *ck_xmalloc(size_t n);
void *ck_xcalloc(size_t n, size_t size);
void *ck_xrealloc(void *p, size_t n);
/* Grows *p (holding *cap elements of `size` bytes) to hold at least `need`. */
void ck_grow(void **p, size_t *cap, size_t need, size_t size);

struct ck_str {
    char *s; /* NUL-terminated, or NULL while empty */
    size_t len, cap;
};
void ck_str_printf(struct ck_str *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ck_str_vprintf(struct ck_str *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends `data` quoted, printable ASCII as is, others as \xNN, cut after
 * `max` bytes with "...(N bytes)". */
void ck_str_bytes(struct ck_str *b, const void *data, size_t len, size_t max);
/* Takes the string (never NULL: "" when empty); the buffer is reset. */
char *ck_str_take(struct ck_str *b);

uint64_t ck_hash_bytes(const void *data, size_t len, uint64_t seed);
uint64_t ck_mix64(uint64_t x);

#endif
