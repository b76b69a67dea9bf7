/* The per-core event loop: one pinned thread per core, each with its own
 * io_uring. The only module that includes <liburing.h> or starts threads;
 * everything above talks to sockets, files, timers and other cores through
 * this header (ARCHITECTURE.md "A core is a store", "The env seam").
 *
 * Threading: unless a function says otherwise it must be called on the core
 * that owns the reactor passed to it (the "current core"), i.e. from a
 * callback that the reactor invoked. Objects created on a core are used and
 * freed on that core. Debug builds assert this on every entry point.
 *
 * Ownership words: an operation "borrows X until cb fires": the caller keeps
 * X (buffer, iovec array, struct tkv_io) alive and untouched until its
 * completion callback has run; the kernel may be reading or writing it.
 *
 * Loop turn order (Seastar's poller order, Redis's before-sleep barrier):
 *   1. drain incoming cross-core rings (run posted functions);
 *   2. reap io_uring completions (run I/O callbacks);
 *   3. run deferred tasks;
 *   4. fire expired timers;
 *   5. before-sleep hooks, in registration order (the raft log flushes its
 *      group commit here, BEFORE anything that depends on it is sent);
 *      then (5b) the tasks those hooks deferred, so what a commit answered
 *      is sent in this turn's submit, not after the next turn's commit;
 *   6. submit queued SQEs and wait for a completion, a timer or a wake-up
 *      (never sleeping through a message posted by another core).
 */
#ifndef TKV_REACTOR_H
#define TKV_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "tkv/common.h"

struct tkv_reactor;       /* one core's loop; opaque */
struct tkv_reactor_group; /* all cores of the process; opaque */

#define TKV_CORE_NONE UINT32_MAX

/* ---- group lifecycle (called from the main thread) ---- */

/* How each core's io_uring is set up, cheapest wake-ups first. The reactor
 * tries the richest mode allowed and falls back one step whenever the
 * kernel answers EINVAL (an older kernel, a seccomp filter on flags):
 *   DEFER   IORING_SETUP_DEFER_TASKRUN | SINGLE_ISSUER | TASKRUN_FLAG
 *           (Linux 6.1): completions are posted only when the core enters
 *           the kernel to wait or asks for them, so a completion never
 *           interrupts a running turn and a sleeping core is woken once per
 *           wait, not once per completion;
 *   COOP    IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG (5.19): completion
 *           work runs at the core's next kernel entry, without an IPI;
 *   PLAIN   neither (task work interrupts the core as a signal would).
 * The environment variable TKV_REACTOR_URING=defer|coop|plain caps the
 * mode for every group of the process (operators, tests of the fallback). */
enum tkv_uring_setup {
    TKV_URING_SETUP_AUTO = 0, /* config: the richest the kernel accepts */
    TKV_URING_SETUP_DEFER = 1,
    TKV_URING_SETUP_COOP = 2,
    TKV_URING_SETUP_PLAIN = 3,
};

/* "defer", "coop", "plain" ("auto" for AUTO, "?" otherwise). Any thread. */
const char *tkv_uring_setup_name(enum tkv_uring_setup mode);

struct tkv_reactor_config {
    uint32_t n_cores;         /* number of shard threads, >= 1 */
    bool pin;                 /* pin core k to CPU k % online CPUs */
    uint32_t uring_entries;   /* SQ size per core; 0 = default (256) */
    uint32_t xcore_ring_size; /* slots per ordered core pair; 0 = default (1024), power of two */
    enum tkv_uring_setup uring_setup; /* richest mode to try; 0 = AUTO (= DEFER) */
};

/* Runs on core `core` inside its thread, before its first loop turn: create
 * listeners, sessions, per-core state. A negative return stops the whole
 * group; tkv_reactor_group_wait() then returns that error. */
typedef int (*tkv_core_init_fn)(struct tkv_reactor *r, uint32_t core, void *arg);
/* Runs on core `core` after its loop has stopped and every operation of the
 * core has completed or been cancelled: free per-core state here. fini may
 * still submit last operations (a close, say) and defer tasks; they run to
 * completion, callbacks included, before the thread ends. It must not post
 * to other cores: they may already have left. */
typedef void (*tkv_core_fini_fn)(struct tkv_reactor *r, uint32_t core, void *arg);

/* Start cfg->n_cores threads. Returns 0 and the group in *group_out, or
 * -errno / TKV_EINVAL (io_uring unavailable yields the kernel's -ENOSYS or
 * -EPERM so tests can skip). */
int tkv_reactor_group_start(const struct tkv_reactor_config *cfg, tkv_core_init_fn init,
                            tkv_core_fini_fn fini, void *arg, struct tkv_reactor_group **group_out);

/* Ask every core to stop (orderly shutdown, see tkv_reactor_on_stop). Safe
 * from any thread and from a signal-handling thread; idempotent. A core
 * leaves its loop once it is idle (no operation in flight, no task queued,
 * nothing to send) and every other core has been idle too, so replies to
 * messages in flight still find their sender. Stop cross-core traffic in
 * on_stop hooks: a message posted to a core that has already left is
 * dropped (and logged by tkv_reactor_group_wait). */
void tkv_reactor_group_stop(struct tkv_reactor_group *g);

/* Join all cores and free the group. Returns 0, or the first error an init
 * callback returned. */
int tkv_reactor_group_wait(struct tkv_reactor_group *g);

/* Convenience for main(): block SIGINT and SIGTERM in the calling thread
 * (call BEFORE tkv_reactor_group_start so cores inherit the mask), then
 * later wait for one of them or for the group to stop by itself, stop the
 * group and join it. Returns what tkv_reactor_group_wait returns. */
void tkv_reactor_block_signals(void);
int tkv_reactor_group_run_until_signal(struct tkv_reactor_group *g);

/* tkv_reactor_group_run_until_signal with hooks on the calling (main)
 * thread, which is not a core and may block: on_tick(arg) every tick_ns
 * (the systemd watchdog ping), on_reload(arg) on SIGHUP (reopen the log
 * file for logrotate). Without on_reload, SIGHUP stops the group like
 * SIGINT/SIGTERM. hooks may be NULL; it is borrowed until return. */
struct tkv_reactor_run_hooks {
    uint64_t tick_ns;
    void (*on_tick)(void *arg);
    void (*on_reload)(void *arg);
    void *arg;
};
int tkv_reactor_group_run(struct tkv_reactor_group *g, const struct tkv_reactor_run_hooks *hooks);

/* How long ago core `core` of g began its latest loop turn, in ns
 * (UINT64_MAX before its first turn or for a core out of range). Every core
 * turns at least once a second even when idle (its metrics tick), so a
 * value of several seconds means the core is stuck (a blocking call, an
 * endless loop). Any thread: a relaxed read of a word the core stores once
 * per turn. */
uint64_t tkv_reactor_group_core_stall_ns(const struct tkv_reactor_group *g, uint32_t core);

uint32_t tkv_reactor_group_cores(const struct tkv_reactor_group *g);

/* The group r belongs to (e.g. to call tkv_reactor_group_stop from a core on
 * a fatal error). Any thread. */
struct tkv_reactor_group *tkv_reactor_group_of(const struct tkv_reactor *r);

/* ---- the current core ---- */

/* The core running the calling thread, or TKV_CORE_NONE off the cores. */
uint32_t tkv_core_self(void);
struct tkv_reactor *tkv_reactor_self(void);
uint32_t tkv_reactor_core_id(const struct tkv_reactor *r);
uint32_t tkv_reactor_n_cores(const struct tkv_reactor *r);
/* True once an orderly stop has begun on this core. */
bool tkv_reactor_stopping(const struct tkv_reactor *r);

/* Monotonic time in nanoseconds, read once per loop turn (cheap). */
uint64_t tkv_now_ns(const struct tkv_reactor *r);

/* Metrics: each core publishes into its slot of tkv_metrics_default()
 * once a second (tinykv_reactor_busy_ratio, _loop_turns_total,
 * _xcore_ring_depth, _xcore_overflow_total, _xcore_overflow_pending,
 * _xcore_messages_total, all labelled core="k").
 *
 * Counters of one core since it started (metrics, tests, benchmarks).
 * Call on r's core (from fini to keep the final figures). */
struct tkv_reactor_stats {
    uint64_t turns;            /* loop turns */
    uint64_t sleeps;           /* waits that blocked in the kernel */
    uint64_t cqes;             /* completions reaped */
    uint64_t resubmits;        /* short sends/writes continued */
    uint64_t posts;            /* cross-core messages posted by this core */
    uint64_t posts_overflowed; /* of which waited in the overflow queue */
    uint64_t wakeups_sent;     /* eventfd writes to sleeping cores */
    uint64_t msgs_run;         /* cross-core messages run on this core */
    uint32_t uring_setup;      /* enum tkv_uring_setup in effect on this core */
};
void tkv_reactor_get_stats(const struct tkv_reactor *r, struct tkv_reactor_stats *out);

/* ---- tasks, hooks and shutdown ---- */

typedef void (*tkv_task_fn)(void *arg);

/* Run fn(arg) on this core during the next loop turn (step 3), or, when
 * called from a before-sleep hook, right after the hooks of this turn
 * (step 5b). Never fails
 * (allocates with tkv_xmalloc when the internal queue must grow). */
void tkv_reactor_defer(struct tkv_reactor *r, tkv_task_fn fn, void *arg);

/* Register a hook run at step 5 of every loop turn, for the core's life
 * (the reactor owns it). */
void tkv_reactor_on_before_sleep(struct tkv_reactor *r, tkv_task_fn fn, void *arg);

/* A before-sleep hook the caller owns and can remove: embed it in the
 * object whose work it flushes (the raft log embeds one), so the hook
 * lives and dies with that object and no lookup table is needed. */
struct tkv_reactor_hook {
    tkv_task_fn fn;
    void *arg;
    /* private to the reactor */
    struct tkv_reactor_hook *prev, *next;
    bool linked;
};
void tkv_reactor_hook_init(struct tkv_reactor_hook *h, tkv_task_fn fn, void *arg);
/* Run h at step 5 of every turn, after the hooks added before it. The
 * reactor borrows h until tkv_reactor_hook_remove or the end of the core
 * (after fini). Adding a linked hook is a no-op. */
void tkv_reactor_hook_add(struct tkv_reactor *r, struct tkv_reactor_hook *h);
/* Unlink h (no-op when not linked); afterwards the caller may free it.
 * Safe from inside any hook, h's own included: a removed hook does not run
 * again, not even later in the same step 5. */
void tkv_reactor_hook_remove(struct tkv_reactor *r, struct tkv_reactor_hook *h);

/* Register a hook run once when an orderly stop begins on this core (close
 * listeners, send GOAWAY, cancel long-lived operations). The loop then keeps
 * running until no operation is in flight, cancelling whatever is left after
 * a grace period (2 s), and finally calls the group's fini. A hook
 * registered after the stop began runs on the next turn. */
void tkv_reactor_on_stop(struct tkv_reactor *r, tkv_task_fn fn, void *arg);

/* ---- timers (one-shot; re-arm from the callback for periodic work) ----
 *
 * Deadlines count from the turn's cached tkv_now_ns(). Timers with equal
 * deadlines fire in unspecified order. A delay of 0 fires on the next turn
 * (never inside the turn that armed it). A timer still armed when its core
 * stops is simply dropped. */

struct tkv_timer;
typedef void (*tkv_timer_fn)(struct tkv_timer *t);

struct tkv_timer {
    tkv_timer_fn fn;
    void *data;
    /* private to the reactor */
    uint64_t deadline_ns;
    size_t heap_index; /* SIZE_MAX when not armed */
};

void tkv_timer_init(struct tkv_timer *t, tkv_timer_fn fn, void *data);
/* Arm (or re-arm) t to fire after delay_ns. The reactor borrows t until it
 * fires or is stopped. */
void tkv_timer_start(struct tkv_reactor *r, struct tkv_timer *t, uint64_t delay_ns);
void tkv_timer_stop(struct tkv_reactor *r, struct tkv_timer *t);
bool tkv_timer_armed(const struct tkv_timer *t);

/* ---- I/O operations ----
 *
 * Each operation takes a caller-owned struct tkv_io, which the reactor
 * borrows until io->cb fires exactly once with the result: >= 0 on success
 * (bytes, or the new fd for accept), -errno on failure, -ECANCELED when
 * cancelled. Submission never fails: SQEs are queued and submitted at the
 * end of the turn (a full SQ is flushed early). One struct tkv_io carries
 * one operation at a time. */
struct tkv_io;
typedef void (*tkv_io_fn)(struct tkv_io *io, int res);

struct tkv_io {
    tkv_io_fn cb;
    void *data;
    /* private to the reactor */
    int op;
    int fd;
    const void *buf;
    size_t len, done;
    uint64_t off;
    struct iovec *iov;
    int iovcnt;
    uint32_t flags;
};

void tkv_io_init(struct tkv_io *io, tkv_io_fn cb, void *data);
bool tkv_io_pending(const struct tkv_io *io);

/* Accept one connection on listen_fd (non-blocking, close-on-exec fd). */
void tkv_reactor_accept(struct tkv_reactor *r, struct tkv_io *io, int listen_fd);
/* Receive up to len bytes; 0 means the peer closed. */
void tkv_reactor_recv(struct tkv_reactor *r, struct tkv_io *io, int fd, void *buf, size_t len);
/* Send ALL len bytes (the reactor resubmits short sends); res = len or -errno. */
void tkv_reactor_send(struct tkv_reactor *r, struct tkv_io *io, int fd, const void *buf,
                      size_t len);
/* Connect a non-blocking socket (client side). */
void tkv_reactor_connect(struct tkv_reactor *r, struct tkv_io *io, int fd,
                         const struct sockaddr *addr, uint32_t addrlen);
/* Write ALL iov bytes at offset off (short writes resubmitted); res = total
 * or -errno. */
void tkv_reactor_writev(struct tkv_reactor *r, struct tkv_io *io, int fd, struct iovec *iov,
                        int iovcnt, uint64_t off);
/* fsync (datasync=false) or fdatasync (datasync=true). */
void tkv_reactor_fsync(struct tkv_reactor *r, struct tkv_io *io, int fd, bool datasync);
/* Linked write-then-fdatasync in one submission (IOSQE_IO_LINK): cb fires
 * once, after the sync, with the bytes written, or the first error (the
 * write's error wins over the -ECANCELED the kernel gives the broken link).
 * A short write is reported as -EIO (the caller treats it as fatal). */
void tkv_reactor_write_sync(struct tkv_reactor *r, struct tkv_io *io, int fd, struct iovec *iov,
                            int iovcnt, uint64_t off);
void tkv_reactor_read(struct tkv_reactor *r, struct tkv_io *io, int fd, void *buf, size_t len,
                      uint64_t off);
void tkv_reactor_close(struct tkv_reactor *r, struct tkv_io *io, int fd);
/* File-system operations on io_uring (IORING_OP_OPENAT, _FALLOCATE,
 * _RENAMEAT, _UNLINKAT), so creating, preallocating, renaming and deleting
 * files never blocks the core (the raft log prepares its next segment with
 * them). Paths are relative to the directory fds (or absolute) and borrowed
 * until cb fires. openat: res = the new fd (pass O_CLOEXEC) or -errno;
 * fallocate: mode as fallocate(2), res 0 or -errno; renameat / unlinkat:
 * res 0 or -errno. tkv_reactor_fsync on a directory fd makes a rename or
 * unlink durable. */
void tkv_reactor_openat(struct tkv_reactor *r, struct tkv_io *io, int dirfd, const char *path,
                        int flags, unsigned mode);
void tkv_reactor_fallocate(struct tkv_reactor *r, struct tkv_io *io, int fd, int mode,
                           uint64_t off, uint64_t len);
void tkv_reactor_renameat(struct tkv_reactor *r, struct tkv_io *io, int olddirfd,
                          const char *oldpath, int newdirfd, const char *newpath);
void tkv_reactor_unlinkat(struct tkv_reactor *r, struct tkv_io *io, int dirfd, const char *path);
/* Cancel a pending operation; its cb still fires (with -ECANCELED or with
 * the result if it had already completed). No-op if io is not pending. */
void tkv_reactor_cancel(struct tkv_reactor *r, struct tkv_io *io);

/* ---- sockets (synchronous set-up helpers, any thread) ---- */

/* Turn host + port into a socket address: "1.2.3.4", "::1" or "[::1]",
 * "localhost" (always 127.0.0.1, on both the listening and the connecting
 * side, so they meet), "" (0.0.0.0 with TKV_RESOLVE_PASSIVE, else
 * 127.0.0.1), or with neither literal nor TKV_RESOLVE_NUMERIC a name looked
 * up with getaddrinfo (first IPv4 answer, else the first answer; this may
 * block on DNS: set-up code only, never on a core). Returns 0, TKV_EINVAL
 * (not an address / a name under TKV_RESOLVE_NUMERIC) or TKV_ENOTFOUND
 * (the name does not resolve). Any thread. */
#define TKV_RESOLVE_PASSIVE 1u /* for bind(): "" is every interface */
#define TKV_RESOLVE_NUMERIC 2u /* literals and "localhost" only: never blocks */
int tkv_reactor_resolve(const char *host, uint16_t port, unsigned flags,
                        struct sockaddr_storage *ss, socklen_t *len_out);

/* Create a non-blocking listening TCP socket on host:port (anything
 * tkv_reactor_resolve accepts for binding); port 0 picks a free port,
 * reported in *port_out when not NULL. reuseport=true lets every core
 * listen on the same port and the kernel spread connections over them (any
 * process of the same user may join such a port: tinykv-server binds once
 * without it). Returns the fd, -errno (-EADDRINUSE: somebody listens
 * there) or a tkv_reactor_resolve error. */
int tkv_reactor_listen_tcp(const char *host, uint16_t port, bool reuseport, int backlog,
                           uint16_t *port_out);
/* Parse "host:port" (IPv4, [IPv6]:port, or ":port" = all interfaces): the
 * reactor's defaults for tkv_hostport_split. */
int tkv_reactor_parse_hostport(const char *s, char *host_out, size_t host_cap, uint16_t *port_out);

/* ---- cross-core messages ----
 *
 * One single-producer/single-consumer ring (Concurrency Kit ck_ring) per
 * ordered pair of cores, plus a wake-up of the target loop. fn(arg) runs on
 * core `to`. The rule "messages return home": whoever allocates arg frees
 * it, so the target replies by posting back to the sender. Posting never
 * fails and never blocks: when the ring is full the message waits in a
 * local overflow queue flushed on later turns. Posting to oneself equals
 * tkv_reactor_defer. */
void tkv_reactor_post(struct tkv_reactor *r, uint32_t to, tkv_task_fn fn, void *arg);

#endif
