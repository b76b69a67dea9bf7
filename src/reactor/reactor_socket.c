/* Synchronous socket set-up helpers (listen, host:port parsing); callable
 * from any thread, never used on a hot path. */
#include <arpa/inet.h>
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

int tkv_reactor_listen_tcp(const char *host, uint16_t port, bool reuseport, int backlog,
                           uint16_t *port_out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (host == NULL || host[0] == '\0' || strcmp(host, "localhost") == 0)
        host = host && host[0] ? "127.0.0.1" : "0.0.0.0";
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        sl = sizeof(*s6);
    } else {
        return TKV_EINVAL;
    }

    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0, rv;
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
