/* Logging in TiKV's unified log format (tikv/rfcs 2018-12-19):
 *
 *   [2026/11/22 03:07:42.854 +00:00] [INFO] [peer.c:412] ["became leader"] [region_id=2] [term=7]
 *
 * One line per record, written with a single write(2) so lines from
 * different threads never interleave. Keys and values that contain spaces,
 * control characters, '"', '=', '[' or ']' are JSON-quoted. Binary values
 * (user keys) are hex-encoded with TKV_LF_HEX. Callable from any thread.
 *
 * Usage:
 *   TKV_LOG_INFO("became leader", TKV_LF_U64("region_id", id), TKV_LF_U64("term", t));
 *   TKV_LOG_WARN("listen failed", TKV_LF_STR("addr", addr), TKV_LF_ERR(rv));
 */
#ifndef TKV_LOG_H
#define TKV_LOG_H

#include <stddef.h>
#include <stdint.h>

enum tkv_log_level {
    TKV_LOG_LEVEL_FATAL = 0,
    TKV_LOG_LEVEL_ERROR = 1,
    TKV_LOG_LEVEL_WARN = 2,
    TKV_LOG_LEVEL_INFO = 3,
    TKV_LOG_LEVEL_DEBUG = 4,
};

enum tkv_log_field_type {
    TKV_LF_TYPE_NONE = 0,
    TKV_LF_TYPE_U64,
    TKV_LF_TYPE_I64,
    TKV_LF_TYPE_STR,
    TKV_LF_TYPE_HEX,
    TKV_LF_TYPE_DBL,
    TKV_LF_TYPE_BOOL,
};

struct tkv_log_field {
    const char *key;
    enum tkv_log_field_type type;
    union {
        uint64_t u;
        int64_t i;
        const char *s;
        double d;
        struct {
            const void *p;
            size_t n;
        } b;
    } v;
};

#define TKV_LF_U64(k, x) ((struct tkv_log_field){.key = (k), .type = TKV_LF_TYPE_U64, .v.u = (uint64_t)(x)})
#define TKV_LF_I64(k, x) ((struct tkv_log_field){.key = (k), .type = TKV_LF_TYPE_I64, .v.i = (int64_t)(x)})
#define TKV_LF_STR(k, x) ((struct tkv_log_field){.key = (k), .type = TKV_LF_TYPE_STR, .v.s = (x)})
#define TKV_LF_HEX(k, p_, n_) \
    ((struct tkv_log_field){.key = (k), .type = TKV_LF_TYPE_HEX, .v.b = {.p = (p_), .n = (n_)}})
#define TKV_LF_DBL(k, x) ((struct tkv_log_field){.key = (k), .type = TKV_LF_TYPE_DBL, .v.d = (double)(x)})
#define TKV_LF_BOOL(k, x) ((struct tkv_log_field){.key = (k), .type = TKV_LF_TYPE_BOOL, .v.u = !!(x)})
/* The error text of a tinykv code or -errno, under key "error". */
#define TKV_LF_ERR(rv) TKV_LF_STR("error", tkv_strerror(rv))

/* Output format: TiKV's unified text line, or one JSON object per line
 * with the same content: {"time": "<same timestamp as text>", "level":
 * "INFO", "caller": "file.c:12", "message": "...", <fields>...}; numbers
 * and booleans as JSON values, strings (and hex) as JSON strings. */
enum tkv_log_format { TKV_LOG_FORMAT_TEXT, TKV_LOG_FORMAT_JSON };
void tkv_log_set_format(enum tkv_log_format format);

/* Current threshold; records above it are dropped cheaply. */
extern enum tkv_log_level tkv_log_threshold;

void tkv_log_set_level(enum tkv_log_level level);
/* Parse "fatal|error|warn|warning|info|debug|trace" (case-insensitive);
 * returns 0 or TKV_EINVAL. */
int tkv_log_parse_level(const char *name, enum tkv_log_level *level_out);
/* Redirect output to an already-open fd (default 2, stderr). */
void tkv_log_set_fd(int fd);
/* Append to the file at path (created 0644), remembered for
 * tkv_log_reopen. Returns 0 or -errno. Main thread, before other threads
 * log. */
int tkv_log_open_file(const char *path);
/* Reopen the file of tkv_log_open_file (logrotate moved it away: SIGHUP)
 * and switch to it atomically (dup2: a concurrent writer never sees a
 * closed fd). 0 when no file is set. Returns 0 or -errno. Any thread. */
int tkv_log_reopen(void);

/* Format one record into buf (always NUL-terminated, truncated if needed,
 * ends with '\n'); returns the length written. Exposed for tests. */
size_t tkv_log_format(char *buf, size_t cap, enum tkv_log_level level, const char *file, int line,
                      const char *msg, const struct tkv_log_field *fields, size_t n_fields);

void tkv_log_emit(enum tkv_log_level level, const char *file, int line, const char *msg,
                  const struct tkv_log_field *fields, size_t n_fields);

/* The leading dummy element lets the field list be empty (GNU ", ##"). */
#define TKV_LOG(level, msg, ...)                                                         \
    do {                                                                                 \
        if ((level) <= tkv_log_threshold) {                                              \
            const struct tkv_log_field tkv_lf_[] = {{0}, ##__VA_ARGS__};                  \
            tkv_log_emit((level), __FILE__, __LINE__, (msg), tkv_lf_ + 1,                \
                         sizeof(tkv_lf_) / sizeof(tkv_lf_[0]) - 1);                      \
        }                                                                                \
    } while (0)

#define TKV_LOG_FATAL(msg, ...) TKV_LOG(TKV_LOG_LEVEL_FATAL, msg, ##__VA_ARGS__)
#define TKV_LOG_ERROR(msg, ...) TKV_LOG(TKV_LOG_LEVEL_ERROR, msg, ##__VA_ARGS__)
#define TKV_LOG_WARN(msg, ...) TKV_LOG(TKV_LOG_LEVEL_WARN, msg, ##__VA_ARGS__)
#define TKV_LOG_INFO(msg, ...) TKV_LOG(TKV_LOG_LEVEL_INFO, msg, ##__VA_ARGS__)
#define TKV_LOG_DEBUG(msg, ...) TKV_LOG(TKV_LOG_LEVEL_DEBUG, msg, ##__VA_ARGS__)

#endif
