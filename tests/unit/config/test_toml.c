/* TOML subset: accepted documents, rejected ones with the exact place and
 * reason, allocation failure, and a seeded mutation run over conf/tinykv.toml
 * that only demands clean errors (ASan/UBSan catch everything else). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tkv/common.h"
#include "tkv/config.h"
#include "tkv/err.h"
#include "tkv/mem.h"

static struct tkv_toml_doc doc;
static char err[512];

static int parse(const char *text)
{
    tkv_config_toml_free(&doc);
    return tkv_config_toml_parse("t.toml", text, strlen(text), &doc, err, sizeof(err));
}

static const struct tkv_toml_value *must_get(const char *text, const char *path)
{
    int rv = parse(text);
    cr_assert_eq(rv, 0, "rejected valid input %s: %s", text, err);
    const struct tkv_toml_item *it = tkv_config_toml_find(&doc, path);
    cr_assert_not_null(it, "no key %s in %s", path, text);
    return &it->val;
}

static void teardown(void)
{
    tkv_config_toml_free(&doc);
}

TestSuite(toml, .fini = teardown);

/* ---- accepted ---------------------------------------------------------------- */

Test(toml, empty_and_comments_only)
{
    cr_assert_eq(parse(""), 0, "%s", err);
    cr_assert_eq(doc.n_items, 0);
    cr_assert_eq(parse("# just a comment\n\n   \t# another\n"), 0, "%s", err);
    cr_assert_eq(doc.n_items, 0);
}

Test(toml, basic_string_and_escapes)
{
    const struct tkv_toml_value *v = must_get("a = \"x\\ty\\n\\\"q\\\\ \\u00e9\\U0001F600\"", "a");
    cr_assert_eq(v->type, TKV_TOML_STRING);
    cr_assert_str_eq(v->u.str.ptr, "x\ty\n\"q\\ \xc3\xa9\xf0\x9f\x98\x80");
    cr_assert_eq(v->u.str.len, strlen(v->u.str.ptr));
    v = must_get("a = \"\"", "a");
    cr_assert_str_eq(v->u.str.ptr, "");
}

Test(toml, literal_string_keeps_backslashes)
{
    const struct tkv_toml_value *v = must_get("path = 'C:\\data\\n \"x\"'", "path");
    cr_assert_str_eq(v->u.str.ptr, "C:\\data\\n \"x\"");
}

Test(toml, integers_with_sign_and_separators)
{
    cr_assert_eq(must_get("a = 1_000_000", "a")->u.i, 1000000);
    cr_assert_eq(must_get("a = -42", "a")->u.i, -42);
    cr_assert_eq(must_get("a = +7", "a")->u.i, 7);
    cr_assert_eq(must_get("a = 0", "a")->u.i, 0);
    cr_assert_eq(must_get("a = -0", "a")->u.i, 0);
    cr_assert_eq(must_get("a = 9223372036854775807", "a")->u.i, INT64_MAX);
    cr_assert_eq(must_get("a = -9223372036854775808", "a")->u.i, INT64_MIN);
}

Test(toml, floats)
{
    const struct tkv_toml_value *v = must_get("a = 3.25", "a");
    cr_assert_eq(v->type, TKV_TOML_FLOAT);
    cr_assert_float_eq(v->u.f, 3.25, 1e-12);
    cr_assert_float_eq(must_get("a = -1e3", "a")->u.f, -1000.0, 1e-9);
    cr_assert_float_eq(must_get("a = 6.5E+2", "a")->u.f, 650.0, 1e-9);
    cr_assert_float_eq(must_get("a = 1_0.5", "a")->u.f, 10.5, 1e-9);
}

Test(toml, booleans)
{
    cr_assert_eq(must_get("a = true", "a")->u.b, true);
    cr_assert_eq(must_get("a = false # no", "a")->u.b, false);
    cr_assert_eq(must_get("a = false", "a")->type, TKV_TOML_BOOL);
}

Test(toml, arrays_single_and_multi_line)
{
    const struct tkv_toml_value *v = must_get("a = [\"x\", 'y']", "a");
    cr_assert_eq(v->type, TKV_TOML_ARRAY);
    cr_assert_eq(v->u.arr.n, 2);
    cr_assert_str_eq(v->u.arr.items[1].u.str.ptr, "y");
    v = must_get("a = [\n  1, # one\n  2,\n\n  3, # trailing comma\n]\nb = 4\n", "a");
    cr_assert_eq(v->u.arr.n, 3);
    cr_assert_eq(v->u.arr.items[2].u.i, 3);
    const struct tkv_toml_item *b = tkv_config_toml_find(&doc, "b");
    cr_assert_not_null(b);
    cr_assert_eq(b->line, 7, "line counting across a multi-line array: %d", b->line);
    v = must_get("a = []", "a");
    cr_assert_eq(v->u.arr.n, 0);
    v = must_get("a = [ ]", "a");
    cr_assert_eq(v->u.arr.n, 0);
}

Test(toml, tables_and_dotted_tables)
{
    const char *text = "top = 1\n[server]\naddr = \"x\"\n\n[ log . file ]\nfilename = \"f\"\n";
    must_get(text, "server.addr");
    const struct tkv_toml_item *f = tkv_config_toml_find(&doc, "log.file.filename");
    cr_assert_not_null(f);
    cr_assert_eq(f->line, 6);
    cr_assert_eq(f->col, 1);
    cr_assert_not_null(tkv_config_toml_find(&doc, "top"));
    /* the table headers are items too, in order */
    cr_assert_eq(doc.n_items, 5);
    cr_assert_eq(doc.items[1].kind, TKV_TOML_ITEM_TABLE);
    cr_assert_str_eq(doc.items[1].path, "server");
    cr_assert_str_eq(doc.items[3].path, "log.file");
}

Test(toml, quoted_and_dotted_keys)
{
    must_get("\"a.b\" = 1", "\"a.b\"");
    cr_assert_null(tkv_config_toml_find(&doc, "a.b"), "quoted dot must not split the key");
    must_get("'x y' = 1", "\"x y\"");
    must_get("\"plain\" = 1", "plain"); /* canonical form of a bare-able key is bare */
    must_get("log.level = \"info\"\nlog.format = \"text\"", "log.format");
    must_get("[a]\nb . c = 1", "a.b.c");
    must_get("\"\" = 1", "\"\"");
}

Test(toml, implicit_parent_may_be_defined_later)
{
    must_get("[a.b]\nx = 1\n[a]\ny = 2\n", "a.y");
    must_get("[fruit]\napple.color = 1\n[fruit.apple.texture]\nsmooth = true\n",
             "fruit.apple.texture.smooth");
}

Test(toml, crlf_bom_and_tight_spacing)
{
    must_get("[s]\r\na=\"v\"#c\r\nb=2\r\n", "s.b");
    must_get("\xEF\xBB\xBF"
             "a = 1\n",
             "a");
    must_get("a=1", "a");
    const struct tkv_toml_value *v =
        must_get("name = \"\xe6\x97\xa5\xe6\x9c\xac\" # \xc3\xa9\n", "name");
    cr_assert_str_eq(v->u.str.ptr, "\xe6\x97\xa5\xe6\x9c\xac");
}

/* ---- rejected ---------------------------------------------------------------- */

struct bad {
    const char *text;
    const char *want; /* substring of the error, including the place */
};

static const struct bad bad_cases[] = {
    {"a = ", "t.toml:1:5: a: expected a value"},
    {"a = \"abc", "t.toml:1:5: a: unterminated string"},
    {"a = \"abc\nb = 1", "unterminated string"},
    {"a = \"\"\"x\"\"\"", "multi-line strings are not supported"},
    {"a = '''x'''", "multi-line strings are not supported"},
    {"a = {b = 1}", "inline tables are not supported"},
    {"[[a]]", "t.toml:1:2: arrays of tables ([[...]]) are not supported"},
    {"a = [[1]]", "nested arrays are not supported"},
    {"a = 1979-05-27", "dates and times are not supported"},
    {"a = 07:32:00", "dates and times are not supported"},
    {"a = 0x10", "hex, octal and binary integers are not supported"},
    {"a = inf", "inf and nan are not supported"},
    {"a = -nan", "inf and nan are not supported"},
    {"a = 01", "leading zeros"},
    {"a = 1__0", "invalid number"},
    {"a = 1_", "invalid number"},
    {"a = 9223372036854775808", "integer out of range"},
    {"a = -9223372036854775809", "integer out of range"},
    {"a = 1.", "digits must follow '.'"},
    {"a = 1e", "invalid float exponent"},
    {"a = 1e999", "float out of range"},
    {"a = [1, \"x\"]",
     "t.toml:1:9: a: array elements must all have one type (integer, then string)"},
    {"a = 1\na = 2", "t.toml:2:1: a: duplicate key"},
    {"a = 1\n\"a\" = 2", "t.toml:2:1: a: duplicate key"},
    {"[a.b]\n[a]\nb = 1", "t.toml:3:1: a.b: duplicate key (already a table)"},
    {"[t]\nx = 1\n[t]", "t.toml:3:1: t: duplicate table [t]"},
    {"a = 1\n[a]", "t.toml:2:1: a: a is already a value, not a table"},
    {"a = 1\n[a.b]", "a is already a value"},
    {"a.b = 1\n[a]", "table [a] was already defined by dotted keys"},
    {"[a]\nb = 1\n[a.b]", "a.b is already a value"},
    {"[a.b]\n[a]\nb.c = 1", "t.toml:3:1: a.b: cannot add to table [a.b] with a dotted key"},
    {"a = 1\na.b = 2", "a is already a value"},
    {"a = \"\\q\"", "t.toml:1:6: a: invalid escape sequence"},
    {"a = \"\\uD800\"", "is not a Unicode scalar value"},
    {"a = \"\\u12\"", "needs 4 hex digits"},
    {"a = \"x\" b", "t.toml:1:9: a: unexpected text after the value"},
    {"a = true1", "invalid value"},
    {"a = bare", "invalid value (strings need quotes)"},
    {"= 1", "t.toml:1:1: expected a key"},
    {"a 1", "t.toml:1:3: a: expected '=' after the key"},
    {"a", "expected '='"},
    {"[a", "expected ']'"},
    {"[]", "expected a key"},
    {"a.= 1", "expected a key"},
    {"a = [1, 2", "unterminated array"},
    {"a = [1 2]", "expected ',' or ']' in array"},
    {"a = \"x\x01y\"", "control character 0x01 in string"},
    {"# bell \x07\n", "control character 0x07 in comment"},
    {"a = 1\n\xff = 2", "t.toml:2:1: invalid UTF-8"},
    {"a = \"\xc0\xaf\"", "invalid UTF-8"}, /* overlong '/' */
    {"a = 1\rb = 2", "unexpected text after the value"},
    {"[a] b = 1", "t.toml:1:5: unexpected text after the table header"},
    {"\x01k = 1", "t.toml:1:1: invalid character in key"},
    {"k\x01 = 1", "t.toml:1:2: k: expected '='"},
};

Test(toml, rejects_each_bad_case_with_place_and_reason)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        int rv = parse(bad_cases[i].text);
        cr_assert_eq(rv, TKV_ECONFIG, "case %zu accepted: %s", i, bad_cases[i].text);
        cr_assert(strstr(err, bad_cases[i].want), "case %zu (%s): error \"%s\" lacks \"%s\"", i,
                  bad_cases[i].text, err, bad_cases[i].want);
        cr_assert_eq(doc.n_items, 0, "doc not emptied after an error");
    }
}

Test(toml, nul_byte_rejected)
{
    const char text[] = "a = 1\nb = \"x\0y\"\n";
    int rv = tkv_config_toml_parse("t.toml", text, sizeof(text) - 1, &doc, err, sizeof(err));
    cr_assert_eq(rv, TKV_ECONFIG);
    cr_assert(strstr(err, "t.toml:2:7: NUL byte"), "%s", err);
}

Test(toml, limits_size_array_depth)
{
    size_t n = TKV_TOML_MAX_BYTES + 1;
    char *big = malloc(n);
    memset(big, '#', n);
    cr_assert_eq(tkv_config_toml_parse("big.toml", big, n, &doc, err, sizeof(err)), TKV_ECONFIG);
    cr_assert(strstr(err, "big.toml: file is too large"), "%s", err);
    free(big);

    char arr[8 * (TKV_TOML_MAX_ARRAY + 2)] = "a = [";
    for (int i = 0; i <= TKV_TOML_MAX_ARRAY; i++)
        strcat(arr, "1,");
    strcat(arr, "]");
    cr_assert_eq(parse(arr), TKV_ECONFIG);
    cr_assert(strstr(err, "too many elements"), "%s", err);

    char deep[256] = "a";
    for (int i = 0; i < TKV_TOML_MAX_DEPTH; i++)
        strcat(deep, ".a");
    strcat(deep, " = 1");
    cr_assert_eq(parse(deep), TKV_ECONFIG);
    cr_assert(strstr(err, "too many parts"), "%s", err);

    /* too many keys: a document with MAX+1 distinct keys */
    size_t cap = (size_t)(TKV_TOML_MAX_ITEMS + 1) * 16;
    char *many = malloc(cap);
    size_t len = 0;
    for (int i = 0; i <= TKV_TOML_MAX_ITEMS; i++)
        len += (size_t)snprintf(many + len, cap - len, "k%d = 1\n", i);
    cr_assert_eq(tkv_config_toml_parse("m.toml", many, len, &doc, err, sizeof(err)), TKV_ECONFIG);
    cr_assert(strstr(err, "too many keys"), "%s", err);
    free(many);
}

Test(toml, error_buffer_small_or_absent_is_safe)
{
    char tiny[8];
    cr_assert_eq(tkv_config_toml_parse("t.toml", "a = ", 4, &doc, tiny, sizeof(tiny)), TKV_ECONFIG);
    cr_assert_eq(strlen(tiny), 7);
    cr_assert_eq(tkv_config_toml_parse("t.toml", "a = ", 4, &doc, NULL, 0), TKV_ECONFIG);
}

Test(toml, parse_file_errors_name_the_file)
{
    int rv = tkv_config_toml_parse_file("/nonexistent/x.toml", &doc, err, sizeof(err));
    cr_assert_eq(rv, -ENOENT);
    cr_assert(strstr(err, "/nonexistent/x.toml: cannot open config file"), "%s", err);
    /* an endless file is cut at the limit, never read to the end */
    rv = tkv_config_toml_parse_file("/dev/zero", &doc, err, sizeof(err));
    cr_assert_eq(rv, TKV_ECONFIG);
    cr_assert(strstr(err, "/dev/zero: file is too large"), "%s", err);
    rv = tkv_config_toml_parse_file("/", &doc, err, sizeof(err));
    cr_assert_lt(rv, 0);
    cr_assert(strstr(err, "is a directory"), "%s", err);
}

/* ---- allocation failure --------------------------------------------------------- */

static int fail_after;

static void *fail_malloc(void *ctx, size_t n)
{
    (void)ctx;
    return fail_after-- > 0 ? malloc(n) : NULL;
}
static void *fail_calloc(void *ctx, size_t n, size_t s)
{
    (void)ctx;
    return fail_after-- > 0 ? calloc(n, s) : NULL;
}
static void *fail_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    return fail_after-- > 0 ? realloc(p, n) : NULL;
}
static void fail_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

Test(toml, every_allocation_failure_is_clean_enomem)
{
    const char *text =
        "[server]\naddr = \"a\\u00e9b\"\nlist = [\"x\", \"y\", \"z\", \"w\", \"v\"]\n"
        "[log.file]\nfilename = 'f'\n";
    struct tkv_allocator a = {fail_malloc, fail_calloc, fail_realloc, fail_free, NULL};
    int n;
    for (n = 0; n < 1000; n++) {
        fail_after = n;
        tkv_mem_set_allocator(&a);
        int rv = tkv_config_toml_parse("t.toml", text, strlen(text), &doc, err, sizeof(err));
        tkv_mem_set_allocator(NULL);
        if (rv == 0)
            break;
        cr_assert_eq(rv, TKV_ENOMEM, "allocation %d failed but rv=%d (%s)", n, rv, err);
        cr_assert(strstr(err, "out of memory"), "%s", err);
    }
    cr_assert_lt(n, 1000);
    cr_assert_gt(n, 5, "expected several allocations, saw %d", n);
    cr_assert_not_null(tkv_config_toml_find(&doc, "log.file.filename"));
}

/* ---- mutation fuzz ------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: fixed seed, so a failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static char *read_sample(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    char *buf = malloc(TKV_TOML_MAX_BYTES);
    *len = fread(buf, 1, TKV_TOML_MAX_BYTES, f);
    fclose(f);
    return buf;
}

/* Applies the doc with the server (is_sched false) or scheduler schema. */
static void mutate_and_parse(const char *path, bool is_sched, int iterations)
{
    static const char interesting[] = "\"'[]=.#\n\r\\{},_-+0e:\t \x01\xff\xc3\x80u";
    size_t base_len;
    char *base = read_sample(path, &base_len);
    char *buf = malloc(base_len + 64);
    rng_state = 0x9E3779B97F4A7C15ull;
    int n_ok = 0, n_err = 0;
    for (int iter = 0; iter < iterations; iter++) {
        size_t len = base_len;
        memcpy(buf, base, len);
        int n_mut = 1 + (int)(rnd() % 4);
        for (int m = 0; m < n_mut && len > 0; m++) {
            size_t at = rnd() % len;
            switch (rnd() % 5) {
            case 0: /* replace a byte with a syntax-relevant one */
                buf[at] = interesting[rnd() % (sizeof(interesting) - 1)];
                break;
            case 1: /* flip a bit */
                buf[at] ^= (char)(1u << (rnd() % 8));
                break;
            case 2: { /* delete a short range */
                size_t want = 1 + rnd() % 8;
                size_t n = TKV_MIN(want, len - at);
                memmove(buf + at, buf + at + n, len - at - n);
                len -= n;
                break;
            }
            case 3: /* insert a byte */
                if (len < base_len + 60) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = interesting[rnd() % (sizeof(interesting) - 1)];
                    len++;
                }
                break;
            default: /* truncate */
                len = at;
                break;
            }
        }
        err[0] = '\0';
        int rv = tkv_config_toml_parse("fuzz.toml", buf, len, &doc, err, sizeof(err));
        if (rv == 0) {
            /* a mutation that still parses must still meet the schema cleanly */
            if (is_sched) {
                struct tkv_sched_config sc;
                tkv_config_sched_defaults(&sc);
                rv = tkv_config_sched_apply_doc(&sc, &doc, err, sizeof(err));
                if (rv == 0)
                    rv = tkv_config_sched_validate(&sc, err, sizeof(err));
            } else {
                struct tkv_server_config cfg;
                tkv_config_defaults(&cfg);
                rv = tkv_config_apply_doc(&cfg, &doc, err, sizeof(err));
                if (rv == 0)
                    rv = tkv_config_validate(&cfg, err, sizeof(err));
            }
            tkv_config_toml_free(&doc);
        }
        if (rv == 0) {
            n_ok++;
            continue;
        }
        n_err++;
        cr_assert_eq(rv, TKV_ECONFIG, "iteration %d: rv %d", iter, rv);
        cr_assert(err[0] != '\0', "iteration %d: error without a message", iter);
        cr_assert_eq(doc.n_items, 0);
    }
    cr_assert_gt(n_err, iterations / 3, "mutations too gentle: %d errors", n_err);
    cr_assert_gt(n_ok, 10, "no mutation survived: %d", n_ok);
    free(buf);
    free(base);
}

Test(toml, mutated_server_sample_gives_clean_errors_only)
{
    mutate_and_parse(TKV_SOURCE_DIR "/conf/tinykv.toml", false, 2000);
}

Test(toml, mutated_scheduler_sample_gives_clean_errors_only)
{
    mutate_and_parse(TKV_SOURCE_DIR "/conf/tinyscheduler.toml", true, 1500);
}

/* Random command lines built from real flag names and hostile values: only
 * 0 or a clean TKV_ECONFIG with a message. */
Test(toml, random_command_lines_give_clean_errors_only)
{
    static const char *words[] = {"-C",
                                  "--config",
                                  "-A",
                                  "--addr",
                                  "-addr",
                                  "--advertise-addr",
                                  "--status-addr",
                                  "--data-dir",
                                  "-path",
                                  "-L",
                                  "-loglevel",
                                  "--log-file",
                                  "--pd",
                                  "-scheduler",
                                  "--cores",
                                  "--config-check",
                                  "--config-info",
                                  "json",
                                  "toml",
                                  "127.0.0.1:1",
                                  "[::1]:0",
                                  "0",
                                  "300",
                                  "-",
                                  "--",
                                  "=",
                                  "--cores=",
                                  "-addr=x",
                                  "a,b",
                                  "debug",
                                  "",
                                  "/nonexistent",
                                  "--config-check=maybe",
                                  "x:99999",
                                  "http://h:1,h:2",
                                  "-h"};
    rng_state = 42;
    int n_ok = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char *argv[8] = {"tinykv-server"};
        int argc = 1 + (int)(rnd() % 7);
        for (int i = 1; i < argc; i++)
            argv[i] = (char *)words[rnd() % (sizeof(words) / sizeof(words[0]))];
        struct tkv_server_config cfg;
        err[0] = '\0';
        int rv = tkv_config_load(&cfg, argc, argv, err, sizeof(err));
        if (rv == 0) {
            n_ok++;
            continue;
        }
        cr_assert(rv == TKV_ECONFIG || rv == -ENOENT, "iteration %d: rv %d", iter, rv);
        cr_assert(err[0] != '\0', "iteration %d: error without a message", iter);
    }
    cr_assert_gt(n_ok, 10);
}

/* ---- found by tests/fuzz (fuzz_toml) ---------------------------------------- */

/* The column of a key whose value is an array spanning lines was computed
 * after the array moved the line start: it came out negative. */
Test(toml, fuzz_item_col_after_multiline_array)
{
    cr_assert_eq(parse("s = 1\n  arr = [\n  \"a\", # c\n  \"b\"\n]\nnext = 2\n"), 0, "%s", err);
    const struct tkv_toml_item *it = tkv_config_toml_find(&doc, "arr");
    cr_assert_not_null(it);
    cr_assert_eq(it->line, 2);
    cr_assert_eq(it->col, 3, "col %d", it->col);
    it = tkv_config_toml_find(&doc, "next");
    cr_assert_eq(it->line, 6);
    cr_assert_eq(it->col, 1, "col %d", it->col);
}
