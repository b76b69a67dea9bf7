/* Synchronous socket set-up helpers (resolve, listen, host:port parsing);
 * callable from any thread, never used on a hot path. The one place that
 * turns a configured host into a socket address: the server's listener,
 * the rpc layer's listeners and its client connects all come through
 * tkv_reactor_resolve. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reactor_private.h"
#include "tkv/err.h"
#include "tkv/hostport.h"

int tkv_reactor_resolve(const char *host, uint16_t port, unsigned flags,
                        struct sockaddr_storage *ss, socklen_t *len_out)
{
    char h[256];
    size_t n;
    if (host == NULL)
        host = "";
    n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* "[::1]" as written in a URL */
        host++;
        n -= 2;
    }
    if (n >= sizeof(h))
        return TKV_EINVAL;
    memcpy(h, host, n);
    h[n] = '\0';
    /* "" = every interface when listening, loopback when connecting.
     * "localhost" is 127.0.0.1 on both sides without asking the resolver
     * (which may put ::1 first): a server and a client given the same
     * "localhost" always meet. */
    if (h[0] == '\0')
        snprintf(h, sizeof(h), "%s", (flags & TKV_RESOLVE_PASSIVE) ? "0.0.0.0" : "127.0.0.1");
    else if (strcmp(h, "localhost") == 0)
        snprintf(h, sizeof(h), "127.0.0.1");

    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, h, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        *len_out = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, h, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *len_out = sizeof(*s6);
        return 0;
    }
    if (flags & TKV_RESOLVE_NUMERIC)
        return TKV_EINVAL; /* no resolver on a core thread: it blocks */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rv = getaddrinfo(h, NULL, &hints, &res);
    if (rv != 0 || res == NULL)
        return rv == EAI_SYSTEM && errno ? -errno : TKV_ENOTFOUND;
    /* First IPv4 answer if any (what clients of a dual-stack name try
     * first in practice is not ours to know; 127.0.0.1-style consistency
     * with "localhost" is), else the first answer. */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    rv = TKV_EINVAL;
    if ((pick->ai_family == AF_INET || pick->ai_family == AF_INET6) &&
        pick->ai_addrlen <= sizeof(*ss)) {
        memcpy(ss, pick->ai_addr, pick->ai_addrlen);
        *len_out = pick->ai_addrlen;
        if (pick->ai_family == AF_INET)
            s4->sin_port = htons(port);
        else
            s6->sin6_port = htons(port);
        rv = 0;
    }
    freeaddrinfo(res);
    return rv;
}

int tkv_reactor_listen_tcp(const char *host, uint16_t port, bool reuseport, int backlog,
                           uint16_t *port_out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int rv = tkv_reactor_resolve(host, port, TKV_RESOLVE_PASSIVE, &ss, &sl);
    if (rv)
        return rv;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        goto err_errno;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        goto err_errno;
    /* "::" serves IPv4 too, as operators expect from a wildcard */
    if (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)))
        goto err_errno;
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0)
        goto err_errno;
    if (listen(fd, backlog > 0 ? backlog : 1024) != 0)
        goto err_errno;
    if (port_out != NULL) {
        sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
            goto err_errno;
        *port_out = ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
    }
    return fd;

err_errno:
    rv = -errno;
    close(fd);
    return rv;
}

int tkv_reactor_parse_hostport(const char *s, char *host_out, size_t host_cap, uint16_t *port_out)
{
    return tkv_hostport_split(s, "0.0.0.0", host_out, host_cap, port_out); /* ":port" = all */
}
