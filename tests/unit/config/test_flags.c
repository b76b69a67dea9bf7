/* Command-line flags: TiKV names and TinyKV aliases in every Go flag spelling,
 * flags over file over defaults, actions, and clear errors for bad flags. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tkv/config.h"
#include "tkv/err.h"

static char err[512];
static struct tkv_server_config cfg;

#define LOAD(...)                                                                                  \
    ({                                                                                             \
        char *argv_[] = {"tinykv-server", __VA_ARGS__};                                            \
        tkv_config_load(&cfg, (int)(sizeof(argv_) / sizeof(argv_[0])), argv_, err, sizeof(err));   \
    })

static char tmp_path[64];

static void cleanup(void);

/* One temp file at a time: a second write_tmp in a test removes the first. */
static const char *write_tmp(const char *text)
{
    cleanup();
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/tkv-config-test-XXXXXX");
    int fd = mkstemp(tmp_path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return tmp_path;
}

static void cleanup(void)
{
    if (tmp_path[0])
        unlink(tmp_path);
    tmp_path[0] = '\0';
}

TestSuite(flags, .fini = cleanup);

Test(flags, no_flags_gives_defaults)
{
    char *argv[] = {"tinykv-server"};
    cr_assert_eq(tkv_config_load(&cfg, 1, argv, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cfg.server.addr, "127.0.0.1:20160");
    cr_assert_eq(cfg.action, TKV_CONFIG_RUN);
    cr_assert_str_eq(cfg.config_file, "");
}

Test(flags, tikv_names_every_spelling)
{
    cr_assert_eq(LOAD("-A", "127.0.0.1:1", "--status-addr=127.0.0.1:9", "--data-dir", "/d", "-L",
                      "debug", "--log-file=/l/x.log", "--pd", "p:1,p:2", "--cores=2",
                      "--advertise-addr", "10.0.0.1:1"),
                 0, "%s", err);
    cr_assert_str_eq(cfg.server.addr, "127.0.0.1:1");
    cr_assert_str_eq(cfg.server.status_addr, "127.0.0.1:9");
    cr_assert_str_eq(cfg.storage.data_dir, "/d");
    cr_assert_eq(cfg.log.level, TKV_LOG_LEVEL_DEBUG);
    cr_assert_str_eq(cfg.log.file.filename, "/l/x.log");
    cr_assert_eq(cfg.pd.n_endpoints, 2);
    cr_assert_eq(cfg.server.cores, 2);
    cr_assert_str_eq(cfg.server.advertise_addr, "10.0.0.1:1");
    cr_assert_eq(LOAD("--addr", "127.0.0.1:5", "-addr=127.0.0.1:6"), 0, "%s", err);
    cr_assert_str_eq(cfg.server.addr, "127.0.0.1:6", "the last flag wins");
}

Test(flags, tinykv_course_aliases)
{
    cr_assert_eq(LOAD("-scheduler", "127.0.0.1:2379", "-addr", "127.0.0.1:20161", "-path=data",
                      "--loglevel", "warn"),
                 0, "%s", err);
    cr_assert_eq(cfg.pd.n_endpoints, 1);
    cr_assert_str_eq(cfg.pd.endpoints[0], "127.0.0.1:2379");
    cr_assert_str_eq(cfg.server.addr, "127.0.0.1:20161");
    cr_assert_str_eq(cfg.storage.data_dir, "data");
    cr_assert_eq(cfg.log.level, TKV_LOG_LEVEL_WARN);
}

Test(flags, flags_override_file_wherever_they_appear)
{
    const char *path =
        write_tmp("[server]\naddr = \"127.0.0.1:30160\"\nstatus-addr = \"127.0.0.1:30180\"\n"
                  "[log]\nlevel = \"error\"\n");
    cr_assert_eq(LOAD("-L", "debug", "-C", (char *)path), 0, "%s", err);
    cr_assert_eq(cfg.log.level, TKV_LOG_LEVEL_DEBUG, "flag before -C must still win");
    cr_assert_str_eq(cfg.server.addr, "127.0.0.1:30160", "file must beat the default");
    cr_assert_str_eq(cfg.config_file, path);
    cr_assert_eq(LOAD("--config", (char *)path, "--addr", "127.0.0.1:40160"), 0, "%s", err);
    cr_assert_str_eq(cfg.server.addr, "127.0.0.1:40160");
    cr_assert_eq(cfg.log.level, TKV_LOG_LEVEL_ERROR);
}

Test(flags, file_errors_propagate_with_file_line_key)
{
    const char *path = write_tmp("# comment\n[server]\naddr = \"127.0.0.1:1\"\ncores = \"many\"\n");
    cr_assert_eq(LOAD("-C", (char *)path), TKV_ECONFIG);
    char want[128];
    snprintf(want, sizeof(want), "%s:4: server.cores: expected an integer", path);
    cr_assert(strstr(err, want), "%s", err);
    cr_assert_eq(LOAD("-C", "/nonexistent/tinykv.toml"), -ENOENT);
    cr_assert(strstr(err, "/nonexistent/tinykv.toml: cannot open config file"), "%s", err);
    /* cross-key validation after a file names the file too */
    path = write_tmp("[coprocessor]\nregion-split-size = \"200MB\"\n");
    cr_assert_eq(LOAD("-C", (char *)path), TKV_ECONFIG);
    cr_assert(strstr(err, path) && strstr(err, "region-split-size: must be smaller"), "%s", err);
}

Test(flags, actions)
{
    cr_assert_eq(LOAD("--config-check"), 0, "%s", err);
    cr_assert_eq(cfg.action, TKV_CONFIG_CHECK);
    cr_assert_eq(LOAD("-config-check=true"), 0, "%s", err);
    cr_assert_eq(cfg.action, TKV_CONFIG_CHECK);
    cr_assert_eq(LOAD("--config-check=false"), 0, "%s", err);
    cr_assert_eq(cfg.action, TKV_CONFIG_RUN);
    cr_assert_eq(LOAD("--config-info", "json"), 0, "%s", err);
    cr_assert_eq(cfg.action, TKV_CONFIG_INFO);
    cr_assert_eq(cfg.info_format, TKV_CONFIG_DUMP_JSON);
    cr_assert_eq(LOAD("--config-info=toml", "--cores", "2"), 0, "%s", err);
    cr_assert_eq(cfg.info_format, TKV_CONFIG_DUMP_TOML);
    /* help and version short-circuit: later garbage is not even looked at */
    cr_assert_eq(LOAD("-h", "--bogus"), 0, "%s", err);
    cr_assert_eq(cfg.action, TKV_CONFIG_HELP);
    cr_assert_eq(LOAD("--version"), 0);
    cr_assert_eq(cfg.action, TKV_CONFIG_VERSION);
    cr_assert_eq(LOAD("-V"), 0);
    cr_assert_eq(cfg.action, TKV_CONFIG_VERSION);
    cr_assert(strstr(tkv_config_usage(), "-scheduler"));
    /* an invalid config is an error even with --config-check */
    cr_assert_eq(LOAD("--config-check", "--cores", "0", "--addr", "127.0.0.1:65535"), TKV_ECONFIG);
}

Test(flags, cores_zero_means_one_per_cpu)
{
    cr_assert_eq(LOAD("--cores", "0"), 0, "%s", err);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert_eq(cfg.server.cores, (uint32_t)(n > TKV_CONFIG_MAX_CORES ? TKV_CONFIG_MAX_CORES : n));
}

struct bad {
    const char *a, *b;
    const char *want;
};

Test(flags, bad_flags_are_clear_errors)
{
    static const struct bad cases[] = {
        {"--bogus", NULL, "unknown flag --bogus (see --help)"},
        {"-x=1", NULL, "unknown flag -x"},
        {"stray", NULL, "unexpected argument \"stray\""},
        {"-", NULL, "unexpected argument \"-\""},
        {"--addr", NULL, "flag --addr needs a value"},
        {"--cores", "lots", "flag --cores: server.cores: expected an integer, got \"lots\""},
        {"-addr", "nowhere", "flag -addr: server.addr: expected \"host:port\""},
        {"-loglevel=chatty", NULL, "flag -loglevel: log.level: expected one of"},
        {"--config-check=maybe", NULL, "flag --config-check takes no value"},
        {"--config-info", "yaml", "expected toml or json"},
        {"-C", "", "flag --config: empty file name"},
        {"--pd", "a:1,,b:1", "flag --pd: pd.endpoints: empty or overlong entry"},
        {"--data-dir=", NULL, "flag --data-dir: storage.data-dir: must not be empty"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[] = {"tinykv-server", (char *)cases[i].a, (char *)cases[i].b};
        int rv = tkv_config_load(&cfg, cases[i].b ? 3 : 2, argv, err, sizeof(err));
        cr_assert_eq(rv, TKV_ECONFIG, "case %zu (%s) accepted", i, cases[i].a);
        cr_assert(strstr(err, cases[i].want), "case %zu: \"%s\" lacks \"%s\"", i, err,
                  cases[i].want);
    }
}
