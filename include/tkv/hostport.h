/* Parsing of "host:port" addresses, shared by the config loader, the
 * reactor's socket helpers and the command-line tools. Pure string work: any
 * thread, no allocation. */
#ifndef TKV_HOSTPORT_H
#define TKV_HOSTPORT_H

#include <stddef.h>
#include <stdint.h>

/* Split "host:port" or "[ipv6]:port" into host (without brackets, NUL-
 * terminated in host_out[host_cap]) and port (0..65535, digits only). A bare
 * IPv6 address without brackets is refused, as are hosts with spaces,
 * control characters, '/', ',', '[' or ']'. ":port" (empty host) is accepted
 * only when empty_host is not NULL, and then yields empty_host (e.g.
 * "0.0.0.0", all interfaces). Returns 0 or TKV_EINVAL (also when host_out is
 * too small); outputs are written only on success. */
int tkv_hostport_split(const char *s, const char *empty_host, char *host_out, size_t host_cap,
                       uint16_t *port_out);

#endif
