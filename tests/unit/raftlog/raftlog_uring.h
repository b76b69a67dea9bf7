/* Drives a raft log opened on a real io_uring reactor (one core): rounds of
 * appends staged in one task each, optional failpoint armed at a round. */
#ifndef RAFTLOG_URING_H
#define RAFTLOG_URING_H

#include <stdbool.h>
#include <stdint.h>

#include "tkv/raftlog.h"

struct uring_run {
    /* in */
    const char *dir;                   /* disk log, or NULL with disk set */
    struct tkv_raftlog_memdisk *disk;  /* memory log */
    int rounds, per_round;
    const char *failpoint; /* libfiu name armed before round fail_round */
    int fail_round;
    bool disarm_after_failure; /* ENOSPC case: disarm and go on */
    /* continuous: stage per_round appends on every loop turn (rounds x
     * per_round in all, at most 4 x per_round unacknowledged) without
     * waiting for the previous ones, so batches overlap */
    bool continuous;
    uint64_t segment_size; /* 0 = 64 KiB */
    /* out */
    int open_rv;
    int completed;    /* append callbacks with 0 */
    int failed;       /* append callbacks with an error */
    int first_err;
    int append_after_failure; /* result of an append staged after the failure */
    bool timed_out;
    struct tkv_raftlog_stats stats;
};

/* Returns 0, or -ENOSYS/-EPERM when io_uring is unavailable (skip). */
int uring_run(struct uring_run *u);

#endif
