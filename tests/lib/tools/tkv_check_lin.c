/* tkv-check-lin: check a key-value history (JSON lines) for linearizability
 * with tests/lib/lincheck, so integration tests in any language can record
 * a history and check it.
 *
 * One operation per line:
 *   {"process": 3, "f": "put", "key": "k1", "value": "v7", "call": 1200, "ret": 1350, "type": "ok"}
 *   f      get | put | delete | append
 *   value  put/append: the value written; get: the value read, null = not found
 *   call   invocation time (integer, any monotonic unit)
 *   ret    completion time, or null / absent when the outcome is unknown
 *   type   ok (completed), fail (surely did not take effect),
 *          info (outcome unknown: timeout, connection lost, server killed)
 * Keys and values are JSON strings compared as their UTF-8 bytes.
 *
 * Exit status: 0 linearizable, 1 not linearizable, 2 unknown (budget
 * exhausted), 3 bad usage or input. The report goes to stdout. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

static void usage(void)
{
    fprintf(stderr, "usage: tkv-check-lin [--budget STEPS_PER_KEY] [HISTORY.jsonl | -]\n");
}

static int bad_line(size_t line, const char *why)
{
    fprintf(stderr, "tkv-check-lin: line %zu: %s\n", line, why);
    return 3;
}

static int parse_line(struct lc_history *h, json_t *op, size_t line)
{
    if (!json_is_object(op))
        return bad_line(line, "not a JSON object");
    const char *f = json_string_value(json_object_get(op, "f"));
    json_t *key = json_object_get(op, "key"), *value = json_object_get(op, "value");
    json_t *call = json_object_get(op, "call"), *ret = json_object_get(op, "ret");
    const char *type = json_string_value(json_object_get(op, "type"));
    json_t *proc = json_object_get(op, "process");
    if (!f || !json_is_string(key) || !json_is_integer(call) || !type)
        return bad_line(line, "needs f, key (string), call (integer) and type");
    if (json_integer_value(call) < 0 || (json_is_integer(ret) && json_integer_value(ret) < 0))
        return bad_line(line, "negative time");
    enum lc_kind kind;
    if (!strcmp(f, "get"))
        kind = LC_GET;
    else if (!strcmp(f, "put"))
        kind = LC_PUT;
    else if (!strcmp(f, "delete"))
        kind = LC_DELETE;
    else if (!strcmp(f, "append"))
        kind = LC_APPEND;
    else
        return bad_line(line, "f must be get, put, delete or append");
    bool ok = !strcmp(type, "ok"), fail = !strcmp(type, "fail"), info = !strcmp(type, "info");
    if (!ok && !fail && !info)
        return bad_line(line, "type must be ok, fail or info");
    if ((kind == LC_PUT || kind == LC_APPEND) && !json_is_string(value))
        return bad_line(line, "put/append needs a string value");
    if (ok && !json_is_integer(ret))
        return bad_line(line, "type ok needs an integer ret");
    if (kind == LC_GET && ok && !json_is_string(value) && !json_is_null(value))
        return bad_line(line, "a completed get needs value: string or null (not found)");
    uint32_t client = json_is_integer(proc) ? (uint32_t)json_integer_value(proc) : 0;
    const char *wv = kind == LC_PUT || kind == LC_APPEND ? json_string_value(value) : NULL;
    size_t wl = wv ? json_string_length(value) : 0;
    size_t id = lc_invoke(h, client, kind, json_string_value(key), json_string_length(key), wv, wl,
                          (uint64_t)json_integer_value(call));
    if (fail) {
        lc_complete_failed(h, id);
    } else if (info) {
        lc_complete_unknown(h, id);
    } else if (kind == LC_GET) {
        bool found = json_is_string(value);
        lc_complete_get(h, id, (uint64_t)json_integer_value(ret), found, found ? json_string_value(value) : NULL,
                        found ? json_string_length(value) : 0);
    } else {
        lc_complete_ok(h, id, (uint64_t)json_integer_value(ret));
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct lc_options opts = {0};
    const char *path = "-";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--budget") && i + 1 < argc) {
            char *end;
            errno = 0;
            opts.max_steps_per_key = strtoull(argv[++i], &end, 10);
            if (errno || *end || !opts.max_steps_per_key) {
                usage();
                return 3;
            }
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            usage();
            return 3;
        } else {
            path = argv[i];
        }
    }
    FILE *in = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!in) {
        fprintf(stderr, "tkv-check-lin: %s: %s\n", path, strerror(errno));
        return 3;
    }
    struct lc_history *h = lc_history_new();
    char *buf = NULL;
    size_t cap = 0, line = 0;
    int rc = 0;
    while (getline(&buf, &cap, in) >= 0) {
        line++;
        if (strspn(buf, " \t\r\n") == strlen(buf))
            continue;
        json_error_t err;
        json_t *op = json_loads(buf, JSON_ALLOW_NUL, &err);
        if (!op) {
            fprintf(stderr, "tkv-check-lin: line %zu: %s\n", line, err.text);
            rc = 3;
            break;
        }
        rc = parse_line(h, op, line);
        json_decref(op);
        if (rc)
            break;
    }
    free(buf);
    if (in != stdin)
        fclose(in);
    if (rc == 0) {
        struct lc_result res;
        enum lc_verdict v = lc_check(h, &opts, &res);
        fputs(res.report, stdout);
        lc_result_free(&res);
        rc = v == LC_LINEARIZABLE ? 0 : v == LC_NOT_LINEARIZABLE ? 1 : 2;
    }
    lc_history_free(h);
    return rc;
}
