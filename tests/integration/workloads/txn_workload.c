/* tkv-txn-workload: transactional clients on libtinykv that record a history
 * for tkv-check-si (tests/integration/workloads/test_si_txn.py).
 *
 *   --workload bank    transfers between --accounts accounts (read both,
 *                      move a random amount if the source has it) and
 *                      read-only transactions that read every account;
 *                      each complete snapshot read is one line
 *                      {"type":"ok","balances":[...],"process":C,"call":T}.
 *   --workload append  transactions of 1-3 micro-ops on --keys keys: read a
 *                      key, or append a unique integer to it (read the list,
 *                      write it back longer: the store has no append). A
 *                      line {"id","phase":"invoke","mops":[...]} is written
 *                      before the commit starts and {"id","phase":"complete",
 *                      "type":"ok|fail|info"} after, so a process killed in
 *                      the middle of a commit leaves an invoke without a
 *                      completion: the harness records it as unknown.
 *   --setup            bank: write the initial balances (--balance each) and
 *                      exit.
 *
 * --workers transactions run at once on one reactor core; --txns in total
 * (or until --duration-ms). Times are CLOCK_MONOTONIC ns, comparable across
 * processes of the host. Every line is one write(2) to an O_APPEND file, so
 * a SIGKILL leaves whole lines (the harness drops a torn last line).
 * --store: one standalone store (timestamps from --tso, a local file);
 * --pd: a cluster through its scheduler (region routing, scheduler TSO).
 * Exit status: 0 done, 1 the setup failed, 2 usage. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tinykv/client.h"
#include "tkv/err.h"

#define MAX_WORKERS 64
#define MAX_KEYS 64
#define MAX_MOPS 3
#define LINE_MAX_BYTES 65536
#define WORKLOAD_NAME "tkv-txn-workload"
#include "workload_util.h"

enum { BANK, APPEND };

static struct {
    int workload;
    const char *store, *pd, *out, *prefix, *tso;
    unsigned workers, accounts, keys, client;
    unsigned long txns, duration_ms, lock_ttl_ms;
    long balance;
    bool setup;
    uint64_t seed;
} opt = {.workload = APPEND, .prefix = "wl", .workers = 4, .accounts = 5, .keys = 6, .client = 1,
         .txns = 200, .duration_ms = 0, .lock_ttl_ms = 500, .balance = 100, .seed = 1};

static unsigned long started, n_done;
static unsigned active;
static uint64_t t_end;
static int setup_rv = -1;

/* ---- one worker: one transaction at a time ---- */

struct mop {
    bool append;
    unsigned key;
    uint64_t value;  /* append */
    uint64_t *list;  /* read (and the read before an append) */
    size_t n;
};

struct worker {
    struct tinykv *kv;
    struct tinykv_txn *txn;
    unsigned long seq;
    uint64_t call;
    /* bank */
    bool reader;
    unsigned a, b, step;
    long bal[MAX_KEYS];
    /* append */
    struct mop mops[MAX_MOPS];
    unsigned n_mops, cur;
};

static struct worker workers[MAX_WORKERS];
static void next_txn(struct worker *w);

static struct tkv_slice key_of(unsigned i, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/%s%u", opt.prefix, opt.workload == BANK ? "acct" : "k", i);
    return TKV_SLICE(buf, (size_t)n);
}

static void free_mops(struct worker *w)
{
    for (unsigned i = 0; i < w->n_mops; i++) {
        free(w->mops[i].list);
        w->mops[i].list = NULL;
        w->mops[i].n = 0;
    }
    w->n_mops = 0;
}

static void worker_done(struct worker *w)
{
    (void)w;
    if (--active == 0)
        tinykv_run_done(w->kv);
}

static void on_rolled_back(void *user, int rv)
{
    (void)rv;
    struct worker *w = user;
    w->txn = NULL;
    next_txn(w);
}

/* The transaction failed before its commit: it wrote nothing. */
static void abandon(struct worker *w, int rv)
{
    (void)rv;
    free_mops(w);
    if (!w->txn || tinykv_txn_rollback(w->txn, on_rolled_back, w) != 0) {
        w->txn = NULL;
        next_txn(w);
    }
}

static const char *commit_outcome(int rv)
{
    if (rv == 0)
        return "ok";
    /* A conflict or a rollback by another client: nothing committed. */
    if (rv == TINYKV_ECONFLICT || rv == TINYKV_EABORTED)
        return "fail";
    /* Undetermined primary commit, timeouts, lost connections: unknown. */
    return "info";
}

/* ---- bank ---- */

static void bank_get(struct worker *w);

static void on_bank_commit(void *user, int rv)
{
    struct worker *w = user;
    w->txn = NULL;
    n_done++;
    if (opt.setup)
        setup_rv = rv;
    next_txn(w);
}

static void on_bank_get(void *user, int rv, struct tkv_slice value)
{
    struct worker *w = user;
    if (rv != 0) {
        abandon(w, rv);
        return;
    }
    char buf[32];
    size_t n = value.len < sizeof buf - 1 ? value.len : sizeof buf - 1;
    memcpy(buf, value.ptr, n);
    buf[n] = '\0';
    unsigned acct = w->reader ? w->step : (w->step == 0 ? w->a : w->b);
    w->bal[acct] = strtol(buf, NULL, 10);
    w->step++;
    bank_get(w);
}

static void bank_get(struct worker *w)
{
    char kb[128];
    unsigned n_reads = w->reader ? opt.accounts : 2;
    if (w->step < n_reads) {
        unsigned acct = w->reader ? w->step : (w->step == 0 ? w->a : w->b);
        int rv = tinykv_txn_get(w->txn, key_of(acct, kb, sizeof kb), on_bank_get, w);
        if (rv)
            abandon(w, rv);
        return;
    }
    if (w->reader) {
        char line[LINE_MAX_BYTES];
        size_t off = 0;
        for (unsigned i = 0; i < opt.accounts && off < sizeof line - 32; i++)
            off += (size_t)snprintf(line + off, sizeof line - off, "%s%ld", i ? "," : "", w->bal[i]);
        emit("{\"type\":\"ok\",\"process\":%u,\"call\":%" PRIu64 ",\"ret\":%" PRIu64 ",\"balances\":[%s]}",
             opt.client, w->call, now_ns(), line);
        n_done++;
        abandon(w, 0); /* read-only: roll back to free it */
        return;
    }
    long amount = 1 + (long)rnd(20);
    if (w->bal[w->a] < amount) {
        abandon(w, 0);
        return;
    }
    char va[32], vb[32];
    int la = snprintf(va, sizeof va, "%ld", w->bal[w->a] - amount);
    int lb = snprintf(vb, sizeof vb, "%ld", w->bal[w->b] + amount);
    int rv = tinykv_txn_set(w->txn, key_of(w->a, kb, sizeof kb), TKV_SLICE(va, (size_t)la));
    if (rv == 0)
        rv = tinykv_txn_set(w->txn, key_of(w->b, kb, sizeof kb), TKV_SLICE(vb, (size_t)lb));
    if (rv == 0)
        rv = tinykv_txn_commit(w->txn, on_bank_commit, w);
    if (rv)
        abandon(w, rv);
}

static void bank_setup(struct worker *w)
{
    char kb[128], v[32];
    int n = snprintf(v, sizeof v, "%ld", opt.balance);
    for (unsigned i = 0; i < opt.accounts; i++) {
        int rv = tinykv_txn_set(w->txn, key_of(i, kb, sizeof kb), TKV_SLICE(v, (size_t)n));
        if (rv) {
            setup_rv = rv;
            abandon(w, rv);
            return;
        }
    }
    int rv = tinykv_txn_commit(w->txn, on_bank_commit, w);
    if (rv) {
        setup_rv = rv;
        abandon(w, rv);
    }
}

/* ---- append ---- */

static void append_step(struct worker *w);

static void write_list(char *buf, size_t cap, const uint64_t *v, size_t n, int *len)
{
    size_t off = 0;
    for (size_t i = 0; i < n && off + 24 < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%" PRIu64, i ? "," : "", v[i]);
    buf[off] = '\0';
    *len = (int)off;
}

static void on_append_commit(void *user, int rv)
{
    struct worker *w = user;
    /* The timestamps (valid inside the callback) let the harness replay
     * this commit later, as a retry whose first answer was lost. */
    uint64_t start_ts = tinykv_txn_start_ts(w->txn), commit_ts = rv ? 0 : tinykv_txn_commit_ts(w->txn);
    w->txn = NULL;
    emit("{\"id\":\"%u-%lu\",\"phase\":\"complete\",\"type\":\"%s\",\"ret\":%" PRIu64 ",\"error\":\"%s\","
         "\"start_ts\":%" PRIu64 ",\"commit_ts\":%" PRIu64 "}",
         opt.client, w->seq, commit_outcome(rv), now_ns(), rv ? tinykv_strerror(rv) : "", start_ts, commit_ts);
    n_done++;
    free_mops(w);
    next_txn(w);
}

static void on_append_get(void *user, int rv, struct tkv_slice value)
{
    struct worker *w = user;
    struct mop *m = &w->mops[w->cur];
    if (rv != 0 && rv != TKV_ENOTFOUND) {
        abandon(w, rv);
        return;
    }
    size_t cap = 8, n = 0;
    uint64_t *list = malloc(cap * sizeof(uint64_t));
    if (!list)
        abort();
    if (rv == 0) {
        const char *p = (const char *)value.ptr, *end = p + value.len;
        while (p < end) {
            uint64_t x = 0;
            while (p < end && *p != ',')
                x = x * 10 + (uint64_t)(*p++ - '0');
            if (p < end)
                p++;
            if (n == cap) {
                cap *= 2;
                list = realloc(list, cap * sizeof(uint64_t));
                if (!list)
                    abort();
            }
            list[n++] = x;
        }
    }
    m->list = list;
    m->n = n;
    if (m->append) {
        /* Write the list back one element longer. */
        char *buf = malloc(LINE_MAX_BYTES / 2);
        if (!buf)
            abort();
        int len;
        write_list(buf, LINE_MAX_BYTES / 2 - 32, list, n, &len);
        len += snprintf(buf + len, 32, "%s%" PRIu64, n ? "," : "", m->value);
        char kb[128];
        rv = tinykv_txn_set(w->txn, key_of(m->key, kb, sizeof kb), TKV_SLICE(buf, (size_t)len));
        free(buf);
        if (rv) {
            abandon(w, rv);
            return;
        }
    }
    w->cur++;
    append_step(w);
}

static void append_step(struct worker *w)
{
    char kb[128];
    if (w->cur < w->n_mops) {
        int rv = tinykv_txn_get(w->txn, key_of(w->mops[w->cur].key, kb, sizeof kb), on_append_get, w);
        if (rv)
            abandon(w, rv);
        return;
    }
    /* The invoke line: the micro-ops as executed (an append is recorded as
     * the read it did and the append). */
    char line[LINE_MAX_BYTES];
    size_t off = 0;
    for (unsigned i = 0; i < w->n_mops && off < sizeof line / 2; i++) {
        struct mop *m = &w->mops[i];
        char lb[LINE_MAX_BYTES / 4];
        int ll;
        write_list(lb, sizeof lb, m->list, m->n, &ll);
        off += (size_t)snprintf(line + off, sizeof line - off, "%s[\"r\",\"k%u\",[%s]]", i ? "," : "", m->key, lb);
        if (m->append)
            off += (size_t)snprintf(line + off, sizeof line - off, ",[\"append\",\"k%u\",%" PRIu64 "]", m->key,
                                    m->value);
    }
    emit("{\"id\":\"%u-%lu\",\"phase\":\"invoke\",\"process\":%u,\"call\":%" PRIu64 ",\"mops\":[%s]}", opt.client,
         w->seq, opt.client, w->call, line);
    int rv = tinykv_txn_commit(w->txn, on_append_commit, w);
    if (rv) {
        emit("{\"id\":\"%u-%lu\",\"phase\":\"complete\",\"type\":\"fail\",\"ret\":%" PRIu64 "}", opt.client, w->seq,
             now_ns());
        abandon(w, rv);
    }
}

/* ---- driving ---- */

static void on_begin(void *user, int rv, struct tinykv_txn *txn)
{
    struct worker *w = user;
    if (rv != 0) {
        w->txn = NULL;
        next_txn(w);
        return;
    }
    w->txn = txn;
    w->call = now_ns();
    if (opt.setup) {
        bank_setup(w);
        return;
    }
    if (opt.workload == BANK) {
        w->reader = rnd(10) < 3;
        w->step = 0;
        w->a = (unsigned)rnd(opt.accounts);
        w->b = (w->a + 1 + (unsigned)rnd(opt.accounts - 1)) % opt.accounts;
        bank_get(w);
        return;
    }
    w->n_mops = 1 + (unsigned)rnd(MAX_MOPS);
    for (unsigned i = 0; i < w->n_mops; i++) {
        struct mop *m = &w->mops[i];
        m->key = (unsigned)rnd(opt.keys);
        for (unsigned j = 0; j < i; j++)
            if (w->mops[j].key == m->key)
                m->key = (m->key + 1) % opt.keys; /* at most one micro-op per key */
        m->append = rnd(2);
        /* Unique per key across processes: client id and sequence. */
        m->value = (uint64_t)opt.client * 1000000ull + (uint64_t)(w->seq * MAX_MOPS + i);
        m->list = NULL;
        m->n = 0;
    }
    w->cur = 0;
    append_step(w);
}

static void next_txn(struct worker *w)
{
    bool more = opt.setup ? n_done == 0 && started == 0
                          : started < opt.txns && (!t_end || now_ns() < t_end);
    if (!more) {
        worker_done(w);
        return;
    }
    started++;
    w->seq = started;
    /* The invoke time is taken before begin, so the start timestamp comes after it. */
    w->call = now_ns();
    int rv = tinykv_txn_begin(w->kv, on_begin, w);
    if (rv) {
        fprintf(stderr, "tkv-txn-workload: begin: %s\n", tinykv_strerror(rv));
        worker_done(w);
    }
}

static void run(struct tinykv *kv, void *arg)
{
    (void)arg;
    unsigned n = opt.setup ? 1 : opt.workers;
    active = n;
    for (unsigned i = 0; i < n; i++) {
        workers[i].kv = kv;
        next_txn(&workers[i]);
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: tkv-txn-workload (--store HOST:PORT | --pd HOST:PORT) --out FILE [--workload bank|append] [--setup]\n"
                    "  [--workers N] [--txns N] [--duration-ms MS] [--client ID] [--seed S] [--prefix P]\n"
                    "  [--accounts N] [--balance B] [--keys N] [--lock-ttl-ms MS] [--tso PATH]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"store", required_argument, NULL, 's'},   {"out", required_argument, NULL, 'o'},
        {"workload", required_argument, NULL, 'w'}, {"setup", no_argument, NULL, 'S'},
        {"workers", required_argument, NULL, 'n'}, {"txns", required_argument, NULL, 't'},
        {"duration-ms", required_argument, NULL, 'd'}, {"client", required_argument, NULL, 'c'},
        {"seed", required_argument, NULL, 'r'},    {"prefix", required_argument, NULL, 'p'},
        {"accounts", required_argument, NULL, 'a'}, {"balance", required_argument, NULL, 'b'},
        {"keys", required_argument, NULL, 'k'},    {"lock-ttl-ms", required_argument, NULL, 'l'},
        {"tso", required_argument, NULL, 'T'},     {"pd", required_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 's': opt.store = optarg; break;
        case 'o': opt.out = optarg; break;
        case 'w':
            if (!strcmp(optarg, "bank"))
                opt.workload = BANK;
            else if (!strcmp(optarg, "append"))
                opt.workload = APPEND;
            else
                return usage();
            break;
        case 'S': opt.setup = true; break;
        case 'n': opt.workers = (unsigned)strtoul(optarg, NULL, 10); break;
        case 't': opt.txns = strtoul(optarg, NULL, 10); break;
        case 'd': opt.duration_ms = strtoul(optarg, NULL, 10); break;
        case 'c': opt.client = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': opt.seed = strtoull(optarg, NULL, 10); break;
        case 'p': opt.prefix = optarg; break;
        case 'a': opt.accounts = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b': opt.balance = strtol(optarg, NULL, 10); break;
        case 'k': opt.keys = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'l': opt.lock_ttl_ms = strtoul(optarg, NULL, 10); break;
        case 'T': opt.tso = optarg; break;
        case 'P': opt.pd = optarg; break;
        default: return usage();
        }
    }
    if (!opt.store == !opt.pd || !opt.out || !opt.workers || opt.workers > MAX_WORKERS || opt.accounts < 2 ||
        opt.accounts > MAX_KEYS || !opt.keys || opt.keys > MAX_KEYS || opt.client == 0 || opt.client > 4000)
        return usage();
    rng ^= opt.seed * 0x9e3779b97f4a7c15ull + opt.client;
    if (!rng)
        rng = 1;
    out_fd = open(opt.out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) {
        fprintf(stderr, "tkv-txn-workload: %s: %s\n", opt.out, strerror(errno));
        return 2;
    }
    if (opt.duration_ms)
        t_end = now_ns() + opt.duration_ms * 1000000ull;
    struct tinykv_config cfg = {.store_addr = opt.store,
                                .pd_addrs = opt.pd,
                                .lock_ttl_ms = opt.lock_ttl_ms,
                                .local_tso_path = opt.tso,
                                .op_timeout_ms = 5000};
    int rv = tinykv_run(&cfg, run, NULL);
    close(out_fd);
    if (rv) {
        fprintf(stderr, "tkv-txn-workload: %s\n", tinykv_strerror(rv));
        return 1;
    }
    if (opt.setup && setup_rv != 0) {
        fprintf(stderr, "tkv-txn-workload: setup failed: %s\n", tinykv_strerror(setup_rv));
        return 1;
    }
    fprintf(stderr, "tkv-txn-workload: client %u: %lu transactions started, %lu done\n", opt.client, started, n_done);
    return 0;
}
