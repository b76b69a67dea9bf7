/* Helpers shared by the history checkers (see checker_util.h). */
#include "checker_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ck_oom(size_t n)
{
    fprintf(stderr, "checker: out of memory allocating %zu bytes\n", n);
    abort();
}

void *ck_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        ck_oom(n);
    return p;
}

void *ck_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        ck_oom(n * size);
    return p;
}

void *ck_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        ck_oom(n);
    return q;
}

void ck_grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    *p = ck_xrealloc(*p, c * size);
    *cap = c;
}

void ck_str_vprintf(struct ck_str *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    ck_grow((void **)&b->s, &b->cap, b->len + (size_t)n + 1, 1);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void ck_str_printf(struct ck_str *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ck_str_vprintf(b, fmt, ap);
    va_end(ap);
}

void ck_str_bytes(struct ck_str *b, const void *data, size_t len, size_t max)
{
    const unsigned char *d = data;
    size_t n = len < max ? len : max;
    ck_str_printf(b, "\"");
    for (size_t i = 0; i < n; i++) {
        if (d[i] >= 0x20 && d[i] < 0x7f && d[i] != '"' && d[i] != '\\')
            ck_str_printf(b, "%c", d[i]);
        else
            ck_str_printf(b, "\\x%02x", d[i]);
    }
    ck_str_printf(b, "\"");
    if (n < len)
        ck_str_printf(b, "...(%zu bytes)", len);
}

char *ck_str_take(struct ck_str *b)
{
    char *s = b->s;
    if (!s) {
        s = ck_xmalloc(1);
        s[0] = '\0';
    }
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

uint64_t ck_mix64(uint64_t x)
{
    /* splitmix64 finaliser */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t ck_hash_bytes(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *d = data;
    uint64_t h = ck_mix64(seed ^ len);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, d + i, 8);
        h = ck_mix64(h ^ w);
    }
    uint64_t tail = 0;
    for (size_t j = 0; i + j < len; j++)
        tail |= (uint64_t)d[i + j] << (8 * j);
    return ck_mix64(h ^ tail ^ 0xa5);
}
