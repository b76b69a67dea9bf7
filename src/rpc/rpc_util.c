/* Small pure helpers of the gRPC layer: status names, grpc-timeout parse and
 * format, grpc-message percent-encoding, HTTP-to-gRPC status mapping, and
 * the owned byte buffer. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/mem.h"

static const char *const status_names[TKV_GRPC_STATUS_COUNT] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *tkv_grpc_status_name(int status)
{
    if (status < 0 || status >= TKV_GRPC_STATUS_COUNT)
        return "UNKNOWN_STATUS";
    return status_names[status];
}

void rpc_buf_append(struct rpc_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->off > 0 && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->len + n > b->cap) {
        /* Reclaim the consumed prefix before growing. */
        if (b->off > 0) {
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap : 256;
            while (cap < b->len + n)
                cap *= 2;
            b->p = tkv_xrealloc(b->p, cap);
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void rpc_buf_free(struct rpc_buf *b)
{
    tkv_free(b->p);
    memset(b, 0, sizeof(*b));
}

int rpc_parse_timeout(const char *v, size_t n, uint64_t *ns)
{
    /* TimeoutValue: 1..8 ASCII digits; TimeoutUnit: H M S m u n (PROTOCOL-HTTP2.md). */
    if (n < 2 || n > 9)
        return TKV_EINVAL;
    uint64_t x = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return TKV_EINVAL;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    uint64_t mul;
    switch (v[n - 1]) {
    case 'H':
        mul = 3600ull * 1000000000ull;
        break;
    case 'M':
        mul = 60ull * 1000000000ull;
        break;
    case 'S':
        mul = 1000000000ull;
        break;
    case 'm':
        mul = 1000000ull;
        break;
    case 'u':
        mul = 1000ull;
        break;
    case 'n':
        mul = 1ull;
        break;
    default:
        return TKV_EINVAL;
    }
    /* 99999999 H fits in 2^64 ns? No: saturate. */
    if (x > UINT64_MAX / mul)
        *ns = UINT64_MAX;
    else
        *ns = x * mul;
    return 0;
}

void rpc_format_timeout(uint64_t ns, char *buf)
{
    static const struct {
        char unit;
        uint64_t mul;
    } units[] = {{'n', 1ull},          {'u', 1000ull},        {'m', 1000000ull},
                 {'S', 1000000000ull}, {'M', 60000000000ull}, {'H', 3600000000000ull}};
    for (size_t i = 0; i < TKV_ARRAY_LEN(units); i++) {
        uint64_t v = ns / units[i].mul + (ns % units[i].mul ? 1 : 0);
        if (v <= 99999999ull) {
            snprintf(buf, 16, "%llu%c", (unsigned long long)v, units[i].unit);
            return;
        }
    }
    snprintf(buf, 16, "99999999H");
}

char *rpc_percent_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *o = tkv_xmalloc(n * 3 + 1), *w = o;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            *w++ = (char)ch;
        } else {
            *w++ = '%';
            *w++ = hex[ch >> 4];
            *w++ = hex[ch & 15];
        }
    }
    *w = 0;
    return o;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

char *rpc_percent_decode(const char *s, size_t n)
{
    char *o = tkv_xmalloc(n + 1), *w = o;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        /* Invalid escapes pass through literally, as gRPC requires. */
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            *w++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *w++ = s[i];
        }
    }
    *w = 0;
    return o;
}

int rpc_http_to_grpc(int http_status)
{
    switch (http_status) {
    case 400:
        return TKV_GRPC_INTERNAL;
    case 401:
        return TKV_GRPC_UNAUTHENTICATED;
    case 403:
        return TKV_GRPC_PERMISSION_DENIED;
    case 404:
        return TKV_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return TKV_GRPC_UNAVAILABLE;
    default:
        return TKV_GRPC_UNKNOWN;
    }
}

uint64_t rpc_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
