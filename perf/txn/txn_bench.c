/* tkv-txn-bench: the storage side of a one-key transaction against a raw
 * put, in one process, without RPCs or the network: what src/txn and
 * src/engine cost per operation, the part of perf/txn_compare.sh's ratio
 * those modules own. Loads K raw keys into the default CF (as tinykv-bench's
 * load does), then for R rounds alternates
 *   raw:  one engine write of one put (a group commit of one request);
 *   txn:  KvPrewrite (snapshot, tkv_txn_kv_prewrite, engine write of its
 *         write list) then KvCommit (the same with tkv_txn_kv_commit), the
 *         two commands the standalone server runs for a one-key transaction;
 * on uniformly random keys, and prints the process CPU per operation
 * (CLOCK_PROCESS_CPUTIME_ID: WiredTiger's eviction and checkpoint threads
 * included), the medians and the txn / raw ratio.
 *   tkv-txn-bench [--sync 0|1] [--keys K] [--ops N] [--rounds R] [--value B]
 *                 [--dir PATH]   (PATH is created and removed)
 * --sync 0 (default): no log, so no fsync; the commit cost then is CPU only
 * and the numbers are far less noisy on a shared machine than the server's. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvrpcpb.pb.h"
#include "tkv/arena.h"
#include "tkv/engine.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/txn.h"

static struct {
    bool sync;
    long keys, ops;
    int rounds;
    size_t value;
    const char *dir;
} O = {false, 100000, 20000, 5, 100, "/tmp/tkv-txn-bench"};

static struct tkv_engine *E;
static struct tkv_engine_session *S;
static struct tkv_engine_batch B;
static uint8_t *value;
static uint64_t rng = 88172645463325252ull;
static tkv_ts next_ts = 1000;

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(int rv, const char *what)
{
    if (rv != 0) {
        fprintf(stderr, "tkv-txn-bench: %s: %s\n", what, tkv_strerror(rv));
        exit(1);
    }
}

/* tinykv-bench's key shape, so the B-trees look like the server's. */
static size_t random_key(char *k, size_t cap)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (size_t)snprintf(k, cap, "key%012llu", (unsigned long long)(rng % (uint64_t)O.keys));
}

static void raw_put(void)
{
    char k[32];
    size_t n = random_key(k, sizeof(k));
    tkv_engine_batch_clear(&B);
    check(tkv_engine_batch_put(&B, TKV_CF_DEFAULT, TKV_SLICE(k, n), TKV_SLICE(value, O.value)),
          "batch put");
    check(tkv_engine_write(S, &B), "raw write");
}

/* One command as the server's txn core runs it: a snapshot, the pure
 * command, its write list applied as one engine write. */
static void apply(struct tkv_arena *arena, const struct tkv_txn_writes *w)
{
    tkv_engine_batch_clear(&B);
    check(tkv_txn_writes_to_batch(w, &B), "write list");
    check(tkv_engine_write(S, &B), "txn write");
    tkv_arena_reset(arena);
}

static void one_key_txn(struct tkv_arena *arena)
{
    char k[32];
    size_t n = random_key(k, sizeof(k));
    struct tkv_slice key = TKV_SLICE(k, n);
    struct tkv_engine_snap *snap;
    struct tkv_txn_writes w;
    tkv_ts start = next_ts++, commit = next_ts++;

    kvrpcpb_Mutation m = {.op = kvrpcpb_Op_Put, .key = key, .value = TKV_SLICE(value, O.value)};
    kvrpcpb_PrewriteRequest pw = {.primary_lock = key, .start_version = start, .lock_ttl = 3000};
    pw.mutations.items = &m;
    pw.mutations.n = 1;
    kvrpcpb_PrewriteResponse pr;
    check(tkv_engine_snap_open(S, &snap), "snapshot");
    struct tkv_txn_ctx c = {.snap = snap, .arena = arena};
    check(tkv_txn_kv_prewrite(&c, &pw, &pr, &w), "prewrite");
    tkv_engine_snap_close(snap);
    if (pr.errors.n) {
        fprintf(stderr, "tkv-txn-bench: prewrite answered a KeyError\n");
        exit(1);
    }
    apply(arena, &w);

    kvrpcpb_CommitRequest cm = {.start_version = start, .commit_version = commit};
    cm.keys.items = &key;
    cm.keys.n = 1;
    kvrpcpb_CommitResponse cr;
    check(tkv_engine_snap_open(S, &snap), "snapshot");
    c = (struct tkv_txn_ctx){.snap = snap, .arena = arena};
    check(tkv_txn_kv_commit(&c, &cm, &cr, &w), "commit");
    tkv_engine_snap_close(snap);
    if (cr.has_error || w.n == 0) {
        fprintf(stderr, "tkv-txn-bench: commit did not commit\n");
        exit(1);
    }
    apply(arena, &w);
}

static int rm_cb(const char *p, const struct stat *st, int f, struct FTW *w)
{
    (void)st;
    (void)f;
    (void)w;
    return remove(p);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--sync"))
            O.sync = atoi(argv[i + 1]) != 0;
        else if (!strcmp(argv[i], "--keys"))
            O.keys = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--ops"))
            O.ops = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds"))
            O.rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--value"))
            O.value = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir"))
            O.dir = argv[i + 1];
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (O.keys < 1 || O.ops < 1 || O.rounds < 1 || O.rounds > 100 || O.value < 1 ||
        O.value > 1024 * 1024) {
        fprintf(stderr, "bad options\n");
        return 2;
    }
    tkv_log_set_level(TKV_LOG_LEVEL_WARN);
    nftw(O.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    struct tkv_engine_opts eo = {.kind = TKV_ENGINE_WT, .path = O.dir, .sync = O.sync};
    check(tkv_engine_open(&eo, &E), "open");
    check(tkv_engine_session_open(E, &S), "session");
    tkv_engine_batch_init(&B);
    value = calloc(1, O.value);
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);

    for (long i = 0; i < O.keys;) { /* load, 256 puts per write */
        tkv_engine_batch_clear(&B);
        for (int j = 0; j < 256 && i < O.keys; j++, i++) {
            char k[32];
            int n = snprintf(k, sizeof(k), "key%012ld", i);
            check(tkv_engine_batch_put(&B, TKV_CF_DEFAULT, TKV_SLICE(k, (size_t)n),
                                       TKV_SLICE(value, O.value)),
                  "load put");
        }
        check(tkv_engine_write(S, &B), "load write");
    }
    printf("tkv-txn-bench: wiredtiger sync=%d keys=%ld ops=%ld/round rounds=%d value=%zu\n",
           O.sync, O.keys, O.ops, O.rounds, O.value);
    double raw[100], txn[100];
    for (int r = 0; r < O.rounds; r++) {
        double t0 = cpu_s();
        for (long i = 0; i < O.ops; i++)
            raw_put();
        double t1 = cpu_s();
        for (long i = 0; i < O.ops; i++)
            one_key_txn(&arena);
        double t2 = cpu_s();
        raw[r] = (t1 - t0) / (double)O.ops * 1e6;
        txn[r] = (t2 - t1) / (double)O.ops * 1e6;
        printf("round %d: raw put %.2f us/op, one-key txn %.2f us/op (%.2fx)\n", r + 1, raw[r],
               txn[r], txn[r] / raw[r]);
    }
    qsort(raw, (size_t)O.rounds, sizeof(double), cmp_double);
    qsort(txn, (size_t)O.rounds, sizeof(double), cmp_double);
    double mr = raw[O.rounds / 2], mt = txn[O.rounds / 2];
    printf("median: raw put %.2f us/op, one-key txn %.2f us/op, txn / raw %.2fx\n", mr, mt,
           mt / mr);
    tkv_arena_close(&arena);
    tkv_engine_batch_close(&B);
    free(value);
    tkv_engine_session_close(S);
    tkv_engine_close(E);
    nftw(O.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
