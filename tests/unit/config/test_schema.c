/* The tinykv-server schema: conf/tinykv.toml documents every key and equals
 * the defaults, strict errors name file, line and key, validation rules hold,
 * and the TOML dump loads back to the same config. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tkv/config.h"
#include "tkv/err.h"

#define CONF TKV_SOURCE_DIR "/conf/tinykv.toml"

static char err[512];

static int load_text(struct tkv_server_config *cfg, const char *text)
{
    struct tkv_toml_doc doc;
    tkv_config_defaults(cfg);
    int rv = tkv_config_toml_parse("my.toml", text, strlen(text), &doc, err, sizeof(err));
    if (rv == 0)
        rv = tkv_config_apply_doc(cfg, &doc, err, sizeof(err));
    if (rv == 0)
        rv = tkv_config_validate(cfg, err, sizeof(err));
    tkv_config_toml_free(&doc);
    return rv;
}

static char *dump(const struct tkv_server_config *cfg, enum tkv_config_dump_format f)
{
    size_t n = tkv_config_dump(cfg, f, NULL, 0);
    char *buf = malloc(n + 1);
    cr_assert_eq(tkv_config_dump(cfg, f, buf, n + 1), n);
    cr_assert_eq(strlen(buf), n);
    return buf;
}

Test(schema, defaults_are_tinykv_defaults_and_valid)
{
    struct tkv_server_config c;
    tkv_config_defaults(&c);
    cr_assert_eq(tkv_config_validate(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.server.addr, "127.0.0.1:20160");
    cr_assert_str_eq(c.server.status_addr, "127.0.0.1:20180");
    cr_assert_str_eq(c.server.advertise_addr, "");
    cr_assert_eq(c.server.max_grpc_recv_msg_len, 16u << 20);
    cr_assert_eq(c.server.cores, 1);
    cr_assert_str_eq(c.storage.data_dir, "./tinykv-data");
    cr_assert(c.storage.sync_log);
    cr_assert_eq(c.log.level, TKV_LOG_LEVEL_INFO);
    cr_assert_eq(c.log.format, TKV_CONFIG_LOG_TEXT);
    cr_assert_str_eq(c.log.file.filename, "");
    cr_assert_eq(c.pd.n_endpoints, 0);
    cr_assert_eq(c.raftstore.raft_base_tick_interval_ms, 1000);
    cr_assert_eq(c.raftstore.raft_heartbeat_ticks, 2);
    cr_assert_eq(c.raftstore.raft_election_timeout_ticks, 10);
    cr_assert_eq(c.raftstore.raft_log_gc_tick_interval_ms, 10000);
    cr_assert_eq(c.raftstore.raft_log_gc_count_limit, 128000);
    cr_assert_eq(c.raftstore.split_region_check_tick_interval_ms, 10000);
    cr_assert_eq(c.coprocessor.region_max_size, 144u << 20);
    cr_assert_eq(c.coprocessor.region_split_size, 96u << 20);
    cr_assert_eq(c.action, TKV_CONFIG_RUN);
}

Test(schema, sample_file_documents_every_key_and_equals_defaults)
{
    struct tkv_toml_doc doc, dumped;
    cr_assert_eq(tkv_config_toml_parse_file(CONF, &doc, err, sizeof(err)), 0, "%s", err);
    struct tkv_server_config c, d;
    tkv_config_defaults(&c);
    tkv_config_defaults(&d);
    cr_assert_eq(tkv_config_apply_doc(&c, &doc, err, sizeof(err)), 0, "%s", err);
    char *a = dump(&c, TKV_CONFIG_DUMP_TOML), *b = dump(&d, TKV_CONFIG_DUMP_TOML);
    cr_assert_str_eq(a, b, "conf/tinykv.toml differs from the built-in defaults");
    /* Every key the schema knows (the dump lists them all) is written out in
     * the sample, uncommented, so its documentation cannot go missing. */
    cr_assert_eq(tkv_config_toml_parse("dump", b, strlen(b), &dumped, err, sizeof(err)), 0, "%s",
                 err);
    size_t n_keys = 0;
    for (size_t i = 0; i < dumped.n_items; i++) {
        if (dumped.items[i].kind != TKV_TOML_ITEM_VALUE)
            continue;
        n_keys++;
        cr_assert_not_null(tkv_config_toml_find(&doc, dumped.items[i].path),
                           "conf/tinykv.toml does not document %s", dumped.items[i].path);
    }
    cr_assert_geq(n_keys, 24);
    tkv_config_toml_free(&dumped);
    tkv_config_toml_free(&doc);
    free(a);
    free(b);
}

Test(schema, file_values_are_applied)
{
    struct tkv_server_config c;
    const char *text =
        "[server]\naddr = \"0.0.0.0:30160\"\nadvertise-addr = \"10.0.0.5:30160\"\n"
        "status-addr = \"[::1]:30180\"\nmax-grpc-recv-msg-len = 4194304\ncores = 4\n"
        "[storage]\ndata-dir = \"/var/lib/tinykv\"\nsync-log = false\n"
        "[log]\nlevel = \"DEBUG\"\nformat = \"json\"\nfile.filename = \"/var/log/tinykv.log\"\n"
        "[pd]\nendpoints = [\"127.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n"
        "[raftstore]\nraft-base-tick-interval = \"50ms\"\nraft-log-gc-tick-interval = \"1m30s\"\n"
        "raft-log-gc-count-limit = 1_000\n"
        "[coprocessor]\nregion-max-size = \"8MB\"\nregion-split-size = \"6mb\"\n";
    cr_assert_eq(load_text(&c, text), 0, "%s", err);
    cr_assert_str_eq(c.server.addr, "0.0.0.0:30160");
    cr_assert_str_eq(c.server.advertise_addr, "10.0.0.5:30160");
    cr_assert_str_eq(c.server.status_addr, "[::1]:30180");
    cr_assert_eq(c.server.max_grpc_recv_msg_len, 4u << 20);
    cr_assert_eq(c.server.cores, 4);
    cr_assert_str_eq(c.storage.data_dir, "/var/lib/tinykv");
    cr_assert(!c.storage.sync_log);
    cr_assert_eq(c.log.level, TKV_LOG_LEVEL_DEBUG);
    cr_assert_eq(c.log.format, TKV_CONFIG_LOG_JSON);
    cr_assert_str_eq(c.log.file.filename, "/var/log/tinykv.log");
    cr_assert_eq(c.pd.n_endpoints, 2);
    cr_assert_str_eq(c.pd.endpoints[1], "http://10.0.0.2:2379");
    cr_assert_eq(c.raftstore.raft_base_tick_interval_ms, 50);
    cr_assert_eq(c.raftstore.raft_log_gc_tick_interval_ms, 90000);
    cr_assert_eq(c.raftstore.raft_log_gc_count_limit, 1000);
    cr_assert_eq(c.coprocessor.region_max_size, 8u << 20);
    cr_assert_eq(c.coprocessor.region_split_size, 6u << 20);

    /* The TOML dump of a non-default config loads back to the same config. */
    char *a = dump(&c, TKV_CONFIG_DUMP_TOML);
    struct tkv_server_config back;
    cr_assert_eq(load_text(&back, a), 0, "dump does not load: %s\n%s", err, a);
    char *b = dump(&back, TKV_CONFIG_DUMP_TOML);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
}

struct bad {
    const char *text;
    const char *want;
};

static const struct bad bad_cases[] = {
    {"[server]\nadr = \"x\"",
     "my.toml:2: server.adr: unknown configuration key (did you mean server.addr?)"},
    {"[server]\n\n\nfoo-bar-baz-qux = 1",
     "my.toml:4: server.foo-bar-baz-qux: unknown configuration key"},
    {"[serverx]\n", "my.toml:1: [serverx]: unknown configuration table"},
    {"addr = \"127.0.0.1:1\"", "my.toml:1: addr: unknown configuration key"},
    {"[server]\naddr = 20160", "my.toml:2: server.addr: expected a string"},
    {"[server]\naddr = \"localhost\"", "my.toml:2: server.addr: expected \"host:port\""},
    {"[server]\naddr = \"h:70000\"", "server.addr: expected \"host:port\""},
    {"[server]\naddr = \"::1:20160\"", "server.addr: expected \"host:port\""},
    {"[server]\naddr = \":20160\"", "server.addr: expected \"host:port\""},
    {"[server]\ncores = \"4\"", "my.toml:2: server.cores: expected an integer"},
    {"[server]\ncores = -1", "server.cores: must be between 0 and 256, got -1"},
    {"[server]\ncores = 1000", "server.cores: must be between 0 and 256"},
    {"[server]\nmax-grpc-recv-msg-len = \"16 furlongs\"",
     "my.toml:2: server.max-grpc-recv-msg-len: expected a size"},
    {"[server]\nmax-grpc-recv-msg-len = \"2GB\"", "must be between 1KiB and 1GiB"},
    {"[server]\nmax-grpc-recv-msg-len = 1.5", "expected a size"},
    {"[storage]\nsync-log = \"yes\"", "my.toml:2: storage.sync-log: expected a boolean"},
    {"[storage]\ndata-dir = \"\"", "storage.data-dir: must not be empty"},
    {"[storage]\ndata-dir = \"a\\u0000b\"", "storage.data-dir: string contains a NUL character"},
    {"[log]\nlevel = \"loud\"", "my.toml:2: log.level: expected one of"},
    {"[log]\nformat = \"xml\"", "log.format: expected \"text\" or \"json\""},
    {"[pd]\nendpoints = \"127.0.0.1:2379\"",
     "my.toml:2: pd.endpoints: expected an array of strings"},
    {"[pd]\nendpoints = [1, 2]", "pd.endpoints: expected a string"},
    {"[pd]\nendpoints = [\"nohost\"]", "pd.endpoints: expected \"host:port\""},
    {"[raftstore]\nraft-base-tick-interval = 1000",
     "my.toml:2: raftstore.raft-base-tick-interval: expected a duration"},
    {"[raftstore]\nraft-base-tick-interval = \"0s\"", "must be between 1ms and 24h"},
    {"[raftstore]\nraft-heartbeat-ticks = 0", "raftstore.raft-heartbeat-ticks: must be between 1"},
    {"[coprocessor]\nregion-max-size = \"10MB\"",
     "coprocessor.region-split-size: must be smaller than"},
    {"[raftstore]\nraft-election-timeout-ticks = 2",
     "raft-election-timeout-ticks: must be greater than"},
    {"[server]\nstatus-addr = \"127.0.0.1:20160\"", "server.status-addr: port 20160 collides"},
    {"[server]\ncores = 4\nstatus-addr = \"0.0.0.0:20163\"",
     "collides with the store ports 20160-20163"},
    {"[server]\naddr = \"127.0.0.1:65535\"\ncores = 2", "runs past 65535"},
    {"[server]\naddr = \"0.0.0.0:20160\"\n[pd]\nendpoints = [\"a:1\"]",
     "server.advertise-addr: must be set"},
    {"[server]\nadvertise-addr = \"0.0.0.0:1\"\n[pd]\nendpoints = [\"a:1\"]", "cannot be reached"},
    {"[storage]\ndata-dir = \"./d\"\n[log.file]\nfilename = \"d/tikv.log\"",
     "must not be inside storage.data-dir"},
    {"[server]\naddr = \"127.0.0.1:1\"\naddr = \"127.0.0.1:2\"",
     "my.toml:3:1: server.addr: duplicate key"},
};

Test(schema, bad_files_name_file_line_and_key)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct tkv_server_config c;
        int rv = load_text(&c, bad_cases[i].text);
        cr_assert_eq(rv, TKV_ECONFIG, "case %zu accepted:\n%s", i, bad_cases[i].text);
        cr_assert(strstr(err, bad_cases[i].want), "case %zu:\n%s\nerror \"%s\" lacks \"%s\"", i,
                  bad_cases[i].text, err, bad_cases[i].want);
    }
}

Test(schema, set_from_text_like_flags)
{
    struct tkv_server_config c;
    tkv_config_defaults(&c);
    cr_assert_eq(tkv_config_set(&c, "pd.endpoints", "a:1, http://b:2 ,c:3", err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(c.pd.n_endpoints, 3);
    cr_assert_str_eq(c.pd.endpoints[1], "http://b:2");
    cr_assert_eq(tkv_config_set(&c, "pd.endpoints", "", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.pd.n_endpoints, 0);
    cr_assert_eq(tkv_config_set(&c, "storage.sync-log", "false", err, sizeof(err)), 0);
    cr_assert(!c.storage.sync_log);
    cr_assert_eq(tkv_config_set(&c, "coprocessor.region-max-size", "1GB", err, sizeof(err)), 0);
    cr_assert_eq(c.coprocessor.region_max_size, 1ull << 30);
    cr_assert_eq(tkv_config_set(&c, "server.cores", "x4", err, sizeof(err)), TKV_ECONFIG);
    cr_assert(strstr(err, "server.cores: expected an integer, got \"x4\""), "%s", err);
    cr_assert_eq(tkv_config_set(&c, "pd.endpoints", "a:1,,b:2", err, sizeof(err)), TKV_ECONFIG);
    cr_assert(strstr(err, "empty or overlong entry"), "%s", err);
    cr_assert_eq(tkv_config_set(&c, "log.levle", "info", err, sizeof(err)), TKV_ECONFIG);
    cr_assert(strstr(err, "did you mean log.level?"), "%s", err);
    cr_assert_eq(c.server.cores, 1, "failed set changed the field");
}

Test(schema, json_dump_is_nested_by_section)
{
    struct tkv_server_config c;
    tkv_config_defaults(&c);
    tkv_config_set(&c, "pd.endpoints", "a:1,b:2", err, sizeof(err));
    tkv_config_set(&c, "storage.data-dir", "we\"ird\\dir", err, sizeof(err));
    char *j = dump(&c, TKV_CONFIG_DUMP_JSON);
    cr_assert(strstr(j, "{\"server\":{\"addr\":\"127.0.0.1:20160\","), "%s", j);
    cr_assert(strstr(j, "\"log\":{\"level\":\"info\",\"format\":\"text\",\"file\":{\"filename\":"
                        "\"\"}},\"pd\":"),
              "%s", j);
    cr_assert(strstr(j, "\"endpoints\":[\"a:1\", \"b:2\"]"), "%s", j);
    cr_assert(strstr(j, "\"data-dir\":\"we\\\"ird\\\\dir\""), "%s", j);
    cr_assert(strstr(j, "\"region-split-size\":\"96MiB\"}}\n"), "%s", j);
    /* truncated output stays NUL-terminated and reports the full length */
    char small[16];
    size_t need = tkv_config_dump(&c, TKV_CONFIG_DUMP_JSON, small, sizeof(small));
    cr_assert_eq(need, strlen(j));
    cr_assert_eq(strlen(small), sizeof(small) - 1);
    free(j);
}

Test(schema, store_addresses)
{
    struct tkv_server_config c;
    char buf[64];
    tkv_config_defaults(&c);
    c.server.cores = 3;
    cr_assert_eq(tkv_config_store_addr(&c, 2, false, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "127.0.0.1:20162");
    cr_assert_eq(tkv_config_store_addr(&c, 3, false, buf, sizeof(buf)), TKV_EINVAL);
    snprintf(c.server.advertise_addr, sizeof(c.server.advertise_addr), "[fe80::1]:30000");
    cr_assert_eq(tkv_config_store_addr(&c, 1, true, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "[fe80::1]:30001");
    cr_assert_eq(tkv_config_store_addr(&c, 1, false, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "127.0.0.1:20161");
    snprintf(c.server.addr, sizeof(c.server.addr), "127.0.0.1:0");
    cr_assert_eq(tkv_config_store_addr(&c, 2, false, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "127.0.0.1:0", "ephemeral port must stay 0");
    cr_assert_eq(tkv_config_store_addr(&c, 0, false, buf, 5), TKV_EINVAL);
    char host[64];
    uint16_t port;
    cr_assert_eq(tkv_config_split_addr("[::1]:80", host, sizeof(host), &port), 0);
    cr_assert_str_eq(host, "::1");
    cr_assert_eq(port, 80);
    cr_assert_eq(tkv_config_split_addr("a:b", host, sizeof(host), &port), TKV_EINVAL);
    cr_assert_eq(tkv_config_split_addr("a:", host, sizeof(host), &port), TKV_EINVAL);
    cr_assert_eq(tkv_config_split_addr("a b:1", host, sizeof(host), &port), TKV_EINVAL);
}

Test(schema, test_defaults_are_tinykv_test_config)
{
    struct tkv_server_config c;
    tkv_config_test_defaults(&c);
    cr_assert_eq(tkv_config_validate(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.raftstore.raft_base_tick_interval_ms, 50);
    cr_assert_eq(c.raftstore.raft_log_gc_tick_interval_ms, 50);
    cr_assert_eq(c.raftstore.split_region_check_tick_interval_ms, 100);
    cr_assert_eq(c.raftstore.pd_heartbeat_tick_interval_ms, 100);
    cr_assert_eq(c.raftstore.pd_store_heartbeat_tick_interval_ms, 500);
    cr_assert_eq(c.raftstore.raft_election_timeout_ticks, 10);
    cr_assert_str_eq(c.server.addr, "127.0.0.1:0");
}
