/* Shared pieces of the fuzz harnesses: failure text, seed lists, the PRNG
 * and the fuzz-lite mutation driver used by the criterion tests. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_harness.h"

static char why[512];

const char *fuzz_why(void)
{
    return why;
}

int fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return -1;
}

void fuzz_seeds_add(struct fuzz_seeds *s, const void *p, size_t n)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (!s->v)
            abort();
    }
    uint8_t *c = malloc(n ? n : 1);
    if (!c)
        abort();
    if (n)
        memcpy(c, p, n);
    s->v[s->n].p = c;
    s->v[s->n].n = n;
    s->n++;
}

void fuzz_seeds_free(struct fuzz_seeds *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].p);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

uint64_t fuzz_rand(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Values that tend to sit on boundaries (lengths, varint continuation,
 * sign bits, HTTP/2 flags). */
static const uint8_t interesting[] = {0x00, 0x01, 0x04, 0x05, 0x07, 0x08, 0x09, 0x0a, 0x10,
                                      0x20, 0x3f, 0x40, 0x7f, 0x80, 0x81, 0xf7, 0xfe, 0xff};

#define LITE_MAX 8192

static size_t mutate(uint8_t *buf, size_t n, const struct fuzz_seeds *seeds, uint64_t *r)
{
    int rounds = 1 + (int)(fuzz_rand(r) % 4);
    for (int k = 0; k < rounds; k++) {
        uint64_t x = fuzz_rand(r);
        size_t pos = n ? (size_t)(fuzz_rand(r) % n) : 0;
        switch (x % 8) {
        case 0: /* flip a bit */
            if (n)
                buf[pos] ^= (uint8_t)(1u << (x >> 8) % 8);
            break;
        case 1: /* boundary byte */
            if (n)
                buf[pos] = interesting[(x >> 8) % sizeof(interesting)];
            break;
        case 2: /* random byte */
            if (n)
                buf[pos] = (uint8_t)(x >> 16);
            break;
        case 3: { /* insert a few random bytes */
            size_t m = 1 + (x >> 8) % 8;
            if (n + m > LITE_MAX)
                break;
            memmove(buf + pos + m, buf + pos, n - pos);
            for (size_t i = 0; i < m; i++)
                buf[pos + i] = (uint8_t)fuzz_rand(r);
            n += m;
            break;
        }
        case 4: { /* delete a range */
            size_t m = n ? 1 + (x >> 8) % (n - pos < 16 ? n - pos : 16) : 0;
            if (!n || m > n - pos)
                break;
            memmove(buf + pos, buf + pos + m, n - pos - m);
            n -= m;
            break;
        }
        case 5: /* truncate */
            n = pos;
            break;
        case 6: { /* splice in a piece of another seed */
            const struct fuzz_seed *o = &seeds->v[(x >> 8) % seeds->n];
            if (!o->n)
                break;
            size_t from = (size_t)(fuzz_rand(r) % o->n);
            size_t m = 1 + (size_t)(fuzz_rand(r) % (o->n - from));
            if (pos + m > LITE_MAX)
                m = LITE_MAX - pos;
            memcpy(buf + pos, o->p + from, m);
            if (pos + m > n)
                n = pos + m;
            break;
        }
        default: { /* duplicate a range (repeated frames/fields) */
            if (!n)
                break;
            size_t m = 1 + (x >> 8) % (n - pos < 64 ? n - pos : 64);
            if (n + m > LITE_MAX)
                break;
            memmove(buf + pos + m, buf + pos, n - pos);
            n += m;
            break;
        }
        }
    }
    return n;
}

int fuzz_lite_run(fuzz_fn fn, const struct fuzz_seeds *seeds, uint64_t rng, size_t iters,
                  uint8_t **bad, size_t *bad_len)
{
    uint8_t *buf = malloc(LITE_MAX);
    uint64_t r = rng ? rng : 1;
    size_t n = 0;
    int rv = 0;
    if (!buf)
        abort();
    for (size_t i = 0; i < seeds->n && rv == 0; i++) {
        n = seeds->v[i].n < LITE_MAX ? seeds->v[i].n : LITE_MAX;
        memcpy(buf, seeds->v[i].p, n);
        rv = fn(buf, n);
    }
    for (size_t i = 0; i < iters + iters / 8 && rv == 0; i++) {
        if (i < iters && seeds->n) {
            const struct fuzz_seed *s = &seeds->v[fuzz_rand(&r) % seeds->n];
            n = s->n < LITE_MAX ? s->n : LITE_MAX;
            memcpy(buf, s->p, n);
            n = mutate(buf, n, seeds, &r);
        } else {
            n = (size_t)(fuzz_rand(&r) % 512);
            for (size_t j = 0; j < n; j++)
                buf[j] = (uint8_t)fuzz_rand(&r);
        }
        rv = fn(buf, n);
    }
    if (rv != 0) {
        *bad = malloc(n ? n : 1);
        memcpy(*bad, buf, n);
        *bad_len = n;
    }
    free(buf);
    return rv;
}
