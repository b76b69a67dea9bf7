/* sicheck: snapshot-isolation checkers for transactional histories.
 *
 * 1. List-append (Elle's approach, Kingsbury & Alvaro 2020). Every key holds
 *    a list of integers; a transaction is a sequence of micro-operations
 *    "append v to key k" and "read key k -> [v1, v2, ...]". Appended values
 *    are unique per key, so a read names the writer of every element, and
 *    the longest read of a key gives the order of its versions. From that
 *    the checker infers, between committed transactions:
 *      ww  T1 -> T2: T2 appended the element right after T1's;
 *      wr  T1 -> T2: T2 read a list whose last element T1 appended;
 *      rw  T1 -> T2: T1 read a version that T2's append directly follows
 *                    (an anti-dependency);
 *    and reports, with the transactions involved:
 *      G0             a cycle of ww edges (dirty write);
 *      G1a            aborted read: a committed read saw an aborted append;
 *      G1b            intermediate read: a read ended on an element its
 *                     writer later followed with another append to the key;
 *      G1c            a cycle of ww and wr edges (circular information flow);
 *      G-single       a cycle with exactly one rw edge (read skew; SI forbids);
 *      lost-update    two committed transactions read the same version of a
 *                     key and both appended to it (SI's first-committer-wins
 *                     forbids it);
 *      non-repeatable a transaction's second read of a key differs from its
 *                     first read plus its own appends (or misses its own
 *                     appends);
 *      garbage-read   a read of an element no transaction appended;
 *      incompatible-order  two reads of a key that are not prefixes of one
 *                     another (a version vanished: e.g. an append done as
 *                     read-modify-write was overwritten);
 *      lost-write     (with realtime) a committed append missing from a read
 *                     of a transaction that began after the append's
 *                     transaction committed; Percolator with one timestamp
 *                     oracle promises this, plain SI does not.
 *    Cycles with two or more rw edges (G2, e.g. write skew) are allowed by
 *    SI: they are counted and listed as information, never a failure.
 *    Transactions whose outcome is unknown count as committed if any of
 *    their appends was read, are ignored otherwise; their reads are ignored.
 *
 * 2. Bank: snapshot reads of all accounts of a transfer workload must each
 *    sum to the constant total (and, if asked, show no negative balance).
 *
 * Not thread-safe: one history is filled by one thread. */
#ifndef TKV_TEST_SICHECK_H
#define TKV_TEST_SICHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum si_status { SI_COMMITTED, SI_ABORTED, SI_UNKNOWN };

enum si_anomaly {
    SI_G0,
    SI_G1A,
    SI_G1B,
    SI_G1C,
    SI_G_SINGLE,
    SI_LOST_UPDATE,
    SI_NONREPEATABLE_READ,
    SI_GARBAGE_READ,
    SI_INCOMPATIBLE_ORDER,
    SI_LOST_WRITE,
    SI_G2, /* allowed under SI: information only */
    SI_N_ANOMALIES
};

const char *si_anomaly_name(enum si_anomaly a);

struct si_history;

struct si_history *si_history_new(void);
void si_history_free(struct si_history *h);

/* Starts recording a transaction of `client`, begun at time `t` (any
 * monotonic unit; used only by the realtime lost-write check). Returns its id. */
size_t si_txn_begin(struct si_history *h, uint32_t client, uint64_t t);
void si_txn_append(struct si_history *h, size_t txn, const void *key, size_t key_len, uint64_t value);
/* The key read as the list vals[0..n) (n == 0: empty or absent). */
void si_txn_read(struct si_history *h, size_t txn, const void *key, size_t key_len, const uint64_t *vals, size_t n);
/* Ends the transaction at `t`. A transaction never ended is SI_UNKNOWN. */
void si_txn_end(struct si_history *h, size_t txn, enum si_status status, uint64_t t);

struct si_options {
    bool realtime;            /* run the lost-write check (see above) */
    size_t max_examples;      /* examples printed per anomaly class (0: 3) */
    size_t max_rw_searches;   /* G-single path searches (0: 200,000), then the count is a lower bound */
};

struct si_result {
    bool ok; /* no anomaly that SI forbids */
    size_t count[SI_N_ANOMALIES];
    size_t n_txns, n_committed, n_aborted, n_unknown;
    size_t n_edges[3]; /* ww, wr, rw */
    char *report;      /* summary line, then examples; owned, si_result_free */
};

bool si_check_append(const struct si_history *h, const struct si_options *opts, struct si_result *res);
void si_result_free(struct si_result *res);

/* ---- bank ---- */

struct si_bank;

struct si_bank *si_bank_new(size_t n_accounts, int64_t total, bool forbid_negative);
void si_bank_free(struct si_bank *b);
/* A committed read-only transaction's snapshot of all accounts. */
void si_bank_read(struct si_bank *b, uint32_t client, uint64_t t, const int64_t *balances, size_t n);
struct si_bank_result {
    bool ok;
    size_t n_reads, n_bad_total, n_bad_negative, n_bad_shape;
    char *report;
};
bool si_bank_check(const struct si_bank *b, size_t max_examples, struct si_bank_result *res);
void si_bank_result_free(struct si_bank_result *res);

#endif
