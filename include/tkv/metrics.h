/* Metrics registry: counters, gauges and histograms in the Prometheus text
 * exposition format (version 0.0.4), collected per core and summed when
 * scraped (ARCHITECTURE.md base/, ECOSYSTEM.md 2.6).
 *
 * Every series keeps one value block per *slot*: slot k belongs to reactor
 * core k (the reactor sets the calling thread's slot when a core starts),
 * plus one shared block for every other thread. A core writes only its own
 * block: a relaxed load and a relaxed store of a word nobody else writes
 * (plain moves on x86-64; no lock prefix, no read-modify-write), so the hot
 * path takes no lock and no atomic RMW, and a scraper thread reading the
 * same words with relaxed loads is race-free in C11 terms (it may see a
 * count one update old, never a torn one). Threads that are not cores share
 * the last block and use atomic read-modify-write (they are off the hot
 * path). Blocks of different slots never share a cache line.
 *
 * Lifecycle: a registry is created with its number of core slots, before
 * any core starts; series are registered (any thread, under the registry's
 * mutex; idempotent: registering the same name and labels again returns the
 * same series) and live as long as the registry. Writers use the handle.
 * tkv_metrics_render() may run on any thread at any time.
 *
 * Naming: <component>_<subsystem>_<what>_<unit>, counters end in _total,
 * base units (_seconds, _bytes); label values must come from a small bounded
 * set (method names, status codes, core ids). Misuse (invalid name, the same
 * name with another type, other label names or other buckets) is a
 * programming error and panics.
 */
#ifndef TKV_METRICS_H
#define TKV_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct tkv_metrics;   /* registry */
struct tkv_counter;   /* one counter series */
struct tkv_gauge;     /* one gauge series */
struct tkv_histogram; /* one histogram series */

#define TKV_METRICS_MAX_SLOTS 256 /* core slots per registry */
#define TKV_METRICS_MAX_BUCKETS 64
#define TKV_METRICS_MAX_LABELS 4

/* A registry with n_core_slots per-core value blocks (0 is allowed: every
 * writer then uses the shared block). Aborts on allocation failure. */
struct tkv_metrics *tkv_metrics_new(uint32_t n_core_slots);
/* Free the registry and every series; no writer may still use it. */
void tkv_metrics_free(struct tkv_metrics *reg);

/* The process-wide registry the modules register into. Created on first
 * use with 0 core slots unless tkv_metrics_default_init() came first. */
struct tkv_metrics *tkv_metrics_default(void);
/* Create the process-wide registry with n_core_slots (main thread, before
 * any core starts). Returns 0, or TKV_EINVAL if it already exists with a
 * different slot count. */
int tkv_metrics_default_init(uint32_t n_core_slots);

/* The calling thread's slot: a core id, or UINT32_MAX (shared). Set by the
 * reactor for its core threads; tests may set it. */
void tkv_metrics_set_thread_slot(uint32_t slot);
uint32_t tkv_metrics_thread_slot(void);

/* Registration. labels: NULL, or a NULL-terminated array of key, value
 * pairs, e.g. (const char *[]){"type", "raw_get", "code", "OK", NULL};
 * strings are copied. help is one line. */
struct tkv_counter *tkv_metrics_counter(struct tkv_metrics *reg, const char *name,
                                        const char *help, const char *const *labels);
struct tkv_gauge *tkv_metrics_gauge(struct tkv_metrics *reg, const char *name, const char *help,
                                    const char *const *labels);
/* bounds: strictly increasing finite upper bounds (the +Inf bucket is
 * implicit), 1..TKV_METRICS_MAX_BUCKETS of them, copied. */
struct tkv_histogram *tkv_metrics_histogram(struct tkv_metrics *reg, const char *name,
                                            const char *help, const char *const *labels,
                                            const double *bounds, size_t n_bounds);

/* Exponential bucket bounds: start, start*factor, ... (n of them) into out. */
void tkv_metrics_exp_buckets(double start, double factor, size_t n, double *out);

/* Hot path: the calling thread's block (see the top of this file). */
void tkv_counter_add(struct tkv_counter *c, uint64_t delta);
static inline void tkv_counter_inc(struct tkv_counter *c)
{
    tkv_counter_add(c, 1);
}
/* A gauge's value is the SUM of its slots: set() replaces the calling
 * thread's part (use it for per-core figures: queue depths, a core's own
 * series), add() moves it. */
void tkv_gauge_set(struct tkv_gauge *g, double v);
void tkv_gauge_add(struct tkv_gauge *g, double delta);
void tkv_histogram_observe(struct tkv_histogram *h, double v);

/* Scrape-side reads (any thread): sums over every slot. */
uint64_t tkv_counter_value(const struct tkv_counter *c);
double tkv_gauge_value(const struct tkv_gauge *g);
/* Observations so far and their sum. */
uint64_t tkv_histogram_count(const struct tkv_histogram *h, double *sum_out);

/* Run fn(arg, reg) at the start of every render, on the rendering thread,
 * with the registry unlocked: refresh gauges computed on demand (process
 * memory, open fds). Registration order. Returns nothing; aborts on OOM. */
typedef void (*tkv_metrics_collect_fn)(void *arg, struct tkv_metrics *reg);
void tkv_metrics_on_collect(struct tkv_metrics *reg, tkv_metrics_collect_fn fn, void *arg);

/* Render every family (HELP, TYPE, then its series; registration order) in
 * the Prometheus text format into a new NUL-terminated heap string
 * (tkv_free it); *len_out = its length. Returns 0 or TKV_ENOMEM. Any thread. */
int tkv_metrics_render(struct tkv_metrics *reg, char **text_out, size_t *len_out);

/* Registers the standard process_* family (start time, CPU seconds,
 * resident and virtual memory, open and max fds, read from /proc at render
 * time) into reg. Idempotent. */
void tkv_metrics_register_process(struct tkv_metrics *reg);

#endif
