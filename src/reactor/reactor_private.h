/* Internals shared by the reactor's files: the per-core struct, the group,
 * the task queue and the functions one file exports to the others. Never
 * included outside src/reactor/ (the only place that sees <liburing.h>). */
#ifndef TKV_REACTOR_PRIVATE_H
#define TKV_REACTOR_PRIVATE_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <ck_ring.h>

#include "tkv/reactor.h"

#define REACTOR_CACHELINE 64
#define REACTOR_GRACE_NS (2ull * 1000 * 1000 * 1000)
/* How long a core with undelivered overflow messages sleeps before retrying
 * the full ring (the consumer does not signal "space available"). */
#define REACTOR_OVERFLOW_RETRY_NS (50ull * 1000)

/* A deferred call: defer queue, hooks, cross-core messages and overflow. */
struct reactor_task {
    tkv_task_fn fn;
    void *arg;
};

/* A hook made by tkv_reactor_on_before_sleep: the reactor owns it. */
struct reactor_owned_hook {
    struct tkv_reactor_hook hook;
    struct reactor_owned_hook *next;
};

/* Growable FIFO (power-of-two circular buffer), core-local. */
struct reactor_taskq {
    struct reactor_task *v;
    size_t head, len, cap;
};

void reactor_taskq_push(struct reactor_taskq *q, tkv_task_fn fn, void *arg);
bool reactor_taskq_pop(struct reactor_taskq *q, struct reactor_task *out);
void reactor_taskq_free(struct reactor_taskq *q);

/* One ordered core pair's SPSC ring. ck_ring keeps the consumer and producer
 * counters on separate cache lines; the slots follow in their own buffer. */
struct reactor_xring {
    struct ck_ring ring;
    struct reactor_task *slots;
} __attribute__((aligned(REACTOR_CACHELINE)));

/* user_data tags in the low bits of a CQE's user_data (struct tkv_io is at
 * least 8-byte aligned). */
enum {
    UD_IO = 0,        /* the io's main (or only) SQE */
    UD_IO_LINKED = 1, /* the write half of write_sync */
    UD_MASK = 7,
};
#define UD_CANCEL ((uint64_t)2) /* a cancel SQE's own completion: ignored */
#define UD_WAKE ((uint64_t)3)   /* the eventfd read that wakes a sleeping core */

enum reactor_op {
    OP_NONE = 0,
    OP_ACCEPT,
    OP_RECV,
    OP_SEND,
    OP_CONNECT,
    OP_WRITEV,
    OP_FSYNC,
    OP_WRITE_SYNC,
    OP_READ,
    OP_CLOSE,
    OP_OPENAT,
    OP_FALLOCATE,
    OP_RENAMEAT,
    OP_UNLINKAT,
};

/* io->flags bits for write_sync: which CQEs are still outstanding. */
#define IOF_WAIT_WRITE 1u
#define IOF_WAIT_SYNC 2u

struct tkv_reactor {
    /* Written by other cores: kept on its own cache line. 1 while this
     * core is (about to be) blocked in the kernel; a producer that swaps it
     * from 1 to 0 owes the core an eventfd write. */
    _Atomic int sleeping __attribute__((aligned(REACTOR_CACHELINE)));
    int wake_fd;

    struct tkv_reactor_group *g __attribute__((aligned(REACTOR_CACHELINE)));
    uint32_t core, n_cores;
    struct io_uring ring;
    bool ring_ok;
    /* the mode the ring was created in (enum tkv_uring_setup): DEFER and
     * COOP rings flag pending completion work in the SQ ring's flags
     * (IORING_SQ_TASKRUN), which a turn that does not wait must flush */
    uint32_t uring_setup;
    uint64_t now_ns;

    /* SQEs handed to the kernel (or queued) whose CQEs are still due. */
    uint64_t user_inflight;   /* user operations' CQEs */
    uint64_t intern_inflight; /* cancels and the wake read */
    bool wake_armed;
    uint64_t wake_buf;

    struct reactor_taskq deferred;
    /* Tasks deferred BY a before-sleep hook: run right after the hooks, in
     * the same turn (step 5b), so a reply a group commit produced reaches
     * this turn's submit instead of waiting behind the next commit. */
    struct reactor_taskq after_hooks;
    bool in_hooks;
    /* step 5: intrusive list of hooks in registration order; bs_next is
     * the next hook the running pass will call (remove advances it) */
    struct tkv_reactor_hook *bs_head, *bs_tail, *bs_next;
    struct reactor_owned_hook *owned_hooks; /* tkv_reactor_on_before_sleep */
    struct reactor_taskq on_stop;

    /* timers: binary min-heap on deadline_ns */
    struct tkv_timer **heap;
    size_t heap_len, heap_cap;

    /* cross-core: per-target overflow FIFOs and a per-turn "owe a wake-up"
     * mark per target */
    struct reactor_taskq *overflow;
    size_t overflow_total;
    uint8_t *wake_owed;
    bool any_wake_owed;

    /* shutdown */
    bool stopping;
    bool marked_idle;
    bool exiting; /* loop left: fini and the final drain run; no re-arming */
    bool init_ok;
    uint64_t cancel_at_ns;

    struct tkv_reactor_stats st;

    /* Metrics (reactor_metrics.c): published once a second by the core
     * itself into its own slot of the process registry. */
    struct reactor_metrics *metrics;
    uint64_t sleep_ns; /* time blocked in the kernel, total */

    /* Start of the latest loop turn (CLOCK_MONOTONIC ns), written by this
     * core with a relaxed store every turn and read by the watchdog and
     * /readyz from other threads; its own cache line. The metrics tick
     * makes even an idle core turn at least once a second. */
    _Atomic uint64_t heartbeat_ns __attribute__((aligned(REACTOR_CACHELINE)));

    pthread_t thread;
    bool thread_started;
    int setup_rv; /* ring/eventfd creation result, reported to group_start */
};

struct tkv_reactor_group {
    uint32_t n;
    struct tkv_reactor **cores;
    struct reactor_xring *xr; /* n * n, index from * n + to */
    tkv_core_init_fn init;
    tkv_core_fini_fn fini;
    void *arg;
    struct tkv_reactor_config cfg;
    enum tkv_uring_setup uring_cap; /* cfg.uring_setup capped by TKV_REACTOR_URING */

    _Atomic int stop;        /* an orderly stop was requested */
    _Atomic int first_err;   /* first init error */
    _Atomic uint32_t n_idle; /* cores that reached quiescence while stopping */
    int stop_fd;             /* eventfd written on stop, for run_until_signal */

    /* start-up handshake (set-up only, never on the hot path) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t n_ready;
    int go; /* 0 wait, 1 run, -1 abort */
};

/* reactor_loop.c */
void reactor_loop_run(struct tkv_reactor *r);
/* Forget every hook and free the ones the reactor owns (any thread, after
 * the core's loop ended). */
void reactor_hooks_free(struct tkv_reactor *r);
uint64_t reactor_clock_ns(void);

/* reactor_uring.c */
/* Create r's ring on the calling thread (the core's own: DEFER rings accept
 * submissions and waits only from their creator), in the richest mode up to
 * `cap` the kernel accepts. */
int reactor_uring_init(struct tkv_reactor *r, unsigned entries, enum tkv_uring_setup cap);
/* Submit what is queued without waiting; also enter the kernel when
 * completion work is pending (DEFER/COOP) so its CQEs are posted for the
 * next turn's reap even if the core never blocks. */
void reactor_uring_submit_nowait(struct tkv_reactor *r);
void reactor_uring_exit(struct tkv_reactor *r);
struct io_uring_sqe *reactor_sqe(struct tkv_reactor *r);
unsigned reactor_uring_reap(struct tkv_reactor *r);
void reactor_uring_cancel_all(struct tkv_reactor *r);

/* reactor_timer.c */
void reactor_timers_fire(struct tkv_reactor *r);
/* Deadline of the earliest timer, or UINT64_MAX. */
uint64_t reactor_timers_next(const struct tkv_reactor *r);

/* reactor_ring.c */
int reactor_rings_init(struct tkv_reactor_group *g, uint32_t slots);
void reactor_rings_free(struct tkv_reactor_group *g);
/* Run what other cores posted; returns the number of messages run. */
size_t reactor_rings_drain(struct tkv_reactor *r);
bool reactor_rings_nonempty(const struct tkv_reactor *r);
/* Messages waiting in the rings INTO r (consumer side, core of r). */
size_t reactor_rings_depth(const struct tkv_reactor *r);
/* Move overflow into rings and send owed wake-ups (end of turn). */
void reactor_rings_flush(struct tkv_reactor *r);
/* Count and drop what is left in the rings after every core stopped. */
size_t reactor_rings_leftover(struct tkv_reactor_group *g);

/* reactor_wake.c */
int reactor_wake_init(struct tkv_reactor *r);
void reactor_wake_close(struct tkv_reactor *r);
void reactor_wake_arm(struct tkv_reactor *r);
void reactor_wake_complete(struct tkv_reactor *r, int res);
/* Unconditional kick (stop requests). Any thread. */
void reactor_wake_kick(struct tkv_reactor *r);
/* Producer side after publishing into r's ring: wake r if it sleeps. */
bool reactor_wake_if_sleeping(struct tkv_reactor *r);
/* Consumer side: announce sleep and re-check; false = do not sleep. */
bool reactor_wake_prepare_sleep(struct tkv_reactor *r);
void reactor_wake_end_sleep(struct tkv_reactor *r);

/* reactor_metrics.c: per-core series + the 1 s tick (core of r). */
void reactor_metrics_start(struct tkv_reactor *r);
void reactor_metrics_stop(struct tkv_reactor *r);

/* reactor_smp.c */
extern _Thread_local struct tkv_reactor *reactor_tls;

#ifdef TKV_DEBUG
#define REACTOR_OWNER(r) tkv_assert(reactor_tls == (r))
#else
#define REACTOR_OWNER(r) ((void)(r))
#endif

#endif
