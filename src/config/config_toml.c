/* A small strict TOML-subset parser: everything outside the subset documented
 * in include/tkv/config.h is rejected with "file:line:col: key: what", never
 * guessed at. Input is bounded, so no recursion or size can run away. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_private.h"
#include "tkv/config.h"
#include "tkv/err.h"
#include "tkv/mem.h"

#define PATH_CAP 1024 /* longest canonical key path */
#define HASH_SLOTS (2 * TKV_TOML_MAX_ITEMS)

/* How a path came to exist; decides what may redefine it (TOML 1.0 §Table). */
enum node_kind {
    NODE_VALUE,
    NODE_TABLE_EXPLICIT, /* [a.b] */
    NODE_TABLE_IMPLICIT, /* "a" created by [a.b]; may later be defined once */
    NODE_TABLE_DOTTED,   /* "a" created by a.b = 1; never by a header */
};

struct node {
    char *path;
    enum node_kind kind;
};

struct doc_priv {
    struct node nodes[TKV_TOML_MAX_ITEMS];
    size_t n_nodes;
    int slots[HASH_SLOTS]; /* index+1 into nodes, 0 = empty */
};

struct parser {
    const char *name;
    const char *s;
    size_t len;
    size_t pos;
    int line;
    size_t line_start;
    char *err;
    size_t errlen;
    struct tkv_toml_doc *doc;
    struct doc_priv *priv;
    char table[PATH_CAP]; /* canonical path of the current [table], "" = root */
    const char *key;      /* key being parsed, for messages; NULL = none yet */
};

int config_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return TKV_ECONFIG;
}

static int fail_at(struct parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_at(struct parser *p, size_t pos, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    size_t col = (pos >= p->line_start ? pos - p->line_start : 0) + 1;
    if (p->key && p->key[0])
        return config_errf(p->err, p->errlen, "%s:%d:%zu: %s: %s", p->name, p->line, col, p->key,
                           what);
    return config_errf(p->err, p->errlen, "%s:%d:%zu: %s", p->name, p->line, col, what);
}

#define FAIL(p, ...) fail_at((p), (p)->pos, __VA_ARGS__)

static int oom(struct parser *p)
{
    config_errf(p->err, p->errlen, "%s: out of memory while parsing", p->name);
    return TKV_ENOMEM;
}

static bool is_bare(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

int config_key_append(char *out, size_t cap, size_t *len, const char *seg, size_t seg_len)
{
    bool bare = seg_len > 0;
    for (size_t i = 0; i < seg_len && bare; i++)
        bare = is_bare((unsigned char)seg[i]);
    char tmp[8];
    for (size_t i = 0; i < seg_len + (bare ? 0 : 2); i++) {
        const char *add = tmp;
        size_t n = 1;
        if (bare) {
            tmp[0] = seg[i];
        } else if (i == 0 || i == seg_len + 1) {
            tmp[0] = '"';
        } else {
            unsigned char c = (unsigned char)seg[i - 1];
            if (c == '"' || c == '\\') {
                tmp[0] = '\\';
                tmp[1] = (char)c;
                n = 2;
            } else if (c < 0x20 || c == 0x7f) {
                snprintf(tmp, sizeof(tmp), "\\u%04X", c);
                n = 6;
            } else {
                tmp[0] = (char)c;
            }
        }
        if (*len + n + 1 > cap)
            return TKV_ETOOBIG;
        memcpy(out + *len, add, n);
        *len += n;
        out[*len] = '\0';
    }
    return 0;
}

/* ---- node table (duplicate detection) ---------------------------------- */

static uint32_t hash_path(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct node *node_find(struct doc_priv *d, const char *path, size_t *slot_out)
{
    size_t slot = hash_path(path) & (HASH_SLOTS - 1);
    for (;;) {
        int ix = d->slots[slot];
        if (ix == 0) {
            if (slot_out)
                *slot_out = slot;
            return NULL;
        }
        if (strcmp(d->nodes[ix - 1].path, path) == 0)
            return &d->nodes[ix - 1];
        slot = (slot + 1) & (HASH_SLOTS - 1);
    }
}

static int node_add(struct parser *p, const char *path, enum node_kind kind, size_t pos)
{
    struct doc_priv *d = p->priv;
    size_t slot;
    if (node_find(d, path, &slot))
        return 0;
    if (d->n_nodes >= TKV_TOML_MAX_ITEMS)
        return fail_at(p, pos, "too many keys and tables (limit %d)", TKV_TOML_MAX_ITEMS);
    size_t n = strlen(path) + 1;
    char *copy = tkv_malloc(n);
    if (!copy)
        return oom(p);
    memcpy(copy, path, n);
    d->nodes[d->n_nodes] = (struct node){.path = copy, .kind = kind};
    d->slots[slot] = (int)++d->n_nodes;
    return 0;
}

/* ---- values -------------------------------------------------------------- */

static void value_free(struct tkv_toml_value *v)
{
    if (v->type == TKV_TOML_STRING) {
        tkv_free(v->u.str.ptr);
    } else if (v->type == TKV_TOML_ARRAY) {
        for (size_t i = 0; i < v->u.arr.n; i++)
            value_free(&v->u.arr.items[i]);
        tkv_free(v->u.arr.items);
    }
    memset(v, 0, sizeof(*v));
    v->type = TKV_TOML_BOOL;
}

static int item_add(struct parser *p, enum tkv_toml_item_kind kind, const char *path, int line,
                    int col, struct tkv_toml_value *val)
{
    struct tkv_toml_doc *doc = p->doc;
    if (doc->n_items == doc->cap_items) {
        size_t cap = doc->cap_items ? doc->cap_items * 2 : 32;
        struct tkv_toml_item *items = tkv_realloc(doc->items, cap * sizeof(*items));
        if (!items)
            return oom(p);
        doc->items = items;
        doc->cap_items = cap;
    }
    size_t n = strlen(path) + 1;
    char *copy = tkv_malloc(n);
    if (!copy)
        return oom(p);
    memcpy(copy, path, n);
    struct tkv_toml_item *it = &doc->items[doc->n_items++];
    memset(it, 0, sizeof(*it));
    it->kind = kind;
    it->path = copy;
    it->line = line;
    it->col = col;
    if (val) {
        it->val = *val; /* ownership moves into the doc */
        memset(val, 0, sizeof(*val));
        val->type = TKV_TOML_BOOL;
    } else {
        it->val.type = TKV_TOML_BOOL;
    }
    return 0;
}

/* ---- lexing helpers -------------------------------------------------------- */

static int peek(const struct parser *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int peek_at(const struct parser *p, size_t off)
{
    return p->pos + off < p->len ? (unsigned char)p->s[p->pos + off] : -1;
}

static void skip_ws(struct parser *p)
{
    while (peek(p) == ' ' || peek(p) == '\t')
        p->pos++;
}

static bool at_newline(const struct parser *p)
{
    return peek(p) == '\n' || (peek(p) == '\r' && peek_at(p, 1) == '\n');
}

static void eat_newline(struct parser *p)
{
    if (peek(p) == '\r')
        p->pos++;
    p->pos++;
    p->line++;
    p->line_start = p->pos;
}

/* '#' up to (not including) the end of line; only tab and printable text. */
static int skip_comment(struct parser *p)
{
    p->pos++;
    for (;;) {
        int c = peek(p);
        if (c < 0 || at_newline(p))
            return 0;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return FAIL(p, "control character 0x%02X in comment", (unsigned)c);
        p->pos++;
    }
}

/* After a statement: spaces, an optional comment, then end of line or file. */
static int end_of_statement(struct parser *p, const char *after)
{
    skip_ws(p);
    if (peek(p) == '#')
        TKV_RET(skip_comment(p));
    if (peek(p) < 0)
        return 0;
    if (!at_newline(p))
        return FAIL(p, "unexpected text after %s (one key = value or [table] per line)", after);
    eat_newline(p);
    return 0;
}

/* Inside arrays: whitespace, newlines and comments in any order. */
static int skip_ws_nl(struct parser *p)
{
    for (;;) {
        skip_ws(p);
        if (peek(p) == '#')
            TKV_RET(skip_comment(p));
        else if (at_newline(p))
            eat_newline(p);
        else
            return 0;
    }
}

/* ---- strings ----------------------------------------------------------------- */

struct buf {
    char *ptr;
    size_t len;
    size_t cap;
};

static int buf_put(struct parser *p, struct buf *b, const char *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = tkv_realloc(b->ptr, cap);
        if (!np)
            return oom(p);
        b->ptr = np;
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, data, n);
    b->len += n;
    b->ptr[b->len] = '\0';
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static size_t utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A "basic" or 'literal' single-line string starting at the quote. */
static int parse_string(struct parser *p, struct buf *out)
{
    int quote = peek(p);
    if (peek_at(p, 1) == quote && peek_at(p, 2) == quote)
        return FAIL(p, "multi-line strings are not supported");
    size_t start = p->pos;
    p->pos++;
    for (;;) {
        int c = peek(p);
        if (c < 0 || c == '\n' || c == '\r')
            return fail_at(p, start, "unterminated string");
        if (c == quote) {
            p->pos++;
            if (!out->ptr)
                TKV_RET(buf_put(p, out, "", 0));
            return 0;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return FAIL(p, "control character 0x%02X in string (use an escape)", (unsigned)c);
        if (c != '\\' || quote == '\'') {
            /* Copy a run of ordinary bytes at once. */
            size_t run = p->pos;
            while (run < p->len) {
                unsigned char d = (unsigned char)p->s[run];
                if (d == quote || d == '\\' || d < 0x20 || d == 0x7f)
                    break;
                run++;
            }
            if (run == p->pos) /* a backslash in a literal string */
                run++;
            TKV_RET(buf_put(p, out, p->s + p->pos, run - p->pos));
            p->pos = run;
            continue;
        }
        size_t esc = p->pos;
        p->pos++;
        int e = peek(p);
        char one;
        switch (e) {
        case 'b':
            one = '\b';
            break;
        case 't':
            one = '\t';
            break;
        case 'n':
            one = '\n';
            break;
        case 'f':
            one = '\f';
            break;
        case 'r':
            one = '\r';
            break;
        case '"':
            one = '"';
            break;
        case '\\':
            one = '\\';
            break;
        case 'u':
        case 'U': {
            int digits = e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int i = 1; i <= digits; i++) {
                int h = hexval(peek_at(p, (size_t)i));
                if (h < 0)
                    return fail_at(p, esc, "\\%c escape needs %d hex digits", e, digits);
                cp = cp * 16 + (uint32_t)h;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return fail_at(p, esc, "\\%c%0*X is not a Unicode scalar value", e, digits, cp);
            char enc[4];
            TKV_RET(buf_put(p, out, enc, utf8_encode(cp, enc)));
            p->pos += (size_t)digits + 1;
            continue;
        }
        default:
            return fail_at(p, esc, "invalid escape sequence in string");
        }
        TKV_RET(buf_put(p, out, &one, 1));
        p->pos++;
    }
}

/* ---- keys ---------------------------------------------------------------------- */

/* A possibly dotted key; appends each segment's canonical form to *path (which
 * already holds the current table, if any) and records where each segment ends
 * in ends[] so callers can walk the prefixes. */
static int parse_key(struct parser *p, char *path, size_t *path_len,
                     size_t ends[TKV_TOML_MAX_DEPTH], size_t *n_segs)
{
    *n_segs = 0;
    for (;;) {
        skip_ws(p);
        int c = peek(p);
        struct buf seg = {0};
        size_t seg_pos = p->pos;
        if (c == '"' || c == '\'') {
            int rv = parse_string(p, &seg);
            if (rv < 0) {
                tkv_free(seg.ptr);
                return rv;
            }
        } else if (c >= 0 && is_bare(c)) {
            size_t b = p->pos;
            while (peek(p) >= 0 && is_bare(peek(p)))
                p->pos++;
            int rv = buf_put(p, &seg, p->s + b, p->pos - b);
            if (rv < 0) {
                tkv_free(seg.ptr);
                return rv;
            }
        } else {
            return FAIL(p, c < 0 || c == ']' || c == '=' || at_newline(p)
                               ? "expected a key"
                               : "invalid character in key");
        }
        if (*n_segs == TKV_TOML_MAX_DEPTH) {
            tkv_free(seg.ptr);
            return fail_at(p, seg_pos, "key has too many parts (limit %d)", TKV_TOML_MAX_DEPTH);
        }
        int rv = 0;
        if (*path_len > 0) {
            if (*path_len + 2 > PATH_CAP) {
                rv = TKV_ETOOBIG;
            } else {
                path[(*path_len)++] = '.';
                path[*path_len] = '\0';
            }
        }
        if (rv == 0)
            rv = config_key_append(path, PATH_CAP, path_len, seg.ptr, seg.len);
        tkv_free(seg.ptr);
        if (rv < 0)
            return fail_at(p, seg_pos, "key is too long (limit %d bytes)", PATH_CAP - 1);
        ends[(*n_segs)++] = *path_len;
        skip_ws(p);
        if (peek(p) != '.')
            return 0;
        p->pos++;
    }
}

/* ---- numbers ------------------------------------------------------------------- */

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* digits with single underscores between digits: "1_000". Copies the digits
 * (without '_') to out; returns the number of chars consumed or 0 on error. */
static size_t scan_digits(const char *s, size_t n, char *out, size_t *out_len, size_t out_cap)
{
    size_t i = 0;
    if (n == 0 || !is_digit((unsigned char)s[0]))
        return 0;
    while (i < n) {
        if (is_digit((unsigned char)s[i])) {
            if (*out_len + 1 >= out_cap)
                return 0;
            out[(*out_len)++] = s[i++];
        } else if (s[i] == '_' && i + 1 < n && is_digit((unsigned char)s[i + 1]) && i > 0) {
            i++;
        } else {
            break;
        }
    }
    out[*out_len] = '\0';
    return i;
}

static int parse_number(struct parser *p, struct tkv_toml_value *v)
{
    size_t start = p->pos;
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (!(is_bare(c) || c == '+' || c == '.' || c == ':'))
            break;
        p->pos++;
    }
    const char *t = p->s + start;
    size_t n = p->pos - start;
    size_t i = 0;
    if (n > 128)
        return fail_at(p, start, "number is too long");
    if (memchr(t, ':', n) || (n >= 5 && is_digit((unsigned char)t[0]) && t[4] == '-'))
        return fail_at(p, start, "dates and times are not supported");
    if (t[0] == '+' || t[0] == '-')
        i++;
    if ((n - i == 3 && (memcmp(t + i, "inf", 3) == 0 || memcmp(t + i, "nan", 3) == 0)))
        return fail_at(p, start, "inf and nan are not supported");
    if (n - i >= 2 && t[i] == '0' && (t[i + 1] == 'x' || t[i + 1] == 'o' || t[i + 1] == 'b'))
        return fail_at(p, start, "hex, octal and binary integers are not supported");
    char clean[160];
    size_t cl = 0;
    if (t[0] == '-')
        clean[cl++] = '-';
    size_t d = scan_digits(t + i, n - i, clean, &cl, sizeof(clean));
    if (d == 0)
        return fail_at(p, start, "invalid value (strings need quotes)");
    if (t[i] == '0' && d > 1)
        return fail_at(p, start, "leading zeros are not allowed in numbers");
    i += d;
    bool is_float = false;
    if (i < n && t[i] == '.') {
        is_float = true;
        clean[cl++] = '.';
        size_t f = scan_digits(t + i + 1, n - i - 1, clean, &cl, sizeof(clean));
        if (f == 0)
            return fail_at(p, start, "invalid float: digits must follow '.'");
        i += 1 + f;
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        is_float = true;
        clean[cl++] = 'e';
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-'))
            clean[cl++] = t[i++];
        size_t f = scan_digits(t + i, n - i, clean, &cl, sizeof(clean));
        if (f == 0)
            return fail_at(p, start, "invalid float exponent");
        i += f;
    }
    if (i != n)
        return fail_at(p, start, "invalid number \"%.*s\"", (int)n, t);
    if (is_float) {
        errno = 0;
        double x = strtod(clean, NULL);
        if (errno == ERANGE && !isfinite(x))
            return fail_at(p, start, "float out of range");
        v->type = TKV_TOML_FLOAT;
        v->u.f = x;
        return 0;
    }
    /* Accumulate negatively so INT64_MIN fits. */
    bool neg = clean[0] == '-';
    int64_t acc = 0;
    for (size_t k = neg ? 1 : 0; k < cl; k++) {
        int dig = clean[k] - '0';
        if (acc < (INT64_MIN + dig) / 10)
            return fail_at(p, start, "integer out of range (64-bit)");
        acc = acc * 10 - dig;
    }
    if (!neg) {
        if (acc == INT64_MIN)
            return fail_at(p, start, "integer out of range (64-bit)");
        acc = -acc;
    }
    v->type = TKV_TOML_INT;
    v->u.i = acc;
    return 0;
}

/* ---- values -------------------------------------------------------------------- */

static bool is_value_end(int c)
{
    return c < 0 || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '#' || c == ',' ||
           c == ']';
}

static int parse_scalar(struct parser *p, struct tkv_toml_value *v)
{
    int c = peek(p);
    if (c == '"' || c == '\'') {
        struct buf b = {0};
        int rv = parse_string(p, &b);
        if (rv < 0) {
            tkv_free(b.ptr);
            return rv;
        }
        v->type = TKV_TOML_STRING;
        v->u.str.ptr = b.ptr;
        v->u.str.len = b.len;
        return 0;
    }
    if (c == 't' && p->len - p->pos >= 4 && memcmp(p->s + p->pos, "true", 4) == 0 &&
        is_value_end(peek_at(p, 4))) {
        p->pos += 4;
        v->type = TKV_TOML_BOOL;
        v->u.b = true;
        return 0;
    }
    if (c == 'f' && p->len - p->pos >= 5 && memcmp(p->s + p->pos, "false", 5) == 0 &&
        is_value_end(peek_at(p, 5))) {
        p->pos += 5;
        v->type = TKV_TOML_BOOL;
        v->u.b = false;
        return 0;
    }
    if (c == '{')
        return FAIL(p, "inline tables are not supported");
    if (c == '[')
        return FAIL(p, "nested arrays are not supported");
    if (c >= 0 && (is_digit(c) || c == '+' || c == '-' || c == 'i' || c == 'n'))
        return parse_number(p, v);
    if (c < 0 || at_newline(p))
        return FAIL(p, "expected a value after '='");
    return FAIL(p, "invalid value (strings need quotes)");
}

static const char *type_name(enum tkv_toml_type t)
{
    switch (t) {
    case TKV_TOML_STRING:
        return "string";
    case TKV_TOML_INT:
        return "integer";
    case TKV_TOML_FLOAT:
        return "float";
    case TKV_TOML_BOOL:
        return "boolean";
    case TKV_TOML_ARRAY:
        return "array";
    }
    return "?";
}

static int parse_array(struct parser *p, struct tkv_toml_value *v)
{
    v->type = TKV_TOML_ARRAY;
    v->u.arr.items = NULL;
    v->u.arr.n = 0;
    size_t cap = 0;
    p->pos++; /* '[' */
    for (;;) {
        TKV_RET(skip_ws_nl(p));
        if (peek(p) == ']') {
            p->pos++;
            return 0;
        }
        if (peek(p) < 0)
            return FAIL(p, "unterminated array");
        if (v->u.arr.n == TKV_TOML_MAX_ARRAY)
            return FAIL(p, "array has too many elements (limit %d)", TKV_TOML_MAX_ARRAY);
        if (v->u.arr.n == cap) {
            cap = cap ? cap * 2 : 4;
            struct tkv_toml_value *items = tkv_realloc(v->u.arr.items, cap * sizeof(*items));
            if (!items)
                return oom(p);
            v->u.arr.items = items;
        }
        size_t at = p->pos;
        struct tkv_toml_value *it = &v->u.arr.items[v->u.arr.n];
        memset(it, 0, sizeof(*it));
        it->type = TKV_TOML_BOOL;
        int rv = parse_scalar(p, it);
        if (rv < 0) {
            value_free(it);
            return rv;
        }
        v->u.arr.n++;
        if (it->type != v->u.arr.items[0].type)
            return fail_at(p, at, "array elements must all have one type (%s, then %s)",
                           type_name(v->u.arr.items[0].type), type_name(it->type));
        TKV_RET(skip_ws_nl(p));
        if (peek(p) == ',') {
            p->pos++;
        } else if (peek(p) != ']') {
            return FAIL(p, peek(p) < 0 ? "unterminated array" : "expected ',' or ']' in array");
        }
    }
}

/* ---- statements ---------------------------------------------------------------- */

static int parse_header(struct parser *p)
{
    size_t at = p->pos;
    int line = p->line;
    p->pos++;
    if (peek(p) == '[')
        return FAIL(p, "arrays of tables ([[...]]) are not supported");
    char path[PATH_CAP] = "";
    size_t plen = 0, ends[TKV_TOML_MAX_DEPTH], n;
    TKV_RET(parse_key(p, path, &plen, ends, &n));
    p->key = path;
    if (peek(p) != ']')
        return FAIL(p, "expected ']' to close the table header");
    p->pos++;
    for (size_t i = 0; i < n; i++) {
        char save = path[ends[i]];
        path[ends[i]] = '\0';
        struct node *nd = node_find(p->priv, path, NULL);
        bool last = i + 1 == n;
        if (nd && nd->kind == NODE_VALUE) {
            int rv = fail_at(p, at, "%s is already a value, not a table", path);
            path[ends[i]] = save;
            return rv;
        }
        if (last && nd) {
            if (nd->kind == NODE_TABLE_IMPLICIT)
                nd->kind = NODE_TABLE_EXPLICIT;
            else if (nd->kind == NODE_TABLE_EXPLICIT)
                return fail_at(p, at, "duplicate table [%s]", path);
            else
                return fail_at(p, at, "table [%s] was already defined by dotted keys", path);
        } else if (!nd) {
            TKV_RET(node_add(p, path, last ? NODE_TABLE_EXPLICIT : NODE_TABLE_IMPLICIT, at));
        }
        path[ends[i]] = save;
    }
    memcpy(p->table, path, plen + 1);
    TKV_RET(item_add(p, TKV_TOML_ITEM_TABLE, path, line, (int)(at - p->line_start + 1), NULL));
    p->key = NULL;
    return end_of_statement(p, "the table header");
}

static int parse_keyval(struct parser *p)
{
    size_t at = p->pos;
    int line = p->line;
    /* Taken now: a multi-line array value moves line_start past `at`. */
    int col = (int)(at - p->line_start + 1);
    char path[PATH_CAP];
    size_t plen = strlen(p->table), ends[TKV_TOML_MAX_DEPTH], n;
    memcpy(path, p->table, plen + 1);
    TKV_RET(parse_key(p, path, &plen, ends, &n));
    p->key = path;
    if (peek(p) != '=')
        return FAIL(p, "expected '=' after the key");
    p->pos++;
    skip_ws(p);
    /* Check the path before the value so the error points at the key. */
    for (size_t i = 0; i < n; i++) {
        char save = path[ends[i]];
        path[ends[i]] = '\0';
        struct node *nd = node_find(p->priv, path, NULL);
        bool last = i + 1 == n;
        int rv = 0;
        if (last && nd)
            rv = fail_at(p, at,
                         nd->kind == NODE_VALUE ? "duplicate key"
                                                : "duplicate key (already a table)");
        else if (nd && nd->kind == NODE_VALUE)
            rv = fail_at(p, at, "%s is already a value, not a table", path);
        else if (nd && nd->kind != NODE_TABLE_DOTTED)
            rv = fail_at(p, at, "cannot add to table [%s] with a dotted key", path);
        else if (!nd && !last)
            rv = node_add(p, path, NODE_TABLE_DOTTED, at);
        path[ends[i]] = save;
        if (rv < 0)
            return rv;
    }
    struct tkv_toml_value v = {.type = TKV_TOML_BOOL};
    int rv = peek(p) == '[' ? parse_array(p, &v) : parse_scalar(p, &v);
    if (rv == 0)
        rv = node_add(p, path, NODE_VALUE, at);
    if (rv == 0)
        rv = item_add(p, TKV_TOML_ITEM_VALUE, path, line, col, &v);
    value_free(&v);
    if (rv < 0)
        return rv;
    rv = end_of_statement(p, "the value");
    p->key = NULL;
    return rv;
}

/* Whole-input checks first: NUL bytes and invalid UTF-8 would otherwise have
 * to be handled in every scanner. */
static int check_encoding(struct parser *p)
{
    const unsigned char *s = (const unsigned char *)p->s;
    size_t i = 0;
    while (i < p->len) {
        unsigned char c = s[i];
        if (c == '\n') {
            p->line++;
            p->line_start = i + 1;
            i++;
            continue;
        }
        if (c == 0)
            return fail_at(p, i, "NUL byte in input");
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) {
            n = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return fail_at(p, i, "invalid UTF-8");
        }
        if (i + n > p->len)
            return fail_at(p, i, "invalid UTF-8");
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return fail_at(p, i, "invalid UTF-8");
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return fail_at(p, i, "invalid UTF-8");
        i += n;
    }
    p->line = 1;
    p->line_start = 0;
    return 0;
}

void tkv_config_toml_free(struct tkv_toml_doc *doc)
{
    if (!doc)
        return;
    for (size_t i = 0; i < doc->n_items; i++) {
        tkv_free(doc->items[i].path);
        value_free(&doc->items[i].val);
    }
    tkv_free(doc->items);
    struct doc_priv *d = doc->priv;
    if (d) {
        for (size_t i = 0; i < d->n_nodes; i++)
            tkv_free(d->nodes[i].path);
        tkv_free(d);
    }
    tkv_free(doc->name);
    memset(doc, 0, sizeof(*doc));
}

int tkv_config_toml_parse(const char *name, const char *text, size_t len, struct tkv_toml_doc *doc,
                          char *err, size_t errlen)
{
    memset(doc, 0, sizeof(*doc));
    if (err && errlen)
        err[0] = '\0';
    struct parser p = {.name = name ? name : "<config>",
                       .s = text,
                       .len = len,
                       .line = 1,
                       .err = err,
                       .errlen = errlen,
                       .doc = doc};
    if (len > TKV_TOML_MAX_BYTES)
        return config_errf(err, errlen, "%s: file is too large (%zu bytes, limit %u)", p.name, len,
                           TKV_TOML_MAX_BYTES);
    int rv;
    size_t nlen = strlen(p.name) + 1;
    doc->name = tkv_malloc(nlen);
    doc->priv = tkv_calloc(1, sizeof(struct doc_priv));
    if (!doc->name || !doc->priv) {
        rv = oom(&p);
        goto err;
    }
    memcpy(doc->name, p.name, nlen);
    p.priv = doc->priv;
    TKV_ERR(check_encoding(&p));
    /* A UTF-8 byte order mark is allowed at the very start. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        p.pos = p.line_start = 3;
    for (;;) {
        skip_ws(&p);
        int c = peek(&p);
        if (c < 0)
            break;
        if (c == '#') {
            TKV_ERR(skip_comment(&p));
        } else if (at_newline(&p)) {
            eat_newline(&p);
        } else if (c == '[') {
            TKV_ERR(parse_header(&p));
        } else if (c == '=') {
            rv = FAIL(&p, "expected a key before '='");
            goto err;
        } else {
            TKV_ERR(parse_keyval(&p));
        }
    }
    return 0;
err:
    assert(rv != 0);
    tkv_config_toml_free(doc);
    return rv;
}

int tkv_config_toml_parse_file(const char *path, struct tkv_toml_doc *doc, char *err, size_t errlen)
{
    memset(doc, 0, sizeof(*doc));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        config_errf(err, errlen, "%s: cannot open config file: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        config_errf(err, errlen, "%s: cannot read config file: is a directory", path);
        return -EISDIR;
    }
    /* Read at most limit+1 bytes so an oversized (or endless) file is caught
     * without trusting st_size. */
    size_t cap = TKV_TOML_MAX_BYTES + 1, len = 0;
    char *text = tkv_malloc(cap);
    if (!text) {
        close(fd);
        config_errf(err, errlen, "%s: out of memory", path);
        return TKV_ENOMEM;
    }
    for (;;) {
        ssize_t n = read(fd, text + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            tkv_free(text);
            config_errf(err, errlen, "%s: cannot read config file: %s", path, strerror(e));
            return -e;
        }
        if (n == 0 || (len += (size_t)n) == cap)
            break;
    }
    close(fd);
    int rv = tkv_config_toml_parse(path, text, len, doc, err, errlen);
    tkv_free(text);
    return rv;
}

const struct tkv_toml_item *tkv_config_toml_find(const struct tkv_toml_doc *doc, const char *path)
{
    for (size_t i = 0; doc && i < doc->n_items; i++)
        if (doc->items[i].kind == TKV_TOML_ITEM_VALUE && strcmp(doc->items[i].path, path) == 0)
            return &doc->items[i];
    return NULL;
}
