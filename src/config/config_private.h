/* Helpers shared by the files of the config module (not a public contract). */
#ifndef CONFIG_PRIVATE_H
#define CONFIG_PRIVATE_H

#include <stddef.h>

/* snprintf into err (if errlen > 0), never overflowing; returns TKV_ECONFIG
 * so callers can `return config_errf(...)`. */
int config_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Append the canonical form of one key segment (bare if possible, else a
 * quoted TOML basic string) to out[*len..cap); returns 0 or TKV_ETOOBIG. */
int config_key_append(char *out, size_t cap, size_t *len, const char *seg, size_t seg_len);

#endif
