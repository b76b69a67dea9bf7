/* Unified-log-format writer (see include/tkv/log.h). */
#include "tkv/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "tkv/err.h"

enum tkv_log_level tkv_log_threshold = TKV_LOG_LEVEL_INFO;
static int log_fd = 2;
static _Atomic int log_format = TKV_LOG_FORMAT_TEXT;
static pthread_mutex_t file_mu = PTHREAD_MUTEX_INITIALIZER; /* open/reopen only */
static char *log_path;

void tkv_log_set_format(enum tkv_log_format format)
{
    atomic_store_explicit(&log_format, (int)format, memory_order_relaxed);
}

int tkv_log_open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    pthread_mutex_lock(&file_mu);
    free(log_path);
    log_path = strdup(path);
    pthread_mutex_unlock(&file_mu);
    log_fd = fd;
    return 0;
}

int tkv_log_reopen(void)
{
    int rv = 0;
    pthread_mutex_lock(&file_mu);
    if (log_path) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            rv = -errno;
        } else {
            /* dup2 swaps the file behind log_fd in one step: writers on
             * other threads keep writing to a valid fd throughout. */
            if (dup3(fd, log_fd, O_CLOEXEC) < 0)
                rv = -errno;
            close(fd);
        }
    }
    pthread_mutex_unlock(&file_mu);
    return rv;
}

static const char *const level_names[] = {"FATAL", "ERROR", "WARN", "INFO", "DEBUG"};

void tkv_log_set_level(enum tkv_log_level level)
{
    tkv_log_threshold = level;
}

void tkv_log_set_fd(int fd)
{
    log_fd = fd;
}

int tkv_log_parse_level(const char *name, enum tkv_log_level *level_out)
{
    static const struct {
        const char *name;
        enum tkv_log_level level;
    } names[] = {
        {"fatal", TKV_LOG_LEVEL_FATAL}, {"critical", TKV_LOG_LEVEL_FATAL},
        {"error", TKV_LOG_LEVEL_ERROR}, {"warn", TKV_LOG_LEVEL_WARN},
        {"warning", TKV_LOG_LEVEL_WARN}, {"info", TKV_LOG_LEVEL_INFO},
        {"debug", TKV_LOG_LEVEL_DEBUG}, {"trace", TKV_LOG_LEVEL_DEBUG},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *level_out = names[i].level;
            return 0;
        }
    }
    return TKV_EINVAL;
}

/* A bounded appender that never overflows and remembers truncation. */
struct out {
    char *buf;
    size_t cap; /* usable bytes, excluding the final '\n' and NUL */
    size_t len;
};

static void put(struct out *o, const char *s, size_t n)
{
    size_t room = o->cap - o->len;
    if (n > room)
        n = room;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void putc_(struct out *o, char c)
{
    put(o, &c, 1);
}

static bool needs_quote(const char *s, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '[' || c == ']')
            return true;
    }
    return false;
}

static void put_json_string(struct out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    putc_(o, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': put(o, "\\\"", 2); break;
        case '\\': put(o, "\\\\", 2); break;
        case '\n': put(o, "\\n", 2); break;
        case '\r': put(o, "\\r", 2); break;
        case '\t': put(o, "\\t", 2); break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                put(o, esc, 6);
            } else {
                putc_(o, (char)c);
            }
        }
    }
    putc_(o, '"');
}

/* Keys and values: bare when safe, JSON-quoted otherwise. */
static void put_token(struct out *o, const char *s, size_t n)
{
    if (needs_quote(s, n))
        put_json_string(o, s, n);
    else
        put(o, s, n);
}

static void put_field_value(struct out *o, const struct tkv_log_field *f)
{
    char num[64];
    int n;
    switch (f->type) {
    case TKV_LF_TYPE_U64:
        n = snprintf(num, sizeof(num), "%" PRIu64, f->v.u);
        put(o, num, (size_t)n);
        break;
    case TKV_LF_TYPE_I64:
        n = snprintf(num, sizeof(num), "%" PRId64, f->v.i);
        put(o, num, (size_t)n);
        break;
    case TKV_LF_TYPE_DBL:
        n = snprintf(num, sizeof(num), "%g", f->v.d);
        put(o, num, (size_t)n);
        break;
    case TKV_LF_TYPE_BOOL:
        put_token(o, f->v.u ? "true" : "false", f->v.u ? 4 : 5);
        break;
    case TKV_LF_TYPE_STR: {
        const char *s = f->v.s ? f->v.s : "(null)";
        put_token(o, s, strlen(s));
        break;
    }
    case TKV_LF_TYPE_HEX: {
        static const char hex[] = "0123456789ABCDEF";
        const unsigned char *p = f->v.b.p;
        if (f->v.b.n == 0) {
            put(o, "\"\"", 2);
            break;
        }
        for (size_t i = 0; i < f->v.b.n && o->len < o->cap; i++) {
            putc_(o, hex[p[i] >> 4]);
            putc_(o, hex[p[i] & 15]);
        }
        break;
    }
    case TKV_LF_TYPE_NONE:
    default:
        put(o, "\"\"", 2);
        break;
    }
}


/* ---- JSON lines (log.format = "json") ---- */

/* A JSON string with only valid UTF-8 inside (invalid bytes become
 * U+FFFD), so every line parses whatever a field holds. */
static void put_json_utf8(struct out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    putc_(o, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c < 0x80) {
            switch (c) {
            case '"': put(o, "\\\"", 2); break;
            case '\\': put(o, "\\\\", 2); break;
            case '\n': put(o, "\\n", 2); break;
            case '\r': put(o, "\\r", 2); break;
            case '\t': put(o, "\\t", 2); break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                    put(o, esc, 6);
                } else {
                    putc_(o, (char)c);
                }
            }
            i++;
            continue;
        }
        size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = (p[i + k] & 0xc0) == 0x80;
        /* overlong 3-byte forms, surrogates, > U+10FFFF */
        if (ok && len == 3 && ((c == 0xe0 && p[i + 1] < 0xa0) || (c == 0xed && p[i + 1] >= 0xa0)))
            ok = false;
        if (ok && len == 4 && ((c == 0xf0 && p[i + 1] < 0x90) || (c == 0xf4 && p[i + 1] >= 0x90)))
            ok = false;
        if (ok) {
            put(o, s + i, len);
            i += len;
        } else {
            put(o, "\\ufffd", 6);
            i++;
        }
    }
    putc_(o, '"');
}

static void put_json_field_value(struct out *o, const struct tkv_log_field *f)
{
    char num[64];
    int n;
    switch (f->type) {
    case TKV_LF_TYPE_U64:
        n = snprintf(num, sizeof(num), "%" PRIu64, f->v.u);
        put(o, num, (size_t)n);
        break;
    case TKV_LF_TYPE_I64:
        n = snprintf(num, sizeof(num), "%" PRId64, f->v.i);
        put(o, num, (size_t)n);
        break;
    case TKV_LF_TYPE_DBL:
        if (isfinite(f->v.d)) {
            n = snprintf(num, sizeof(num), "%.17g", f->v.d);
            put(o, num, (size_t)n);
        } else {
            n = snprintf(num, sizeof(num), "%g", f->v.d);
            put_json_utf8(o, num, (size_t)n);
        }
        break;
    case TKV_LF_TYPE_BOOL:
        put(o, f->v.u ? "true" : "false", f->v.u ? 4 : 5);
        break;
    case TKV_LF_TYPE_STR: {
        const char *s = f->v.s ? f->v.s : "(null)";
        put_json_utf8(o, s, strlen(s));
        break;
    }
    case TKV_LF_TYPE_HEX: {
        static const char hex[] = "0123456789ABCDEF";
        const unsigned char *p = f->v.b.p;
        putc_(o, '"');
        for (size_t i = 0; i < f->v.b.n && o->len < o->cap; i++) {
            putc_(o, hex[p[i] >> 4]);
            putc_(o, hex[p[i] & 15]);
        }
        putc_(o, '"');
        break;
    }
    case TKV_LF_TYPE_NONE:
    default:
        put(o, "null", 4);
        break;
    }
}

/* Room kept for the closing `,"truncated":true}` of a line that does not
 * fit: a member that would not fit is dropped whole. */
#define JSON_TAIL 20

static size_t format_json(char *buf, size_t cap, const char *stamp, size_t stamp_len,
                          const char *level, const char *caller, const char *msg,
                          const struct tkv_log_field *fields, size_t n_fields)
{
    if (cap < 128) {
        buf[0] = '\0';
        return 0;
    }
    struct out o = {.buf = buf, .cap = cap - 2 - JSON_TAIL, .len = 0};
    bool truncated = false;
    put(&o, "{\"time\":", 8);
    put_json_utf8(&o, stamp, stamp_len);
    put(&o, ",\"level\":", 9);
    put_json_utf8(&o, level, strlen(level));
    put(&o, ",\"caller\":", 10);
    put_json_utf8(&o, caller, strlen(caller));
    size_t before = o.len;
    put(&o, ",\"message\":", 11);
    put_json_utf8(&o, msg ? msg : "", msg ? strlen(msg) : 0);
    if (o.len >= o.cap) {
        o.len = before;
        truncated = true;
    }
    for (size_t i = 0; i < n_fields && !truncated; i++) {
        const char *key = fields[i].key ? fields[i].key : "";
        before = o.len;
        putc_(&o, ',');
        put_json_utf8(&o, key, strlen(key));
        putc_(&o, ':');
        put_json_field_value(&o, &fields[i]);
        if (o.len >= o.cap) {
            o.len = before;
            truncated = true;
        }
    }
    o.cap += JSON_TAIL;
    if (truncated)
        put(&o, ",\"truncated\":true", 17);
    putc_(&o, '}');
    buf[o.len++] = '\n';
    buf[o.len] = '\0';
    return o.len;
}

size_t tkv_log_format(char *buf, size_t cap, enum tkv_log_level level, const char *file, int line,
                      const char *msg, const struct tkv_log_field *fields, size_t n_fields)
{
    if (cap < 2) {
        if (cap)
            buf[0] = '\0';
        return 0;
    }
    struct out o = {.buf = buf, .cap = cap - 2, .len = 0};
    struct timespec ts;
    struct tm tm;
    char stamp[48], caller[96];

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    long off = tm.tm_gmtoff;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    int n = snprintf(stamp, sizeof(stamp), "%04d/%02d/%02d %02d:%02d:%02d.%03ld %c%02ld:%02ld",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, sign, off / 3600, (off % 3600) / 60);
    size_t stamp_len = n < 0 ? 0 : (size_t)n < sizeof(stamp) ? (size_t)n : sizeof(stamp) - 1;
    if ((unsigned)level > TKV_LOG_LEVEL_DEBUG)
        level = TKV_LOG_LEVEL_DEBUG;
    if (file) {
        const char *base = strrchr(file, '/');
        snprintf(caller, sizeof(caller), "%s:%d", base ? base + 1 : file, line);
    } else {
        snprintf(caller, sizeof(caller), "<unknown>");
    }
    if (atomic_load_explicit(&log_format, memory_order_relaxed) == TKV_LOG_FORMAT_JSON)
        return format_json(buf, cap, stamp, stamp_len, level_names[level], caller, msg, fields,
                           n_fields);

    putc_(&o, '[');
    put(&o, stamp, stamp_len);
    put(&o, "] [", 3);
    put(&o, level_names[level], strlen(level_names[level]));
    put(&o, "] [", 3);
    put(&o, caller, strlen(caller));
    put(&o, "] [", 3);
    /* The message is always quoted, as TiKV prints it. */
    put_json_string(&o, msg ? msg : "", msg ? strlen(msg) : 0);
    putc_(&o, ']');

    for (size_t i = 0; i < n_fields; i++) {
        const char *key = fields[i].key ? fields[i].key : "";
        put(&o, " [", 2);
        put_token(&o, key, strlen(key));
        putc_(&o, '=');
        put_field_value(&o, &fields[i]);
        putc_(&o, ']');
    }
    buf[o.len++] = '\n';
    buf[o.len] = '\0';
    return o.len;
}

void tkv_log_emit(enum tkv_log_level level, const char *file, int line, const char *msg,
                  const struct tkv_log_field *fields, size_t n_fields)
{
    char buf[4096];
    size_t n = tkv_log_format(buf, sizeof(buf), level, file, line, msg, fields, n_fields);
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(log_fd, p, n);
        if (w <= 0)
            break; /* nowhere to report a failing log sink */
        p += w;
        n -= (size_t)w;
    }
}
