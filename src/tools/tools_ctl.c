/* tinykv-ctl: raw get/put/delete/scan against one tinykv-server over gRPC.
 * It runs the project's own rpc client on a single reactor core (no second
 * HTTP/2 stack): main builds the request, the core makes one unary call,
 * main prints the answer. Exit: 0 ok, 1 error, 2 usage, 3 key not found. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvrpcpb.pb.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/pb.h"
#include "tkv/log.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"
#include "tools_private.h"

#define EXIT_ERROR 1
#define EXIT_USAGE 2
#define EXIT_NOT_FOUND 3

static const char usage_text[] =
    "usage: tinykv-ctl [--host ADDR] [--cf CF] [--hex] [--timeout SECONDS] raw VERB ARGS\n"
    "\n"
    "  raw get KEY                 print the value of KEY\n"
    "  raw put KEY VALUE           store VALUE under KEY (acknowledged once durable)\n"
    "  raw delete KEY              delete KEY (deleting a missing key is fine)\n"
    "  raw scan START [--limit N]  print up to N pairs (default 10) with key >= START\n"
    "\n"
    "  --host ADDR     store address, host:port (default 127.0.0.1:20160)\n"
    "  --cf CF         column family: default (the default), lock or write\n"
    "  --hex           keys and values are hex on the command line and in the output;\n"
    "                  otherwise printable bytes stand for themselves, \\\\ for a\n"
    "                  backslash and \\xHH for any other byte (in both directions)\n"
    "  --timeout SECS  gRPC deadline (default 10)\n"
    "  -V, --version   print the version\n"
    "\n"
    "Exit status: 0 ok, 1 error (connection, gRPC status, region error, error\n"
    "string; the reason goes to stderr), 2 usage, 3 key not found (raw get).\n";

/* The one call the core makes, and what came back. */
static struct ctl_call {
    char host[256];
    uint16_t port;
    const char *path;
    struct tkv_slice req; /* encoded request, in main's arena */
    uint64_t timeout_ns;
    /* results, written on the core, read by main after the group joined */
    bool done;
    int connect_rv;
    enum tkv_grpc_status status;
    char message[512];
    uint8_t *resp;
    size_t resp_len;
    struct tkv_rpc_client *client;
    struct tkv_timer stop_timer;
} call;

/* main publishes the group only after tkv_reactor_group_start returned,
 * which can be after the core already finished its call. */
static _Atomic(struct tkv_reactor_group *) the_group;

static void stop_group(struct tkv_timer *t)
{
    struct tkv_reactor_group *g = atomic_load(&the_group);
    if (g)
        tkv_reactor_group_stop(g);
    else
        tkv_timer_start(tkv_reactor_self(), t, 1000000); /* retry in 1 ms */
}

static void finish_task(void *arg)
{
    (void)arg;
    if (call.client) {
        tkv_rpc_client_close(call.client);
        call.client = NULL;
    }
    tkv_timer_init(&call.stop_timer, stop_group, NULL);
    stop_group(&call.stop_timer);
}

static void on_reply(void *user, enum tkv_grpc_status status, const char *message,
                     struct tkv_slice resp)
{
    (void)user;
    call.done = true;
    call.status = status;
    snprintf(call.message, sizeof(call.message), "%s", message ? message : "");
    if (status == TKV_GRPC_OK) {
        call.resp = malloc(resp.len ? resp.len : 1);
        if (call.resp) {
            memcpy(call.resp, resp.ptr, resp.len);
            call.resp_len = resp.len;
        }
    }
    /* Close outside the client's own callback. */
    tkv_reactor_defer(tkv_reactor_self(), finish_task, NULL);
}

static int core_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)core;
    (void)arg;
    int rv = tkv_rpc_client_connect(r, call.host, call.port, NULL, &call.client);
    if (rv == 0)
        rv = tkv_rpc_client_unary(call.client, call.path, call.req.ptr, call.req.len,
                                  call.timeout_ns, on_reply, NULL);
    if (rv) {
        call.connect_rv = rv;
        tkv_reactor_defer(r, finish_task, NULL);
    }
    return 0;
}

static void core_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)r;
    (void)core;
    (void)arg;
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

enum ctl_verb { VERB_GET, VERB_PUT, VERB_DELETE, VERB_SCAN };

static const char *method_name(enum ctl_verb kind)
{
    static const char *names[] = {"RawGet", "RawPut", "RawDelete", "RawScan"};
    return names[kind];
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},    {"cf", required_argument, NULL, 'c'},
        {"hex", no_argument, NULL, 'x'},           {"limit", required_argument, NULL, 'l'},
        {"timeout", required_argument, NULL, 't'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'H'},          {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1:20160", *cf = "";
    bool hex = false;
    unsigned long limit = 10;
    double timeout_s = 10;
    char *end;
    int c;

    while ((c = getopt_long(argc, argv, "V", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            host = optarg;
            break;
        case 'c':
            cf = optarg;
            break;
        case 'x':
            hex = true;
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
    int n_args = argc - optind;
    char **args = argv + optind;
    if (n_args < 2 || strcmp(args[0], "raw") != 0)
        return usage_error("expected: raw get|put|delete|scan ...");

    enum ctl_verb kind;
    int want_args;
    if (!strcmp(args[1], "get"))
        kind = VERB_GET, want_args = 1;
    else if (!strcmp(args[1], "put"))
        kind = VERB_PUT, want_args = 2;
    else if (!strcmp(args[1], "delete"))
        kind = VERB_DELETE, want_args = 1;
    else if (!strcmp(args[1], "scan"))
        kind = VERB_SCAN, want_args = 1;
    else
        return usage_error("unknown raw verb (want get, put, delete or scan)");
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

    if (tkv_reactor_parse_hostport(host, call.host, sizeof(call.host), &call.port) ||
        call.port == 0) {
        free(key);
        free(value);
        return usage_error("--host: expected host:port");
    }
    if (call.host[0] == '\0')
        snprintf(call.host, sizeof(call.host), "127.0.0.1");
    static char path[64];
    snprintf(path, sizeof(path), "/tinykvpb.TinyKv/%s", method_name(kind));
    call.path = path;
    call.timeout_ns = (uint64_t)(timeout_s * 1e9);
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);
    struct tkv_slice k = TKV_SLICE(key, key_len), v = TKV_SLICE(value, value_len);
    struct tkv_slice cfs = tkv_pb_str(cf);
    int erv;
    if (kind == VERB_GET) {
        kvrpcpb_RawGetRequest r = {.key = k, .cf = cfs};
        erv = tkv_pb_encode_arena(kvrpcpb_RawGetRequest_fields, &r, &arena, 0, &call.req);
    } else if (kind == VERB_PUT) {
        kvrpcpb_RawPutRequest r = {.key = k, .value = v, .cf = cfs};
        erv = tkv_pb_encode_arena(kvrpcpb_RawPutRequest_fields, &r, &arena, 0, &call.req);
    } else if (kind == VERB_DELETE) {
        kvrpcpb_RawDeleteRequest r = {.key = k, .cf = cfs};
        erv = tkv_pb_encode_arena(kvrpcpb_RawDeleteRequest_fields, &r, &arena, 0, &call.req);
    } else {
        kvrpcpb_RawScanRequest r = {.start_key = k, .limit = (uint32_t)limit, .cf = cfs};
        erv = tkv_pb_encode_arena(kvrpcpb_RawScanRequest_fields, &r, &arena, 0, &call.req);
    }
    if (erv) {
        free(key);
        free(value);
        return fail("cannot encode the request: %s", tkv_strerror(erv));
    }
    free(key);
    free(value);

    /* Quiet unless something is wrong with the client itself. */
    tkv_log_set_level(TKV_LOG_LEVEL_ERROR);
    struct tkv_reactor_config rcfg = {.n_cores = 1, .pin = false};
    struct tkv_reactor_group *group = NULL;
    int rv = tkv_reactor_group_start(&rcfg, core_init, core_fini, NULL, &group);
    if (rv)
        return fail("cannot start the client reactor: %s", tkv_strerror(rv));
    atomic_store(&the_group, group);
    rv = tkv_reactor_group_wait(group);
    if (rv)
        return fail("client reactor failed: %s", tkv_strerror(rv));
    if (call.connect_rv)
        return fail("cannot call %s: %s", host, tkv_strerror(call.connect_rv));
    if (!call.done)
        return fail("%s: no reply from %s", method_name(kind), host);
    if (call.status != TKV_GRPC_OK) {
        fprintf(stderr, "tinykv-ctl: %s on %s failed: %s%s%s\n", method_name(kind), host,
                tkv_grpc_status_name((int)call.status), call.message[0] ? ": " : "", call.message);
        return EXIT_ERROR;
    }

    /* The four responses share region_error #1 and error #2. */
    union {
        kvrpcpb_RawGetResponse get;
        kvrpcpb_RawPutResponse put;
        kvrpcpb_RawDeleteResponse del;
        kvrpcpb_RawScanResponse scan;
    } resp;
    static const pb_msgdesc_t *const resp_fields[] = {
        kvrpcpb_RawGetResponse_fields, kvrpcpb_RawPutResponse_fields,
        kvrpcpb_RawDeleteResponse_fields, kvrpcpb_RawScanResponse_fields};
    const char *why = NULL;
    int code = 0;
    if (tkv_pb_decode_ex(resp_fields[kind], &resp, call.resp, call.resp_len, &arena, &why)) {
        code = fail("cannot decode the %s response: %s", method_name(kind), why ? why : "?");
        goto out;
    }
    bool has_region_error = kind == VERB_GET      ? resp.get.has_region_error
                            : kind == VERB_PUT    ? resp.put.has_region_error
                            : kind == VERB_DELETE ? resp.del.has_region_error
                                                  : resp.scan.has_region_error;
    errorpb_Error *region_error = kind == VERB_GET      ? &resp.get.region_error
                                  : kind == VERB_PUT    ? &resp.put.region_error
                                  : kind == VERB_DELETE ? &resp.del.region_error
                                                        : &resp.scan.region_error;
    struct tkv_slice error = kind == VERB_GET      ? resp.get.error
                             : kind == VERB_PUT    ? resp.put.error
                             : kind == VERB_DELETE ? resp.del.error
                                                   : resp.scan.error;
    if (has_region_error) {
        fprintf(stderr, "tinykv-ctl: %s: region error: %.*s\n", method_name(kind),
                (int)region_error->message.len, (const char *)region_error->message.ptr);
        code = EXIT_ERROR;
    } else if (error.len) {
        fprintf(stderr, "tinykv-ctl: %s: %.*s\n", method_name(kind), (int)error.len,
                (const char *)error.ptr);
        code = EXIT_ERROR;
    } else if (kind == VERB_GET) {
        if (resp.get.not_found) {
            fprintf(stderr, "tinykv-ctl: key not found\n");
            code = EXIT_NOT_FOUND;
        } else {
            tools_print_bytes(stdout, resp.get.value.ptr, resp.get.value.len, hex);
            putchar('\n');
        }
    } else if (kind == VERB_SCAN) {
        for (size_t i = 0; i < resp.scan.kvs.n; i++) {
            const kvrpcpb_KvPair *kv = &resp.scan.kvs.items[i];
            tools_print_bytes(stdout, kv->key.ptr, kv->key.len, hex);
            putchar('\t');
            tools_print_bytes(stdout, kv->value.ptr, kv->value.len, hex);
            putchar('\n');
        }
    } else {
        puts("OK");
    }
out:
    tkv_arena_close(&arena);
    free(call.resp);
    if (fflush(stdout) != 0 && code == 0)
        code = fail("cannot write output: %s", strerror(errno));
    return code;
}
