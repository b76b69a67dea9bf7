/* Unified log format: header shape, quoting rules, hex keys, truncation. */
#include <criterion/criterion.h>
#include <regex.h>
#include <string.h>

#include "tkv/err.h"
#include "tkv/log.h"

static size_t fmt(char *buf, size_t cap, const char *msg, const struct tkv_log_field *f, size_t n)
{
    return tkv_log_format(buf, cap, TKV_LOG_LEVEL_INFO, "src/raftstore/peer.c", 412, msg, f, n);
}

Test(log, header_matches_unified_format)
{
    char buf[512];
    struct tkv_log_field f[] = {TKV_LF_U64("region_id", 2), TKV_LF_U64("term", 7)};
    fmt(buf, sizeof(buf), "became leader", f, 2);
    regex_t re;
    cr_assert_eq(regcomp(&re,
                         "^\\[[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} "
                         "[+-][0-9]{2}:[0-9]{2}\\] \\[INFO\\] \\[peer\\.c:412\\] "
                         "\\[\"became leader\"\\] \\[region_id=2\\] \\[term=7\\]\n$",
                         REG_EXTENDED),
                 0);
    cr_assert_eq(regexec(&re, buf, 0, NULL, 0), 0, "line does not match the format: %s", buf);
    regfree(&re);
}

Test(log, values_with_specials_are_json_quoted)
{
    char buf[512];
    struct tkv_log_field f[] = {TKV_LF_STR("addr", "a b"), TKV_LF_STR("k=v", "x]"),
                                TKV_LF_STR("plain", "ok"), TKV_LF_STR("q", "say \"hi\"\n")};
    fmt(buf, sizeof(buf), "m", f, 4);
    cr_assert(strstr(buf, "[addr=\"a b\"]"), "space not quoted: %s", buf);
    cr_assert(strstr(buf, "[\"k=v\"=\"x]\"]"), "key/value with = ] not quoted: %s", buf);
    cr_assert(strstr(buf, "[plain=ok]"), "plain value quoted: %s", buf);
    cr_assert(strstr(buf, "[q=\"say \\\"hi\\\"\\n\"]"), "escapes wrong: %s", buf);
}

Test(log, binary_keys_hex_and_errors)
{
    char buf[512];
    const unsigned char key[] = {0x00, 0xff, 0x10};
    struct tkv_log_field f[] = {TKV_LF_HEX("key", key, 3), TKV_LF_ERR(TKV_ENOTLEADER)};
    fmt(buf, sizeof(buf), "m", f, 2);
    cr_assert(strstr(buf, "[key=00FF10]"), "hex wrong: %s", buf);
    cr_assert(strstr(buf, "[error=\"not leader\"]"), "error text wrong: %s", buf);
}

Test(log, truncation_keeps_one_terminated_line)
{
    char buf[48];
    struct tkv_log_field f[] = {TKV_LF_STR("long", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")};
    size_t n = fmt(buf, sizeof(buf), "a message", f, 1);
    cr_assert_lt(n, sizeof(buf));
    cr_assert_eq(buf[n - 1], '\n');
    cr_assert_eq(buf[n], '\0');
    cr_assert_eq(strchr(buf, '\n'), buf + n - 1, "more than one line");
}

Test(log, parse_level_names)
{
    enum tkv_log_level l;
    cr_assert_eq(tkv_log_parse_level("DEBUG", &l), 0);
    cr_assert_eq(l, TKV_LOG_LEVEL_DEBUG);
    cr_assert_eq(tkv_log_parse_level("warning", &l), 0);
    cr_assert_eq(l, TKV_LOG_LEVEL_WARN);
    cr_assert_eq(tkv_log_parse_level("loud", &l), TKV_EINVAL);
}

Test(err, codes_have_text_and_class)
{
    cr_assert_str_eq(tkv_strerror(TKV_ECORRUPT), "data corruption");
    cr_assert_eq(tkv_err_class(TKV_ECORRUPT), TKV_ERR_FATAL);
    cr_assert_eq(tkv_err_class(TKV_ENOTLEADER), TKV_ERR_RETRY);
    cr_assert_eq(tkv_err_class(0), TKV_ERR_OK);
    cr_assert_str_eq(tkv_strerror(-2), "No such file or directory");
}
