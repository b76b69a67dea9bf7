/* Internals of tinykv-ctl: key/value text forms (escaped or hex). */
#ifndef TKV_TOOLS_PRIVATE_H
#define TKV_TOOLS_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Parse a command-line key or value into out (caller frees with free()).
 * hex=false: the text as-is, except "\xHH" (a byte) and "\\" (a backslash),
 * the inverse of tools_print_bytes. hex=true: pairs of hex digits.
 * Returns 0, or -1 on a malformed escape / odd or non-hex digits. */
int tools_parse_bytes(const char *text, bool hex, uint8_t **out, size_t *len_out);

/* Print bytes: printable ASCII as-is with '\' doubled, everything else as
 * "\xHH" (one form for keys in output and logs, tikv "unified key format"
 * spirit); or lowercase hex when hex is true. */
void tools_print_bytes(FILE *f, const uint8_t *p, size_t n, bool hex);

#endif
