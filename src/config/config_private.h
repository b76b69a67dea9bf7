/* Helpers shared by the files of the config module (not a public contract):
 * a schema is a table of key descriptors over a plain struct, so loading,
 * flags, validation and dumping all read one table per program. */
#ifndef CONFIG_PRIVATE_H
#define CONFIG_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/config.h"

/* snprintf into err (if errlen > 0), never overflowing; returns TKV_ECONFIG
 * so callers can `return config_errf(...)`. */
int config_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append the canonical form of one key segment (bare if possible, else a
 * quoted TOML basic string) to out[*len..cap); returns 0 or TKV_ETOOBIG. */
int config_key_append(char *out, size_t cap, size_t *len, const char *seg, size_t seg_len);

enum config_kind {
    CONFIG_K_ADDR,       /* char[size] "host:port", required */
    CONFIG_K_ADDR_OPT,   /* char[size] "host:port" or "" */
    CONFIG_K_STR,        /* char[size], non-empty */
    CONFIG_K_STR_OPT,    /* char[size], may be empty */
    CONFIG_K_URLS,       /* char[size] "http://h:p[,http://h:p...]" ("" allowed iff min == 0) */
    CONFIG_K_BOOL,       /* bool */
    CONFIG_K_U32,        /* uint32_t in [min, max] */
    CONFIG_K_U64,        /* uint64_t in [min, max] */
    CONFIG_K_SIZE,       /* uint64_t bytes in [min, max]: "96MiB" or an integer */
    CONFIG_K_DURATION,   /* uint64_t ms in [min, max]: "10s" */
    CONFIG_K_LOG_LEVEL,  /* enum tkv_log_level */
    CONFIG_K_LOG_FORMAT, /* enum tkv_config_log_format */
    CONFIG_K_ADDR_LIST,  /* char[max][size] + uint32_t count at count_off; TOML array */
};

struct config_key {
    const char *key; /* full dotted TOML key */
    enum config_kind kind;
    size_t off;  /* field offset in the config struct */
    size_t size; /* field size; for ADDR_LIST the size of one element */
    uint64_t min, max;
    size_t count_off; /* ADDR_LIST only */
};

struct config_schema {
    const struct config_key *keys;
    size_t n_keys;
    const char *const *sections; /* tables a file may declare */
    size_t n_sections;
};

/* Strict application of a parsed file onto base (errors "file:line: key: what"). */
int config_apply_doc(const struct config_schema *s, void *base, const struct tkv_toml_doc *doc,
                     char *err, size_t errlen);
/* One key from flag text ("16MB", "true", "a,b" for lists); errors "key: what". */
int config_set_text(const struct config_schema *s, void *base, const char *key, const char *text,
                    char *err, size_t errlen);
/* TOML (loadable) or nested JSON text of every key; snprintf-like. */
size_t config_dump(const struct config_schema *s, const void *base,
                   enum tkv_config_dump_format format, char *buf, size_t cap);
/* "host:port" check with a message in what; empty allowed if may_be_empty. */
int config_check_addr(const char *s, bool may_be_empty, char *what, size_t wl);
/* An address that may carry an http:// prefix: the host:port part. */
const char *config_strip_http(const char *s);
bool config_host_unspecified(const char *host);

/* ---- command line ---- */

enum config_flag_kind {
    CONFIG_F_KEY,
    CONFIG_F_CONFIG,
    CONFIG_F_CHECK,
    CONFIG_F_INFO,
    CONFIG_F_HELP,
    CONFIG_F_VERSION
};

struct config_flag {
    const char *names[4]; /* without dashes */
    enum config_flag_kind kind;
    const char *key; /* CONFIG_F_KEY: the TOML key it sets */
};

/* Defaults must already be in base. Parses argv (Go flag syntax), stops at
 * --help/--version, loads the -C file, then applies the key flags. Sets
 * *action (RUN, CHECK, INFO, HELP, VERSION) and *info_format; copies the file
 * name into config_file. Validation is the caller's. */
int config_load_cmdline(const struct config_schema *s, void *base, const struct config_flag *flags,
                        size_t n_flags, int argc, char **argv, char *config_file,
                        size_t config_file_cap, enum tkv_config_action *action,
                        enum tkv_config_dump_format *info_format, char *err, size_t errlen);

#endif
