/* Disk-full protection (issue 13 item 1; README.md "Disk full"): TiKV's
 * storage.reserve-space model. A monitor thread measures the data dir's
 * filesystem (statvfs) every SERVER_DISK_CHECK_MS and publishes the free
 * bytes through atomics; the cores refuse writes while the free space,
 * minus what they committed since the last measurement, is below the
 * threshold. The cores never make a syscall for it (hot path). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "server_private.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/metrics.h"

#define MiB (1ull << 20)
#define SERVER_DISK_CHECK_MS 100
/* The reserve is at most this share of the filesystem (TiKV: 5 %), so a
 * small disk is not refused outright by the 5 GB default. */
#define RESERVE_MAX_PERCENT 5
/* A fifth of the reserve is the placeholder file (TiKV's split). */
#define PLACEHOLDER_DIVISOR 5
/* Writes resume only this far above the point where the placeholder fits
 * again, so a disk hovering at the threshold does not flap. */
#define RESUME_HYSTERESIS MiB
/* What one committed write costs on disk beyond its key and value (log
 * record and page headers), and why committed bytes count twice: they go
 * to the log now and to the table file when evicted or checkpointed. */
#define WRITE_OVERHEAD 64u
#define WRITE_COPIES 2u

static int measure(const char *dir, uint64_t *capacity, uint64_t *avail)
{
    struct statvfs st;
    if (statvfs(dir, &st) != 0)
        return -errno;
    *capacity = (uint64_t)st.f_blocks * st.f_frsize;
    *avail = (uint64_t)st.f_bavail * st.f_frsize;
    return 0;
}

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static bool placeholder_exists(const struct server_disk *d)
{
    struct stat st;
    return stat(d->placeholder, &st) == 0;
}

static void placeholder_release(struct server_disk *d, const char *why)
{
    if (unlink(d->placeholder) == 0)
        TKV_LOG_WARN("released the space placeholder file", TKV_LF_STR("path", d->placeholder),
                     TKV_LF_U64("bytes", d->placeholder_bytes), TKV_LF_STR("why", why));
    else if (errno != ENOENT)
        TKV_LOG_ERROR("cannot delete the space placeholder file",
                      TKV_LF_STR("path", d->placeholder), TKV_LF_ERR(-errno));
}

/* Allocate the placeholder (real blocks: posix_fallocate, which writes
 * zeros where the filesystem cannot allocate). A partial one is removed. */
static int placeholder_create(struct server_disk *d)
{
    int fd = open(d->placeholder, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rv = posix_fallocate(fd, 0, (off_t)d->placeholder_bytes);
    if (rv == 0 && fsync(fd) != 0)
        rv = errno;
    close(fd);
    if (rv != 0) {
        unlink(d->placeholder);
        return -rv;
    }
    TKV_LOG_INFO("created the space placeholder file", TKV_LF_STR("path", d->placeholder),
                 TKV_LF_U64("bytes", d->placeholder_bytes));
    return 0;
}

void server_disk_plan(struct server_disk *d, const struct tkv_server_config *cfg,
                      struct tkv_engine_opts *eopts)
{
    uint64_t capacity = 0, avail = 0;
    int rv;

    memset(d, 0, sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "%s", cfg->storage.data_dir);
    snprintf(d->placeholder, sizeof(d->placeholder), "%s/space_placeholder_file",
             cfg->storage.data_dir);
    rv = measure(d->dir, &capacity, &avail);
    if (rv != 0 || capacity == 0) {
        /* Without a size we cannot protect anything; say so, serve anyway. */
        TKV_LOG_WARN("cannot measure the data dir's filesystem; disk-full protection is off",
                     TKV_LF_STR("path", d->dir), TKV_LF_ERR(rv));
        d->enabled = false;
        return;
    }
    d->enabled = true;
    d->capacity = capacity;
    /* Scale the engine's disk budget to the filesystem: on a large disk
     * these are the engine's defaults (64 MiB log files, a checkpoint per
     * 256 MiB of log, 20 % of the cache dirty), on a small one they shrink
     * so the headroom WiredTiger needs after writes stop stays a fraction
     * of the disk (src/engine/README.md "Disk space"). */
    eopts->log_file_max = clamp_u64(capacity / 64, MiB, 64 * MiB);
    eopts->checkpoint_log_size = clamp_u64(capacity / 16, MiB, 256 * MiB);
    eopts->max_dirty_bytes = capacity / 32 >= 51 * MiB ? 0 : clamp_u64(capacity / 32, MiB, 51 * MiB);
    d->headroom = tkv_engine_disk_headroom(eopts);
    d->reserve = TKV_MIN(cfg->storage.reserve_space, capacity / 100 * RESERVE_MAX_PERCENT);
    /* The placeholder is a fifth of the reserve (TiKV), but never less than
     * what the engine needs to recover after a crash: deleting it must let
     * a node start on a disk that something else filled to the last byte.
     * It is part of the reserve as far as the reserve goes. */
    d->placeholder_bytes = 0;
    if (d->reserve > 0)
        d->placeholder_bytes =
            TKV_MAX(d->reserve / PLACEHOLDER_DIVISOR, tkv_engine_restart_space(eopts));
    d->refuse_below = (d->reserve > d->placeholder_bytes ? d->reserve - d->placeholder_bytes : 0) +
                      d->headroom;
    d->resume_at = d->refuse_below + d->placeholder_bytes + RESUME_HYSTERESIS;

    /* Start-up on a nearly full disk: give the placeholder's space to the
     * engine's recovery (it replays the log and checkpoints). With room,
     * (re)create it so the next full disk has something to give back. */
    bool have = placeholder_exists(d);
    if (have && (d->reserve == 0 || avail < d->resume_at)) {
        placeholder_release(d, d->reserve == 0 ? "storage.reserve-space is 0"
                                               : "free space is short at start-up");
        have = false;
        (void)measure(d->dir, &capacity, &avail);
    } else if (!have && d->placeholder_bytes > 0 && avail >= d->resume_at) {
        rv = placeholder_create(d);
        if (rv != 0)
            TKV_LOG_WARN("cannot create the space placeholder file",
                         TKV_LF_STR("path", d->placeholder), TKV_LF_ERR(rv));
        have = rv == 0;
        (void)measure(d->dir, &capacity, &avail);
    }
    atomic_store(&d->avail, avail);
    atomic_store(&d->written, 0);
    atomic_store(&d->full, avail < d->refuse_below);
    TKV_LOG_INFO("disk space", TKV_LF_STR("path", d->dir), TKV_LF_U64("capacity", capacity),
                 TKV_LF_U64("available", avail), TKV_LF_U64("reserve", d->reserve),
                 TKV_LF_U64("placeholder", have ? d->placeholder_bytes : 0),
                 TKV_LF_U64("engine_headroom", d->headroom),
                 TKV_LF_U64("refuse_writes_below", d->refuse_below),
                 TKV_LF_U64("resume_writes_at", d->resume_at));
    if (atomic_load(&d->full))
        TKV_LOG_WARN("disk full at start-up: writes are refused until space is freed",
                     TKV_LF_U64("available", avail),
                     TKV_LF_U64("refuse_writes_below", d->refuse_below));
}

bool server_disk_full(struct server_disk *d)
{
    if (!d || !d->enabled)
        return false;
    if (atomic_load_explicit(&d->full, memory_order_relaxed))
        return true;
    uint64_t avail = atomic_load_explicit(&d->avail, memory_order_relaxed);
    uint64_t spent = atomic_load_explicit(&d->written, memory_order_relaxed);
    return spent >= avail || avail - spent < d->refuse_below;
}

void server_disk_account(struct server_disk *d, size_t n_ops, size_t bytes)
{
    if (!d || !d->enabled)
        return;
    uint64_t cost = WRITE_COPIES * ((uint64_t)bytes + (uint64_t)n_ops * WRITE_OVERHEAD);
    atomic_fetch_add_explicit(&d->written, cost, memory_order_relaxed);
}

void server_disk_note_enospc(struct server_disk *d)
{
    if (d && d->enabled)
        atomic_store(&d->full, 1); /* the monitor lifts it once space is back */
}

/* One measurement: publish, then decide full / not full. Monitor thread. */
static void disk_check(struct server_disk *d)
{
    uint64_t capacity = 0, avail = 0;
    int rv = measure(d->dir, &capacity, &avail);
    if (rv != 0) {
        if (!d->warned_measure)
            TKV_LOG_WARN("cannot measure the data dir's filesystem", TKV_LF_STR("path", d->dir),
                         TKV_LF_ERR(rv));
        d->warned_measure = true;
        return;
    }
    d->warned_measure = false;
    /* What the cores committed before this measurement is in it (or in the
     * engine's dirty cache, which the headroom covers). */
    atomic_store(&d->written, 0);
    atomic_store(&d->avail, avail);
    if (d->g_capacity) {
        tkv_gauge_set(d->g_capacity, (double)capacity);
        tkv_gauge_set(d->g_available, (double)avail);
    }
    bool full = atomic_load(&d->full);
    if (!full && avail < d->refuse_below) {
        atomic_store(&d->full, 1);
        d->n_full_events++;
        TKV_LOG_WARN("disk full: refusing writes until space is freed (reads are served)",
                     TKV_LF_STR("path", d->dir), TKV_LF_U64("available", avail),
                     TKV_LF_U64("refuse_writes_below", d->refuse_below),
                     TKV_LF_U64("resume_writes_at", d->resume_at));
        full = true;
    }
    if (full && placeholder_exists(d)) {
        /* Give WiredTiger the placeholder's space for its eviction,
         * checkpoints and log; we recreate it before writes resume. */
        placeholder_release(d, "the disk is full");
        return; /* measure again next time */
    }
    if (full && avail >= d->resume_at) {
        if (d->placeholder_bytes > 0) {
            rv = placeholder_create(d);
            if (rv != 0) {
                if (!d->warned_placeholder)
                    TKV_LOG_WARN("cannot recreate the space placeholder file; writes stay "
                                 "refused",
                                 TKV_LF_STR("path", d->placeholder), TKV_LF_ERR(rv));
                d->warned_placeholder = true;
                return;
            }
            d->warned_placeholder = false;
            if (measure(d->dir, &capacity, &avail) != 0 || avail < d->refuse_below)
                return; /* somebody else took the space meanwhile */
            atomic_store(&d->avail, avail);
        }
        atomic_store(&d->full, 0);
        TKV_LOG_INFO("disk has free space again: accepting writes", TKV_LF_STR("path", d->dir),
                     TKV_LF_U64("available", avail),
                     TKV_LF_U64("refuse_writes_below", d->refuse_below));
    }
    if (d->g_full)
        tkv_gauge_set(d->g_full, atomic_load(&d->full) ? 1.0 : 0.0);
}

static void *disk_monitor(void *arg)
{
    struct server_disk *d = arg;
    while (!atomic_load(&d->stop)) {
        struct timespec ts = {0, SERVER_DISK_CHECK_MS * 1000000L};
        nanosleep(&ts, NULL);
        disk_check(d);
    }
    return NULL;
}

int server_disk_monitor_start(struct server_disk *d)
{
    if (!d->enabled)
        return 0;
    struct tkv_metrics *reg = tkv_metrics_default();
    d->g_capacity = tkv_metrics_gauge(reg, "tinykv_store_size_bytes",
                                      "Size of the data dir's filesystem (capacity) and its free "
                                      "space for us (available).",
                                      (const char *[]){"type", "capacity", NULL});
    d->g_available = tkv_metrics_gauge(reg, "tinykv_store_size_bytes",
                                       "Size of the data dir's filesystem (capacity) and its free "
                                       "space for us (available).",
                                       (const char *[]){"type", "available", NULL});
    d->g_full = tkv_metrics_gauge(reg, "tinykv_store_disk_full",
                                  "1 while writes are refused because the disk is full.", NULL);
    tkv_gauge_set(d->g_capacity, (double)d->capacity);
    tkv_gauge_set(d->g_available, (double)atomic_load(&d->avail));
    tkv_gauge_set(d->g_full, atomic_load(&d->full) ? 1.0 : 0.0);
    atomic_store(&d->stop, 0);
    int rv = pthread_create(&d->thread, NULL, disk_monitor, d);
    if (rv != 0) {
        TKV_LOG_ERROR("cannot start the disk monitor thread", TKV_LF_ERR(-rv));
        return -rv;
    }
    d->running = true;
    return 0;
}

void server_disk_monitor_stop(struct server_disk *d)
{
    if (!d->running)
        return;
    atomic_store(&d->stop, 1);
    pthread_join(d->thread, NULL);
    d->running = false;
}
