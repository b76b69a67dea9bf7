/* The tinykv-server schema: one descriptor per TOML key (TiKV names, TinyKV
 * defaults), used alike by the file loader, the flags, validation and the
 * dump, so the four can never disagree about a key. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config_private.h"
#include "tkv/common.h"
#include "tkv/config.h"
#include "tkv/err.h"

enum kind {
    K_ADDR,       /* "host:port", required */
    K_ADDR_OPT,   /* "host:port" or "" */
    K_PATH,       /* non-empty string */
    K_PATH_OPT,   /* string, may be empty */
    K_BOOL,
    K_U32,
    K_U64,
    K_SIZE,       /* bytes: "96MiB" or an integer */
    K_DURATION,   /* milliseconds: "10s" */
    K_LOG_LEVEL,
    K_LOG_FORMAT,
    K_ENDPOINTS,  /* pd.endpoints: array of addresses */
};

struct key_desc {
    const char *key; /* full dotted TOML key */
    enum kind kind;
    size_t off;
    size_t size;     /* field size (string capacity) */
    uint64_t min, max;
};

#define F(field) offsetof(struct tkv_server_config, field), sizeof(((struct tkv_server_config *)0)->field)
#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define DAY_MS (86400000ull)

/* Sections appear in this order in the dump and in conf/tinykv.toml. */
static const struct key_desc keys[] = {
    {"server.addr", K_ADDR, F(server.addr), 0, 0},
    {"server.advertise-addr", K_ADDR_OPT, F(server.advertise_addr), 0, 0},
    {"server.status-addr", K_ADDR, F(server.status_addr), 0, 0},
    {"server.advertise-status-addr", K_ADDR_OPT, F(server.advertise_status_addr), 0, 0},
    {"server.max-grpc-recv-msg-len", K_SIZE, F(server.max_grpc_recv_msg_len), KiB, GiB},
    {"server.max-grpc-send-msg-len", K_SIZE, F(server.max_grpc_send_msg_len), KiB, GiB},
    {"server.cores", K_U32, F(server.cores), 0, TKV_CONFIG_MAX_CORES},
    {"server.max-connections", K_U32, F(server.max_connections), 0, 1000000},
    {"storage.data-dir", K_PATH, F(storage.data_dir), 0, 0},
    {"storage.sync-log", K_BOOL, F(storage.sync_log), 0, 0},
    {"log.level", K_LOG_LEVEL, F(log.level), 0, 0},
    {"log.format", K_LOG_FORMAT, F(log.format), 0, 0},
    {"log.file.filename", K_PATH_OPT, F(log.file.filename), 0, 0},
    {"pd.endpoints", K_ENDPOINTS, F(pd.endpoints), 0, 0},
    {"raftstore.raft-base-tick-interval", K_DURATION, F(raftstore.raft_base_tick_interval_ms), 1, DAY_MS},
    {"raftstore.raft-heartbeat-ticks", K_U32, F(raftstore.raft_heartbeat_ticks), 1, 1000000},
    {"raftstore.raft-election-timeout-ticks", K_U32, F(raftstore.raft_election_timeout_ticks), 2, 1000000},
    {"raftstore.raft-log-gc-tick-interval", K_DURATION, F(raftstore.raft_log_gc_tick_interval_ms), 1, DAY_MS},
    {"raftstore.raft-log-gc-count-limit", K_U64, F(raftstore.raft_log_gc_count_limit), 1, UINT32_MAX},
    {"raftstore.split-region-check-tick-interval", K_DURATION,
     F(raftstore.split_region_check_tick_interval_ms), 1, DAY_MS},
    {"raftstore.pd-heartbeat-tick-interval", K_DURATION, F(raftstore.pd_heartbeat_tick_interval_ms), 1, DAY_MS},
    {"raftstore.pd-store-heartbeat-tick-interval", K_DURATION,
     F(raftstore.pd_store_heartbeat_tick_interval_ms), 1, DAY_MS},
    {"raftstore.snap-mgr-gc-tick-interval", K_DURATION, F(raftstore.snap_mgr_gc_tick_interval_ms), 1, DAY_MS},
    {"coprocessor.region-max-size", K_SIZE, F(coprocessor.region_max_size), KiB, 1024 * GiB},
    {"coprocessor.region-split-size", K_SIZE, F(coprocessor.region_split_size), KiB, 1024 * GiB},
};

/* Tables a file may declare (including parents of nested ones). */
static const char *const sections[] = {"server", "storage", "log", "log.file", "pd", "raftstore", "coprocessor"};

void tkv_config_defaults(struct tkv_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->server.addr, sizeof(cfg->server.addr), "127.0.0.1:20160");
    snprintf(cfg->server.status_addr, sizeof(cfg->server.status_addr), "127.0.0.1:20180");
    cfg->server.max_grpc_recv_msg_len = 16 * MiB;
    cfg->server.max_grpc_send_msg_len = 16 * MiB;
    cfg->server.cores = 1;
    cfg->server.max_connections = 0;
    snprintf(cfg->storage.data_dir, sizeof(cfg->storage.data_dir), "./tinykv-data");
    cfg->storage.sync_log = true;
    cfg->log.level = TKV_LOG_LEVEL_INFO;
    cfg->log.format = TKV_CONFIG_LOG_TEXT;
    cfg->pd.n_endpoints = 0;
    cfg->raftstore.raft_base_tick_interval_ms = 1000;
    cfg->raftstore.raft_heartbeat_ticks = 2;
    cfg->raftstore.raft_election_timeout_ticks = 10;
    cfg->raftstore.raft_log_gc_tick_interval_ms = 10000;
    cfg->raftstore.raft_log_gc_count_limit = 128000;
    cfg->raftstore.split_region_check_tick_interval_ms = 10000;
    cfg->raftstore.pd_heartbeat_tick_interval_ms = 10000;
    cfg->raftstore.pd_store_heartbeat_tick_interval_ms = 10000;
    cfg->raftstore.snap_mgr_gc_tick_interval_ms = 60000;
    cfg->coprocessor.region_max_size = 144 * MiB;
    cfg->coprocessor.region_split_size = 96 * MiB;
    cfg->action = TKV_CONFIG_RUN;
    cfg->info_format = TKV_CONFIG_DUMP_TOML;
}

/* ---- addresses ----------------------------------------------------------- */

int tkv_config_split_addr(const char *addr, char *host, size_t host_cap, uint16_t *port_out)
{
    const char *colon, *h = addr;
    size_t hl;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return TKV_EINVAL;
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return TKV_EINVAL;
        hl = (size_t)(colon - addr);
        if (memchr(addr, ':', hl))
            return TKV_EINVAL; /* bare IPv6 needs brackets */
    }
    if (hl == 0 || hl >= host_cap)
        return TKV_EINVAL;
    for (size_t i = 0; i < hl; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c <= ' ' || c == '/' || c == '[' || c == ']' || c >= 0x7f)
            return TKV_EINVAL;
    }
    const char *p = colon + 1;
    unsigned long port = 0;
    if (!*p || strlen(p) > 5)
        return TKV_EINVAL;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return TKV_EINVAL;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535)
        return TKV_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port_out = (uint16_t)port;
    return 0;
}

static bool host_unspecified(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* An endpoint may carry an http:// prefix (TinyKV's -scheduler adds it). */
static const char *endpoint_addr(const char *ep)
{
    if (strncasecmp(ep, "http://", 7) == 0)
        return ep + 7;
    return ep;
}

int tkv_config_store_addr(const struct tkv_server_config *cfg, uint32_t k, bool advertise, char *buf,
                          size_t cap)
{
    if (k >= cfg->server.cores)
        return TKV_EINVAL;
    const char *a = advertise && cfg->server.advertise_addr[0] ? cfg->server.advertise_addr : cfg->server.addr;
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port;
    TKV_RET(tkv_config_split_addr(a, host, sizeof(host), &port));
    unsigned long p = port == 0 ? 0 : (unsigned long)port + k;
    if (p > 65535)
        return TKV_EINVAL;
    int n = strchr(host, ':') ? snprintf(buf, cap, "[%s]:%lu", host, p) : snprintf(buf, cap, "%s:%lu", host, p);
    if (n < 0 || (size_t)n >= cap)
        return TKV_EINVAL;
    return 0;
}

/* ---- setting one key ----------------------------------------------------- */

static const struct key_desc *find_key(const char *key)
{
    for (size_t i = 0; i < TKV_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].key, key) == 0)
            return &keys[i];
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
static void suggest(const char *key, char *out, size_t cap)
{
    const char *best = NULL;
    size_t bd = 4;
    for (size_t i = 0; i < TKV_ARRAY_LEN(keys); i++) {
        size_t d = edit_distance(key, keys[i].key);
        if (d < bd) {
            bd = d;
            best = keys[i].key;
        }
    }
    if (best)
        snprintf(out, cap, " (did you mean %s?)", best);
    else if (cap)
        out[0] = '\0';
}

static char *field_str(struct tkv_server_config *cfg, const struct key_desc *d)
{
    return (char *)cfg + d->off;
}

static int set_string(char *dst, size_t cap, const struct tkv_toml_value *v, char *what, size_t wl)
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

static int check_addr(const char *s, bool may_be_empty, char *what, size_t wl)
{
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port;
    if (!s[0] && may_be_empty)
        return 0;
    if (tkv_config_split_addr(s, host, sizeof(host), &port) < 0)
        return config_errf(what, wl, "expected \"host:port\" (port 0-65535, IPv6 in brackets), got \"%s\"", s);
    return 0;
}

static const char *log_level_name(enum tkv_log_level l)
{
    switch (l) {
    case TKV_LOG_LEVEL_FATAL: return "fatal";
    case TKV_LOG_LEVEL_ERROR: return "error";
    case TKV_LOG_LEVEL_WARN: return "warn";
    case TKV_LOG_LEVEL_INFO: return "info";
    case TKV_LOG_LEVEL_DEBUG: return "debug";
    }
    return "info";
}

/* Set the field described by d from v; on error writes the reason (without
 * location) to what and leaves the field unchanged. */
static int set_value(struct tkv_server_config *cfg, const struct key_desc *d, const struct tkv_toml_value *v,
                     char *what, size_t wl)
{
    char *field = field_str(cfg, d);
    char tmp[TKV_CONFIG_PATH_MAX];
    switch (d->kind) {
    case K_ADDR:
    case K_ADDR_OPT:
        TKV_RET(set_string(tmp, TKV_CONFIG_ADDR_MAX, v, what, wl));
        TKV_RET(check_addr(tmp, d->kind == K_ADDR_OPT, what, wl));
        memcpy(field, tmp, strlen(tmp) + 1);
        return 0;
    case K_PATH:
    case K_PATH_OPT:
        TKV_RET(set_string(tmp, d->size, v, what, wl));
        if (d->kind == K_PATH && !tmp[0])
            return config_errf(what, wl, "must not be empty");
        memcpy(field, tmp, strlen(tmp) + 1);
        return 0;
    case K_BOOL:
        if (v->type != TKV_TOML_BOOL)
            return config_errf(what, wl, "expected a boolean (true or false)");
        *(bool *)(void *)field = v->u.b;
        return 0;
    case K_U32:
    case K_U64: {
        if (v->type != TKV_TOML_INT)
            return config_errf(what, wl, "expected an integer");
        if (v->u.i < 0 || (uint64_t)v->u.i < d->min || (uint64_t)v->u.i > d->max)
            return config_errf(what, wl, "must be between %llu and %llu, got %lld", (unsigned long long)d->min,
                               (unsigned long long)d->max, (long long)v->u.i);
        if (d->kind == K_U32)
            *(uint32_t *)(void *)field = (uint32_t)v->u.i;
        else
            *(uint64_t *)(void *)field = (uint64_t)v->u.i;
        return 0;
    }
    case K_SIZE: {
        uint64_t b;
        if (v->type == TKV_TOML_INT && v->u.i >= 0)
            b = (uint64_t)v->u.i;
        else if (v->type != TKV_TOML_STRING || tkv_config_parse_size(v->u.str.ptr, &b) < 0)
            return config_errf(what, wl, "expected a size such as \"96MiB\" (units B KB MB GB TB PB, KiB...)");
        if (b < d->min || b > d->max) {
            char lo[32], hi[32];
            tkv_config_format_size(d->min, lo, sizeof(lo));
            tkv_config_format_size(d->max, hi, sizeof(hi));
            return config_errf(what, wl, "must be between %s and %s", lo, hi);
        }
        *(uint64_t *)(void *)field = b;
        return 0;
    }
    case K_DURATION: {
        uint64_t ms;
        if (v->type != TKV_TOML_STRING || tkv_config_parse_duration(v->u.str.ptr, &ms) < 0)
            return config_errf(what, wl, "expected a duration such as \"10s\" (units ms s m h d, whole ms)");
        if (ms < d->min || ms > d->max) {
            char lo[32], hi[32];
            tkv_config_format_duration(d->min, lo, sizeof(lo));
            tkv_config_format_duration(d->max, hi, sizeof(hi));
            return config_errf(what, wl, "must be between %s and %s", lo, hi);
        }
        *(uint64_t *)(void *)field = ms;
        return 0;
    }
    case K_LOG_LEVEL: {
        enum tkv_log_level l;
        if (v->type != TKV_TOML_STRING || strlen(v->u.str.ptr) != v->u.str.len ||
            tkv_log_parse_level(v->u.str.ptr, &l) < 0)
            return config_errf(what, wl, "expected one of \"debug\", \"info\", \"warn\", \"error\", \"fatal\"");
        cfg->log.level = l;
        return 0;
    }
    case K_LOG_FORMAT:
        if (v->type == TKV_TOML_STRING && strcmp(v->u.str.ptr, "text") == 0 && v->u.str.len == 4)
            cfg->log.format = TKV_CONFIG_LOG_TEXT;
        else if (v->type == TKV_TOML_STRING && strcmp(v->u.str.ptr, "json") == 0 && v->u.str.len == 4)
            cfg->log.format = TKV_CONFIG_LOG_JSON;
        else
            return config_errf(what, wl, "expected \"text\" or \"json\"");
        return 0;
    case K_ENDPOINTS: {
        if (v->type != TKV_TOML_ARRAY)
            return config_errf(what, wl, "expected an array of strings such as [\"127.0.0.1:2379\"]");
        if (v->u.arr.n > TKV_CONFIG_MAX_PD)
            return config_errf(what, wl, "too many endpoints (limit %d)", TKV_CONFIG_MAX_PD);
        char eps[TKV_CONFIG_MAX_PD][TKV_CONFIG_ADDR_MAX];
        for (size_t i = 0; i < v->u.arr.n; i++) {
            TKV_RET(set_string(eps[i], TKV_CONFIG_ADDR_MAX, &v->u.arr.items[i], what, wl));
            TKV_RET(check_addr(endpoint_addr(eps[i]), false, what, wl));
        }
        memcpy(cfg->pd.endpoints, eps, v->u.arr.n * sizeof(eps[0]));
        cfg->pd.n_endpoints = (uint32_t)v->u.arr.n;
        return 0;
    }
    }
    return config_errf(what, wl, "internal error: unknown kind");
}

int tkv_config_apply_doc(struct tkv_server_config *cfg, const struct tkv_toml_doc *doc, char *err, size_t errlen)
{
    const char *name = doc->name ? doc->name : "<config>";
    for (size_t i = 0; i < doc->n_items; i++) {
        const struct tkv_toml_item *it = &doc->items[i];
        char hint[96];
        if (it->kind == TKV_TOML_ITEM_TABLE) {
            bool known = false;
            for (size_t s = 0; s < TKV_ARRAY_LEN(sections); s++)
                known = known || strcmp(sections[s], it->path) == 0;
            if (!known)
                return config_errf(err, errlen, "%s:%d: [%s]: unknown configuration table", name, it->line,
                                   it->path);
            continue;
        }
        const struct key_desc *d = find_key(it->path);
        if (!d) {
            suggest(it->path, hint, sizeof(hint));
            return config_errf(err, errlen, "%s:%d: %s: unknown configuration key%s", name, it->line, it->path,
                               hint);
        }
        char what[200];
        if (set_value(cfg, d, &it->val, what, sizeof(what)) < 0)
            return config_errf(err, errlen, "%s:%d: %s: %s", name, it->line, it->path, what);
    }
    return 0;
}

/* Parse flag text into a TOML value of the shape the key expects. */
static int text_to_value(const struct key_desc *d, const char *text, struct tkv_toml_value *v, char *what,
                         size_t wl)
{
    memset(v, 0, sizeof(*v));
    switch (d->kind) {
    case K_BOOL:
        v->type = TKV_TOML_BOOL;
        if (strcmp(text, "true") == 0)
            v->u.b = true;
        else if (strcmp(text, "false") == 0)
            v->u.b = false;
        else
            return config_errf(what, wl, "expected true or false, got \"%s\"", text);
        return 0;
    case K_U32:
    case K_U64: {
        v->type = TKV_TOML_INT;
        if (!*text || strlen(text) > 18)
            return config_errf(what, wl, "expected an integer, got \"%s\"", text);
        int64_t x = 0;
        for (const char *p = text; *p; p++) {
            if (*p < '0' || *p > '9')
                return config_errf(what, wl, "expected an integer, got \"%s\"", text);
            x = x * 10 + (*p - '0');
        }
        v->u.i = x;
        return 0;
    }
    default:
        v->type = TKV_TOML_STRING;
        v->u.str.ptr = (char *)text;
        v->u.str.len = strlen(text);
        return 0;
    }
}

static int set_text(struct tkv_server_config *cfg, const struct key_desc *d, const char *text, char *what,
                    size_t wl)
{
    struct tkv_toml_value v;
    if (d->kind != K_ENDPOINTS) {
        TKV_RET(text_to_value(d, text, &v, what, wl));
        return set_value(cfg, d, &v, what, wl);
    }
    /* "a,b" like TiKV's --pd and TinyKV's -scheduler; "" = none (standalone). */
    struct tkv_toml_value items[TKV_CONFIG_MAX_PD];
    char scratch[TKV_CONFIG_MAX_PD][TKV_CONFIG_ADDR_MAX];
    memset(&v, 0, sizeof(v));
    v.type = TKV_TOML_ARRAY;
    v.u.arr.items = items;
    for (const char *p = text; *text;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *q = p;
        while (n > 0 && *q == ' ')
            q++, n--;
        while (n > 0 && q[n - 1] == ' ')
            n--;
        if (v.u.arr.n == TKV_CONFIG_MAX_PD)
            return config_errf(what, wl, "too many endpoints (limit %d)", TKV_CONFIG_MAX_PD);
        if (n == 0 || n >= TKV_CONFIG_ADDR_MAX)
            return config_errf(what, wl, "empty or overlong endpoint in \"%s\"", text);
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
    return set_value(cfg, d, &v, what, wl);
}

int tkv_config_set(struct tkv_server_config *cfg, const char *key, const char *text, char *err, size_t errlen)
{
    const struct key_desc *d = find_key(key);
    char what[200];
    if (!d) {
        suggest(key, what, sizeof(what));
        return config_errf(err, errlen, "%s: unknown configuration key%s", key, what);
    }
    if (set_text(cfg, d, text, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "%s: %s", key, what);
    return 0;
}

/* ---- validation ------------------------------------------------------------ */

/* "./a//b/" -> "a/b": enough to compare paths lexically. */
static void lexical_path(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    const char *p = in;
    if (*p == '/' && o + 1 < cap)
        out[o++] = '/';
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0)
            break;
        if (!(n == 1 && p[0] == '.')) {
            if (o > 0 && out[o - 1] != '/' && o + 1 < cap)
                out[o++] = '/';
            if (o + n < cap) {
                memcpy(out + o, p, n);
                o += n;
            }
        }
        p += n;
    }
    out[o] = '\0';
}

int tkv_config_validate(const struct tkv_server_config *cfg, char *err, size_t errlen)
{
    char host[TKV_CONFIG_ADDR_MAX], shost[TKV_CONFIG_ADDR_MAX], what[200];
    uint16_t port, sport;
    if (check_addr(cfg->server.addr, false, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "server.addr: %s", what);
    if (check_addr(cfg->server.status_addr, false, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "server.status-addr: %s", what);
    if (check_addr(cfg->server.advertise_addr, true, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "server.advertise-addr: %s", what);
    if (check_addr(cfg->server.advertise_status_addr, true, what, sizeof(what)) < 0)
        return config_errf(err, errlen, "server.advertise-status-addr: %s", what);
    tkv_config_split_addr(cfg->server.addr, host, sizeof(host), &port);
    tkv_config_split_addr(cfg->server.status_addr, shost, sizeof(shost), &sport);
    if (cfg->server.cores < 1 || cfg->server.cores > TKV_CONFIG_MAX_CORES)
        return config_errf(err, errlen, "server.cores: must be between 1 and %d, got %u", TKV_CONFIG_MAX_CORES,
                           cfg->server.cores);
    if (port != 0 && (unsigned long)port + cfg->server.cores - 1 > 65535)
        return config_errf(err, errlen,
                           "server.addr: port %u + %u cores runs past 65535 (store k listens on port+k)",
                           port, cfg->server.cores);
    if (port != 0 && sport >= port && sport < (unsigned long)port + cfg->server.cores &&
        (strcmp(host, shost) == 0 || host_unspecified(host) || host_unspecified(shost)))
        return config_errf(err, errlen,
                           "server.status-addr: port %u collides with the store ports %u-%lu of server.addr",
                           sport, port, (unsigned long)port + cfg->server.cores - 1);
    if (cfg->pd.n_endpoints > 0) {
        char ahost[TKV_CONFIG_ADDR_MAX];
        uint16_t aport;
        if (cfg->server.advertise_addr[0]) {
            tkv_config_split_addr(cfg->server.advertise_addr, ahost, sizeof(ahost), &aport);
            if (host_unspecified(ahost) || aport == 0)
                return config_errf(err, errlen,
                                   "server.advertise-addr: \"%s\" cannot be reached by peers (unspecified host or "
                                   "port 0)",
                                   cfg->server.advertise_addr);
        } else if (host_unspecified(host)) {
            return config_errf(err, errlen,
                               "server.advertise-addr: must be set when server.addr listens on %s in cluster mode "
                               "(pd.endpoints is set)",
                               host);
        }
    }
    if (!cfg->storage.data_dir[0])
        return config_errf(err, errlen, "storage.data-dir: must not be empty");
    if (cfg->log.file.filename[0]) {
        char d[TKV_CONFIG_PATH_MAX], f[TKV_CONFIG_PATH_MAX];
        lexical_path(cfg->storage.data_dir, d, sizeof(d));
        lexical_path(cfg->log.file.filename, f, sizeof(f));
        size_t dl = strlen(d);
        if ((dl == 0 && f[0] != '/') || (strncmp(f, d, dl) == 0 && (f[dl] == '/' || f[dl] == '\0') && dl > 0))
            return config_errf(err, errlen, "log.file.filename: \"%s\" must not be inside storage.data-dir \"%s\"",
                               cfg->log.file.filename, cfg->storage.data_dir);
    }
    if (cfg->server.max_grpc_recv_msg_len < KiB || cfg->server.max_grpc_send_msg_len < KiB)
        return config_errf(err, errlen, "server.max-grpc-*-msg-len: must be at least 1KiB");
    if (cfg->raftstore.raft_base_tick_interval_ms == 0)
        return config_errf(err, errlen, "raftstore.raft-base-tick-interval: must be positive");
    if (cfg->raftstore.raft_heartbeat_ticks == 0)
        return config_errf(err, errlen, "raftstore.raft-heartbeat-ticks: must be positive");
    if (cfg->raftstore.raft_election_timeout_ticks <= cfg->raftstore.raft_heartbeat_ticks)
        return config_errf(err, errlen,
                           "raftstore.raft-election-timeout-ticks: must be greater than raft-heartbeat-ticks (%u <= "
                           "%u)",
                           cfg->raftstore.raft_election_timeout_ticks, cfg->raftstore.raft_heartbeat_ticks);
    if (cfg->raftstore.raft_log_gc_count_limit == 0)
        return config_errf(err, errlen, "raftstore.raft-log-gc-count-limit: must be positive");
    if (cfg->coprocessor.region_split_size >= cfg->coprocessor.region_max_size) {
        char a[32], b[32];
        tkv_config_format_size(cfg->coprocessor.region_split_size, a, sizeof(a));
        tkv_config_format_size(cfg->coprocessor.region_max_size, b, sizeof(b));
        return config_errf(err, errlen,
                           "coprocessor.region-split-size: must be smaller than coprocessor.region-max-size (%s >= %s)",
                           a, b);
    }
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

static void put_value(struct out *o, const struct tkv_server_config *cfg, const struct key_desc *d)
{
    const char *field = (const char *)cfg + d->off;
    char tmp[64];
    switch (d->kind) {
    case K_ADDR:
    case K_ADDR_OPT:
    case K_PATH:
    case K_PATH_OPT:
        put_quoted(o, field);
        return;
    case K_BOOL:
        puts_(o, *(const bool *)(const void *)field ? "true" : "false");
        return;
    case K_U32:
        snprintf(tmp, sizeof(tmp), "%u", *(const uint32_t *)(const void *)field);
        puts_(o, tmp);
        return;
    case K_U64:
        snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)*(const uint64_t *)(const void *)field);
        puts_(o, tmp);
        return;
    case K_SIZE:
        tkv_config_format_size(*(const uint64_t *)(const void *)field, tmp, sizeof(tmp));
        put_quoted(o, tmp);
        return;
    case K_DURATION:
        tkv_config_format_duration(*(const uint64_t *)(const void *)field, tmp, sizeof(tmp));
        put_quoted(o, tmp);
        return;
    case K_LOG_LEVEL:
        put_quoted(o, log_level_name(cfg->log.level));
        return;
    case K_LOG_FORMAT:
        put_quoted(o, cfg->log.format == TKV_CONFIG_LOG_JSON ? "json" : "text");
        return;
    case K_ENDPOINTS:
        puts_(o, "[");
        for (uint32_t i = 0; i < cfg->pd.n_endpoints && i < TKV_CONFIG_MAX_PD; i++) {
            if (i)
                puts_(o, ", ");
            put_quoted(o, cfg->pd.endpoints[i]);
        }
        puts_(o, "]");
        return;
    }
}

/* Section of a key = everything before its last dot. */
static size_t section_len(const char *key)
{
    return (size_t)(strrchr(key, '.') - key);
}

static void dump_toml(struct out *o, const struct tkv_server_config *cfg)
{
    const char *sec = NULL;
    size_t sl = 0;
    for (size_t i = 0; i < TKV_ARRAY_LEN(keys); i++) {
        const struct key_desc *d = &keys[i];
        size_t l = section_len(d->key);
        if (!sec || l != sl || strncmp(sec, d->key, l) != 0) {
            if (sec)
                puts_(o, "\n");
            puts_(o, "[");
            put(o, d->key, l);
            puts_(o, "]\n");
            sec = d->key;
            sl = l;
        }
        puts_(o, d->key + l + 1);
        puts_(o, " = ");
        put_value(o, cfg, d);
        puts_(o, "\n");
    }
}

/* Nested JSON: the open path is a prefix of the current key's section; close
 * what no longer matches, open what is new (sections are grouped). */
static void dump_json(struct out *o, const struct tkv_server_config *cfg)
{
    const char *open[TKV_TOML_MAX_DEPTH];
    size_t open_len[TKV_TOML_MAX_DEPTH];
    size_t depth = 0;
    bool first = true;
    puts_(o, "{");
    for (size_t i = 0; i < TKV_ARRAY_LEN(keys); i++) {
        const char *k = keys[i].key;
        /* segments of k except the last */
        const char *segs[TKV_TOML_MAX_DEPTH];
        size_t seg_len[TKV_TOML_MAX_DEPTH], n = 0;
        for (const char *p = k;;) {
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
            puts_(o, first ? "" : ",");
            puts_(o, "\"");
            put(o, segs[depth], seg_len[depth]);
            puts_(o, "\":{");
            open[depth] = segs[depth];
            open_len[depth] = seg_len[depth];
            depth++;
            first = true;
        }
        puts_(o, first ? "" : ",");
        put_quoted(o, strrchr(k, '.') + 1);
        puts_(o, ":");
        put_value(o, cfg, &keys[i]);
        first = false;
    }
    while (depth-- > 0)
        puts_(o, "}");
    puts_(o, "}\n");
}

size_t tkv_config_dump(const struct tkv_server_config *cfg, enum tkv_config_dump_format format, char *buf,
                       size_t cap)
{
    struct out o = {.buf = buf, .cap = cap, .len = 0};
    if (cap > 0)
        buf[0] = '\0';
    if (format == TKV_CONFIG_DUMP_JSON)
        dump_json(&o, cfg);
    else
        dump_toml(&o, cfg);
    return o.len;
}
