/* The status HTTP server (include/tkv/status.h): libmicrohttpd with one
 * internal thread, the built-in routes and the route table. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tkv/err.h"
#include "tkv/hostport.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/metrics.h"
#include "tkv/status.h"

#define STATUS_MAX_CONNS 64
#define STATUS_IDLE_TIMEOUT_S 10
#define STATUS_MAX_ROUTES 32

struct status_route {
    char *prefix;
    size_t len;
    tkv_status_route_fn fn;           /* no request bodies */
    tkv_status_body_route_fn body_fn; /* or: bodies up to max_body bytes */
    size_t max_body;
    void *arg;
};

/* A request body being received for a body route (con_cls of the
 * connection's current request; freed when the request completes). */
struct body_acc {
    char *buf;
    size_t len;
    bool too_big;
};

struct tkv_status_server {
    struct tkv_status_info info;
    struct MHD_Daemon *mhd;
    int fd;
    uint16_t port;
    struct timespec start_real, start_mono;
    /* Routes are added from the main thread, possibly after start: the
     * count is published with release order after the entry is written. */
    struct status_route routes[STATUS_MAX_ROUTES];
    _Atomic size_t n_routes;
};

static void free_body(void *p)
{
    tkv_free(p);
}

static enum MHD_Result send_reply(struct MHD_Connection *conn, unsigned code,
                                  const char *content_type, char *body, size_t len)
{
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer_with_free_callback(len, body, free_body)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        tkv_free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rv = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);
    return rv;
}

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned code, const char *text)
{
    size_t n = strlen(text);
    char *body = tkv_malloc(n + 1);
    if (!body)
        return MHD_NO;
    memcpy(body, text, n + 1);
    return send_reply(conn, code, "text/plain; charset=utf-8", body, n);
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned code, json_t *obj)
{
    char *s = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!s)
        return send_text(conn, 500, "cannot encode JSON\n");
    size_t n = strlen(s);
    char *body = tkv_malloc(n + 2);
    if (!body) {
        free(s);
        return MHD_NO;
    }
    memcpy(body, s, n);
    body[n] = '\n';
    body[n + 1] = '\0';
    free(s);
    return send_reply(conn, code, "application/json", body, n + 1);
}

static enum MHD_Result route_metrics(struct tkv_status_server *srv, struct MHD_Connection *conn)
{
    struct tkv_metrics *reg = srv->info.metrics ? srv->info.metrics : tkv_metrics_default();
    char *text;
    size_t len;
    if (tkv_metrics_render(reg, &text, &len) < 0)
        return send_text(conn, 500, "out of memory\n");
    return send_reply(conn, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static enum MHD_Result route_readyz(struct tkv_status_server *srv, struct MHD_Connection *conn)
{
    char reason[256] = "";
    if (srv->info.ready && srv->info.ready(srv->info.arg, reason, sizeof(reason)) != 0) {
        char line[300];
        snprintf(line, sizeof(line), "not ready: %s\n", reason[0] ? reason : "unknown");
        return send_text(conn, 503, line);
    }
    return send_text(conn, 200, "ok\n");
}

static enum MHD_Result route_status(struct tkv_status_server *srv, struct MHD_Connection *conn)
{
    struct timespec now;
    struct tm tm;
    char start[64];
    clock_gettime(CLOCK_MONOTONIC, &now);
    double uptime = (double)(now.tv_sec - srv->start_mono.tv_sec) +
                    (double)(now.tv_nsec - srv->start_mono.tv_nsec) / 1e9;
    gmtime_r(&srv->start_real.tv_sec, &tm);
    strftime(start, sizeof(start), "%Y-%m-%dT%H:%M:%SZ", &tm);

    json_t *o = json_object();
    json_object_set_new(o, "component", json_string(srv->info.component ? srv->info.component : ""));
    json_object_set_new(o, "version", json_string(srv->info.version ? srv->info.version : ""));
    json_object_set_new(o, "git_hash", json_string(srv->info.git_hash ? srv->info.git_hash : ""));
    json_object_set_new(o, "build_time",
                        json_string(srv->info.build_time ? srv->info.build_time : ""));
    json_object_set_new(o, "start_time", json_string(start));
    json_object_set_new(o, "uptime_seconds", json_real(uptime));
    if (srv->info.status_fill)
        srv->info.status_fill(srv->info.arg, o);
    return send_json(conn, 200, o);
}

static enum MHD_Result route_config(struct tkv_status_server *srv, struct MHD_Connection *conn)
{
    if (!srv->info.config_json)
        return send_text(conn, 404, "not found\n");
    char *text = srv->info.config_json(srv->info.arg);
    if (!text)
        return send_text(conn, 500, "cannot render the configuration\n");
    return send_reply(conn, 200, "application/json", text, strlen(text));
}

static const struct status_route *find_route(struct tkv_status_server *srv, const char *url)
{
    size_t n = atomic_load_explicit(&srv->n_routes, memory_order_acquire);
    const struct status_route *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct status_route *r = &srv->routes[i];
        if (strncmp(url, r->prefix, r->len) == 0 && (!best || r->len > best->len))
            best = r;
    }
    return best;
}

static enum MHD_Result answer_route(struct MHD_Connection *conn, int rv,
                                   struct tkv_status_reply *reply)
{
    if (rv < 0) {
        tkv_free(reply->body);
        char line[128];
        snprintf(line, sizeof(line), "internal error: %s\n", tkv_strerror(rv));
        return send_text(conn, 500, line);
    }
    return send_reply(conn, reply->code ? reply->code : 200,
                      reply->content_type ? reply->content_type : "application/json",
                      reply->body, reply->len);
}

/* A body route: the first call (headers) sets up the accumulator, the
 * following ones append (bounded by max_body; beyond it the rest is read
 * and dropped), the last one (no data) answers. */
static enum MHD_Result on_body_request(const struct status_route *r, struct MHD_Connection *conn,
                                       const char *url, const char *method,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **con_cls)
{
    struct body_acc *acc = *con_cls;
    if (!acc) {
        *con_cls = tkv_xcalloc(1, sizeof(*acc));
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (acc->too_big || acc->len + n > r->max_body) {
            acc->too_big = true;
            return MHD_YES;
        }
        acc->buf = tkv_xrealloc(acc->buf, acc->len + n + 1);
        memcpy(acc->buf + acc->len, upload_data, n);
        acc->len += n;
        acc->buf[acc->len] = '\0';
        return MHD_YES;
    }
    if (acc->too_big) {
        char line[96];
        snprintf(line, sizeof(line), "request body larger than %zu bytes\n", r->max_body);
        return send_text(conn, 413, line);
    }
    struct tkv_status_reply reply = {.code = 200, .content_type = "application/json"};
    int rv = r->body_fn(r->arg, method, url, acc->buf ? acc->buf : "", acc->len, &reply);
    return answer_route(conn, rv, &reply);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct body_acc *acc = *con_cls;
    if (acc) {
        tkv_free(acc->buf);
        tkv_free(acc);
        *con_cls = NULL;
    }
}

/* Paths reach the routes as received: percent escapes are not decoded
 * (a route decodes what it needs; "%00" would otherwise cut the C string). */
static size_t keep_escapes(void *cls, struct MHD_Connection *conn, char *uri)
{
    (void)cls;
    (void)conn;
    return strlen(uri);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct tkv_status_server *srv = cls;
    (void)version;
    const struct status_route *r = find_route(srv, url);
    if (r && r->body_fn)
        return on_body_request(r, conn, url, method, upload_data, upload_data_size, con_cls);
    /* First call: headers only. Answer on it (no bodies are accepted), but
     * a request that carries one gets 413 rather than silently ignored. */
    if (*upload_data_size != 0)
        return send_text(conn, 413, "request bodies are not accepted\n");

    if (r) {
        struct tkv_status_reply reply = {.code = 200, .content_type = "application/json"};
        int rv = r->fn(r->arg, method, url, &reply);
        return answer_route(conn, rv, &reply);
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return send_text(conn, 405, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0)
        return route_metrics(srv, conn);
    if (strcmp(url, "/livez") == 0)
        return send_text(conn, 200, "ok\n");
    if (strcmp(url, "/readyz") == 0)
        return route_readyz(srv, conn);
    if (strcmp(url, "/status") == 0)
        return route_status(srv, conn);
    if (strcmp(url, "/config") == 0)
        return route_config(srv, conn);
    return send_text(conn, 404, "not found\n");
}

/* A listening TCP socket on host:port (SO_REUSEADDR, not REUSEPORT: a
 * second process must not share it). Returns the fd or -errno. */
static int listen_on(const char *host, uint16_t port, uint16_t *port_out)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int one = 1, family = strchr(host, ':') ? AF_INET6 : AF_INET;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
            close(fd);
            return TKV_EINVAL;
        }
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            close(fd);
            return TKV_EINVAL;
        }
        len = sizeof(*a);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        goto fail;
    *port_out = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                         : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
fail:
    one = -errno;
    close(fd);
    return one;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[256];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    TKV_LOG_WARN("status server", TKV_LF_STR("detail", msg));
}

int tkv_status_start(const char *addr, const struct tkv_status_info *info,
                     struct tkv_status_server **out)
{
    char host[256];
    uint16_t port;
    if (tkv_hostport_split(addr, "0.0.0.0", host, sizeof(host), &port) < 0)
        return TKV_EINVAL;
    struct tkv_status_server *srv = tkv_xcalloc(1, sizeof(*srv));
    srv->info = *info;
    clock_gettime(CLOCK_REALTIME, &srv->start_real);
    clock_gettime(CLOCK_MONOTONIC, &srv->start_mono);
    srv->fd = listen_on(host, port, &srv->port);
    if (srv->fd < 0) {
        int rv = srv->fd;
        tkv_free(srv);
        return rv;
    }
    srv->mhd = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET,
        srv->fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)STATUS_MAX_CONNS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)STATUS_IDLE_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_UNESCAPE_CALLBACK,
        keep_escapes, NULL, MHD_OPTION_END);
    if (!srv->mhd) {
        close(srv->fd);
        tkv_free(srv);
        return TKV_EUNAVAILABLE;
    }
    *out = srv;
    return 0;
}

void tkv_status_add_route(struct tkv_status_server *srv, const char *prefix,
                          tkv_status_route_fn fn, void *arg)
{
    size_t n = atomic_load_explicit(&srv->n_routes, memory_order_relaxed);
    if (n == STATUS_MAX_ROUTES)
        TKV_PANIC("status: more than %d routes", STATUS_MAX_ROUTES);
    srv->routes[n] = (struct status_route){
        .prefix = tkv_xstrdup(prefix), .len = strlen(prefix), .fn = fn, .arg = arg};
    atomic_store_explicit(&srv->n_routes, n + 1, memory_order_release);
}

void tkv_status_add_body_route(struct tkv_status_server *srv, const char *prefix,
                               tkv_status_body_route_fn fn, void *arg, size_t max_body)
{
    size_t n = atomic_load_explicit(&srv->n_routes, memory_order_relaxed);
    if (n == STATUS_MAX_ROUTES)
        TKV_PANIC("status: more than %d routes", STATUS_MAX_ROUTES);
    srv->routes[n] = (struct status_route){.prefix = tkv_xstrdup(prefix),
                                           .len = strlen(prefix),
                                           .body_fn = fn,
                                           .max_body = max_body,
                                           .arg = arg};
    atomic_store_explicit(&srv->n_routes, n + 1, memory_order_release);
}

uint16_t tkv_status_port(const struct tkv_status_server *srv)
{
    return srv->port;
}

void tkv_status_stop(struct tkv_status_server *srv)
{
    if (!srv)
        return;
    /* Quiescing hands the listening socket back; stop would close it
     * itself otherwise (then it must not be closed twice). */
    int fd = MHD_quiesce_daemon(srv->mhd);
    MHD_stop_daemon(srv->mhd);
    if (fd >= 0)
        close(fd);
    size_t n = atomic_load_explicit(&srv->n_routes, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        tkv_free(srv->routes[i].prefix);
    tkv_free(srv);
}
