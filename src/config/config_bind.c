/* Binding TOML values and flag text to struct fields through a schema table,
 * and dumping a struct back as TOML or JSON. Shared by the tinykv-server and
 * tinyscheduler-server configs, so both are strict in the same way. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config_private.h"
#include "tkv/common.h"
#include "tkv/config.h"
#include "tkv/err.h"
#include "tkv/hostport.h"

static const struct config_key *find_key(const struct config_schema *s, const char *key)
{
    for (size_t i = 0; i < s->n_keys; i++)
        if (strcmp(s->keys[i].key, key) == 0)
            return &s->keys[i];
    return NULL;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            best = TKV_MIN(best, up + 1);
            best = TKV_MIN(best, row[j - 1] + 1);
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* " (did you mean server.addr?)" for near misses, else "". */
static void suggest(const struct config_schema *s, const char *key, char *out, size_t cap)
{
    const char *best = NULL;
    size_t bd = 4;
    for (size_t i = 0; i < s->n_keys; i++) {
        size_t d = edit_distance(key, s->keys[i].key);
        if (d < bd) {
            bd = d;
            best = s->keys[i].key;
        }
    }
    if (best)
        snprintf(out, cap, " (did you mean %s?)", best);
    else if (cap)
        out[0] = '\0';
}

int tkv_config_split_addr(const char *addr, char *host, size_t host_cap, uint16_t *port_out)
{
    /* Config addresses always name their host: no ":port" shorthand. */
    return tkv_hostport_split(addr, NULL, host, host_cap, port_out);
}

bool config_host_unspecified(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

const char *config_strip_http(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 ? s + 7 : s;
}

int config_check_addr(const char *s, bool may_be_empty, char *what, size_t wl)
{
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port;
    if (!s[0] && may_be_empty)
        return 0;
    if (tkv_config_split_addr(s, host, sizeof(host), &port) < 0)
        return config_errf(
            what, wl, "expected \"host:port\" (port 0-65535, IPv6 in brackets), got \"%s\"", s);
    return 0;
}

/* "http://a:1,http://b:2" (the http:// is required, as etcd and PD do). */
static int check_urls(const char *s, char *what, size_t wl)
{
    char one[TKV_CONFIG_ADDR_MAX];
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n >= sizeof(one))
            return config_errf(what, wl, "URL too long in \"%s\"", s);
        memcpy(one, p, n);
        one[n] = '\0';
        if (strncasecmp(one, "http://", 7) != 0 || config_check_addr(one + 7, false, what, wl) < 0)
            return config_errf(
                what, wl,
                "expected URLs like \"http://127.0.0.1:2379\" (comma-separated), got \"%s\"", s);
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static const char *log_level_name(enum tkv_log_level l)
{
    switch (l) {
    case TKV_LOG_LEVEL_FATAL:
        return "fatal";
    case TKV_LOG_LEVEL_ERROR:
        return "error";
    case TKV_LOG_LEVEL_WARN:
        return "warn";
    case TKV_LOG_LEVEL_INFO:
        return "info";
    case TKV_LOG_LEVEL_DEBUG:
        return "debug";
    }
    return "info";
}

static int get_string(char *dst, size_t cap, const struct tkv_toml_value *v, char *what, size_t wl)
{
    if (v->type != TKV_TOML_STRING)
        return config_errf(what, wl, "expected a string");
    if (strlen(v->u.str.ptr) != v->u.str.len)
        return config_errf(what, wl, "string contains a NUL character");
    if (v->u.str.len >= cap)
        return config_errf(what, wl, "string is too long (limit %zu bytes)", cap - 1);
    memcpy(dst, v->u.str.ptr, v->u.str.len + 1);
    return 0;
}

/* Set the field described by d from v; on error writes the reason (without
 * location) to what and leaves the field unchanged. */
static int set_value(void *base, const struct config_key *d, const struct tkv_toml_value *v,
                     char *what, size_t wl)
{
    char *field = (char *)base + d->off;
    char tmp[TKV_CONFIG_PATH_MAX];
    switch (d->kind) {
    case CONFIG_K_ADDR:
    case CONFIG_K_ADDR_OPT:
    case CONFIG_K_STR:
    case CONFIG_K_STR_OPT:
    case CONFIG_K_URLS:
        TKV_RET(get_string(tmp, TKV_MIN(d->size, sizeof(tmp)), v, what, wl));
        if (d->kind == CONFIG_K_ADDR || d->kind == CONFIG_K_ADDR_OPT)
            TKV_RET(config_check_addr(tmp, d->kind == CONFIG_K_ADDR_OPT, what, wl));
        if (d->kind == CONFIG_K_URLS && (tmp[0] || d->min > 0))
            TKV_RET(check_urls(tmp, what, wl));
        if (d->kind == CONFIG_K_STR && !tmp[0])
            return config_errf(what, wl, "must not be empty");
        memcpy(field, tmp, strlen(tmp) + 1);
        return 0;
    case CONFIG_K_BOOL:
        if (v->type != TKV_TOML_BOOL)
            return config_errf(what, wl, "expected a boolean (true or false)");
        *(bool *)(void *)field = v->u.b;
        return 0;
    case CONFIG_K_U32:
    case CONFIG_K_U64:
        if (v->type != TKV_TOML_INT)
            return config_errf(what, wl, "expected an integer");
        if (v->u.i < 0 || (uint64_t)v->u.i < d->min || (uint64_t)v->u.i > d->max)
            return config_errf(what, wl, "must be between %llu and %llu, got %lld",
                               (unsigned long long)d->min, (unsigned long long)d->max,
                               (long long)v->u.i);
        if (d->kind == CONFIG_K_U32)
            *(uint32_t *)(void *)field = (uint32_t)v->u.i;
        else
            *(uint64_t *)(void *)field = (uint64_t)v->u.i;
        return 0;
    case CONFIG_K_SIZE: {
        uint64_t b;
        if (v->type == TKV_TOML_INT && v->u.i >= 0)
            b = (uint64_t)v->u.i;
        else if (v->type != TKV_TOML_STRING || strlen(v->u.str.ptr) != v->u.str.len ||
                 tkv_config_parse_size(v->u.str.ptr, &b) < 0)
            return config_errf(
                what, wl, "expected a size such as \"96MiB\" (units B KB MB GB TB PB, KiB...)");
        if (b < d->min || b > d->max) {
            char lo[32], hi[32];
            tkv_config_format_size(d->min, lo, sizeof(lo));
            tkv_config_format_size(d->max, hi, sizeof(hi));
            return config_errf(what, wl, "must be between %s and %s", lo, hi);
        }
        *(uint64_t *)(void *)field = b;
        return 0;
    }
    case CONFIG_K_DURATION: {
        uint64_t ms;
        if (v->type != TKV_TOML_STRING || strlen(v->u.str.ptr) != v->u.str.len ||
            tkv_config_parse_duration(v->u.str.ptr, &ms) < 0)
            return config_errf(what, wl,
                               "expected a duration such as \"10s\" (units ms s m h d, whole ms)");
        if (ms < d->min || ms > d->max) {
            char lo[32], hi[32];
            tkv_config_format_duration(d->min, lo, sizeof(lo));
            tkv_config_format_duration(d->max, hi, sizeof(hi));
            return config_errf(what, wl, "must be between %s and %s", lo, hi);
        }
        *(uint64_t *)(void *)field = ms;
        return 0;
    }
    case CONFIG_K_LOG_LEVEL: {
        enum tkv_log_level l;
        if (v->type != TKV_TOML_STRING || strlen(v->u.str.ptr) != v->u.str.len ||
            tkv_log_parse_level(v->u.str.ptr, &l) < 0)
            return config_errf(
                what, wl, "expected one of \"debug\", \"info\", \"warn\", \"error\", \"fatal\"");
        *(enum tkv_log_level *)(void *)field = l;
        return 0;
    }
    case CONFIG_K_LOG_FORMAT: {
        enum tkv_config_log_format f;
        if (v->type == TKV_TOML_STRING && v->u.str.len == 4 && strcmp(v->u.str.ptr, "text") == 0)
            f = TKV_CONFIG_LOG_TEXT;
        else if (v->type == TKV_TOML_STRING && v->u.str.len == 4 &&
                 strcmp(v->u.str.ptr, "json") == 0)
            f = TKV_CONFIG_LOG_JSON;
        else
            return config_errf(what, wl, "expected \"text\" or \"json\"");
        *(enum tkv_config_log_format *)(void *)field = f;
        return 0;
    }
    case CONFIG_K_ADDR_LIST: {
        if (v->type != TKV_TOML_ARRAY)
            return config_errf(what, wl,
                               "expected an array of strings such as [\"127.0.0.1:2379\"]");
        if (v->u.arr.n > d->max)
            return config_errf(what, wl, "too many entries (limit %llu)",
                               (unsigned long long)d->max);
        /* Check everything before writing anything. */
        for (size_t i = 0; i < v->u.arr.n; i++) {
            TKV_RET(get_string(tmp, TKV_MIN(d->size, sizeof(tmp)), &v->u.arr.items[i], what, wl));
            TKV_RET(config_check_addr(config_strip_http(tmp), false, what, wl));
        }
        for (size_t i = 0; i < v->u.arr.n; i++)
            memcpy(field + i * d->size, v->u.arr.items[i].u.str.ptr,
                   v->u.arr.items[i].u.str.len + 1);
        *(uint32_t *)(void *)((char *)base + d->count_off) = (uint32_t)v->u.arr.n;
        return 0;
    }
    }
    return config_errf(what, wl, "internal error: unknown kind");
}

int config_apply_doc(const struct config_schema *s, void *base, const struct tkv_toml_doc *doc,
                     char *err, size_t errlen)
{
    const char *name = doc->name ? doc->name : "<config>";
    for (size_t i = 0; i < doc->n_items; i++) {
        const struct tkv_toml_item *it = &doc->items[i];
        char hint[96];
        if (it->kind == TKV_TOML_ITEM_TABLE) {
            bool known = false;
            for (size_t k = 0; k < s->n_sections; k++)
                known = known || strcmp(s->sections[k], it->path) == 0;
            if (!known)
                return config_errf(err, errlen, "%s:%d: [%s]: unknown configuration table", name,
                                   it->line, it->path);
            continue;
        }
        const struct config_key *d = find_key(s, it->path);
        if (!d) {
            suggest(s, it->path, hint, sizeof(hint));
            return config_errf(err, errlen, "%s:%d: %s: unknown configuration key%s", name,
                               it->line, it->path, hint);
        }
        char what[256];
        if (set_value(base, d, &it->val, what, sizeof(what)) < 0)
            return config_errf(err, errlen, "%s:%d: %s: %s", name, it->line, it->path, what);
    }
    return 0;
}

/* Flag text -> the TOML value shape the key expects. */
static int set_text(void *base, const struct config_key *d, const char *text, char *what, size_t wl)
{
    struct tkv_toml_value v;
    memset(&v, 0, sizeof(v));
    switch (d->kind) {
    case CONFIG_K_BOOL:
        v.type = TKV_TOML_BOOL;
        if (strcmp(text, "true") == 0)
            v.u.b = true;
        else if (strcmp(text, "false") == 0)
            v.u.b = false;
        else
            return config_errf(what, wl, "expected true or false, got \"%s\"", text);
        return set_value(base, d, &v, what, wl);
    case CONFIG_K_U32:
    case CONFIG_K_U64:
        v.type = TKV_TOML_INT;
        if (!*text || strlen(text) > 18)
            return config_errf(what, wl, "expected an integer, got \"%s\"", text);
        for (const char *p = text; *p; p++) {
            if (*p < '0' || *p > '9')
                return config_errf(what, wl, "expected an integer, got \"%s\"", text);
            v.u.i = v.u.i * 10 + (*p - '0');
        }
        return set_value(base, d, &v, what, wl);
    case CONFIG_K_ADDR_LIST:
        break;
    default:
        v.type = TKV_TOML_STRING;
        v.u.str.ptr = (char *)text;
        v.u.str.len = strlen(text);
        return set_value(base, d, &v, what, wl);
    }
    /* "a,b" like TiKV's --pd and TinyKV's -scheduler; "" = none. */
    struct tkv_toml_value items[TKV_CONFIG_MAX_PD];
    char scratch[TKV_CONFIG_MAX_PD][TKV_CONFIG_ADDR_MAX];
    v.type = TKV_TOML_ARRAY;
    v.u.arr.items = items;
    size_t limit = TKV_MIN((size_t)d->max, (size_t)TKV_CONFIG_MAX_PD);
    for (const char *p = text; *text;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *q = p;
        while (n > 0 && *q == ' ')
            q++, n--;
        while (n > 0 && q[n - 1] == ' ')
            n--;
        if (v.u.arr.n == limit)
            return config_errf(what, wl, "too many entries (limit %zu)", limit);
        if (n == 0 || n >= TKV_CONFIG_ADDR_MAX)
            return config_errf(what, wl, "empty or overlong entry in \"%s\"", text);
        memcpy(scratch[v.u.arr.n], q, n);
        scratch[v.u.arr.n][n] = '\0';
        items[v.u.arr.n].type = TKV_TOML_STRING;
        items[v.u.arr.n].u.str.ptr = scratch[v.u.arr.n];
        items[v.u.arr.n].u.str.len = n;
        v.u.arr.n++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return set_value(base, d, &v, what, wl);
}

int config_set_text(const struct config_schema *s, void *base, const char *key, const char *text,
                    char *err, size_t errlen)
{
    const struct config_key *d = find_key(s, key);
    char what[256];
    if (!d) {
        suggest(s, key, what, sizeof(what));
        return config_errf(err, errlen, "%s: unknown configuration key%s", key, what);
    }
    if (set_text(base, d, text, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "%s: %s", key, what);
    return 0;
}

/* ---- dump -------------------------------------------------------------------- */

struct out {
    char *buf;
    size_t cap;
    size_t len;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len < o->cap) {
        size_t room = o->cap - o->len - 1;
        memcpy(o->buf + o->len, s, TKV_MIN(n, room));
        o->buf[o->len + TKV_MIN(n, room)] = '\0';
    }
    o->len += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* A quoted string valid in both TOML and JSON. */
static void put_quoted(struct out *o, const char *s)
{
    puts_(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[8];
        if (c == '"' || c == '\\') {
            e[0] = '\\', e[1] = (char)c, e[2] = '\0';
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(e, sizeof(e), "\\u%04X", c);
        } else {
            e[0] = (char)c, e[1] = '\0';
        }
        puts_(o, e);
    }
    puts_(o, "\"");
}

static void put_value(struct out *o, const void *base, const struct config_key *d)
{
    const char *field = (const char *)base + d->off;
    char tmp[64];
    switch (d->kind) {
    case CONFIG_K_ADDR:
    case CONFIG_K_ADDR_OPT:
    case CONFIG_K_STR:
    case CONFIG_K_STR_OPT:
    case CONFIG_K_URLS:
        put_quoted(o, field);
        return;
    case CONFIG_K_BOOL:
        puts_(o, *(const bool *)(const void *)field ? "true" : "false");
        return;
    case CONFIG_K_U32:
        snprintf(tmp, sizeof(tmp), "%u", *(const uint32_t *)(const void *)field);
        puts_(o, tmp);
        return;
    case CONFIG_K_U64:
        snprintf(tmp, sizeof(tmp), "%llu",
                 (unsigned long long)*(const uint64_t *)(const void *)field);
        puts_(o, tmp);
        return;
    case CONFIG_K_SIZE:
        tkv_config_format_size(*(const uint64_t *)(const void *)field, tmp, sizeof(tmp));
        put_quoted(o, tmp);
        return;
    case CONFIG_K_DURATION:
        tkv_config_format_duration(*(const uint64_t *)(const void *)field, tmp, sizeof(tmp));
        put_quoted(o, tmp);
        return;
    case CONFIG_K_LOG_LEVEL:
        put_quoted(o, log_level_name(*(const enum tkv_log_level *)(const void *)field));
        return;
    case CONFIG_K_LOG_FORMAT:
        put_quoted(o,
                   *(const enum tkv_config_log_format *)(const void *)field == TKV_CONFIG_LOG_JSON
                       ? "json"
                       : "text");
        return;
    case CONFIG_K_ADDR_LIST: {
        uint32_t n = *(const uint32_t *)(const void *)((const char *)base + d->count_off);
        puts_(o, "[");
        for (uint32_t i = 0; i < n && i < d->max; i++) {
            if (i)
                puts_(o, ", ");
            put_quoted(o, field + i * d->size);
        }
        puts_(o, "]");
        return;
    }
    }
}

/* Section of a key = everything before its last dot ("" for top-level keys). */
static size_t section_len(const char *key)
{
    const char *dot = strrchr(key, '.');
    return dot ? (size_t)(dot - key) : 0;
}

static const char *leaf(const char *key)
{
    const char *dot = strrchr(key, '.');
    return dot ? dot + 1 : key;
}

/* Top-level keys must come first in a schema, as TOML requires. */
static void dump_toml(struct out *o, const struct config_schema *s, const void *base)
{
    const char *sec = NULL;
    size_t sl = 0;
    for (size_t i = 0; i < s->n_keys; i++) {
        const struct config_key *d = &s->keys[i];
        size_t l = section_len(d->key);
        if (l > 0 && (!sec || l != sl || strncmp(sec, d->key, l) != 0)) {
            if (i > 0)
                puts_(o, "\n");
            puts_(o, "[");
            put(o, d->key, l);
            puts_(o, "]\n");
            sec = d->key;
            sl = l;
        }
        puts_(o, leaf(d->key));
        puts_(o, " = ");
        put_value(o, base, d);
        puts_(o, "\n");
    }
}

/* Nested JSON: the open path is a prefix of the current key's section; close
 * what no longer matches, open what is new (sections are grouped). */
static void dump_json(struct out *o, const struct config_schema *s, const void *base)
{
    const char *open[TKV_TOML_MAX_DEPTH];
    size_t open_len[TKV_TOML_MAX_DEPTH];
    size_t depth = 0;
    bool first = true;
    puts_(o, "{");
    for (size_t i = 0; i < s->n_keys; i++) {
        const char *k = s->keys[i].key;
        const char *segs[TKV_TOML_MAX_DEPTH];
        size_t seg_len[TKV_TOML_MAX_DEPTH], n = 0;
        for (const char *p = k; n < TKV_TOML_MAX_DEPTH;) {
            const char *dot = strchr(p, '.');
            if (!dot)
                break;
            segs[n] = p;
            seg_len[n++] = (size_t)(dot - p);
            p = dot + 1;
        }
        size_t common = 0;
        while (common < depth && common < n && open_len[common] == seg_len[common] &&
               strncmp(open[common], segs[common], seg_len[common]) == 0)
            common++;
        while (depth > common) {
            puts_(o, "}");
            depth--;
            first = false;
        }
        while (depth < n) {
            puts_(o, first ? "\"" : ",\"");
            put(o, segs[depth], seg_len[depth]);
            puts_(o, "\":{");
            open[depth] = segs[depth];
            open_len[depth] = seg_len[depth];
            depth++;
            first = true;
        }
        puts_(o, first ? "" : ",");
        put_quoted(o, leaf(k));
        puts_(o, ":");
        put_value(o, base, &s->keys[i]);
        first = false;
    }
    while (depth-- > 0)
        puts_(o, "}");
    puts_(o, "}\n");
}

size_t config_dump(const struct config_schema *s, const void *base,
                   enum tkv_config_dump_format format, char *buf, size_t cap)
{
    struct out o = {.buf = buf, .cap = cap, .len = 0};
    if (cap > 0)
        buf[0] = '\0';
    if (format == TKV_CONFIG_DUMP_JSON)
        dump_json(&o, s, base);
    else
        dump_toml(&o, s, base);
    return o.len;
}
