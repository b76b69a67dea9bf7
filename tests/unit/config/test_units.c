/* Human units: sizes and durations parse as TiKV reads them, bad text is
 * refused, and formatting gives the shortest exact text that parses back. */
#include <criterion/criterion.h>
#include <string.h>

#include "tkv/config.h"
#include "tkv/err.h"

Test(units, sizes)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } ok[] = {
        {"0", 0},
        {"512", 512},
        {"512B", 512},
        {"1KB", 1024},
        {"1kb", 1024},
        {"1K", 1024},
        {"1KiB", 1024},
        {"16MB", 16u << 20},
        {"96MiB", 96u << 20},
        {"96mib", 96u << 20},
        {"144 MB", 144u << 20},
        {"1GB", 1ull << 30},
        {"1.5GB", 3ull << 29},
        {"2TB", 2ull << 40},
        {"1PiB", 1ull << 50},
        {" 4 kb ", 4096},
        {"0.5KB", 512},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t b = 1;
        cr_assert_eq(tkv_config_parse_size(ok[i].text, &b), 0, "rejected %s", ok[i].text);
        cr_assert_eq(b, ok[i].bytes, "%s -> %llu", ok[i].text, (unsigned long long)b);
    }
    static const char *bad[] = {"",    "MB",     "-1MB", "1XB",     "1 M B",
                                "1.5", "1..5MB", "1.MB", "16384PB", "99999999999999999999",
                                "1e3", "1MBs",   "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t b = 7;
        cr_assert_eq(tkv_config_parse_size(bad[i], &b), TKV_EINVAL, "accepted %s", bad[i]);
        cr_assert_eq(b, 7, "out-param written on error");
    }
}

Test(units, durations)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } ok[] = {
        {"1s", 1000},       {"50ms", 50},      {"10m", 600000},  {"1h", 3600000}, {"1d", 86400000},
        {"1h30m", 5400000}, {"1m30s", 90000},  {"1.5s", 1500},   {"0s", 0},       {"2S", 2000},
        {"100MS", 100},     {"1s500ms", 1500}, {" 10s ", 10000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t ms = 1;
        cr_assert_eq(tkv_config_parse_duration(ok[i].text, &ms), 0, "rejected %s", ok[i].text);
        cr_assert_eq(ms, ok[i].ms, "%s -> %llu", ok[i].text, (unsigned long long)ms);
    }
    static const char *bad[] = {
        "",   "10", "s", "-1s", "1.5ms", "1x", "1 s", "10s 5m", "1ns", "1us", "999999999999999999h",
        "1.s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms = 7;
        cr_assert_eq(tkv_config_parse_duration(bad[i], &ms), TKV_EINVAL, "accepted %s", bad[i]);
        cr_assert_eq(ms, 7);
    }
}

Test(units, format_is_shortest_exact_and_round_trips)
{
    char buf[32];
    tkv_config_format_size(144u << 20, buf, sizeof(buf));
    cr_assert_str_eq(buf, "144MiB");
    tkv_config_format_size(1000, buf, sizeof(buf));
    cr_assert_str_eq(buf, "1000B");
    tkv_config_format_size(0, buf, sizeof(buf));
    cr_assert_str_eq(buf, "0B");
    tkv_config_format_size(3ull << 29, buf, sizeof(buf));
    cr_assert_str_eq(buf, "1536MiB");
    tkv_config_format_duration(10000, buf, sizeof(buf));
    cr_assert_str_eq(buf, "10s");
    tkv_config_format_duration(60000, buf, sizeof(buf));
    cr_assert_str_eq(buf, "1m");
    tkv_config_format_duration(1500, buf, sizeof(buf));
    cr_assert_str_eq(buf, "1500ms");
    tkv_config_format_duration(7200000, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2h");
    uint64_t vals[] = {0, 1, 999, 1024, 4097, 1ull << 40, (1ull << 50) * 3, UINT64_MAX / 2};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint64_t back;
        tkv_config_format_size(vals[i], buf, sizeof(buf));
        cr_assert_eq(tkv_config_parse_size(buf, &back), 0, "%s", buf);
        cr_assert_eq(back, vals[i]);
        if (vals[i] < (1ull << 50)) {
            tkv_config_format_duration(vals[i], buf, sizeof(buf));
            cr_assert_eq(tkv_config_parse_duration(buf, &back), 0, "%s", buf);
            cr_assert_eq(back, vals[i]);
        }
    }
}
