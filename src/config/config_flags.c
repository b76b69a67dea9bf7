/* Command-line flags for tinykv-server: TiKV's names plus TinyKV's course flags
 * as aliases, Go flag syntax (-f v, -f=v, --f v, --f=v). Defaults < file <
 * flags, whatever the order on the command line. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config_private.h"
#include "tkv/common.h"
#include "tkv/config.h"
#include "tkv/err.h"

#define MAX_ARGS 256

enum flag_kind { F_KEY, F_CONFIG, F_CHECK, F_INFO, F_HELP, F_VERSION };

struct flag_desc {
    const char *names[4]; /* without dashes; the first is the canonical one */
    enum flag_kind kind;
    const char *key;      /* F_KEY: the TOML key it sets */
};

static const struct flag_desc flags[] = {
    {{"C", "config"}, F_CONFIG, NULL},
    {{"A", "addr"}, F_KEY, "server.addr"},
    {{"advertise-addr"}, F_KEY, "server.advertise-addr"},
    {{"status-addr"}, F_KEY, "server.status-addr"},
    {{"advertise-status-addr"}, F_KEY, "server.advertise-status-addr"},
    {{"data-dir", "path"}, F_KEY, "storage.data-dir"},
    {{"L", "log-level", "loglevel"}, F_KEY, "log.level"},
    {{"log-file"}, F_KEY, "log.file.filename"},
    {{"pd", "scheduler"}, F_KEY, "pd.endpoints"},
    {{"cores"}, F_KEY, "server.cores"},
    {{"config-check"}, F_CHECK, NULL},
    {{"config-info"}, F_INFO, NULL},
    {{"V", "version"}, F_VERSION, NULL},
    {{"h", "help"}, F_HELP, NULL},
};

static const char usage[] =
    "Usage: tinykv-server [flags]\n"
    "\n"
    "Settings come from built-in defaults, then the config file, then flags\n"
    "(flags win). Every key is documented in conf/tinykv.toml.\n"
    "\n"
    "  -C, --config FILE          TOML config file (strict: unknown keys are errors)\n"
    "  -A, --addr HOST:PORT       server.addr: gRPC address of store 0; store k uses PORT+k\n"
    "                             (default 127.0.0.1:20160)\n"
    "      --advertise-addr H:P   server.advertise-addr: address given to peers (default: addr)\n"
    "      --status-addr H:P      server.status-addr: HTTP status/metrics (default 127.0.0.1:20180)\n"
    "      --advertise-status-addr H:P  server.advertise-status-addr\n"
    "      --data-dir DIR         storage.data-dir (default ./tinykv-data)\n"
    "  -L, --log-level LEVEL      log.level: debug, info, warn, error, fatal (default info)\n"
    "      --log-file FILE        log.file.filename (default: stderr)\n"
    "      --pd A[,B...]          pd.endpoints: scheduler addresses; empty = standalone mode\n"
    "      --cores N              server.cores: shard threads = stores (0 = one per CPU; default 1)\n"
    "      --config-check         validate the configuration and exit\n"
    "      --config-info FORMAT   print the effective configuration (toml or json) and exit\n"
    "  -V, --version              print version information and exit\n"
    "  -h, --help                 print this help and exit\n"
    "\n"
    "TinyKV course aliases: -addr, -path (= --data-dir), -scheduler (= --pd),\n"
    "-loglevel (= --log-level). One or two dashes work for every long flag, and\n"
    "values may follow as the next argument or after '='.\n";

const char *tkv_config_usage(void)
{
    return usage;
}

static const struct flag_desc *find_flag(const char *name, size_t n)
{
    for (size_t i = 0; i < TKV_ARRAY_LEN(flags); i++)
        for (size_t j = 0; j < 4 && flags[i].names[j]; j++)
            if (strlen(flags[i].names[j]) == n && strncmp(flags[i].names[j], name, n) == 0)
                return &flags[i];
    return NULL;
}

static bool takes_value(const struct flag_desc *f)
{
    return f->kind == F_KEY || f->kind == F_CONFIG || f->kind == F_INFO;
}

struct parsed_flag {
    const struct flag_desc *f;
    const char *spelled; /* argv text up to '=' for messages */
    size_t spelled_len;
    const char *value;   /* NULL for switches */
};

int tkv_config_load(struct tkv_server_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    tkv_config_defaults(cfg);
    if (err && errlen)
        err[0] = '\0';
    if (argc < 1)
        argc = 1;
    /* Pass 1: recognise every flag (so -C can come after the flags it is
     * overridden by) and stop early for --help / --version. */
    struct parsed_flag parsed[MAX_ARGS];
    if (argc > MAX_ARGS)
        return config_errf(err, errlen, "too many command-line arguments (limit %d)", MAX_ARGS - 1);
    size_t n_parsed = 0;
    const char *config_path = NULL;
    bool check = false;
    const char *info = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0')
            return config_errf(err, errlen, "unexpected argument \"%s\" (flags start with '-'; see --help)", a);
        const char *name = a + 1 + (a[1] == '-');
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const struct flag_desc *f = find_flag(name, nl);
        if (!f)
            return config_errf(err, errlen, "unknown flag %.*s (see --help)", (int)(name - a + nl), a);
        struct parsed_flag *pf = &parsed[n_parsed++];
        pf->f = f;
        pf->spelled = a;
        pf->spelled_len = (size_t)(name - a) + nl;
        pf->value = NULL;
        if (takes_value(f)) {
            if (eq) {
                pf->value = eq + 1;
            } else if (i + 1 < argc) {
                pf->value = argv[++i];
            } else {
                return config_errf(err, errlen, "flag %s needs a value (see --help)", a);
            }
        } else if (eq) {
            /* Go's flag package accepts -switch=true|false. */
            if (strcmp(eq + 1, "false") == 0) {
                n_parsed--;
                continue;
            }
            if (strcmp(eq + 1, "true") != 0)
                return config_errf(err, errlen, "flag %.*s takes no value (got \"%s\")", (int)pf->spelled_len, a,
                                   eq + 1);
        }
        switch (f->kind) {
        case F_HELP:
            cfg->action = TKV_CONFIG_HELP;
            return 0;
        case F_VERSION:
            cfg->action = TKV_CONFIG_VERSION;
            return 0;
        case F_CONFIG:
            config_path = pf->value;
            break;
        case F_CHECK:
            check = true;
            break;
        case F_INFO:
            info = pf->value;
            break;
        case F_KEY:
            break;
        }
    }
    if (info) {
        if (strcmp(info, "toml") == 0) {
            cfg->info_format = TKV_CONFIG_DUMP_TOML;
        } else if (strcmp(info, "json") == 0) {
            cfg->info_format = TKV_CONFIG_DUMP_JSON;
        } else {
            return config_errf(err, errlen, "flag --config-info: expected toml or json, got \"%s\"", info);
        }
    }
    if (config_path) {
        if (!config_path[0])
            return config_errf(err, errlen, "flag --config: empty file name");
        if (strlen(config_path) >= sizeof(cfg->config_file))
            return config_errf(err, errlen, "flag --config: file name too long");
        struct tkv_toml_doc doc;
        int rv = tkv_config_toml_parse_file(config_path, &doc, err, errlen);
        if (rv < 0)
            return rv;
        rv = tkv_config_apply_doc(cfg, &doc, err, errlen);
        tkv_config_toml_free(&doc);
        if (rv < 0)
            return rv;
        snprintf(cfg->config_file, sizeof(cfg->config_file), "%s", config_path);
    }
    /* Pass 2: flags override the file, in command-line order. */
    for (size_t i = 0; i < n_parsed; i++) {
        const struct parsed_flag *pf = &parsed[i];
        if (pf->f->kind != F_KEY)
            continue;
        char what[320];
        if (tkv_config_set(cfg, pf->f->key, pf->value, what, sizeof(what)) < 0)
            return config_errf(err, errlen, "flag %.*s: %s", (int)pf->spelled_len, pf->spelled, what);
    }
    if (cfg->server.cores == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->server.cores = (uint32_t)(n < 1 ? 1 : n > TKV_CONFIG_MAX_CORES ? TKV_CONFIG_MAX_CORES : n);
    }
    int rv = tkv_config_validate(cfg, err, errlen);
    if (rv < 0) {
        if (cfg->config_file[0] && err && errlen) {
            /* Say where the invalid combination came from. */
            char msg[512];
            snprintf(msg, sizeof(msg), "%s", err);
            config_errf(err, errlen, "%s: %s", cfg->config_file, msg);
        }
        return rv;
    }
    if (info)
        cfg->action = TKV_CONFIG_INFO;
    else if (check)
        cfg->action = TKV_CONFIG_CHECK;
    return 0;
}
