/* tinyscheduler-server config: conf/tinyscheduler.toml equals the defaults,
 * PD flags and PD's derivation of name/data-dir/advertise/initial-cluster,
 * and clear errors for bad URLs and clusters. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tkv/config.h"
#include "tkv/err.h"

static char err[512];
static struct tkv_sched_config cfg;

#define LOAD(...)                                                                                  \
    ({                                                                                             \
        char *argv_[] = {"tinyscheduler-server", __VA_ARGS__};                                     \
        tkv_config_sched_load(&cfg, (int)(sizeof(argv_) / sizeof(argv_[0])), argv_, err,           \
                              sizeof(err));                                                        \
    })

static char *dump(const struct tkv_sched_config *c)
{
    size_t n = tkv_config_sched_dump(c, TKV_CONFIG_DUMP_TOML, NULL, 0);
    char *buf = malloc(n + 1);
    tkv_config_sched_dump(c, TKV_CONFIG_DUMP_TOML, buf, n + 1);
    return buf;
}

Test(sched, sample_file_documents_every_key_and_equals_defaults)
{
    struct tkv_toml_doc doc, dumped;
    cr_assert_eq(tkv_config_toml_parse_file(TKV_SOURCE_DIR "/conf/tinyscheduler.toml", &doc, err,
                                            sizeof(err)),
                 0, "%s", err);
    struct tkv_sched_config c, d;
    tkv_config_sched_defaults(&c);
    tkv_config_sched_defaults(&d);
    cr_assert_eq(tkv_config_sched_apply_doc(&c, &doc, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tkv_config_sched_validate(&d, err, sizeof(err)), 0, "%s", err);
    char *a = dump(&c), *b = dump(&d);
    cr_assert_str_eq(a, b, "conf/tinyscheduler.toml differs from the built-in defaults");
    cr_assert_eq(tkv_config_toml_parse("dump", b, strlen(b), &dumped, err, sizeof(err)), 0,
                 "%s\n%s", err, b);
    size_t n = 0;
    for (size_t i = 0; i < dumped.n_items; i++) {
        if (dumped.items[i].kind != TKV_TOML_ITEM_VALUE)
            continue;
        n++;
        cr_assert_not_null(tkv_config_toml_find(&doc, dumped.items[i].path),
                           "conf/tinyscheduler.toml lacks %s", dumped.items[i].path);
    }
    cr_assert_geq(n, 19);
    tkv_config_toml_free(&doc);
    tkv_config_toml_free(&dumped);
    free(a);
    free(b);
}

Test(sched, defaults_derive_like_pd)
{
    cr_assert_eq(LOAD("-L", "warn"), 0, "%s", err);
    char host[64] = "";
    gethostname(host, sizeof(host));
    char want[256];
    snprintf(want, sizeof(want), "pd-%s", host);
    if (!strpbrk(host, "=,/ "))
        cr_assert_str_eq(cfg.name, want);
    snprintf(want, sizeof(want), "default.%s", cfg.name);
    cr_assert_str_eq(cfg.data_dir, want);
    cr_assert_str_eq(cfg.client_urls, "http://127.0.0.1:2379");
    cr_assert_str_eq(cfg.advertise_client_urls, "http://127.0.0.1:2379");
    cr_assert_str_eq(cfg.advertise_peer_urls, "http://127.0.0.1:2380");
    snprintf(want, sizeof(want), "%s=http://127.0.0.1:2380", cfg.name);
    cr_assert_str_eq(cfg.initial_cluster, want);
    cr_assert_eq(cfg.log.level, TKV_LOG_LEVEL_WARN);
    cr_assert_eq(cfg.lease_s, 3);
    cr_assert_eq(cfg.tso_save_interval_ms, 3000);
    cr_assert_eq(cfg.schedule.patrol_region_interval_ms, 100);
    cr_assert_eq(cfg.schedule.max_store_down_time_ms, 1800000);
    cr_assert_eq(cfg.replication.max_replicas, 3);
}

Test(sched, pd_flags_and_file)
{
    char path[] = "/tmp/tkv-sched-test-XXXXXX";
    int fd = mkstemp(path);
    const char *text =
        "name = \"pd1\"\nlease = 5\n[schedule]\nleader-schedule-limit = 8\n[replication]\n"
        "max-replicas = 5\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    int rv = LOAD("-config", path, "--client-urls=http://127.0.0.1:12379", "-peer-urls",
                  "http://127.0.0.1:12380", "--data-dir", "/tmp/pd1", "--initial-cluster",
                  "pd1=http://127.0.0.1:12380,pd2=http://h2:2380");
    unlink(path);
    cr_assert_eq(rv, 0, "%s", err);
    cr_assert_str_eq(cfg.name, "pd1");
    cr_assert_eq(cfg.lease_s, 5);
    cr_assert_eq(cfg.schedule.leader_schedule_limit, 8);
    cr_assert_eq(cfg.replication.max_replicas, 5);
    cr_assert_str_eq(cfg.client_urls, "http://127.0.0.1:12379");
    cr_assert_str_eq(cfg.advertise_peer_urls, "http://127.0.0.1:12380");
    cr_assert_str_eq(cfg.data_dir, "/tmp/pd1");
    cr_assert_str_eq(cfg.initial_cluster, "pd1=http://127.0.0.1:12380,pd2=http://h2:2380");
    cr_assert_eq(LOAD("--config-check", "--name", "x"), 0, "%s", err);
    cr_assert_eq(cfg.action, TKV_CONFIG_CHECK);
    cr_assert_eq(LOAD("-V"), 0);
    cr_assert_eq(cfg.action, TKV_CONFIG_VERSION);
    cr_assert(strstr(tkv_config_sched_usage(), "--initial-cluster"));
}

struct bad {
    const char *a, *b;
    const char *want;
};

Test(sched, bad_settings_are_clear_errors)
{
    static const struct bad cases[] = {
        {"--client-urls", "127.0.0.1:2379", "flag --client-urls: client-urls: expected URLs like"},
        {"--client-urls", "", "client-urls: expected URLs"},
        {"--peer-urls", "http://127.0.0.1:2379",
         "peer-urls: port 2379 is also used by client-urls"},
        {"--client-urls", "http://0.0.0.0:2379", "advertise-client-urls: must be set"},
        {"--advertise-peer-urls", "http://0.0.0.0:2380", "advertise-peer-urls: must be reachable"},
        {"--initial-cluster", "pd2=http://h:1",
         "initial-cluster: does not list this member's name"},
        {"--initial-cluster", "http://h:1", "initial-cluster: expected name=http://host:port"},
        {"--initial-cluster", "a=h:1", "initial-cluster: bad URL \"h:1\""},
        {"--name", "a=b", "name: \"a=b\" must not contain"},
        {"--force-new-cluster", NULL, "unknown flag --force-new-cluster"},
        {"--log-file", "default.x/pd.log", "must not be inside data-dir"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[] = {"tinyscheduler-server", "--name", "x", (char *)cases[i].a,
                        (char *)cases[i].b};
        int rv = tkv_config_sched_load(&cfg, cases[i].b ? 5 : 4, argv, err, sizeof(err));
        cr_assert_eq(rv, TKV_ECONFIG, "case %zu (%s) accepted", i, cases[i].a);
        cr_assert(strstr(err, cases[i].want), "case %zu: \"%s\" lacks \"%s\"", i, err,
                  cases[i].want);
    }
    struct tkv_toml_doc doc;
    const char *text = "[security]\ncacert-path = \"\"\n";
    cr_assert_eq(tkv_config_toml_parse("s.toml", text, strlen(text), &doc, err, sizeof(err)), 0);
    struct tkv_sched_config c;
    tkv_config_sched_defaults(&c);
    cr_assert_eq(tkv_config_sched_apply_doc(&c, &doc, err, sizeof(err)), TKV_ECONFIG);
    cr_assert(strstr(err, "s.toml:1: [security]: unknown configuration table"), "%s", err);
    tkv_config_toml_free(&doc);
    text = "initial-cluster-state = \"joining\"\n";
    cr_assert_eq(tkv_config_toml_parse("s.toml", text, strlen(text), &doc, err, sizeof(err)), 0);
    cr_assert_eq(tkv_config_sched_apply_doc(&c, &doc, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(tkv_config_sched_validate(&c, err, sizeof(err)), TKV_ECONFIG);
    cr_assert(strstr(err, "initial-cluster-state: expected \"new\" or \"existing\""), "%s", err);
    tkv_config_toml_free(&doc);
}
