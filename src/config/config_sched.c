/* The tinyscheduler-server schema: PD's key names, sections and flags with
 * TinyKV's scheduler defaults (TINYKV-API.md 2.16, 5), and PD's derivation of
 * name, data dir, advertise URLs and initial cluster. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config_private.h"
#include "tkv/common.h"
#include "tkv/config.h"
#include "tkv/err.h"

#define F(field)                                                                                   \
    offsetof(struct tkv_sched_config, field), sizeof(((struct tkv_sched_config *)0)->field)
#define DAY_MS (86400000ull)

/* Top-level keys first (TOML puts them before any [table]). */
static const struct config_key sched_keys[] = {
    {"name", CONFIG_K_STR_OPT, F(name), 0, 0, 0},
    {"data-dir", CONFIG_K_STR_OPT, F(data_dir), 0, 0, 0},
    {"client-urls", CONFIG_K_URLS, F(client_urls), 1, 0, 0},
    {"peer-urls", CONFIG_K_URLS, F(peer_urls), 1, 0, 0},
    {"advertise-client-urls", CONFIG_K_URLS, F(advertise_client_urls), 0, 0, 0},
    {"advertise-peer-urls", CONFIG_K_URLS, F(advertise_peer_urls), 0, 0, 0},
    {"initial-cluster", CONFIG_K_STR_OPT, F(initial_cluster), 0, 0, 0},
    {"initial-cluster-state", CONFIG_K_STR, F(initial_cluster_state), 0, 0, 0},
    {"lease", CONFIG_K_U64, F(lease_s), 1, 3600, 0},
    {"tso-save-interval", CONFIG_K_DURATION, F(tso_save_interval_ms), 1, DAY_MS, 0},
    {"status-addr", CONFIG_K_ADDR_OPT, F(status_addr), 0, 0, 0},
    {"log.level", CONFIG_K_LOG_LEVEL, F(log.level), 0, 0, 0},
    {"log.format", CONFIG_K_LOG_FORMAT, F(log.format), 0, 0, 0},
    {"log.file.filename", CONFIG_K_STR_OPT, F(log.file.filename), 0, 0, 0},
    {"schedule.patrol-region-interval", CONFIG_K_DURATION, F(schedule.patrol_region_interval_ms), 1,
     DAY_MS, 0},
    {"schedule.max-store-down-time", CONFIG_K_DURATION, F(schedule.max_store_down_time_ms), 1000,
     30 * DAY_MS, 0},
    {"schedule.leader-schedule-limit", CONFIG_K_U64, F(schedule.leader_schedule_limit), 0, 1000000,
     0},
    {"schedule.region-schedule-limit", CONFIG_K_U64, F(schedule.region_schedule_limit), 0, 1000000,
     0},
    {"schedule.replica-schedule-limit", CONFIG_K_U64, F(schedule.replica_schedule_limit), 0,
     1000000, 0},
    {"replication.max-replicas", CONFIG_K_U64, F(replication.max_replicas), 1, 15, 0},
};

static const char *const sched_sections[] = {"log", "log.file", "schedule", "replication"};

static const struct config_schema sched_schema = {sched_keys, TKV_ARRAY_LEN(sched_keys),
                                                  sched_sections, TKV_ARRAY_LEN(sched_sections)};

static const struct config_flag sched_flags[] = {
    {{"C", "config"}, CONFIG_F_CONFIG, NULL},
    {{"name"}, CONFIG_F_KEY, "name"},
    {{"data-dir"}, CONFIG_F_KEY, "data-dir"},
    {{"client-urls"}, CONFIG_F_KEY, "client-urls"},
    {{"peer-urls"}, CONFIG_F_KEY, "peer-urls"},
    {{"advertise-client-urls"}, CONFIG_F_KEY, "advertise-client-urls"},
    {{"advertise-peer-urls"}, CONFIG_F_KEY, "advertise-peer-urls"},
    {{"initial-cluster"}, CONFIG_F_KEY, "initial-cluster"},
    {{"status-addr"}, CONFIG_F_KEY, "status-addr"},
    {{"L", "log-level"}, CONFIG_F_KEY, "log.level"},
    {{"log-file"}, CONFIG_F_KEY, "log.file.filename"},
    {{"config-check"}, CONFIG_F_CHECK, NULL},
    {{"config-info"}, CONFIG_F_INFO, NULL},
    {{"V", "version"}, CONFIG_F_VERSION, NULL},
    {{"h", "help"}, CONFIG_F_HELP, NULL},
};

static const char sched_usage[] =
    "Usage: tinyscheduler-server [flags]\n"
    "\n"
    "Settings come from built-in defaults, then the config file, then flags\n"
    "(flags win). Every key is documented in conf/tinyscheduler.toml.\n"
    "\n"
    "  -C, --config FILE               TOML config file (strict: unknown keys are errors)\n"
    "      --name NAME                 member name (default pd-<hostname>)\n"
    "      --data-dir DIR              data directory (default default.<name>)\n"
    "      --client-urls URLS          client URLs: the gRPC service (default "
    "http://127.0.0.1:2379)\n"
    "      --peer-urls URLS            peer URLs (default http://127.0.0.1:2380)\n"
    "      --advertise-client-urls U   client URLs given to others (default: client-urls)\n"
    "      --advertise-peer-urls U     peer URLs given to others (default: peer-urls)\n"
    "      --initial-cluster C         name=peer-url,... (default <name>=<advertise-peer-urls>)\n"
    "      --status-addr H:P           HTTP status port: /metrics, /pd/api/v1, /dashboard\n"
    "                                  (default 127.0.0.1:2381; \"\" disables it)\n"
    "  -L, --log-level LEVEL           debug, info, warn, error, fatal (default info)\n"
    "      --log-file FILE             log file (default: stderr)\n"
    "      --config-check              validate the configuration and exit\n"
    "      --config-info FORMAT        print the effective configuration (toml or json) and exit\n"
    "  -V, --version                   print version information and exit\n"
    "  -h, --help                      print this help and exit\n"
    "\n"
    "One or two dashes work for every long flag; values may follow as the next\n"
    "argument or after '='.\n";

const char *tkv_config_sched_usage(void)
{
    return sched_usage;
}

void tkv_config_sched_defaults(struct tkv_sched_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->client_urls, sizeof(cfg->client_urls), "http://127.0.0.1:2379");
    snprintf(cfg->peer_urls, sizeof(cfg->peer_urls), "http://127.0.0.1:2380");
    snprintf(cfg->initial_cluster_state, sizeof(cfg->initial_cluster_state), "new");
    cfg->lease_s = 3;
    cfg->tso_save_interval_ms = 3000;
    snprintf(cfg->status_addr, sizeof(cfg->status_addr), "127.0.0.1:2381");
    cfg->log.level = TKV_LOG_LEVEL_INFO;
    cfg->log.format = TKV_CONFIG_LOG_TEXT;
    cfg->schedule.patrol_region_interval_ms = 100;
    cfg->schedule.max_store_down_time_ms = 30 * 60 * 1000;
    cfg->schedule.leader_schedule_limit = 4;
    cfg->schedule.region_schedule_limit = 2048;
    cfg->schedule.replica_schedule_limit = 64;
    cfg->replication.max_replicas = 3;
    cfg->action = TKV_CONFIG_RUN;
    cfg->info_format = TKV_CONFIG_DUMP_TOML;
}

int tkv_config_sched_apply_doc(struct tkv_sched_config *cfg, const struct tkv_toml_doc *doc,
                               char *err, size_t errlen)
{
    return config_apply_doc(&sched_schema, cfg, doc, err, errlen);
}

int tkv_config_sched_set(struct tkv_sched_config *cfg, const char *key, const char *text, char *err,
                         size_t errlen)
{
    return config_set_text(&sched_schema, cfg, key, text, err, errlen);
}

size_t tkv_config_sched_dump(const struct tkv_sched_config *cfg, enum tkv_config_dump_format format,
                             char *buf, size_t cap)
{
    return config_dump(&sched_schema, cfg, format, buf, cap);
}

/* Host and port of the first URL of a list ("http://h:p,..."). */
static int first_url(const char *urls, char *host, size_t cap, uint16_t *port)
{
    char one[TKV_CONFIG_ADDR_MAX];
    size_t n = strcspn(urls, ",");
    if (n >= sizeof(one))
        return TKV_EINVAL;
    memcpy(one, urls, n);
    one[n] = '\0';
    return tkv_config_split_addr(config_strip_http(one), host, cap, port);
}

static bool any_unspecified(const char *urls)
{
    for (const char *p = urls; *p;) {
        char host[TKV_CONFIG_ADDR_MAX];
        uint16_t port;
        if (first_url(p, host, sizeof(host), &port) == 0 && config_host_unspecified(host))
            return true;
        const char *comma = strchr(p, ',');
        if (!comma)
            break;
        p = comma + 1;
    }
    return false;
}

/* "a=http://h:p,b=http://h:p": every entry named, every URL valid; the
 * member itself must be listed (etcd refuses to start otherwise). */
static int check_initial_cluster(const struct tkv_sched_config *cfg, char *err, size_t errlen)
{
    bool self = false;
    for (const char *p = cfg->initial_cluster;;) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        char url[TKV_CONFIG_ADDR_MAX], host[TKV_CONFIG_ADDR_MAX];
        uint16_t port;
        size_t ul = eq ? n - (size_t)(eq + 1 - p) : 0;
        if (!eq || eq == p || ul == 0 || ul >= sizeof(url))
            return config_errf(err, errlen,
                               "initial-cluster: expected name=http://host:port[,...], got \"%s\"",
                               cfg->initial_cluster);
        memcpy(url, eq + 1, ul);
        url[ul] = '\0';
        if (strncasecmp(url, "http://", 7) != 0 ||
            tkv_config_split_addr(url + 7, host, sizeof(host), &port) < 0)
            return config_errf(err, errlen, "initial-cluster: bad URL \"%s\" in \"%s\"", url,
                               cfg->initial_cluster);
        if (cfg->name[0] && (size_t)(eq - p) == strlen(cfg->name) &&
            strncmp(p, cfg->name, (size_t)(eq - p)) == 0)
            self = true;
        if (!p[n])
            break;
        p += n + 1;
    }
    if (cfg->name[0] && !self)
        return config_errf(err, errlen, "initial-cluster: does not list this member's name \"%s\"",
                           cfg->name);
    return 0;
}

/* Same lexical containment rule as the server: log file not in data dir. */
static bool path_inside(const char *file, const char *dir)
{
    while (file[0] == '.' && file[1] == '/')
        file += 2;
    while (dir[0] == '.' && dir[1] == '/')
        dir += 2;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    return dl > 0 && strncmp(file, dir, dl) == 0 && file[dl] == '/';
}

int tkv_config_sched_validate(const struct tkv_sched_config *cfg, char *err, size_t errlen)
{
    char ch[TKV_CONFIG_ADDR_MAX], ph[TKV_CONFIG_ADDR_MAX];
    uint16_t cp, pp;
    if (first_url(cfg->client_urls, ch, sizeof(ch), &cp) < 0)
        return config_errf(err, errlen,
                           "client-urls: expected URLs like \"http://127.0.0.1:2379\"");
    if (first_url(cfg->peer_urls, ph, sizeof(ph), &pp) < 0)
        return config_errf(err, errlen, "peer-urls: expected URLs like \"http://127.0.0.1:2380\"");
    if (cp != 0 && cp == pp &&
        (strcmp(ch, ph) == 0 || config_host_unspecified(ch) || config_host_unspecified(ph)))
        return config_errf(err, errlen, "peer-urls: port %u is also used by client-urls", pp);
    if (!cfg->advertise_client_urls[0] && any_unspecified(cfg->client_urls))
        return config_errf(err, errlen,
                           "advertise-client-urls: must be set when client-urls listens on an "
                           "unspecified address");
    if (!cfg->advertise_peer_urls[0] && any_unspecified(cfg->peer_urls))
        return config_errf(
            err, errlen,
            "advertise-peer-urls: must be set when peer-urls listens on an unspecified address");
    if (cfg->advertise_client_urls[0] && any_unspecified(cfg->advertise_client_urls))
        return config_errf(err, errlen, "advertise-client-urls: must be reachable, not 0.0.0.0");
    if (cfg->advertise_peer_urls[0] && any_unspecified(cfg->advertise_peer_urls))
        return config_errf(err, errlen, "advertise-peer-urls: must be reachable, not 0.0.0.0");
    if (strcmp(cfg->initial_cluster_state, "new") != 0 &&
        strcmp(cfg->initial_cluster_state, "existing") != 0)
        return config_errf(err, errlen,
                           "initial-cluster-state: expected \"new\" or \"existing\", got \"%s\"",
                           cfg->initial_cluster_state);
    if (cfg->initial_cluster[0])
        TKV_RET(check_initial_cluster(cfg, err, errlen));
    if (cfg->name[0] && strpbrk(cfg->name, "=,/ "))
        return config_errf(err, errlen, "name: \"%s\" must not contain '=', ',', '/' or spaces",
                           cfg->name);
    if (cfg->log.file.filename[0] && cfg->data_dir[0] &&
        path_inside(cfg->log.file.filename, cfg->data_dir))
        return config_errf(err, errlen,
                           "log.file.filename: \"%s\" must not be inside data-dir \"%s\"",
                           cfg->log.file.filename, cfg->data_dir);
    return 0;
}

/* PD's adjust(): fill what was left empty from what was given. */
static int derive(struct tkv_sched_config *cfg, char *err, size_t errlen)
{
    if (!cfg->name[0]) {
        char host[64] = "";
        if (gethostname(host, sizeof(host)) < 0 || !host[0])
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
        for (char *p = host; *p; p++)
            if (strchr("=,/ ", *p))
                *p = '-';
        snprintf(cfg->name, sizeof(cfg->name), "pd-%s", host);
    }
    if (!cfg->data_dir[0] && snprintf(cfg->data_dir, sizeof(cfg->data_dir), "default.%s",
                                      cfg->name) >= (int)sizeof(cfg->data_dir))
        return config_errf(err, errlen, "data-dir: derived name too long");
    if (!cfg->advertise_client_urls[0])
        memcpy(cfg->advertise_client_urls, cfg->client_urls, sizeof(cfg->client_urls));
    if (!cfg->advertise_peer_urls[0])
        memcpy(cfg->advertise_peer_urls, cfg->peer_urls, sizeof(cfg->peer_urls));
    if (!cfg->initial_cluster[0]) {
        /* name=url for each advertised peer URL */
        size_t len = 0;
        for (const char *p = cfg->advertise_peer_urls; *p;) {
            size_t n = strcspn(p, ",");
            int w = snprintf(cfg->initial_cluster + len, sizeof(cfg->initial_cluster) - len,
                             "%s%s=%.*s", len ? "," : "", cfg->name, (int)n, p);
            if (w < 0 || (size_t)w >= sizeof(cfg->initial_cluster) - len)
                return config_errf(err, errlen, "initial-cluster: derived value too long");
            len += (size_t)w;
            if (!p[n])
                break;
            p += n + 1;
        }
    }
    return 0;
}

int tkv_config_sched_load(struct tkv_sched_config *cfg, int argc, char **argv, char *err,
                          size_t errlen)
{
    tkv_config_sched_defaults(cfg);
    TKV_RET(config_load_cmdline(&sched_schema, cfg, sched_flags, TKV_ARRAY_LEN(sched_flags), argc,
                                argv, cfg->config_file, sizeof(cfg->config_file), &cfg->action,
                                &cfg->info_format, err, errlen));
    if (cfg->action == TKV_CONFIG_HELP || cfg->action == TKV_CONFIG_VERSION)
        return 0;
    /* Validate what the user wrote first (messages about their values), then
     * derive, then validate the derived result. */
    int rv = tkv_config_sched_validate(cfg, err, errlen);
    if (rv == 0)
        rv = derive(cfg, err, errlen);
    if (rv == 0)
        rv = tkv_config_sched_validate(cfg, err, errlen);
    if (rv < 0 && cfg->config_file[0] && err && errlen) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", err);
        config_errf(err, errlen, "%s: %s", cfg->config_file, msg);
    }
    return rv;
}
