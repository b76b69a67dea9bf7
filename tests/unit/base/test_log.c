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

/* ---- log.format = "json" ---- */
#include <jansson.h>

static json_t *parse_line(const char *line)
{
    json_error_t e;
    size_t n = strlen(line);
    cr_assert(n > 0 && line[n - 1] == '\n', "line must end in a newline: %s", line);
    cr_assert(memchr(line, '\n', n - 1) == NULL, "one record = one line: %s", line);
    json_t *j = json_loadb(line, n - 1, 0, &e);
    cr_assert(j != NULL, "not JSON (%s at %d): %s", e.text, e.position, line);
    cr_assert(json_is_object(j));
    return j;
}

Test(log, json_lines_have_the_text_fields)
{
    char buf[1024];
    const unsigned char key[] = {0x00, 0xff};
    struct tkv_log_field f[] = {TKV_LF_U64("region_id", 2), TKV_LF_I64("delta", -3),
                                TKV_LF_STR("addr", "a b \"q\" ]["), TKV_LF_HEX("key", key, 2),
                                TKV_LF_BOOL("ok", 1), TKV_LF_DBL("ratio", 0.25),
                                TKV_LF_ERR(TKV_ENOTLEADER)};
    tkv_log_set_format(TKV_LOG_FORMAT_JSON);
    fmt(buf, sizeof(buf), "became leader", f, 7);
    tkv_log_set_format(TKV_LOG_FORMAT_TEXT);
    json_t *j = parse_line(buf);
    cr_assert_str_eq(json_string_value(json_object_get(j, "level")), "INFO");
    cr_assert_str_eq(json_string_value(json_object_get(j, "caller")), "peer.c:412");
    cr_assert_str_eq(json_string_value(json_object_get(j, "message")), "became leader");
    regex_t re;
    cr_assert_eq(regcomp(&re, "^[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9:]{8}\\.[0-9]{3} [+-][0-9:]{5}$",
                         REG_EXTENDED),
                 0);
    cr_assert_eq(regexec(&re, json_string_value(json_object_get(j, "time")), 0, NULL, 0), 0,
                 "time not in the unified format: %s", buf);
    regfree(&re);
    cr_assert_eq(json_integer_value(json_object_get(j, "region_id")), 2);
    cr_assert_eq(json_integer_value(json_object_get(j, "delta")), -3);
    cr_assert_str_eq(json_string_value(json_object_get(j, "addr")), "a b \"q\" ][");
    cr_assert_str_eq(json_string_value(json_object_get(j, "key")), "00FF");
    cr_assert(json_is_true(json_object_get(j, "ok")));
    cr_assert_float_eq(json_real_value(json_object_get(j, "ratio")), 0.25, 1e-12);
    cr_assert_str_eq(json_string_value(json_object_get(j, "error")), "not leader");
    json_decref(j);
}

Test(log, json_lines_parse_whatever_the_fields_hold)
{
    char buf[512], big[2000];
    /* control characters, invalid UTF-8 (lone continuation, truncated
     * sequence, surrogate), valid multi-byte text, and a value too long
     * for the buffer: each line must still be one valid JSON object. */
    const char *nasty[] = {"\x01\x7f\t\r\n", "\x80\xff", "\xe2\x82", "\xed\xa0\x80",
                           "h\xc3\xa9llo \xe2\x82\xac"};
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    tkv_log_set_format(TKV_LOG_FORMAT_JSON);
    for (size_t i = 0; i < sizeof(nasty) / sizeof(nasty[0]); i++) {
        struct tkv_log_field f[] = {TKV_LF_STR(nasty[i], nasty[i])};
        fmt(buf, sizeof(buf), nasty[i], f, 1);
        json_decref(parse_line(buf));
    }
    struct tkv_log_field f[] = {TKV_LF_U64("before", 1), TKV_LF_STR("big", big),
                                TKV_LF_U64("after", 2)};
    fmt(buf, sizeof(buf), "long", f, 3);
    json_t *j = parse_line(buf);
    cr_assert_eq(json_integer_value(json_object_get(j, "before")), 1);
    cr_assert(json_is_true(json_object_get(j, "truncated")), "truncation not flagged: %s", buf);
    cr_assert_null(json_object_get(j, "big"), "a field that does not fit is dropped whole");
    json_decref(j);
    fmt(buf, sizeof(buf), big, NULL, 0); /* even the message */
    json_decref(parse_line(buf));
    tkv_log_set_format(TKV_LOG_FORMAT_TEXT);
    const char *s = "\xe2\x82\xac";
    struct tkv_log_field g[] = {TKV_LF_STR("euro", s)};
    tkv_log_set_format(TKV_LOG_FORMAT_JSON);
    fmt(buf, sizeof(buf), "m", g, 1);
    tkv_log_set_format(TKV_LOG_FORMAT_TEXT);
    j = parse_line(buf);
    cr_assert_str_eq(json_string_value(json_object_get(j, "euro")), s, "valid UTF-8 kept");
    json_decref(j);
}
