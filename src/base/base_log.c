/* Unified-log-format writer (see include/tkv/log.h). */
#include "tkv/log.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "tkv/err.h"

enum tkv_log_level tkv_log_threshold = TKV_LOG_LEVEL_INFO;
static int log_fd = 2;

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
    char hdr[64];

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    long off = tm.tm_gmtoff;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    int n = snprintf(hdr, sizeof(hdr), "[%04d/%02d/%02d %02d:%02d:%02d.%03ld %c%02ld:%02ld] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, sign, off / 3600, (off % 3600) / 60);
    put(&o, hdr, (size_t)n);

    if ((unsigned)level > TKV_LOG_LEVEL_DEBUG)
        level = TKV_LOG_LEVEL_DEBUG;
    putc_(&o, '[');
    put(&o, level_names[level], strlen(level_names[level]));
    put(&o, "] [", 3);
    if (file) {
        const char *base = strrchr(file, '/');
        base = base ? base + 1 : file;
        n = snprintf(hdr, sizeof(hdr), ":%d", line);
        put(&o, base, strlen(base));
        put(&o, hdr, (size_t)n);
    } else {
        put(&o, "<unknown>", 9);
    }
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
