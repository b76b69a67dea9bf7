/* tkv-check-si: check a transactional history (JSON lines) with
 * tests/lib/sicheck, so integration tests in any language can record a
 * history and check it.
 *
 * List-append mode (default), one transaction per line, micro-ops as Elle
 * writes them:
 *   {"process": 1, "type": "ok", "call": 100, "ret": 180,
 *    "mops": [["r", "x", [1, 2]], ["append", "x", 3], ["r", "y", null]]}
 *   type   ok (committed), fail (aborted: surely no effect), info (unknown)
 *   r      the list read (null or [] = empty); append: a value unique per key
 *   call, ret  begin and end times (integers; ret null when unknown)
 *
 * Bank mode (--bank N_ACCOUNTS:TOTAL): lines with "type": "ok" and
 * "balances": [int, ...] are snapshot reads of every account; other lines
 * (the transfers) are ignored.
 *
 * Options: --realtime (lost-write check; see sicheck.h), --allow-negative
 * (bank), --examples N.
 * Exit status: 0 holds, 1 violated, 3 bad usage or input. Report on stdout. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sicheck.h"

static void usage(void)
{
    fprintf(stderr, "usage: tkv-check-si [--realtime] [--examples N] [--bank N_ACCOUNTS:TOTAL [--allow-negative]] "
                    "[HISTORY.jsonl | -]\n");
}

static int bad_line(size_t line, const char *why)
{
    fprintf(stderr, "tkv-check-si: line %zu: %s\n", line, why);
    return 3;
}

static int parse_txn(struct si_history *h, json_t *t, size_t line)
{
    if (!json_is_object(t))
        return bad_line(line, "not a JSON object");
    const char *type = json_string_value(json_object_get(t, "type"));
    json_t *mops = json_object_get(t, "mops"), *call = json_object_get(t, "call"), *ret = json_object_get(t, "ret");
    json_t *proc = json_object_get(t, "process");
    if (!type || !json_is_array(mops))
        return bad_line(line, "needs type and mops (array)");
    enum si_status st;
    if (!strcmp(type, "ok"))
        st = SI_COMMITTED;
    else if (!strcmp(type, "fail"))
        st = SI_ABORTED;
    else if (!strcmp(type, "info"))
        st = SI_UNKNOWN;
    else
        return bad_line(line, "type must be ok, fail or info");
    json_int_t c = json_is_integer(call) ? json_integer_value(call) : 0;
    if (c < 0 || (json_is_integer(ret) && json_integer_value(ret) < 0))
        return bad_line(line, "negative time");
    size_t id = si_txn_begin(h, json_is_integer(proc) ? (uint32_t)json_integer_value(proc) : 0, (uint64_t)c);
    size_t i;
    json_t *m;
    uint64_t *vals = NULL;
    size_t cap = 0;
    json_array_foreach(mops, i, m)
    {
        const char *f = json_string_value(json_array_get(m, 0));
        json_t *key = json_array_get(m, 1), *arg = json_array_get(m, 2);
        if (!json_is_array(m) || !f || !json_is_string(key)) {
            free(vals);
            return bad_line(line, "a micro-op is [f, key, arg] with f r or append and key a string");
        }
        if (!strcmp(f, "append")) {
            if (!json_is_integer(arg) || json_integer_value(arg) < 0) {
                free(vals);
                return bad_line(line, "append needs a non-negative integer");
            }
            si_txn_append(h, id, json_string_value(key), json_string_length(key), (uint64_t)json_integer_value(arg));
        } else if (!strcmp(f, "r")) {
            size_t n = json_is_array(arg) ? json_array_size(arg) : 0;
            if (!json_is_array(arg) && !json_is_null(arg)) {
                free(vals);
                return bad_line(line, "r needs a list of integers or null");
            }
            if (n > cap) {
                cap = n;
                vals = realloc(vals, cap * sizeof(uint64_t));
                if (!vals)
                    abort();
            }
            for (size_t j = 0; j < n; j++) {
                json_t *v = json_array_get(arg, j);
                if (!json_is_integer(v) || json_integer_value(v) < 0) {
                    free(vals);
                    return bad_line(line, "a read list holds non-negative integers");
                }
                vals[j] = (uint64_t)json_integer_value(v);
            }
            si_txn_read(h, id, json_string_value(key), json_string_length(key), vals, n);
        } else {
            free(vals);
            return bad_line(line, "micro-op must be r or append");
        }
    }
    free(vals);
    if (st != SI_UNKNOWN)
        si_txn_end(h, id, st, json_is_integer(ret) ? (uint64_t)json_integer_value(ret) : (uint64_t)c);
    return 0;
}

static int parse_bank(struct si_bank *b, json_t *t, size_t line)
{
    if (!json_is_object(t))
        return bad_line(line, "not a JSON object");
    const char *type = json_string_value(json_object_get(t, "type"));
    json_t *bal = json_object_get(t, "balances");
    if (!type || strcmp(type, "ok") || !bal)
        return 0;
    if (!json_is_array(bal))
        return bad_line(line, "balances must be an array of integers");
    size_t n = json_array_size(bal);
    int64_t *v = calloc(n ? n : 1, sizeof(int64_t));
    if (!v)
        abort();
    for (size_t j = 0; j < n; j++) {
        json_t *x = json_array_get(bal, j);
        if (!json_is_integer(x)) {
            free(v);
            return bad_line(line, "balances must be an array of integers");
        }
        v[j] = json_integer_value(x);
    }
    json_t *proc = json_object_get(t, "process"), *time = json_object_get(t, "call");
    si_bank_read(b, json_is_integer(proc) ? (uint32_t)json_integer_value(proc) : 0,
                 json_is_integer(time) ? (uint64_t)json_integer_value(time) : 0, v, n);
    free(v);
    return 0;
}

int main(int argc, char **argv)
{
    struct si_options opts = {0};
    const char *path = "-";
    bool bank = false, allow_negative = false;
    unsigned long long n_accounts = 0;
    long long total = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--realtime")) {
            opts.realtime = true;
        } else if (!strcmp(argv[i], "--allow-negative")) {
            allow_negative = true;
        } else if (!strcmp(argv[i], "--examples") && i + 1 < argc) {
            opts.max_examples = strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--bank") && i + 1 < argc) {
            if (sscanf(argv[++i], "%llu:%lld", &n_accounts, &total) != 2 || !n_accounts) {
                usage();
                return 3;
            }
            bank = true;
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
        fprintf(stderr, "tkv-check-si: %s: %s\n", path, strerror(errno));
        return 3;
    }
    struct si_history *h = bank ? NULL : si_history_new();
    struct si_bank *b = bank ? si_bank_new((size_t)n_accounts, total, !allow_negative) : NULL;
    char *buf = NULL;
    size_t cap = 0, line = 0;
    int rc = 0;
    while (getline(&buf, &cap, in) >= 0) {
        line++;
        if (strspn(buf, " \t\r\n") == strlen(buf))
            continue;
        json_error_t err;
        json_t *t = json_loads(buf, 0, &err);
        if (!t) {
            fprintf(stderr, "tkv-check-si: line %zu: %s\n", line, err.text);
            rc = 3;
            break;
        }
        rc = bank ? parse_bank(b, t, line) : parse_txn(h, t, line);
        json_decref(t);
        if (rc)
            break;
    }
    free(buf);
    if (in != stdin)
        fclose(in);
    if (rc == 0) {
        if (bank) {
            struct si_bank_result r;
            bool ok = si_bank_check(b, opts.max_examples, &r);
            fputs(r.report, stdout);
            si_bank_result_free(&r);
            rc = ok ? 0 : 1;
        } else {
            struct si_result r;
            bool ok = si_check_append(h, &opts, &r);
            fputs(r.report, stdout);
            si_result_free(&r);
            rc = ok ? 0 : 1;
        }
    }
    si_history_free(h);
    si_bank_free(b);
    return rc;
}
