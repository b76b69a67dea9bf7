/* lincheck: a linearizability checker for key-value histories.
 *
 * A history is a list of operations on byte-string keys, each with the time
 * it was invoked and the time it completed (any monotonic unit: virtual ticks
 * of the cluster simulation, CLOCK_MONOTONIC ns of a real-process test).
 * The model is a map from key to value (absent or a byte string) with four
 * operations:
 *   get     reads the key: found + value, or not found;
 *   put     sets the value;
 *   delete  removes the key;
 *   append  concatenates bytes to the value (an absent key counts as "").
 *
 * Outcomes. An operation that completed successfully is OK. One that surely
 * did not take effect (the server refused it before doing anything) is
 * FAILED and is dropped. One whose fate is unknown (timeout, connection
 * lost, server killed while it was in flight) is INDETERMINATE: it may have
 * taken effect at any moment after its invocation, or never; its completion
 * time is "infinity". An operation that never got a completion call is
 * indeterminate. Indeterminate gets are dropped (a read has no effect).
 *
 * Check. Keys are independent under this model, so the history is split by
 * key (P-compositionality: a history is linearizable iff each per-key
 * sub-history is) and each key is searched with the Wing & Gong algorithm
 * and Lowe's memoisation (the set of linearized operations plus the model
 * state, cached so each configuration is explored once), as Knossos and
 * Porcupine do. Operations whose intervals share an endpoint count as
 * concurrent. Each key's search is bounded by a step budget: a key that
 * exhausts it is UNKNOWN, never a hang.
 *
 * Counterexample. For a key that is not linearizable the checker shrinks the
 * key's history (drop everything invoked after the operation it got stuck
 * on, then drop operations one by one while the rest stays
 * non-linearizable) and prints the key, the remaining operations with their
 * times and clients, and why (stale read, lost acknowledged write, value
 * never written, read from the future, or no order exists).
 *
 * Not thread-safe: one history is filled by one thread (record from the
 * simulation loop, or merge per-thread logs before checking). */
#ifndef TKV_TEST_LINCHECK_H
#define TKV_TEST_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum lc_kind { LC_GET, LC_PUT, LC_DELETE, LC_APPEND };

enum lc_verdict {
    LC_LINEARIZABLE = 0,
    LC_NOT_LINEARIZABLE = 1,
    LC_UNKNOWN = 2, /* some key ran out of budget and none failed */
};

/* Completion time of an operation whose outcome is unknown. */
#define LC_TIME_INFINITY UINT64_MAX

struct lc_history;

struct lc_history *lc_history_new(void);
void lc_history_free(struct lc_history *h);
size_t lc_history_size(const struct lc_history *h);

/* Records the invocation of an operation at time `t`; returns its id for the
 * completion calls below. `val` is the value written (put, append); ignored
 * for get and delete (pass NULL, 0). Bytes are copied. */
size_t lc_invoke(struct lc_history *h, uint32_t client, enum lc_kind kind, const void *key, size_t key_len,
                 const void *val, size_t val_len, uint64_t t);
/* A put, delete or append completed successfully at `t`. */
void lc_complete_ok(struct lc_history *h, size_t op, uint64_t t);
/* A get completed at `t`: found with `val`, or not found (val ignored). */
void lc_complete_get(struct lc_history *h, size_t op, uint64_t t, bool found, const void *val, size_t val_len);
/* The operation surely did not take effect (it is dropped from the check). */
void lc_complete_failed(struct lc_history *h, size_t op);
/* The outcome is unknown (the default for an op never completed). */
void lc_complete_unknown(struct lc_history *h, size_t op);

struct lc_options {
    /* Search steps allowed per key before the key is UNKNOWN (0: 2,000,000). */
    uint64_t max_steps_per_key;
    /* Largest per-key history the counterexample shrinker works on op by op
     * (0: 400); bigger ones are reported after truncation only. */
    size_t shrink_limit;
    /* Print at most this many failing keys in the report (0: 3). */
    size_t max_reported_keys;
};

struct lc_result {
    enum lc_verdict verdict;
    size_t n_ops;          /* operations checked (after dropping failed ops and unknown gets) */
    size_t n_keys;         /* distinct keys */
    size_t n_keys_failed;  /* keys proven not linearizable */
    size_t n_keys_unknown; /* keys that ran out of budget */
    uint64_t steps;        /* search steps over all keys */
    /* Human-readable report (never NULL after lc_check): the verdict line and,
     * when not linearizable, the counterexample of each failing key (up to
     * max_reported_keys). Owned by the result: lc_result_free. */
    char *report;
    /* The first failing key (copy) and the ids (lc_invoke's) of the operations
     * of its shrunk counterexample, sorted by invocation time. */
    unsigned char *bad_key;
    size_t bad_key_len;
    size_t *bad_ops;
    size_t n_bad_ops;
};

/* Checks the history. `opts` may be NULL for the defaults. Fills `res`
 * (release it with lc_result_free) and returns res->verdict. */
enum lc_verdict lc_check(const struct lc_history *h, const struct lc_options *opts, struct lc_result *res);
void lc_result_free(struct lc_result *res);

const char *lc_verdict_name(enum lc_verdict v);

#endif
