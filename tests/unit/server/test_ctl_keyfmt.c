/* tinykv-ctl key forms: printable bytes as-is, "\\" and "\xHH" escapes,
 * hex; output of every byte value parses back to the same bytes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools_private.h"

static char *print_to_string(const uint8_t *p, size_t n, bool hex)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    tools_print_bytes(f, p, n, hex);
    fclose(f);
    return buf;
}

Test(keyfmt, parses_escapes)
{
    uint8_t *out;
    size_t n;
    cr_assert_eq(tools_parse_bytes("a\\x00b\\\\c\\xfF", false, &out, &n), 0);
    cr_assert_eq(n, 6);
    cr_assert_eq(memcmp(out, "a\0b\\c\xff", 6), 0);
    free(out);
}

Test(keyfmt, rejects_bad_escapes_and_hex)
{
    uint8_t *out;
    size_t n;
    const char *bad_escaped[] = {"\\", "a\\q", "\\x", "\\x1", "\\xg0", "end\\"};
    for (size_t i = 0; i < sizeof(bad_escaped) / sizeof(bad_escaped[0]); i++)
        cr_assert_eq(tools_parse_bytes(bad_escaped[i], false, &out, &n), -1, "accepted %s",
                     bad_escaped[i]);
    const char *bad_hex[] = {"0", "abc", "zz", "0x00", "a b"};
    for (size_t i = 0; i < sizeof(bad_hex) / sizeof(bad_hex[0]); i++)
        cr_assert_eq(tools_parse_bytes(bad_hex[i], true, &out, &n), -1, "accepted hex %s",
                     bad_hex[i]);
}

Test(keyfmt, every_byte_round_trips_escaped_and_hex)
{
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    for (int hex = 0; hex <= 1; hex++) {
        char *text = print_to_string(all, sizeof(all), hex);
        uint8_t *back;
        size_t n;
        cr_assert_eq(tools_parse_bytes(text, hex, &back, &n), 0, "cannot parse own output %s",
                     text);
        cr_assert_eq(n, sizeof(all));
        cr_assert_eq(memcmp(back, all, n), 0);
        free(back);
        free(text);
    }
}

Test(keyfmt, printable_text_stays_readable)
{
    char *text = print_to_string((const uint8_t *)"user/42 x\\y\n", 12, false);
    cr_assert_str_eq(text, "user/42 x\\\\y\\x0a");
    free(text);
    text = print_to_string((const uint8_t *)"\x01\xab", 2, true);
    cr_assert_str_eq(text, "01ab");
    free(text);
}
