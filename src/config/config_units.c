/* Human-readable sizes and durations (TiKV's ReadableSize / ReadableDuration):
 * "96MiB", "1.5GB", "10s", "1h30m". Integer arithmetic only, every step
 * overflow-checked, so a hostile value is an error and never a wrap. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config_private.h"
#include "tkv/config.h"
#include "tkv/err.h"

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "123" or "123.456": whole part and up to 9 fraction digits (scaled to 1e9). */
static int parse_decimal(const char **sp, uint64_t *whole, uint64_t *frac_e9)
{
    const char *s = *sp;
    if (!is_digit(*s))
        return TKV_EINVAL;
    uint64_t w = 0;
    while (is_digit(*s)) {
        if (__builtin_mul_overflow(w, 10, &w) ||
            __builtin_add_overflow(w, (uint64_t)(*s - '0'), &w))
            return TKV_EINVAL;
        s++;
    }
    uint64_t f = 0, scale = 1000000000ull;
    if (*s == '.') {
        s++;
        if (!is_digit(*s))
            return TKV_EINVAL;
        while (is_digit(*s)) {
            if (scale == 1)
                return TKV_EINVAL; /* more precision than anyone means */
            scale /= 10;
            f += (uint64_t)(*s - '0') * scale;
            s++;
        }
    }
    *sp = s;
    *whole = w;
    *frac_e9 = f;
    return 0;
}

/* whole.frac * mult, exact to the unit below; fails on overflow. */
static int scale_value(uint64_t whole, uint64_t frac_e9, uint64_t mult, uint64_t *out)
{
    uint64_t a, b;
    if (__builtin_mul_overflow(whole, mult, &a))
        return TKV_EINVAL;
    /* frac_e9 < 1e9 and mult <= 2^50, so split mult to stay in 64 bits. */
    unsigned __int128 fr = (unsigned __int128)frac_e9 * mult / 1000000000u;
    if (fr > UINT64_MAX)
        return TKV_EINVAL;
    b = (uint64_t)fr;
    if (__builtin_add_overflow(a, b, out))
        return TKV_EINVAL;
    return 0;
}

int tkv_config_parse_size(const char *s, uint64_t *bytes_out)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1ull << 10},
        {"kb", 1ull << 10},
        {"kib", 1ull << 10},
        {"m", 1ull << 20},
        {"mb", 1ull << 20},
        {"mib", 1ull << 20},
        {"g", 1ull << 30},
        {"gb", 1ull << 30},
        {"gib", 1ull << 30},
        {"t", 1ull << 40},
        {"tb", 1ull << 40},
        {"tib", 1ull << 40},
        {"p", 1ull << 50},
        {"pb", 1ull << 50},
        {"pib", 1ull << 50},
    };
    while (*s == ' ')
        s++;
    uint64_t whole, frac;
    TKV_RET(parse_decimal(&s, &whole, &frac));
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        n--;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strlen(units[i].name) == n && strncasecmp(s, units[i].name, n) == 0) {
            uint64_t v;
            TKV_RET(scale_value(whole, frac, units[i].mult, &v));
            if (units[i].mult == 1 && frac != 0)
                return TKV_EINVAL; /* "1.5" bytes */
            *bytes_out = v;
            return 0;
        }
    }
    return TKV_EINVAL;
}

int tkv_config_parse_duration(const char *s, uint64_t *ms_out)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        /* longest names first so "ms" is not read as "m" + "s" */
        {"ms", 1000000ull},
        {"s", 1000000000ull},
        {"m", 60ull * 1000000000ull},
        {"h", 3600ull * 1000000000ull},
        {"d", 86400ull * 1000000000ull},
    };
    while (*s == ' ')
        s++;
    uint64_t total = 0;
    bool any = false;
    while (*s && *s != ' ') {
        uint64_t whole, frac, v;
        TKV_RET(parse_decimal(&s, &whole, &frac));
        size_t i;
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t l = strlen(units[i].name);
            if (strncasecmp(s, units[i].name, l) == 0)
                break;
        }
        if (i == sizeof(units) / sizeof(units[0]))
            return TKV_EINVAL; /* missing or unknown unit */
        s += strlen(units[i].name);
        TKV_RET(scale_value(whole, frac, units[i].ns, &v));
        if (__builtin_add_overflow(total, v, &total))
            return TKV_EINVAL;
        any = true;
    }
    while (*s == ' ')
        s++;
    if (!any || *s)
        return TKV_EINVAL;
    if (total % 1000000ull)
        return TKV_EINVAL; /* finer than a millisecond */
    *ms_out = total / 1000000ull;
    return 0;
}

void tkv_config_format_size(uint64_t bytes, char *buf, size_t cap)
{
    static const char *names[] = {"PiB", "TiB", "GiB", "MiB", "KiB"};
    for (int i = 0; i < 5; i++) {
        uint64_t mult = 1ull << (10 * (5 - i));
        if (bytes >= mult && bytes % mult == 0) {
            snprintf(buf, cap, "%llu%s", (unsigned long long)(bytes / mult), names[i]);
            return;
        }
    }
    snprintf(buf, cap, "%lluB", (unsigned long long)bytes);
}

void tkv_config_format_duration(uint64_t ms, char *buf, size_t cap)
{
    if (ms == 0)
        snprintf(buf, cap, "0s");
    else if (ms % 3600000ull == 0)
        snprintf(buf, cap, "%lluh", (unsigned long long)(ms / 3600000ull));
    else if (ms % 60000ull == 0)
        snprintf(buf, cap, "%llum", (unsigned long long)(ms / 60000ull));
    else if (ms % 1000ull == 0)
        snprintf(buf, cap, "%llus", (unsigned long long)(ms / 1000ull));
    else
        snprintf(buf, cap, "%llums", (unsigned long long)ms);
}
