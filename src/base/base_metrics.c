/* Metrics registry and Prometheus text exposition (see include/tkv/metrics.h
 * for the per-slot single-writer scheme). */
#include "tkv/metrics.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "tkv/err.h"
#include "tkv/mem.h"

#define WORDS_PER_LINE 8 /* 64-byte cache line / 8-byte word */

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct metric_family;

/* One labelled series. words holds n_slots + 1 blocks of `stride` words
 * (block n_slots is the shared one); each block starts on a cache line.
 * Counter: word 0 = count. Gauge: word 0 = double bits. Histogram: words
 * 0..n_bounds = per-bucket counts (not cumulative; n_bounds = +Inf), word
 * n_bounds + 1 = sum (double bits). */
struct metric_series {
    struct metric_family *fam;
    char **label_values;
    uint32_t n_slots; /* core slots; the shared block follows them */
    uint32_t stride;  /* words per block */
    _Atomic uint64_t *words;
    struct metric_series *next; /* family's list, registration order */
};

struct tkv_counter {
    struct metric_series s;
};
struct tkv_gauge {
    struct metric_series s;
};
struct tkv_histogram {
    struct metric_series s;
};

struct metric_family {
    char *name, *help;
    enum metric_type type;
    char *label_names[TKV_METRICS_MAX_LABELS];
    size_t n_labels;
    double *bounds;
    size_t n_bounds;
    struct metric_series *series, *series_tail;
    struct metric_family *next;
};

struct collect_hook {
    tkv_metrics_collect_fn fn;
    void *arg;
    struct collect_hook *next;
};

struct process_metrics;

struct tkv_metrics {
    uint32_t n_slots;
    pthread_mutex_t mu; /* families, series lists, hooks: never on the hot path */
    struct metric_family *families, *families_tail;
    struct collect_hook *hooks, *hooks_tail;
    struct process_metrics *process; /* tkv_metrics_register_process */
};

static _Thread_local uint32_t thread_slot = UINT32_MAX;

void tkv_metrics_set_thread_slot(uint32_t slot)
{
    thread_slot = slot;
}

uint32_t tkv_metrics_thread_slot(void)
{
    return thread_slot;
}

/* ------------------------------------------------------------ registry */

struct tkv_metrics *tkv_metrics_new(uint32_t n_core_slots)
{
    tkv_assert(n_core_slots <= TKV_METRICS_MAX_SLOTS);
    struct tkv_metrics *reg = tkv_xcalloc(1, sizeof(*reg));
    reg->n_slots = n_core_slots;
    pthread_mutex_init(&reg->mu, NULL);
    return reg;
}

void tkv_metrics_free(struct tkv_metrics *reg)
{
    if (!reg)
        return;
    struct metric_family *f = reg->families;
    while (f) {
        struct metric_family *fn = f->next;
        struct metric_series *s = f->series;
        while (s) {
            struct metric_series *sn = s->next;
            for (size_t i = 0; i < f->n_labels; i++)
                tkv_free(s->label_values[i]);
            tkv_free(s->label_values);
            free(s->words); /* aligned_alloc */
            tkv_free(s);
            s = sn;
        }
        for (size_t i = 0; i < f->n_labels; i++)
            tkv_free(f->label_names[i]);
        tkv_free(f->bounds);
        tkv_free(f->name);
        tkv_free(f->help);
        tkv_free(f);
        f = fn;
    }
    struct collect_hook *h = reg->hooks;
    while (h) {
        struct collect_hook *hn = h->next;
        tkv_free(h);
        h = hn;
    }
    tkv_free(reg->process);
    pthread_mutex_destroy(&reg->mu);
    tkv_free(reg);
}

static pthread_mutex_t default_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tkv_metrics *default_reg;

int tkv_metrics_default_init(uint32_t n_core_slots)
{
    int rv = 0;
    pthread_mutex_lock(&default_mu);
    if (!default_reg)
        default_reg = tkv_metrics_new(n_core_slots);
    else if (default_reg->n_slots != n_core_slots)
        rv = TKV_EINVAL;
    pthread_mutex_unlock(&default_mu);
    return rv;
}

struct tkv_metrics *tkv_metrics_default(void)
{
    pthread_mutex_lock(&default_mu);
    if (!default_reg)
        default_reg = tkv_metrics_new(0);
    struct tkv_metrics *reg = default_reg;
    pthread_mutex_unlock(&default_mu);
    return reg;
}

static bool valid_name(const char *s, bool allow_colon)
{
    if (!s || !*s || isdigit((unsigned char)s[0]))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || (allow_colon && *s == ':')))
            return false;
    return true;
}

static size_t count_labels(const char *const *labels)
{
    size_t n = 0;
    if (labels)
        while (labels[2 * n])
            n++;
    return n;
}

static struct metric_family *find_family(struct tkv_metrics *reg, const char *name)
{
    for (struct metric_family *f = reg->families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* Find or create the family; panics on a conflicting definition. */
static struct metric_family *family_get(struct tkv_metrics *reg, const char *name,
                                        const char *help, enum metric_type type,
                                        const char *const *labels, const double *bounds,
                                        size_t n_bounds)
{
    size_t n_labels = count_labels(labels);
    if (!valid_name(name, true))
        TKV_PANIC("metrics: invalid metric name \"%s\"", name ? name : "(null)");
    if (n_labels > TKV_METRICS_MAX_LABELS)
        TKV_PANIC("metrics: %s has more than %d labels", name, TKV_METRICS_MAX_LABELS);
    for (size_t i = 0; i < n_labels; i++) {
        const char *k = labels[2 * i];
        if (!valid_name(k, false) || strncmp(k, "__", 2) == 0 || strcmp(k, "le") == 0 ||
            !labels[2 * i + 1])
            TKV_PANIC("metrics: %s: invalid label \"%s\"", name, k);
    }
    struct metric_family *f = find_family(reg, name);
    if (f) {
        bool same = f->type == type && f->n_labels == n_labels && f->n_bounds == n_bounds;
        for (size_t i = 0; same && i < n_labels; i++)
            same = strcmp(f->label_names[i], labels[2 * i]) == 0;
        for (size_t i = 0; same && i < n_bounds; i++)
            same = f->bounds[i] == bounds[i];
        if (!same)
            TKV_PANIC("metrics: %s registered twice with different type, labels or buckets",
                      name);
        return f;
    }
    f = tkv_xcalloc(1, sizeof(*f));
    f->name = tkv_xstrdup(name);
    f->help = tkv_xstrdup(help ? help : "");
    f->type = type;
    f->n_labels = n_labels;
    for (size_t i = 0; i < n_labels; i++)
        f->label_names[i] = tkv_xstrdup(labels[2 * i]);
    if (n_bounds) {
        f->bounds = tkv_xmemdup(bounds, n_bounds * sizeof(*bounds));
        f->n_bounds = n_bounds;
    }
    if (reg->families_tail)
        reg->families_tail->next = f;
    else
        reg->families = f;
    reg->families_tail = f;
    return f;
}

static struct metric_series *series_get(struct tkv_metrics *reg, const char *name,
                                        const char *help, enum metric_type type,
                                        const char *const *labels, const double *bounds,
                                        size_t n_bounds)
{
    pthread_mutex_lock(&reg->mu);
    struct metric_family *f = family_get(reg, name, help, type, labels, bounds, n_bounds);
    struct metric_series *s;
    for (s = f->series; s; s = s->next) {
        bool same = true;
        for (size_t i = 0; same && i < f->n_labels; i++)
            same = strcmp(s->label_values[i], labels[2 * i + 1]) == 0;
        if (same)
            goto out;
    }
    s = tkv_xcalloc(1, sizeof(*s));
    s->fam = f;
    s->n_slots = reg->n_slots;
    s->label_values = tkv_xcalloc(f->n_labels ? f->n_labels : 1, sizeof(char *));
    for (size_t i = 0; i < f->n_labels; i++)
        s->label_values[i] = tkv_xstrdup(labels[2 * i + 1]);
    size_t words = type == METRIC_HISTOGRAM ? n_bounds + 2 : 1;
    s->stride = (uint32_t)((words + WORDS_PER_LINE - 1) / WORDS_PER_LINE * WORDS_PER_LINE);
    size_t bytes = (size_t)s->stride * (s->n_slots + 1) * sizeof(uint64_t);
    s->words = aligned_alloc(64, bytes);
    if (!s->words)
        TKV_PANIC("metrics: out of memory");
    for (size_t i = 0; i < (size_t)s->stride * (s->n_slots + 1); i++)
        atomic_init(&s->words[i], 0);
    if (f->series_tail)
        f->series_tail->next = s;
    else
        f->series = s;
    f->series_tail = s;
out:
    pthread_mutex_unlock(&reg->mu);
    return s;
}

struct tkv_counter *tkv_metrics_counter(struct tkv_metrics *reg, const char *name,
                                        const char *help, const char *const *labels)
{
    size_t n = strlen(name ? name : "");
    if (n < 6 || strcmp(name + n - 6, "_total") != 0)
        TKV_PANIC("metrics: counter %s must end in _total", name ? name : "(null)");
    return (struct tkv_counter *)series_get(reg, name, help, METRIC_COUNTER, labels, NULL, 0);
}

struct tkv_gauge *tkv_metrics_gauge(struct tkv_metrics *reg, const char *name, const char *help,
                                    const char *const *labels)
{
    return (struct tkv_gauge *)series_get(reg, name, help, METRIC_GAUGE, labels, NULL, 0);
}

struct tkv_histogram *tkv_metrics_histogram(struct tkv_metrics *reg, const char *name,
                                            const char *help, const char *const *labels,
                                            const double *bounds, size_t n_bounds)
{
    if (n_bounds == 0 || n_bounds > TKV_METRICS_MAX_BUCKETS)
        TKV_PANIC("metrics: histogram %s needs 1..%d buckets", name, TKV_METRICS_MAX_BUCKETS);
    for (size_t i = 0; i < n_bounds; i++)
        if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
            TKV_PANIC("metrics: histogram %s: bounds must be finite and increasing", name);
    return (struct tkv_histogram *)series_get(reg, name, help, METRIC_HISTOGRAM, labels, bounds,
                                              n_bounds);
}

void tkv_metrics_exp_buckets(double start, double factor, size_t n, double *out)
{
    for (size_t i = 0; i < n; i++, start *= factor)
        out[i] = start;
}

void tkv_metrics_on_collect(struct tkv_metrics *reg, tkv_metrics_collect_fn fn, void *arg)
{
    struct collect_hook *h = tkv_xcalloc(1, sizeof(*h));
    h->fn = fn;
    h->arg = arg;
    pthread_mutex_lock(&reg->mu);
    if (reg->hooks_tail)
        reg->hooks_tail->next = h;
    else
        reg->hooks = h;
    reg->hooks_tail = h;
    pthread_mutex_unlock(&reg->mu);
}

/* ------------------------------------------------------------ writers */

static inline uint64_t dbl_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static inline double bits_dbl(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

/* The calling thread's block, and whether it is its single writer. */
static inline _Atomic uint64_t *block(const struct metric_series *s, bool *owned)
{
    uint32_t slot = thread_slot;
    *owned = slot < s->n_slots;
    return s->words + (size_t)(*owned ? slot : s->n_slots) * s->stride;
}

static inline void word_add(_Atomic uint64_t *w, uint64_t d, bool owned)
{
    if (owned) /* single writer: a plain load and store, no RMW */
        atomic_store_explicit(w, atomic_load_explicit(w, memory_order_relaxed) + d,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(w, d, memory_order_relaxed);
}

static inline void word_add_dbl(_Atomic uint64_t *w, double d, bool owned)
{
    uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
    if (owned) {
        atomic_store_explicit(w, dbl_bits(bits_dbl(old) + d), memory_order_relaxed);
        return;
    }
    while (!atomic_compare_exchange_weak_explicit(w, &old, dbl_bits(bits_dbl(old) + d),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void tkv_counter_add(struct tkv_counter *c, uint64_t delta)
{
    bool owned = false;
    word_add(block(&c->s, &owned), delta, owned);
}

void tkv_gauge_set(struct tkv_gauge *g, double v)
{
    bool owned = false;
    atomic_store_explicit(block(&g->s, &owned), dbl_bits(v), memory_order_relaxed);
}

void tkv_gauge_add(struct tkv_gauge *g, double delta)
{
    bool owned = false;
    _Atomic uint64_t *w = block(&g->s, &owned);
    word_add_dbl(w, delta, owned);
}

void tkv_histogram_observe(struct tkv_histogram *h, double v)
{
    const struct metric_family *f = h->s.fam;
    bool owned = false;
    _Atomic uint64_t *w = block(&h->s, &owned);
    /* Binary search for the first bound >= v (Prometheus: le is inclusive). */
    size_t lo = 0, hi = f->n_bounds;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    word_add(&w[lo], 1, owned);
    word_add_dbl(&w[f->n_bounds + 1], v, owned);
}

/* ------------------------------------------------------------ readers */

static uint64_t sum_word(const struct metric_series *s, size_t i)
{
    uint64_t t = 0;
    for (uint32_t k = 0; k <= s->n_slots; k++)
        t += atomic_load_explicit(&s->words[(size_t)k * s->stride + i], memory_order_relaxed);
    return t;
}

static double sum_dbl(const struct metric_series *s, size_t i)
{
    double t = 0;
    for (uint32_t k = 0; k <= s->n_slots; k++)
        t += bits_dbl(
            atomic_load_explicit(&s->words[(size_t)k * s->stride + i], memory_order_relaxed));
    return t;
}

uint64_t tkv_counter_value(const struct tkv_counter *c)
{
    return sum_word(&c->s, 0);
}

double tkv_gauge_value(const struct tkv_gauge *g)
{
    return sum_dbl(&g->s, 0);
}

uint64_t tkv_histogram_count(const struct tkv_histogram *h, double *sum_out)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= h->s.fam->n_bounds; i++)
        n += sum_word(&h->s, i);
    if (sum_out)
        *sum_out = sum_dbl(&h->s, h->s.fam->n_bounds + 1);
    return n;
}

/* ------------------------------------------------------------ render */

struct text {
    char *p;
    size_t len, cap;
    bool oom;
};

static void text_grow(struct text *t, size_t need)
{
    if (t->oom || t->len + need + 1 <= t->cap)
        return;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + need + 1)
        cap *= 2;
    char *p = tkv_realloc(t->p, cap);
    if (!p) {
        t->oom = true;
        return;
    }
    t->p = p;
    t->cap = cap;
}

static void text_put(struct text *t, const char *s, size_t n)
{
    text_grow(t, n);
    if (t->oom)
        return;
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void text_str(struct text *t, const char *s)
{
    text_put(t, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void text_fmt(struct text *t, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        text_put(t, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* HELP text escapes \ and newline; label values also escape '"'. */
static void text_escaped(struct text *t, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            text_put(t, "\\\\", 2);
        else if (*s == '\n')
            text_put(t, "\\n", 2);
        else if (quote && *s == '"')
            text_put(t, "\\\"", 2);
        else
            text_put(t, s, 1);
    }
}

static void text_double(struct text *t, double v)
{
    if (isnan(v))
        text_str(t, "NaN");
    else if (isinf(v))
        text_str(t, v > 0 ? "+Inf" : "-Inf");
    else
        text_fmt(t, "%.15g", v);
}

/* name{labels[,le="x"]} */
static void text_series_name(struct text *t, const struct metric_series *s, const char *suffix,
                             const char *le)
{
    const struct metric_family *f = s->fam;
    text_str(t, f->name);
    text_str(t, suffix);
    if (f->n_labels == 0 && !le)
        return;
    text_put(t, "{", 1);
    for (size_t i = 0; i < f->n_labels; i++) {
        if (i)
            text_put(t, ",", 1);
        text_str(t, f->label_names[i]);
        text_put(t, "=\"", 2);
        text_escaped(t, s->label_values[i], true);
        text_put(t, "\"", 1);
    }
    if (le) {
        if (f->n_labels)
            text_put(t, ",", 1);
        text_str(t, "le=\"");
        text_str(t, le);
        text_put(t, "\"", 1);
    }
    text_put(t, "}", 1);
}

static void render_series(struct text *t, const struct metric_series *s)
{
    const struct metric_family *f = s->fam;
    switch (f->type) {
    case METRIC_COUNTER:
        text_series_name(t, s, "", NULL);
        text_fmt(t, " %llu\n", (unsigned long long)sum_word(s, 0));
        break;
    case METRIC_GAUGE:
        text_series_name(t, s, "", NULL);
        text_put(t, " ", 1);
        text_double(t, sum_dbl(s, 0));
        text_put(t, "\n", 1);
        break;
    case METRIC_HISTOGRAM: {
        /* Cumulative from one pass, so every bucket <= the next and the
         * +Inf bucket equals _count within this scrape. */
        uint64_t cum = 0;
        char le[48];
        for (size_t i = 0; i <= f->n_bounds; i++) {
            cum += sum_word(s, i);
            if (i < f->n_bounds)
                snprintf(le, sizeof(le), "%.15g", f->bounds[i]);
            else
                snprintf(le, sizeof(le), "+Inf");
            text_series_name(t, s, "_bucket", le);
            text_fmt(t, " %llu\n", (unsigned long long)cum);
        }
        text_series_name(t, s, "_sum", NULL);
        text_put(t, " ", 1);
        text_double(t, sum_dbl(s, f->n_bounds + 1));
        text_put(t, "\n", 1);
        text_series_name(t, s, "_count", NULL);
        text_fmt(t, " %llu\n", (unsigned long long)cum);
        break;
    }
    }
}

int tkv_metrics_render(struct tkv_metrics *reg, char **text_out, size_t *len_out)
{
    struct text t = {0};
    /* Hooks run unlocked (they set gauges, which may register series).
     * The list only grows and nodes are never freed while reg lives, so
     * walking it after reading the head under the lock is safe. */
    pthread_mutex_lock(&reg->mu);
    struct collect_hook *h = reg->hooks;
    pthread_mutex_unlock(&reg->mu);
    for (; h; h = h->next)
        h->fn(h->arg, reg);

    pthread_mutex_lock(&reg->mu);
    for (const struct metric_family *f = reg->families; f; f = f->next) {
        if (!f->series)
            continue;
        text_str(&t, "# HELP ");
        text_str(&t, f->name);
        text_put(&t, " ", 1);
        text_escaped(&t, f->help, false);
        text_str(&t, "\n# TYPE ");
        text_str(&t, f->name);
        text_put(&t, " ", 1);
        text_str(&t, type_names[f->type]);
        text_put(&t, "\n", 1);
        for (const struct metric_series *s = f->series; s; s = s->next)
            render_series(&t, s);
    }
    pthread_mutex_unlock(&reg->mu);
    text_grow(&t, 0);
    if (t.oom) {
        tkv_free(t.p);
        return TKV_ENOMEM;
    }
    *text_out = t.p;
    *len_out = t.len;
    return 0;
}

/* ------------------------------------------------------------ process_* */

struct process_metrics {
    struct tkv_gauge *start_time, *resident, *virt, *open_fds, *max_fds;
};

static void collect_process(void *arg, struct tkv_metrics *reg)
{
    struct process_metrics *pm = arg;
    (void)reg;
    FILE *fp = fopen("/proc/self/statm", "re");
    if (fp) {
        unsigned long long size, rss;
        if (fscanf(fp, "%llu %llu", &size, &rss) == 2) {
            double page = (double)sysconf(_SC_PAGESIZE);
            tkv_gauge_set(pm->virt, (double)size * page);
            tkv_gauge_set(pm->resident, (double)rss * page);
        }
        fclose(fp);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        tkv_gauge_set(pm->open_fds, (double)(n > 0 ? n - 1 : 0)); /* minus the dir's own fd */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        tkv_gauge_set(pm->max_fds, (double)rl.rlim_cur);
}

void tkv_metrics_register_process(struct tkv_metrics *reg)
{
    struct process_metrics *pm = tkv_xcalloc(1, sizeof(*pm));
    pthread_mutex_lock(&reg->mu);
    bool done = reg->process != NULL;
    if (!done)
        reg->process = pm; /* the registry owns it */
    pthread_mutex_unlock(&reg->mu);
    if (done) {
        tkv_free(pm);
        return;
    }
    pm->start_time = tkv_metrics_gauge(reg, "process_start_time_seconds",
                                       "Start time of the process since unix epoch in seconds.",
                                       NULL);
    pm->resident = tkv_metrics_gauge(reg, "process_resident_memory_bytes",
                                     "Resident memory size in bytes.", NULL);
    pm->virt = tkv_metrics_gauge(reg, "process_virtual_memory_bytes",
                                 "Virtual memory size in bytes.", NULL);
    pm->open_fds = tkv_metrics_gauge(reg, "process_open_fds", "Number of open file descriptors.",
                                     NULL);
    pm->max_fds = tkv_metrics_gauge(reg, "process_max_fds",
                                    "Maximum number of open file descriptors.", NULL);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    tkv_gauge_set(pm->start_time, (double)now.tv_sec + (double)now.tv_nsec / 1e9);
    tkv_metrics_on_collect(reg, collect_process, pm);
}
