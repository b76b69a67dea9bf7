/* A minimal blocking HTTP/1.1 client for the tools (tools_private.h): one
 * request per connection ("Connection: close"), the answer read to EOF.
 * Enough for the scheduler's and the nodes' status ports (libmicrohttpd,
 * fixed-length bodies); not a general client (no chunked encoding, no TLS,
 * no redirects). Blocking is fine here: tinykv-ctl and tinykv-playground
 * are command-line programs, not cores. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tools_private.h"

#define HTTP_MAX_RESPONSE (256u << 20) /* a region list of a big cluster is a few MB */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for fd to be ready for events until deadline; 0, or -1 with err. */
static int wait_fd(int fd, short events, double deadline, char *err, size_t cap)
{
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) {
            snprintf(err, cap, "timed out");
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(left * 1000) + 1);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            snprintf(err, cap, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

static int split_addr(const char *addr, char *host, size_t host_cap, char *port, size_t port_cap)
{
    if (strncmp(addr, "http://", 7) == 0)
        addr += 7;
    const char *colon;
    size_t hl;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return -1;
        hl = (size_t)(close - addr - 1);
        if (hl >= host_cap)
            return -1;
        memcpy(host, addr + 1, hl);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - addr);
        if (hl >= host_cap)
            return -1;
        memcpy(host, addr, hl);
    }
    host[hl] = '\0';
    size_t pl = strlen(colon + 1);
    if (!pl || pl >= port_cap || strspn(colon + 1, "0123456789") != pl)
        return -1;
    memcpy(port, colon + 1, pl + 1);
    /* a trailing "/" of a URL is not part of the port */
    return host[0] ? 0 : -1;
}

static int connect_to(const char *addr, double deadline, char *err, size_t cap)
{
    char host[256], port[16];
    if (split_addr(addr, host, sizeof(host), port, sizeof(port)) < 0) {
        snprintf(err, cap, "bad address %s (expected host:port)", addr);
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai, *a;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g) {
        snprintf(err, cap, "cannot resolve %s: %s", host, gai_strerror(g));
        return -1;
    }
    int fd = -1;
    snprintf(err, cap, "cannot connect");
    for (a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline, err, cap) == 0) {
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr == 0)
                break;
            snprintf(err, cap, "connect to %s: %s", addr, strerror(soerr));
        } else if (errno != EINPROGRESS) {
            snprintf(err, cap, "connect to %s: %s", addr, strerror(errno));
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int tools_http(const char *addr, const char *method, const char *path, const char *body,
               double timeout_s, struct tools_http_answer *out, char *err, size_t err_cap)
{
    double deadline = now_s() + timeout_s;
    memset(out, 0, sizeof(*out));
    int fd = connect_to(addr, deadline, err, err_cap);
    if (fd < 0)
        return -1;
    size_t blen = body ? strlen(body) : 0;
    char head[1024];
    int hn = snprintf(head, sizeof(head),
                      "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tinykv-tools\r\n"
                      "Accept: application/json\r\nConnection: close\r\n"
                      "%sContent-Length: %zu\r\n\r\n",
                      method, path, addr, body ? "Content-Type: application/json\r\n" : "", blen);
    if (hn < 0 || (size_t)hn >= sizeof(head)) {
        close(fd);
        snprintf(err, err_cap, "request line too long");
        return -1;
    }
    /* send head then body */
    const char *parts[2] = {head, body};
    size_t lens[2] = {(size_t)hn, blen};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < lens[i]) {
            ssize_t w = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                continue;
            }
            if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_fd(fd, POLLOUT, deadline, err, err_cap) < 0)
                    goto fail;
                continue;
            }
            snprintf(err, err_cap, "send to %s: %s", addr, strerror(errno));
            goto fail;
        }
    }
    /* read to EOF */
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        snprintf(err, err_cap, "out of memory");
        goto fail;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= HTTP_MAX_RESPONSE) {
                snprintf(err, err_cap, "answer from %s larger than %u bytes", addr,
                         HTTP_MAX_RESPONSE);
                free(buf);
                goto fail;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                snprintf(err, err_cap, "out of memory");
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r > 0) {
            len += (size_t)r;
            continue;
        }
        if (r == 0)
            break;
        if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline, err, err_cap) < 0) {
                free(buf);
                goto fail;
            }
            continue;
        }
        snprintf(err, err_cap, "receive from %s: %s", addr, strerror(errno));
        free(buf);
        goto fail;
    }
    close(fd);
    buf[len] = '\0';
    unsigned code = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*1[01] %3u", &code) != 1 || !sep) {
        snprintf(err, err_cap, "%s did not answer HTTP", addr);
        free(buf);
        return -1;
    }
    out->code = code;
    out->body = buf;
    out->body_off = (size_t)(sep + 4 - buf);
    out->len = len - out->body_off;
    return 0;
fail:
    close(fd);
    return -1;
}

void tools_http_free(struct tools_http_answer *a)
{
    free(a->body);
    a->body = NULL;
}
