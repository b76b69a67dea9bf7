/* Key and value text forms for tinykv-ctl: escaped (printable as-is, the
 * rest \xHH) or hex, in both directions. */
#include <stdlib.h>
#include <string.h>

#include "tools_private.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int tools_parse_bytes(const char *text, bool hex, uint8_t **out, size_t *len_out)
{
    size_t n = strlen(text), len = 0;
    uint8_t *buf = malloc(n + 1);
    if (!buf)
        return -1;
    for (size_t i = 0; i < n;) {
        if (hex) {
            int hi = hexval(text[i]), lo = i + 1 < n ? hexval(text[i + 1]) : -1;
            if (hi < 0 || lo < 0)
                goto bad;
            buf[len++] = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else if (text[i] == '\\') {
            if (text[i + 1] == '\\') {
                buf[len++] = '\\';
                i += 2;
            } else if (text[i + 1] == 'x' && i + 3 < n && hexval(text[i + 2]) >= 0 &&
                       hexval(text[i + 3]) >= 0) {
                buf[len++] = (uint8_t)(hexval(text[i + 2]) << 4 | hexval(text[i + 3]));
                i += 4;
            } else {
                goto bad;
            }
        } else {
            buf[len++] = (uint8_t)text[i++];
        }
    }
    *out = buf;
    *len_out = len;
    return 0;
bad:
    free(buf);
    return -1;
}

void tools_print_bytes(FILE *f, const uint8_t *p, size_t n, bool hex)
{
    for (size_t i = 0; i < n; i++) {
        if (hex)
            fprintf(f, "%02x", p[i]);
        else if (p[i] == '\\')
            fputs("\\\\", f);
        else if (p[i] >= 0x20 && p[i] < 0x7f)
            fputc(p[i], f);
        else
            fprintf(f, "\\x%02x", p[i]);
    }
}
