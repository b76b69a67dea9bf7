/* tinykv-ctl: raw and transactional get/put/delete/scan against tinykv,
 * through libtinykv: standalone against one store (--host) or routed by the
 * scheduler (--pd). It uses the library's blocking runner (one reactor
 * core): main parses, the core runs the command, main prints the answer.
 * The store/region/operator verbs talk to the scheduler's HTTP API
 * (tools_admin.c).
 * Exit: 0 ok, 1 error, 2 usage, 3 key not found, 4 outcome unknown (a
 * put/delete or commit that may or may not have been applied). */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinykv/client.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tools_private.h"

#define EXIT_ERROR 1
#define EXIT_USAGE 2
#define EXIT_NOT_FOUND 3
#define EXIT_UNKNOWN 4 /* TINYKV_EUNDETERMINED: check (read) before writing again */

static const char usage_text[] =
    "usage: tinykv-ctl [--host ADDR | --pd ADDR] [--cf CF] [--hex] [--timeout SECONDS]\n"
    "                  raw|txn VERB ARGS\n"
    "       tinykv-ctl [--pd-http ADDR] [--json] [--hex] [--timeout SECONDS]\n"
    "                  store|region|operator VERB ARGS\n"
    "\n"
    "  raw get KEY                 print the value of KEY\n"
    "  raw put KEY VALUE           store VALUE under KEY (acknowledged once durable)\n"
    "  raw delete KEY              delete KEY (deleting a missing key is fine)\n"
    "  raw scan START [--limit N]  print up to N pairs (default 10) with key >= START\n"
    "  txn get|put|delete|scan ... the same, each in its own transaction (snapshot\n"
    "                              read at a fresh timestamp; writes by two-phase commit)\n"
    "\n"
    "  store list                  the scheduler's stores: id, address, node, state,\n"
    "                              region and leader counts, sizes, last heartbeat\n"
    "  region list                 every region: range, leader's store, peers, epoch\n"
    "  region KEY                  the region holding KEY (to look up the key \"list\",\n"
    "                              write it with --hex: 6c697374)\n"
    "  operator show               the operators running now\n"
    "  operator add transfer-leader REGION_ID STORE_ID   move the region's leader there\n"
    "  operator add add-peer REGION_ID STORE_ID          add a replica on that store\n"
    "  operator add remove-peer REGION_ID STORE_ID       remove the replica on that store\n"
    "                              (refused with the scheduler's reason: unknown region or\n"
    "                              store, peer already there, two replicas on one node, ...)\n"
    "\n"
    "  --host ADDR     store address, host:port (default 127.0.0.1:20160): standalone\n"
    "  --pd ADDR       scheduler address(es), host:port[,host:port]: find each key's\n"
    "                  region and leader there, follow NotLeader/EpochNotMatch\n"
    "  --pd-http ADDR  the scheduler's HTTP API, host:port (its status-addr, default\n"
    "                  127.0.0.1:2381): store, region and operator verbs\n"
    "  --json          store/region/operator: print the scheduler's JSON document\n"
    "                  (PD's /pd/api/v1 shapes) instead of a table\n"
    "  --cf CF         raw only: column family default (the default), lock or write\n"
    "  --hex           keys and values are hex on the command line and in the output;\n"
    "                  otherwise printable bytes stand for themselves, \\\\ for a\n"
    "                  backslash and \\xHH for any other byte (in both directions)\n"
    "  --timeout SECS  deadline of the whole command, retries included (default 10)\n"
    "  -V, --version   print the version\n"
    "\n"
    "Exit status: 0 ok, 1 error (connection, gRPC status, region error, error\n"
    "string, transaction conflict; the reason goes to stderr), 2 usage, 3 key not\n"
    "found (get), 4 outcome unknown (put/delete/commit: the write may or may not\n"
    "have been applied; read before writing again).\n";

enum ctl_verb { VERB_GET, VERB_PUT, VERB_DELETE, VERB_SCAN };

static const char *const verb_names[] = {"get", "put", "delete", "scan"};

/* The command the core runs, and what came back. */
static struct ctl_cmd {
    bool txn;
    enum ctl_verb verb;
    const char *cf;
    struct tkv_slice key, value;
    uint32_t limit;
    /* results (written on the core, read by main after tinykv_run) */
    bool done;
    int rv;
    char errmsg[600];
    uint8_t *value_out;
    size_t value_len;
    struct tinykv_kv *kvs;
    size_t n_kvs;
    struct tinykv *kv;
    struct tinykv_txn *txn_handle;
} cmd;

static void copy_error(int rv)
{
    cmd.rv = rv;
    if (rv && rv != TKV_ENOTFOUND)
        snprintf(cmd.errmsg, sizeof cmd.errmsg, "%s", tinykv_errmsg(cmd.kv));
}

static void finish(int rv)
{
    cmd.done = true;
    copy_error(rv);
    tinykv_run_done(cmd.kv);
}

static void keep_value(struct tkv_slice v)
{
    cmd.value_out = malloc(v.len ? v.len : 1);
    if (cmd.value_out) {
        memcpy(cmd.value_out, v.ptr, v.len);
        cmd.value_len = v.len;
    }
}

static void keep_pairs(const struct tinykv_kv *kvs, size_t n)
{
    cmd.kvs = calloc(n ? n : 1, sizeof *cmd.kvs);
    if (!cmd.kvs)
        return;
    for (size_t i = 0; i < n; i++) {
        uint8_t *k = malloc(kvs[i].key.len + 1), *v = malloc(kvs[i].value.len + 1);
        if (!k || !v) {
            free(k);
            free(v);
            return;
        }
        memcpy(k, kvs[i].key.ptr, kvs[i].key.len);
        memcpy(v, kvs[i].value.ptr, kvs[i].value.len);
        cmd.kvs[i].key = TKV_SLICE(k, kvs[i].key.len);
        cmd.kvs[i].value = TKV_SLICE(v, kvs[i].value.len);
        cmd.n_kvs = i + 1;
    }
}

static void on_done(void *user, int rv)
{
    (void)user;
    finish(rv);
}

static void on_get(void *user, int rv, struct tkv_slice value)
{
    (void)user;
    if (rv == 0)
        keep_value(value);
    finish(rv);
}

static void on_scan(void *user, int rv, const struct tinykv_kv *kvs, size_t n)
{
    (void)user;
    if (rv == 0)
        keep_pairs(kvs, n);
    finish(rv);
}

/* Transactions: a read ends with a rollback (nothing to undo, it only
 * frees the transaction); a write commits. */
static int txn_read_rv;

static void on_txn_read_end(void *user, int rv)
{
    (void)user;
    (void)rv;
    finish(txn_read_rv);
}

static void end_read_txn(int rv)
{
    txn_read_rv = rv;
    copy_error(rv);
    if (tinykv_txn_rollback(cmd.txn_handle, on_txn_read_end, NULL) != 0)
        finish(rv);
}

static void on_txn_get(void *user, int rv, struct tkv_slice value)
{
    (void)user;
    if (rv == 0)
        keep_value(value);
    end_read_txn(rv);
}

static void on_txn_scan(void *user, int rv, const struct tinykv_kv *kvs, size_t n)
{
    (void)user;
    if (rv == 0)
        keep_pairs(kvs, n);
    end_read_txn(rv);
}

static void on_begin(void *user, int rv, struct tinykv_txn *txn)
{
    (void)user;
    if (rv) {
        finish(rv);
        return;
    }
    cmd.txn_handle = txn;
    switch (cmd.verb) {
    case VERB_GET:
        rv = tinykv_txn_get(txn, cmd.key, on_txn_get, NULL);
        break;
    case VERB_SCAN:
        rv = tinykv_txn_scan(txn, cmd.key, cmd.limit, on_txn_scan, NULL);
        break;
    case VERB_PUT:
    case VERB_DELETE:
        rv = cmd.verb == VERB_PUT ? tinykv_txn_set(txn, cmd.key, cmd.value)
                                  : tinykv_txn_delete(txn, cmd.key);
        if (rv == 0)
            rv = tinykv_txn_commit(txn, on_done, NULL);
        break;
    }
    if (rv)
        end_read_txn(rv);
}

static void run(struct tinykv *kv, void *arg)
{
    (void)arg;
    cmd.kv = kv;
    int rv;
    if (cmd.txn) {
        rv = tinykv_txn_begin(kv, on_begin, NULL);
    } else {
        switch (cmd.verb) {
        case VERB_GET:
            rv = tinykv_raw_get(kv, cmd.cf, cmd.key, on_get, NULL);
            break;
        case VERB_PUT:
            rv = tinykv_raw_put(kv, cmd.cf, cmd.key, cmd.value, on_done, NULL);
            break;
        case VERB_DELETE:
            rv = tinykv_raw_delete(kv, cmd.cf, cmd.key, on_done, NULL);
            break;
        default:
            rv = tinykv_raw_scan(kv, cmd.cf, cmd.key, cmd.limit, on_scan, NULL);
            break;
        }
    }
    if (rv)
        finish(rv);
}

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
    va_list ap;
    fputs("tinykv-ctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_ERROR;
}

static int usage_error(const char *what)
{
    fprintf(stderr, "tinykv-ctl: %s\n\n%s", what, usage_text);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},    {"pd", required_argument, NULL, 'p'},
        {"cf", required_argument, NULL, 'c'},      {"hex", no_argument, NULL, 'x'},
        {"limit", required_argument, NULL, 'l'},   {"timeout", required_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},       {"help", no_argument, NULL, 'H'},
        {"pd-http", required_argument, NULL, 'P'}, {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    const char *host = NULL, *pd = NULL, *cf = "", *pd_http = "127.0.0.1:2381";
    bool hex = false, json = false;
    unsigned long limit = 10;
    double timeout_s = 10;
    char *end;
    int c;

    while ((c = getopt_long(argc, argv, "V", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            host = optarg;
            break;
        case 'p':
            pd = optarg;
            break;
        case 'c':
            cf = optarg;
            break;
        case 'x':
            hex = true;
            break;
        case 'P':
            pd_http = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'l':
            errno = 0;
            limit = strtoul(optarg, &end, 10);
            if (errno || *end || !*optarg || optarg[0] == '-' || limit > UINT32_MAX)
                return usage_error("--limit takes an integer 0..4294967295");
            break;
        case 't':
            timeout_s = strtod(optarg, &end);
            if (*end || !(timeout_s > 0) || timeout_s > 86400)
                return usage_error("--timeout takes seconds > 0");
            break;
        case 'V':
            printf("tinykv-ctl %s\n", TKV_VERSION);
            return 0;
        case 'H':
            fputs(usage_text, stdout);
            return 0;
        default:
            return usage_error("unknown option");
        }
    }
    if (host && pd)
        return usage_error("--host and --pd exclude each other");
    int n_args = argc - optind;
    char **args = argv + optind;
    if (n_args >= 1 && (strcmp(args[0], "store") == 0 || strcmp(args[0], "region") == 0 ||
                        strcmp(args[0], "operator") == 0)) {
        if (host || *cf)
            return usage_error("--host and --cf apply to raw and txn commands only");
        return tools_admin(pd_http, json, hex, timeout_s, n_args, args);
    }
    if (json)
        return usage_error("--json applies to the store, region and operator verbs");
    if (n_args < 2 || (strcmp(args[0], "raw") != 0 && strcmp(args[0], "txn") != 0))
        return usage_error("expected: raw|txn get|put|delete|scan ... or store|region|operator ...");
    cmd.txn = strcmp(args[0], "txn") == 0;
    if (cmd.txn && *cf)
        return usage_error("--cf applies to raw commands only");

    int want_args;
    if (!strcmp(args[1], "get"))
        cmd.verb = VERB_GET, want_args = 1;
    else if (!strcmp(args[1], "put"))
        cmd.verb = VERB_PUT, want_args = 2;
    else if (!strcmp(args[1], "delete"))
        cmd.verb = VERB_DELETE, want_args = 1;
    else if (!strcmp(args[1], "scan"))
        cmd.verb = VERB_SCAN, want_args = 1;
    else
        return usage_error("unknown verb (want get, put, delete or scan)");
    if (n_args - 2 != want_args)
        return usage_error("wrong number of arguments");

    uint8_t *key = NULL, *value = NULL;
    size_t key_len = 0, value_len = 0;
    if (tools_parse_bytes(args[2], hex, &key, &key_len))
        return usage_error(hex ? "key: expected hex digits"
                               : "key: bad escape (use \\\\ or \\xHH)");
    if (want_args == 2 && tools_parse_bytes(args[3], hex, &value, &value_len)) {
        free(key);
        return usage_error(hex ? "value: expected hex digits"
                               : "value: bad escape (use \\\\ or \\xHH)");
    }
    cmd.key = TKV_SLICE(key, key_len);
    cmd.value = TKV_SLICE(value, value_len);
    cmd.cf = cf;
    cmd.limit = (uint32_t)limit;

    struct tinykv_config cfg = {
        .pd_addrs = pd,
        .store_addr = host ? host : "127.0.0.1:20160",
        .op_timeout_ms = (uint64_t)(timeout_s * 1000),
    };
    if (!pd)
        cfg.max_attempts = 4; /* one store, no other route: a few quick retries only */
    const char *where = pd ? pd : cfg.store_addr;

    /* Quiet unless something is wrong with the client itself. */
    tkv_log_set_level(TKV_LOG_LEVEL_ERROR);
    int rv = tinykv_run(&cfg, run, NULL);
    free(key);
    free(value);
    if (rv == TKV_EINVAL)
        return usage_error(pd ? "--pd: expected host:port[,host:port]" : "--host: expected host:port");
    if (rv)
        return fail("cannot start the client: %s", tinykv_strerror(rv));
    if (!cmd.done)
        return fail("%s %s: no answer from %s", args[0], verb_names[cmd.verb], where);

    int code = 0;
    if (cmd.rv == TKV_ENOTFOUND) {
        fprintf(stderr, "tinykv-ctl: key not found\n");
        code = EXIT_NOT_FOUND;
    } else if (cmd.rv) {
        fprintf(stderr, "tinykv-ctl: %s %s via %s failed: %s%s%s\n", args[0],
                verb_names[cmd.verb], where, tinykv_strerror(cmd.rv), cmd.errmsg[0] ? ": " : "",
                cmd.errmsg);
        code = cmd.rv == TINYKV_EUNDETERMINED ? EXIT_UNKNOWN : EXIT_ERROR;
    } else if (cmd.verb == VERB_GET) {
        tools_print_bytes(stdout, cmd.value_out, cmd.value_len, hex);
        putchar('\n');
    } else if (cmd.verb == VERB_SCAN) {
        for (size_t i = 0; i < cmd.n_kvs; i++) {
            tools_print_bytes(stdout, cmd.kvs[i].key.ptr, cmd.kvs[i].key.len, hex);
            putchar('\t');
            tools_print_bytes(stdout, cmd.kvs[i].value.ptr, cmd.kvs[i].value.len, hex);
            putchar('\n');
        }
    } else {
        puts("OK");
    }
    free(cmd.value_out);
    for (size_t i = 0; i < cmd.n_kvs; i++) {
        free((void *)cmd.kvs[i].key.ptr);
        free((void *)cmd.kvs[i].value.ptr);
    }
    free(cmd.kvs);
    if (fflush(stdout) != 0 && code == 0)
        code = fail("cannot write output: %s", strerror(errno));
    return code;
}
