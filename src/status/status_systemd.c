/* systemd (Type=notify) glue shared by tinykv-server and
 * tinyscheduler-server: both daemons tell systemd the same states, feed the
 * watchdog by the same rule and reopen their log file on SIGHUP the same
 * way, so the rule lives here once. Main thread only (not a core). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if TKV_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/status.h"

void tkv_status_sd_notify(const char *state)
{
#if TKV_HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

uint64_t tkv_status_sd_watchdog_ns(void)
{
#if TKV_HAVE_SYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        return usec * 1000;
#endif
    return 0;
}

void tkv_status_sd_watchdog_feed(int (*ready)(void *arg, char *reason, size_t cap), void *arg,
                                 bool stopping, bool *warned)
{
    char reason[200];
    if (ready(arg, reason, sizeof(reason)) == 0) {
        tkv_status_sd_notify("WATCHDOG=1");
        *warned = false;
    } else if (!*warned && !stopping) {
        /* Once per not-ready spell: the tick runs every half interval. */
        TKV_LOG_ERROR("not feeding the systemd watchdog", TKV_LF_STR("reason", reason));
        *warned = true;
    }
}

void tkv_status_sd_reload_log(const char *log_path)
{
    tkv_status_sd_notify("RELOADING=1");
    int rv = tkv_log_reopen();
    if (rv)
        TKV_LOG_ERROR("cannot reopen the log file", TKV_LF_STR("path", log_path), TKV_LF_ERR(rv));
    else
        TKV_LOG_INFO("log file reopened", TKV_LF_STR("path", log_path));
    tkv_status_sd_notify("READY=1");
}
