/* Error text, classes and panic (see include/tkv/err.h). */
#include "tkv/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tkv/log.h"

const char *tkv_strerror(int rv)
{
    if (rv >= 0)
        return "ok";
    switch (rv) {
#define TKV_ERR_CASE(name, value, cls, msg) \
    case name:                              \
        return msg;
        TKV_ERR_TABLE(TKV_ERR_CASE)
#undef TKV_ERR_CASE
    default:
        break;
    }
    if (rv > -4096)
        return strerror(-rv); /* glibc's table is static and thread-safe for valid codes */
    return "unknown error";
}

enum tkv_err_class tkv_err_class(int rv)
{
    if (rv >= 0)
        return TKV_ERR_OK;
    switch (rv) {
#define TKV_ERR_CLASS_CASE(name, value, cls, msg) \
    case name:                                    \
        return TKV_ERR_##cls;
        TKV_ERR_TABLE(TKV_ERR_CLASS_CASE)
#undef TKV_ERR_CLASS_CASE
    default:
        break;
    }
    if (rv == -EIO)
        return TKV_ERR_FATAL;
    return TKV_ERR_RETRY;
}

void tkv_panic(const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tkv_log_emit(TKV_LOG_LEVEL_FATAL, file, line, msg, NULL, 0);
    abort();
}
