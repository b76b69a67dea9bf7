/* tinykv-ctl's scheduler verbs (PD-ctl's model): store list, region list,
 * region KEY, operator show, operator add transfer-leader|add-peer|
 * remove-peer. They talk to the scheduler's HTTP API on its status port
 * (PD's /pd/api/v1 paths; sched/README.md "Status port"), as pd-ctl talks
 * to PD's: the API has the per-store counts and states that the gRPC
 * service does not carry, and the one write (POST /operators) exists only
 * there. Output: an aligned table, or with --json the scheduler's own JSON
 * document unchanged. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools_private.h"

#define EXIT_ERROR 1
#define EXIT_USAGE 2

/* ---- a small table printer ---- */

#define MAX_COLS 12

struct table {
    size_t n_cols, n_rows, cap_rows;
    char **cells; /* n_rows x n_cols, row 0 = header */
    size_t width[MAX_COLS];
};

static void table_row(struct table *t, char **cells)
{
    if (t->n_rows == t->cap_rows) {
        t->cap_rows = t->cap_rows ? t->cap_rows * 2 : 16;
        char **nc = realloc(t->cells, t->cap_rows * t->n_cols * sizeof(char *));
        if (!nc) {
            fprintf(stderr, "tinykv-ctl: out of memory\n");
            exit(EXIT_ERROR);
        }
        t->cells = nc;
    }
    for (size_t c = 0; c < t->n_cols; c++) {
        char *s = cells[c] ? cells[c] : strdup("");
        t->cells[t->n_rows * t->n_cols + c] = s;
        size_t w = strlen(s);
        if (w > t->width[c])
            t->width[c] = w;
    }
    t->n_rows++;
}

static void table_print(struct table *t)
{
    for (size_t r = 0; r < t->n_rows; r++) {
        for (size_t c = 0; c < t->n_cols; c++) {
            const char *s = t->cells[r * t->n_cols + c];
            if (c + 1 == t->n_cols)
                printf("%s\n", s);
            else
                printf("%-*s  ", (int)t->width[c], s);
        }
    }
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
        free(t->cells[i]);
    free(t->cells);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static char *int_cell(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? fmt("%" JSON_INTEGER_FORMAT, json_integer_value(v)) : strdup("-");
}

static char *str_cell(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return strdup(s ? s : "-");
}

/* A region boundary (upper-case hex from the API) in ctl's key form. */
static char *key_cell(json_t *o, const char *key, bool hex)
{
    const char *h = json_string_value(json_object_get(o, key));
    uint8_t *bytes;
    size_t n;
    if (!h)
        return strdup("-");
    if (!h[0])
        return strdup("\"\"");
    if (tools_parse_bytes(h, true, &bytes, &n) < 0)
        return strdup(h);
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    if (!f) {
        free(bytes);
        return strdup(h);
    }
    tools_print_bytes(f, bytes, n, hex);
    fclose(f);
    free(bytes);
    return out;
}

/* ---- talking to the scheduler ---- */

struct admin {
    const char *addr;
    bool json, hex;
    double timeout_s;
};

/* GET or POST path; on 2xx returns the parsed body (and its text in
 * *text when wanted), else prints why and returns NULL. */
static json_t *call(const struct admin *a, const char *method, const char *path, const char *body,
                    const char *what, char **text, int *code_out)
{
    struct tools_http_answer ans;
    char err[300];
    *code_out = EXIT_ERROR;
    if (tools_http(a->addr, method, path, body, a->timeout_s, &ans, err, sizeof(err)) < 0) {
        fprintf(stderr,
                "tinykv-ctl: %s: no answer from the scheduler's HTTP API at %s: %s "
                "(set it with --pd-http host:port, the scheduler's status-addr)\n",
                what, a->addr, err);
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(TOOLS_HTTP_BODY(&ans), ans.len, JSON_DECODE_ANY, &jerr);
    if (ans.code < 200 || ans.code > 299) {
        const char *msg = json_is_string(j) ? json_string_value(j) : TOOLS_HTTP_BODY(&ans);
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
            n--;
        fprintf(stderr, "tinykv-ctl: %s: %.*s (HTTP %u from %s)\n", what, (int)n, msg, ans.code,
                a->addr);
        json_decref(j);
        tools_http_free(&ans);
        return NULL;
    }
    if (!j) {
        fprintf(stderr, "tinykv-ctl: %s: the answer of %s is not JSON: %s\n", what, a->addr,
                jerr.text);
        tools_http_free(&ans);
        return NULL;
    }
    if (text) {
        *text = strdup(TOOLS_HTTP_BODY(&ans));
    }
    tools_http_free(&ans);
    *code_out = 0;
    return j;
}

static int print_text(char *text)
{
    size_t n = strlen(text);
    fputs(text, stdout);
    if (n && text[n - 1] != '\n')
        putchar('\n');
    free(text);
    return 0;
}

static const char *label_value(json_t *store, const char *key)
{
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(store, "labels"), i, l)
    {
        const char *k = json_string_value(json_object_get(l, "key"));
        if (k && strcmp(k, key) == 0)
            return json_string_value(json_object_get(l, "value"));
    }
    return NULL;
}

static int store_list(const struct admin *a)
{
    char *text = NULL;
    int code;
    json_t *j = call(a, "GET", "/pd/api/v1/stores", NULL, "store list", a->json ? &text : NULL,
                     &code);
    if (!j)
        return code;
    if (a->json) {
        json_decref(j);
        return print_text(text);
    }
    struct table t = {.n_cols = 10};
    table_row(&t, (char *[]){strdup("ID"), strdup("ADDRESS"), strdup("NODE"), strdup("STATE"),
                             strdup("REGIONS"), strdup("LEADERS"), strdup("REGION_MIB"),
                             strdup("CAPACITY"), strdup("AVAILABLE"), strdup("LAST_HEARTBEAT")});
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "stores"), i, e)
    {
        json_t *s = json_object_get(e, "store"), *st = json_object_get(e, "status");
        const char *node = label_value(s, "node");
        table_row(&t, (char *[]){int_cell(s, "id"), str_cell(s, "address"),
                                 strdup(node ? node : "-"), str_cell(s, "state_name"),
                                 int_cell(st, "region_count"), int_cell(st, "leader_count"),
                                 int_cell(st, "region_size"), str_cell(st, "capacity"),
                                 str_cell(st, "available"), str_cell(st, "last_heartbeat_ts")});
    }
    table_print(&t);
    json_decref(j);
    return 0;
}

static char *peers_cell(json_t *r)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return strdup("?");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(r, "peers"), i, p)
    {
        fprintf(f, "%s%" JSON_INTEGER_FORMAT "@%" JSON_INTEGER_FORMAT, i ? "," : "",
                json_integer_value(json_object_get(p, "id")),
                json_integer_value(json_object_get(p, "store_id")));
    }
    fclose(f);
    return out;
}

static void region_rows(struct table *t, json_t *r, bool hex)
{
    json_t *leader = json_object_get(r, "leader"), *epoch = json_object_get(r, "epoch");
    table_row(t, (char *[]){int_cell(r, "id"), key_cell(r, "start_key", hex),
                            key_cell(r, "end_key", hex),
                            leader ? int_cell(leader, "store_id") : strdup("-"), peers_cell(r),
                            fmt("%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                                json_integer_value(json_object_get(epoch, "conf_ver")),
                                json_integer_value(json_object_get(epoch, "version"))),
                            fmt("%zu", json_array_size(json_object_get(r, "pending_peers"))),
                            int_cell(r, "approximate_size")});
}

static void region_header(struct table *t)
{
    t->n_cols = 8;
    table_row(t, (char *[]){strdup("ID"), strdup("START_KEY"), strdup("END_KEY"),
                            strdup("LEADER_STORE"), strdup("PEERS(id@store)"),
                            strdup("CONF_VER/VERSION"), strdup("PENDING"), strdup("SIZE_MIB")});
}

static int region_list(const struct admin *a)
{
    char *text = NULL;
    int code;
    json_t *j = call(a, "GET", "/pd/api/v1/regions", NULL, "region list", a->json ? &text : NULL,
                     &code);
    if (!j)
        return code;
    if (a->json) {
        json_decref(j);
        return print_text(text);
    }
    struct table t = {0};
    region_header(&t);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(j, "regions"), i, r)
        region_rows(&t, r, a->hex);
    table_print(&t);
    json_decref(j);
    return 0;
}

/* PD's url-escaped key: unreserved bytes as they are, the rest %HH. */
static char *escape_key(const uint8_t *k, size_t n)
{
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = k[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            *o++ = (char)c;
        else
            o += sprintf(o, "%%%02X", c);
    }
    *o = '\0';
    return out;
}

static int region_by_key(const struct admin *a, const char *key_text)
{
    uint8_t *key;
    size_t n;
    if (tools_parse_bytes(key_text, a->hex, &key, &n) < 0) {
        fprintf(stderr, "tinykv-ctl: key: %s\n",
                a->hex ? "expected hex digits" : "bad escape (use \\\\ or \\xHH)");
        return EXIT_USAGE;
    }
    char *esc = escape_key(key, n);
    free(key);
    char *path = esc ? fmt("/pd/api/v1/region/key/%s", esc) : NULL;
    free(esc);
    if (!path) {
        fprintf(stderr, "tinykv-ctl: out of memory\n");
        return EXIT_ERROR;
    }
    char *text = NULL;
    int code;
    json_t *j = call(a, "GET", path, NULL, "region", a->json ? &text : NULL, &code);
    free(path);
    if (!j)
        return code;
    if (a->json) {
        json_decref(j);
        return print_text(text);
    }
    struct table t = {0};
    region_header(&t);
    region_rows(&t, j, a->hex);
    table_print(&t);
    json_decref(j);
    return 0;
}

static char *steps_cell(json_t *op)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return strdup("?");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(op, "steps"), i, s)
    {
        const char *type = json_string_value(json_object_get(s, "type"));
        fprintf(f, "%s%s(store %" JSON_INTEGER_FORMAT, i ? ", " : "", type ? type : "?",
                json_integer_value(json_object_get(s, "store_id")));
        if (json_object_get(s, "peer_id"))
            fprintf(f, ", peer %" JSON_INTEGER_FORMAT,
                    json_integer_value(json_object_get(s, "peer_id")));
        fputc(')', f);
    }
    fclose(f);
    return out;
}

static void operator_header(struct table *t)
{
    t->n_cols = 6;
    table_row(t, (char *[]){strdup("REGION"), strdup("DESC"), strdup("KIND"), strdup("STEPS"),
                            strdup("CURRENT_STEP"), strdup("AGE_S")});
}

static void operator_row(struct table *t, json_t *op)
{
    table_row(t, (char *[]){int_cell(op, "region_id"), str_cell(op, "desc"), str_cell(op, "kind"),
                            steps_cell(op), int_cell(op, "current_step"),
                            fmt("%.1f", json_real_value(json_object_get(op, "age_seconds")))});
}

static int operator_show(const struct admin *a)
{
    char *text = NULL;
    int code;
    json_t *j = call(a, "GET", "/pd/api/v1/operators", NULL, "operator show",
                     a->json ? &text : NULL, &code);
    if (!j)
        return code;
    if (a->json) {
        json_decref(j);
        return print_text(text);
    }
    struct table t = {0};
    operator_header(&t);
    size_t i;
    json_t *op;
    json_array_foreach(j, i, op)
        operator_row(&t, op);
    table_print(&t);
    json_decref(j);
    return 0;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!*s || *s == '-' || *s == '+')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0 || v > (unsigned long long)INT64_MAX)
        return false;
    *out = v;
    return true;
}

static int operator_add(const struct admin *a, int argc, char **argv)
{
    /* argv: KIND REGION STORE */
    uint64_t region, store;
    if (argc != 3) {
        fprintf(stderr, "tinykv-ctl: operator add: expected transfer-leader|add-peer|remove-peer "
                        "REGION_ID STORE_ID\n");
        return EXIT_USAGE;
    }
    const char *kind = argv[0], *store_field;
    if (strcmp(kind, "transfer-leader") == 0)
        store_field = "to_store_id";
    else if (strcmp(kind, "add-peer") == 0 || strcmp(kind, "remove-peer") == 0)
        store_field = "store_id";
    else {
        fprintf(stderr, "tinykv-ctl: operator add: unknown operator %s (want transfer-leader, "
                        "add-peer or remove-peer)\n", kind);
        return EXIT_USAGE;
    }
    if (!parse_u64(argv[1], &region) || !parse_u64(argv[2], &store)) {
        fprintf(stderr, "tinykv-ctl: operator add %s: REGION_ID and STORE_ID are positive "
                        "integers\n", kind);
        return EXIT_USAGE;
    }
    char *body = fmt("{\"name\":\"%s\",\"region_id\":%" PRIu64 ",\"%s\":%" PRIu64 "}", kind,
                     region, store_field, store);
    char what[64];
    snprintf(what, sizeof(what), "operator add %s", kind);
    char *text = NULL;
    int code;
    json_t *j = call(a, "POST", "/pd/api/v1/operators", body, what, a->json ? &text : NULL, &code);
    free(body);
    if (!j)
        return code;
    if (a->json) {
        json_decref(j);
        return print_text(text);
    }
    struct table t = {0};
    operator_header(&t);
    operator_row(&t, j);
    table_print(&t);
    json_decref(j);
    return 0;
}

int tools_admin(const char *addr, bool json, bool hex, double timeout_s, int argc, char **argv)
{
    struct admin a = {.addr = addr, .json = json, .hex = hex, .timeout_s = timeout_s};
    if (argc == 2 && strcmp(argv[0], "store") == 0 && strcmp(argv[1], "list") == 0)
        return store_list(&a);
    if (argc == 2 && strcmp(argv[0], "region") == 0 && strcmp(argv[1], "list") == 0)
        return region_list(&a);
    if (argc == 2 && strcmp(argv[0], "region") == 0)
        return region_by_key(&a, argv[1]);
    if (argc == 2 && strcmp(argv[0], "operator") == 0 && strcmp(argv[1], "show") == 0)
        return operator_show(&a);
    if (argc >= 2 && strcmp(argv[0], "operator") == 0 && strcmp(argv[1], "add") == 0)
        return operator_add(&a, argc - 2, argv + 2);
    fprintf(stderr, "tinykv-ctl: expected: store list | region list | region KEY | operator show "
                    "| operator add transfer-leader|add-peer|remove-peer REGION_ID STORE_ID\n");
    return EXIT_USAGE;
}
