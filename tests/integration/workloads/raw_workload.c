/* tkv-raw-workload: Raw API clients on libtinykv that record a history for
 * tkv-check-lin (tests/integration/cluster/test_cluster_multinode.py).
 *
 * --workers operations run at once on one reactor core, each worker one at
 * a time: RawGet (50%), RawPut of a value unique in the run (40%: client,
 * worker and sequence number) or RawDelete (10%) of one of --keys keys
 * "<prefix>/k<i>". With --pd the client routes through the scheduler (region
 * cache, leader following, retries under --op-timeout-ms); with --store it
 * talks to one standalone store.
 *
 * One JSON line per completed operation, the format of tkv-check-lin:
 *   {"process":P,"f":"put","key":"rw/k1","value":"c1-2-7","call":T0,"ret":T1,"type":"ok"}
 * A get that failed is "fail" (it read nothing). A put or delete that ended
 * with TINYKV_EUNDETERMINED (an attempt may have been applied: connection
 * cut after sending, deadline, the store stopped with the proposal pending;
 * libtinykv does not resend it) is "info" with "ret":null; one that failed
 * otherwise is "fail" (no attempt can have been applied). Times are CLOCK_MONOTONIC ns,
 * comparable with the harness's time.monotonic_ns(). Every line is one
 * write(2) to an O_APPEND file.
 *
 * --read-all: read every key once, one after the other, record the reads
 * and exit (the final reads of a test after its faults).
 * --load N --value-bytes B: write N keys "<prefix>/load/<i>" with values of
 * B bytes (the first bytes say which key), --workers at once, and exit; no
 * history, exit status 1 if any put failed (filler data for region splits;
 * a put whose outcome is unknown is written again, up to 5 times: the same
 * value, no other writer, so a double apply changes nothing).
 *
 * Runs until --duration-ms passed (then waits for the operations in flight)
 * or the process gets SIGTERM/SIGINT. Exit status: 0 done, 1 the handle could
 * not be made or a load put failed, 2 usage. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tinykv/client.h"
#include "tkv/err.h"
#include "tkv/reactor.h"

#define MAX_WORKERS 64
#define LINE_MAX_BYTES 1024
#define WORKLOAD_NAME "tkv-raw-workload"
#include "workload_util.h"
#define MAX_VALUE_BYTES (1u << 20)

static struct {
    const char *pd, *store, *out, *prefix;
    unsigned workers, keys, client;
    unsigned long duration_ms, think_ms, op_timeout_ms, load, value_bytes;
    bool read_all;
    uint64_t seed;
} opt = {.prefix = "rw", .workers = 4, .keys = 4, .client = 1, .duration_ms = 3000,
         .op_timeout_ms = 8000, .value_bytes = 1024, .seed = 1};

static uint64_t t_end;
static unsigned active;
static unsigned long load_next, load_failed;
static volatile sig_atomic_t stop_requested;

enum op { OP_GET, OP_PUT, OP_DELETE };

struct worker {
    struct tinykv *kv;
    unsigned id;
    unsigned long seq;
    enum op op;
    unsigned key;
    char value[64];
    uint64_t call;
    unsigned load_tries; /* --load: undetermined puts of the current key */
    struct tkv_timer think; /* the pause before the next operation */
};

static struct worker workers[MAX_WORKERS];
static char *load_value;
static void next_op(struct worker *w);

static unsigned process_of(const struct worker *w)
{
    return opt.client * 100 + w->id;
}

static struct tkv_slice key_of(unsigned i, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/k%u", opt.prefix, i);
    return TKV_SLICE(buf, (size_t)n);
}

static void worker_done(struct worker *w)
{
    if (--active == 0)
        tinykv_run_done(w->kv);
}

static void record_write(struct worker *w, int rv)
{
    char kb[128];
    key_of(w->key, kb, sizeof kb);
    const char *f = w->op == OP_PUT ? "put" : "delete";
    char value[96] = "";
    if (w->op == OP_PUT)
        snprintf(value, sizeof value, ",\"value\":\"%s\"", w->value);
    if (rv == 0)
        emit("{\"process\":%u,\"f\":\"%s\",\"key\":\"%s\"%s,\"call\":%" PRIu64 ",\"ret\":%" PRIu64
             ",\"type\":\"ok\"}",
             process_of(w), f, kb, value, w->call, now_ns());
    else if (rv == TINYKV_EUNDETERMINED || rv == TKV_ESHUTDOWN)
        /* May or may not have been applied, at any time after the call:
         * Jepsen's :info, pending forever. */
        emit("{\"process\":%u,\"f\":\"%s\",\"key\":\"%s\"%s,\"call\":%" PRIu64
             ",\"ret\":null,\"type\":\"info\",\"error\":\"%s\"}",
             process_of(w), f, kb, value, w->call, tinykv_strerror(rv));
    else
        /* libtinykv ends a write with any other error only when no attempt
         * can have been applied (it never resends one that may have been):
         * the checker drops it, and would catch it showing up. */
        emit("{\"process\":%u,\"f\":\"%s\",\"key\":\"%s\"%s,\"call\":%" PRIu64
             ",\"ret\":%" PRIu64 ",\"type\":\"fail\",\"error\":\"%s\"}",
             process_of(w), f, kb, value, w->call, now_ns(), tinykv_strerror(rv));
}

static void on_write(void *user, int rv)
{
    struct worker *w = user;
    record_write(w, rv);
    next_op(w);
}

static void on_get(void *user, int rv, struct tkv_slice value)
{
    struct worker *w = user;
    char kb[128];
    key_of(w->key, kb, sizeof kb);
    uint64_t ret = now_ns();
    if (rv == 0) {
        /* Values are this program's ASCII strings; anything else is
         * printed escaped so the checker reports a value never written. */
        char v[160];
        size_t o = 0;
        for (size_t i = 0; i < value.len && o + 8 < sizeof v; i++) {
            unsigned char c = ((const unsigned char *)value.ptr)[i];
            if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
                v[o++] = (char)c;
            else
                o += (size_t)snprintf(v + o, sizeof v - o, "\\u%04x", c);
        }
        v[o] = '\0';
        emit("{\"process\":%u,\"f\":\"get\",\"key\":\"%s\",\"value\":\"%s\",\"call\":%" PRIu64
             ",\"ret\":%" PRIu64 ",\"type\":\"ok\"}",
             process_of(w), kb, v, w->call, ret);
    } else if (rv == TKV_ENOTFOUND) {
        emit("{\"process\":%u,\"f\":\"get\",\"key\":\"%s\",\"value\":null,\"call\":%" PRIu64
             ",\"ret\":%" PRIu64 ",\"type\":\"ok\"}",
             process_of(w), kb, w->call, ret);
    } else {
        emit("{\"process\":%u,\"f\":\"get\",\"key\":\"%s\",\"call\":%" PRIu64 ",\"ret\":%" PRIu64
             ",\"type\":\"fail\",\"error\":\"%s\"}",
             process_of(w), kb, w->call, ret, tinykv_strerror(rv));
    }
    if (opt.read_all) {
        w->key++;
        if (w->key >= opt.keys) {
            worker_done(w);
            return;
        }
        w->call = now_ns();
        char kb2[128];
        int r = tinykv_raw_get(w->kv, NULL, key_of(w->key, kb2, sizeof kb2), on_get, w);
        if (r) {
            fprintf(stderr, "tkv-raw-workload: get: %s\n", tinykv_strerror(r));
            worker_done(w);
        }
        return;
    }
    next_op(w);
}

static void on_load_put(void *user, int rv);

static void load_put(struct worker *w, unsigned long i);

static void load_one(struct worker *w)
{
    if (load_next >= opt.load || stop_requested) {
        worker_done(w);
        return;
    }
    w->seq = load_next++;
    w->load_tries = 0;
    load_put(w, w->seq);
}

static void load_put(struct worker *w, unsigned long i)
{
    char kb[128];
    int kn = snprintf(kb, sizeof kb, "%s/load/%08lu", opt.prefix, i);
    int vn = snprintf(load_value, opt.value_bytes, "v%08lu", i);
    if (vn > 0 && (unsigned long)vn < opt.value_bytes)
        load_value[vn] = '.'; /* the rest stays filler */
    int rv = tinykv_raw_put(w->kv, NULL, TKV_SLICE(kb, (size_t)kn), TKV_SLICE(load_value, opt.value_bytes),
                            on_load_put, w);
    if (rv) {
        fprintf(stderr, "tkv-raw-workload: load put: %s\n", tinykv_strerror(rv));
        load_failed++;
        worker_done(w);
    }
}

static void on_load_put(void *user, int rv)
{
    struct worker *w = user;
    if (rv == TINYKV_EUNDETERMINED && w->load_tries < 5) {
        /* Outcome unknown: writing the same value again is harmless here
         * (only this worker writes the key and nobody checks its history). */
        w->load_tries++;
        load_put(w, w->seq);
        return;
    }
    if (rv) {
        fprintf(stderr, "tkv-raw-workload: load put failed: %s (%s)\n", tinykv_strerror(rv),
                tinykv_errmsg(w->kv));
        load_failed++;
    }
    load_one(w);
}

static void start_op(struct worker *w);

static void on_think(struct tkv_timer *t)
{
    start_op(t->data);
}

static void next_op(struct worker *w)
{
    if (stop_requested || now_ns() >= t_end) {
        worker_done(w);
        return;
    }
    if (opt.think_ms) {
        /* 0..2x think: paces the run so the history stays checkable. */
        tkv_timer_start(tkv_reactor_self(), &w->think, rnd(opt.think_ms * 2000000ull) + 1);
        return;
    }
    start_op(w);
}

static void start_op(struct worker *w)
{
    char kb[128];
    w->key = (unsigned)rnd(opt.keys);
    struct tkv_slice key = key_of(w->key, kb, sizeof kb);
    uint64_t r = rnd(10);
    w->call = now_ns();
    int rv;
    if (r < 5) {
        w->op = OP_GET;
        rv = tinykv_raw_get(w->kv, NULL, key, on_get, w);
    } else if (r < 9) {
        w->op = OP_PUT;
        w->seq++;
        int n = snprintf(w->value, sizeof w->value, "c%u-%u-%lu", opt.client, w->id, w->seq);
        rv = tinykv_raw_put(w->kv, NULL, key, TKV_SLICE(w->value, (size_t)n), on_write, w);
    } else {
        w->op = OP_DELETE;
        rv = tinykv_raw_delete(w->kv, NULL, key, on_write, w);
    }
    if (rv) {
        /* Refused before anything was sent (a bad argument): a bug here. */
        fprintf(stderr, "tkv-raw-workload: cannot start an operation: %s\n", tinykv_strerror(rv));
        worker_done(w);
    }
}

static void run(struct tinykv *kv, void *arg)
{
    (void)arg;
    unsigned n = opt.read_all ? 1 : opt.workers;
    active = n;
    for (unsigned i = 0; i < n; i++) {
        struct worker *w = &workers[i];
        w->kv = kv;
        w->id = i;
        tkv_timer_init(&w->think, on_think, w);
        if (opt.load) {
            load_one(w);
        } else if (opt.read_all) {
            char kb[128];
            w->key = 0;
            w->call = now_ns();
            int rv = tinykv_raw_get(kv, NULL, key_of(0, kb, sizeof kb), on_get, w);
            if (rv) {
                fprintf(stderr, "tkv-raw-workload: get: %s\n", tinykv_strerror(rv));
                worker_done(w);
            }
        } else {
            next_op(w);
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: tkv-raw-workload (--pd HOST:PORT | --store HOST:PORT) [--out FILE]\n"
                    "  [--workers N] [--keys N] [--prefix P] [--duration-ms MS] [--think-ms MS]\n"
                    "  [--client ID] [--seed S] [--op-timeout-ms MS] [--read-all]\n"
                    "  [--load N [--value-bytes B]]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"pd", required_argument, NULL, 'P'},          {"store", required_argument, NULL, 's'},
        {"out", required_argument, NULL, 'o'},         {"workers", required_argument, NULL, 'n'},
        {"keys", required_argument, NULL, 'k'},        {"prefix", required_argument, NULL, 'p'},
        {"duration-ms", required_argument, NULL, 'd'}, {"think-ms", required_argument, NULL, 't'},
        {"client", required_argument, NULL, 'c'},      {"seed", required_argument, NULL, 'r'},
        {"op-timeout-ms", required_argument, NULL, 'T'}, {"read-all", no_argument, NULL, 'R'},
        {"load", required_argument, NULL, 'L'},        {"value-bytes", required_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'P': opt.pd = optarg; break;
        case 's': opt.store = optarg; break;
        case 'o': opt.out = optarg; break;
        case 'n': opt.workers = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'k': opt.keys = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'p': opt.prefix = optarg; break;
        case 'd': opt.duration_ms = strtoul(optarg, NULL, 10); break;
        case 't': opt.think_ms = strtoul(optarg, NULL, 10); break;
        case 'c': opt.client = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': opt.seed = strtoull(optarg, NULL, 10); break;
        case 'T': opt.op_timeout_ms = strtoul(optarg, NULL, 10); break;
        case 'R': opt.read_all = true; break;
        case 'L': opt.load = strtoul(optarg, NULL, 10); break;
        case 'V': opt.value_bytes = strtoul(optarg, NULL, 10); break;
        default: return usage();
        }
    }
    if ((!opt.pd == !opt.store) || (!opt.out && !opt.load) || !opt.workers || opt.workers > MAX_WORKERS ||
        !opt.keys || opt.client == 0 || opt.client > 40000000 || strlen(opt.prefix) > 64 ||
        opt.value_bytes < 16 || opt.value_bytes > MAX_VALUE_BYTES || opt.think_ms > 1000)
        return usage();
    rng ^= opt.seed * 0x9e3779b97f4a7c15ull + opt.client;
    if (!rng)
        rng = 1;
    if (opt.out) {
        out_fd = open(opt.out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (out_fd < 0) {
            fprintf(stderr, "tkv-raw-workload: %s: %s\n", opt.out, strerror(errno));
            return 2;
        }
    }
    if (opt.load) {
        load_value = malloc(opt.value_bytes);
        if (!load_value)
            return 1;
        memset(load_value, 'x', opt.value_bytes);
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    t_end = now_ns() + opt.duration_ms * 1000000ull;
    struct tinykv_config cfg = {.pd_addrs = opt.pd,
                                .store_addr = opt.store,
                                .op_timeout_ms = opt.op_timeout_ms,
                                .rpc_timeout_ms = opt.op_timeout_ms / 4 ? opt.op_timeout_ms / 4 : 1};
    int rv = tinykv_run(&cfg, run, NULL);
    if (out_fd >= 0)
        close(out_fd);
    free(load_value);
    if (rv) {
        fprintf(stderr, "tkv-raw-workload: %s\n", tinykv_strerror(rv));
        return 1;
    }
    if (opt.load && load_failed) {
        fprintf(stderr, "tkv-raw-workload: %lu of %lu load puts failed\n", load_failed, opt.load);
        return 1;
    }
    return 0;
}
