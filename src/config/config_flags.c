/* Command-line flags in Go flag syntax (-f v, -f=v, --f v, --f=v), shared by
 * every tinykv program: defaults < config file < flags, whatever the order of
 * the flags on the command line. */
#include <stdio.h>
#include <string.h>

#include "config_private.h"
#include "tkv/common.h"
#include "tkv/config.h"
#include "tkv/err.h"

#define MAX_ARGS 256

static const struct config_flag *find_flag(const struct config_flag *flags, size_t n_flags,
                                           const char *name, size_t n)
{
    for (size_t i = 0; i < n_flags; i++)
        for (size_t j = 0; j < 4 && flags[i].names[j]; j++)
            if (strlen(flags[i].names[j]) == n && strncmp(flags[i].names[j], name, n) == 0)
                return &flags[i];
    return NULL;
}

static bool takes_value(const struct config_flag *f)
{
    return f->kind == CONFIG_F_KEY || f->kind == CONFIG_F_CONFIG || f->kind == CONFIG_F_INFO;
}

struct parsed_flag {
    const struct config_flag *f;
    const char *spelled; /* argv text; its first spelled_len bytes name the flag */
    size_t spelled_len;
    const char *value;
};

int config_load_cmdline(const struct config_schema *s, void *base, const struct config_flag *flags,
                        size_t n_flags, int argc, char **argv, char *config_file,
                        size_t config_file_cap, enum tkv_config_action *action,
                        enum tkv_config_dump_format *info_format, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    *action = TKV_CONFIG_RUN;
    if (config_file_cap)
        config_file[0] = '\0';
    if (argc < 1)
        argc = 1;
    if (argc > MAX_ARGS)
        return config_errf(err, errlen, "too many command-line arguments (limit %d)", MAX_ARGS - 1);
    /* Pass 1: recognise every flag (so -C may follow the flags that override
     * it) and stop early for --help / --version. */
    struct parsed_flag parsed[MAX_ARGS];
    size_t n_parsed = 0;
    const char *config_path = NULL, *info = NULL;
    bool check = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0')
            return config_errf(err, errlen,
                               "unexpected argument \"%s\" (flags start with '-'; see --help)", a);
        const char *name = a + 1 + (a[1] == '-');
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const struct config_flag *f = find_flag(flags, n_flags, name, nl);
        if (!f)
            return config_errf(err, errlen, "unknown flag %.*s (see --help)",
                               (int)((size_t)(name - a) + nl), a);
        struct parsed_flag pf = {.f = f, .spelled = a, .spelled_len = (size_t)(name - a) + nl};
        if (takes_value(f)) {
            if (eq)
                pf.value = eq + 1;
            else if (i + 1 < argc)
                pf.value = argv[++i];
            else
                return config_errf(err, errlen, "flag %s needs a value (see --help)", a);
        } else if (eq) {
            /* Go's flag package accepts -switch=true|false. */
            if (strcmp(eq + 1, "false") == 0)
                continue;
            if (strcmp(eq + 1, "true") != 0)
                return config_errf(err, errlen, "flag %.*s takes no value (got \"%s\")",
                                   (int)pf.spelled_len, a, eq + 1);
        }
        switch (f->kind) {
        case CONFIG_F_HELP:
            *action = TKV_CONFIG_HELP;
            return 0;
        case CONFIG_F_VERSION:
            *action = TKV_CONFIG_VERSION;
            return 0;
        case CONFIG_F_CONFIG:
            config_path = pf.value;
            break;
        case CONFIG_F_CHECK:
            check = true;
            break;
        case CONFIG_F_INFO:
            info = pf.value;
            break;
        case CONFIG_F_KEY:
            parsed[n_parsed++] = pf;
            break;
        }
    }
    if (info) {
        if (strcmp(info, "toml") == 0)
            *info_format = TKV_CONFIG_DUMP_TOML;
        else if (strcmp(info, "json") == 0)
            *info_format = TKV_CONFIG_DUMP_JSON;
        else
            return config_errf(err, errlen, "flag --config-info: expected toml or json, got \"%s\"",
                               info);
    }
    if (config_path) {
        if (!config_path[0])
            return config_errf(err, errlen, "flag --config: empty file name");
        if (strlen(config_path) >= config_file_cap)
            return config_errf(err, errlen, "flag --config: file name too long");
        struct tkv_toml_doc doc;
        int rv = tkv_config_toml_parse_file(config_path, &doc, err, errlen);
        if (rv < 0)
            return rv;
        rv = config_apply_doc(s, base, &doc, err, errlen);
        tkv_config_toml_free(&doc);
        if (rv < 0)
            return rv;
        snprintf(config_file, config_file_cap, "%s", config_path);
    }
    /* Pass 2: flags override the file, in command-line order. */
    for (size_t i = 0; i < n_parsed; i++) {
        char what[384];
        if (config_set_text(s, base, parsed[i].f->key, parsed[i].value, what, sizeof(what)) < 0)
            return config_errf(err, errlen, "flag %.*s: %s", (int)parsed[i].spelled_len,
                               parsed[i].spelled, what);
    }
    *action = info ? TKV_CONFIG_INFO : check ? TKV_CONFIG_CHECK : TKV_CONFIG_RUN;
    return 0;
}
