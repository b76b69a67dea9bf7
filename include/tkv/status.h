/* The node status HTTP server (ECOSYSTEM.md 2.7), shared by tinykv-server
 * and tinyscheduler-server: libmicrohttpd on its own thread, never a core.
 *
 *   GET /metrics  Prometheus text format 0.0.4 (tkv_metrics_render)
 *   GET /livez    200 "ok" while the process answers HTTP at all
 *   GET /readyz   200 "ok" when info->ready says so, else 503 + the reason
 *                 (one line); 200 when there is no ready callback
 *   GET /status   JSON: component, version, git_hash, build_time,
 *                 start_time (RFC 3339), uptime_seconds, plus whatever
 *                 info->status_fill adds (cores, stores, mode, ...)
 *   GET /config   the effective configuration as JSON (info->config_json)
 *   anything else: the routes added with tkv_status_add_route (prefix
 *                 match), else 404; methods other than GET/HEAD: 405.
 *
 * Threading: start/stop from the main thread; every callback runs on the
 * HTTP thread (one thread, requests served one at a time), so callbacks
 * must only read what other threads publish race-free (atomics, the
 * metrics registry, immutable config). Requests are bounded: at most 64
 * connections, 10 s idle timeout, no request bodies except on body routes
 * (tkv_status_add_body_route: at most their max_body bytes, else 413).
 * Paths reach routes as received: percent escapes are NOT decoded (a key
 * in a path may hold any byte, "%00" included; the route decodes it).
 */
#ifndef TKV_STATUS_H
#define TKV_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct tkv_metrics;
struct tkv_status_server;

/* What a route handler answers: body is tkv_malloc'ed (or NULL with
 * len 0); the server takes ownership of it in every case. */
struct tkv_status_reply {
    unsigned code;            /* HTTP status, default 200 */
    const char *content_type; /* static string; default application/json */
    char *body;
    size_t len;
};

/* A route: url is the path (libmicrohttpd strips the query string).
 * Return 0 after filling reply, or a negative code (the server answers 500
 * naming it). Any method reaches a route; answer 405 yourself. HTTP thread. */
typedef int (*tkv_status_route_fn)(void *arg, const char *method, const char *url,
                                   struct tkv_status_reply *reply);

/* A route that takes a request body (POST): body is NUL-terminated (also
 * when it holds NUL bytes: use body_len), "" when there is none. Same
 * contract as tkv_status_route_fn otherwise. */
typedef int (*tkv_status_body_route_fn)(void *arg, const char *method, const char *url,
                                        const char *body, size_t body_len,
                                        struct tkv_status_reply *reply);

struct tkv_status_info {
    const char *component; /* "tinykv-server" */
    const char *version, *git_hash, *build_time;
    struct tkv_metrics *metrics; /* NULL = tkv_metrics_default() */
    /* 0 when ready; otherwise write a one-line reason into reason[cap]. */
    int (*ready)(void *arg, char *reason, size_t cap);
    /* Add fields to the /status object (may be NULL). */
    void (*status_fill)(void *arg, json_t *obj);
    /* The effective configuration as a JSON text, tkv_malloc'ed (NULL on
     * failure: 500). NULL callback: /config answers 404. */
    char *(*config_json)(void *arg);
    void *arg;
};

/* Listen on addr ("host:port"; port 0 = ephemeral, see tkv_status_port)
 * and serve. info is copied; the strings and arg it points to are borrowed
 * until tkv_status_stop. Returns 0 and *out, or -errno (address in use,
 * ...), TKV_EINVAL (bad address), TKV_EUNAVAILABLE (libmicrohttpd could
 * not start). Main thread. */
int tkv_status_start(const char *addr, const struct tkv_status_info *info,
                     struct tkv_status_server **out);

/* Add a route for every path starting with prefix (longest prefix wins;
 * prefix copied). Before or after start; main thread. */
void tkv_status_add_route(struct tkv_status_server *srv, const char *prefix,
                          tkv_status_route_fn fn, void *arg);

/* The same for a route that accepts request bodies of up to max_body
 * bytes (the whole body is collected before fn runs). */
void tkv_status_add_body_route(struct tkv_status_server *srv, const char *prefix,
                               tkv_status_body_route_fn fn, void *arg, size_t max_body);

/* The port actually bound. Any thread. */
uint16_t tkv_status_port(const struct tkv_status_server *srv);

/* Stop serving (waits for the HTTP thread) and free. NULL is a no-op. */
void tkv_status_stop(struct tkv_status_server *srv);

/* ---- systemd (Type=notify) glue, shared by both daemons ----
 * No-ops without libsystemd or without NOTIFY_SOCKET. Main thread. */

/* sd_notify(state): "READY=1", "STOPPING=1", "STATUS=...", ... */
void tkv_status_sd_notify(const char *state);

/* The unit's WatchdogSec in nanoseconds; 0 when the watchdog is off. */
uint64_t tkv_status_sd_watchdog_ns(void);

/* One watchdog tick (call every half interval): WATCHDOG=1 only when
 * ready(arg) answers 0, so a stuck core gets the process restarted;
 * otherwise log the reason once per not-ready spell (*warned, owned by the
 * caller), and not at all while stopping. */
void tkv_status_sd_watchdog_feed(int (*ready)(void *arg, char *reason, size_t cap), void *arg,
                                 bool stopping, bool *warned);

/* SIGHUP for logrotate: RELOADING=1, reopen the log file (log_path names
 * it in the log line), READY=1. */
void tkv_status_sd_reload_log(const char *log_path);

#endif
