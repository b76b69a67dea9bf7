/* Internals of the tools (tinykv-ctl, tinykv-playground): key/value text
 * forms (escaped or hex) and a minimal blocking HTTP/1.1 client. */
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

/* What an HTTP request got back: status code and body (body[body_off ..
 * body_off + len), NUL-terminated); free with tools_http_free. */
struct tools_http_answer {
    unsigned code;
    char *body; /* the whole response, malloc'ed */
    size_t body_off, len;
};
#define TOOLS_HTTP_BODY(a) ((a)->body + (a)->body_off)

/* One HTTP/1.1 request to addr ("host:port" or "http://host:port") with an
 * optional JSON body, answered within timeout_s (connect, send and the whole
 * answer). Returns 0 and *out (any status code), or -1 with a sentence in
 * err (cannot connect, timeout, not HTTP). Blocking; any thread. */
int tools_http(const char *addr, const char *method, const char *path, const char *body,
               double timeout_s, struct tools_http_answer *out, char *err, size_t err_cap);
void tools_http_free(struct tools_http_answer *a);

/* tinykv-ctl's scheduler verbs (tools_admin.c): argv = "store list",
 * "region list", "region KEY", "operator show", "operator add KIND REGION
 * STORE", against the scheduler's HTTP API at addr. Prints the answer
 * (table, or the API's JSON with json) and returns the exit code. */
int tools_admin(const char *addr, bool json, bool hex, double timeout_s, int argc, char **argv);

#endif
