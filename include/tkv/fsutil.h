/* Small filesystem helpers shared by the node and the scheduler at start-up
 * (blocking syscalls: never call them on a core thread's hot path). */
#ifndef TKV_FSUTIL_H
#define TKV_FSUTIL_H

/* mkdir -p: create path and every missing parent (mode 0755); existing
 * directories are fine. Returns 0, TKV_EINVAL for an empty or over-long path
 * (>= PATH_MAX), or -errno of the mkdir that failed. */
int tkv_mkdir_p(const char *path);

#endif
