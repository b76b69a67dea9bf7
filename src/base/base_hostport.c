/* "host:port" parsing (see include/tkv/hostport.h). */
#include "tkv/hostport.h"

#include <string.h>

#include "tkv/err.h"

int tkv_hostport_split(const char *s, const char *empty_host, char *host_out, size_t host_cap,
                       uint16_t *port_out)
{
    const char *host, *colon;
    size_t hlen;
    if (s == NULL || host_out == NULL || host_cap == 0)
        return TKV_EINVAL;
    if (s[0] == '[') {
        const char *close_br = strchr(s, ']');
        if (close_br == NULL || close_br[1] != ':')
            return TKV_EINVAL;
        host = s + 1;
        hlen = (size_t)(close_br - host);
        colon = close_br + 1;
        if (hlen == 0)
            return TKV_EINVAL;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return TKV_EINVAL; /* bare IPv6 needs brackets */
        host = s;
        hlen = (size_t)(colon - s);
        if (hlen == 0) {
            if (empty_host == NULL)
                return TKV_EINVAL;
            host = empty_host;
            hlen = strlen(host);
        }
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c <= ' ' || c == '/' || c == '[' || c == ']' || c == ',' || c >= 0x7f)
            return TKV_EINVAL;
    }
    const char *p = colon + 1;
    if (*p == '\0')
        return TKV_EINVAL;
    unsigned long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return TKV_EINVAL;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return TKV_EINVAL;
    }
    if (hlen + 1 > host_cap)
        return TKV_EINVAL;
    memcpy(host_out, host, hlen);
    host_out[hlen] = '\0';
    if (port_out != NULL)
        *port_out = (uint16_t)v;
    return 0;
}
