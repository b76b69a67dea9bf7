/* Error codes, their classes and the control-flow macros every module uses.
 *
 * Convention (STYLE.md 4.5): functions return int, 0 on success and a negative
 * value on error. System errors travel as -errno unchanged; tinykv's own codes
 * live below -1000 so they never collide with errno. Classes say what a caller
 * may do: RETRY (transient), CLIENT (the request is wrong), FATAL (stop the
 * store: corruption, failed fsync). Callable from any thread. */
#ifndef TKV_ERR_H
#define TKV_ERR_H

#include <assert.h>

/* X(name, value, class, message) */
#define TKV_ERR_TABLE(X)                                                   \
    X(TKV_ENOTLEADER, -1001, RETRY, "not leader")                          \
    X(TKV_EEPOCH, -1002, RETRY, "epoch not match")                         \
    X(TKV_EBUSY, -1003, RETRY, "server is busy")                           \
    X(TKV_ESTALE, -1004, RETRY, "stale command")                           \
    X(TKV_EREGION, -1005, CLIENT, "region not found")                      \
    X(TKV_EKEYRANGE, -1006, CLIENT, "key not in region")                   \
    X(TKV_ENOTFOUND, -1007, CLIENT, "not found")                           \
    X(TKV_EINVAL, -1008, CLIENT, "invalid argument")                       \
    X(TKV_ECONFLICT, -1010, CLIENT, "write conflict")                      \
    X(TKV_ELOCKED, -1011, CLIENT, "key is locked")                         \
    X(TKV_ETOOBIG, -1012, CLIENT, "too large")                             \
    X(TKV_ENOMEM, -1013, RETRY, "out of memory")                           \
    X(TKV_ESHUTDOWN, -1014, RETRY, "shutting down")                        \
    X(TKV_ETIMEDOUT, -1015, RETRY, "deadline exceeded")                    \
    X(TKV_EUNIMPL, -1016, CLIENT, "not implemented")                       \
    X(TKV_ECF, -1017, CLIENT, "unknown column family")                     \
    X(TKV_EPROTO, -1018, CLIENT, "protocol error")                         \
    X(TKV_ECONFIG, -1019, CLIENT, "configuration error")                   \
    X(TKV_EENGINE, -1020, RETRY, "storage engine error")                   \
    X(TKV_ENOSPACE, -1021, RETRY, "no space left on device")               \
    X(TKV_ECLOSED, -1022, RETRY, "connection closed")                      \
    X(TKV_EPROPOSALDROPPED, -1023, RETRY, "proposal dropped")              \
    X(TKV_ECOMPACTED, -1024, CLIENT, "log entries compacted")              \
    X(TKV_EUNAVAILABLE, -1025, RETRY, "temporarily unavailable")           \
    X(TKV_ECORRUPT, -1900, FATAL, "data corruption")                       \
    X(TKV_EIOFATAL, -1901, FATAL, "fatal I/O error")

enum tkv_err {
#define TKV_ERR_ENUM(name, value, cls, msg) name = value,
    TKV_ERR_TABLE(TKV_ERR_ENUM)
#undef TKV_ERR_ENUM
};

enum tkv_err_class { TKV_ERR_OK, TKV_ERR_RETRY, TKV_ERR_CLIENT, TKV_ERR_FATAL };

/* Human-readable text for rv (a tinykv code or -errno); never NULL; the
 * returned string is static. */
const char *tkv_strerror(int rv);

/* The class of rv: OK for rv >= 0; -EIO is FATAL (in tinykv it only comes
 * from the disk path: a failed write or fsync must stop the store); other
 * -errno values are RETRY. The one classification: callers ask it instead
 * of keeping their own lists of fatal codes. */
enum tkv_err_class tkv_err_class(int rv);

/* Log a fatal message and abort the process. Never returns. */
_Noreturn void tkv_panic(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TKV_PANIC(...) tkv_panic(__FILE__, __LINE__, __VA_ARGS__)

/* Always-on cheap invariant check. */
#define tkv_assert(x) \
    (TKV_LIKELY_ERR(x) ? (void)0 : tkv_panic(__FILE__, __LINE__, "assertion failed: %s", #x))
#define TKV_LIKELY_ERR(x) __builtin_expect(!!(x), 1)

/* Debug-only check; never evaluates x in release builds. */
#ifdef TKV_DEBUG
#define TKV_DASSERT(x) tkv_assert(x)
#else
#define TKV_DASSERT(x) ((void)sizeof(x))
#endif

/* Return on error. */
#define TKV_RET(expr)              \
    do {                           \
        int tkv_ret_rv_ = (expr);  \
        if (tkv_ret_rv_ < 0)       \
            return tkv_ret_rv_;    \
    } while (0)

/* Set rv and jump to the function's single err: label on error. */
#define TKV_ERR(expr)      \
    do {                   \
        rv = (expr);       \
        if (rv < 0)        \
            goto err;      \
    } while (0)

#endif
