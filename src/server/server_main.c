/* tinykv-server: load the configuration (file + flags, TinyKV's -addr -path
 * -scheduler -loglevel as aliases), set up logging, run the node.
 * Exit codes: 0 clean stop, 1 start-up/runtime failure, 2 configuration error. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
#include <fiu-control.h>
#include <fiu.h>
#endif

#include "server_private.h"
#include "tkv/err.h"
#include "tkv/log.h"

#define EXIT_CONFIG 2

const char *server_version_text(void)
{
    return "tinykv-server\n"
           "Release Version:   " TKV_VERSION "\n"
           "Git Commit Hash:   " TKV_GIT_HASH "\n"
           "Build Time:        " TKV_BUILD_TIME "\n"
           "Build Type:        " TKV_BUILD_TYPE "\n"
           "Compiler:          gcc " __VERSION__ "\n"
           "Enabled Features:  " TKV_FEATURES "\n";
}

#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
/* Test builds: enable each comma-separated failpoint name of list (always
 * failing). Names are not checked against a registry (libfiu has none): a
 * misspelt one simply never fires, so each test that sets one asserts its
 * effect. */
static int enable_failpoints(const char *list)
{
    char name[128];
    while (list && *list) {
        size_t n = strcspn(list, ",");
        if (n >= sizeof name) {
            fprintf(stderr, "tinykv-server: TKV_FAILPOINTS: a name is too long\n");
            return -1;
        }
        memcpy(name, list, n);
        name[n] = '\0';
        if (n && fiu_enable(name, 1, NULL, 0) != 0) {
            fprintf(stderr, "tinykv-server: TKV_FAILPOINTS: cannot enable %s\n", name);
            return -1;
        }
        if (n)
            fprintf(stderr, "tinykv-server: failpoint %s is on\n", name);
        list += n + (list[n] == ',');
    }
    return 0;
}
#endif

int main(int argc, char **argv)
{
    static struct server_node node; /* large (fixed-size config strings) */
    char err[512] = "";
    int rv;

    rv = tkv_config_load(&node.cfg, argc, argv, err, sizeof(err));
    if (rv) {
        fprintf(stderr, "tinykv-server: %s\n", err[0] ? err : tkv_strerror(rv));
        return EXIT_CONFIG;
    }
    switch (node.cfg.action) {
    case TKV_CONFIG_HELP:
        fputs(tkv_config_usage(), stdout);
        return 0;
    case TKV_CONFIG_VERSION:
        fputs(server_version_text(), stdout);
        return 0;
    case TKV_CONFIG_CHECK:
        puts("config is ok");
        return 0;
    case TKV_CONFIG_INFO: {
        size_t n = tkv_config_dump(&node.cfg, node.cfg.info_format, NULL, 0);
        char *buf = malloc(n + 1);
        if (!buf)
            return 1;
        tkv_config_dump(&node.cfg, node.cfg.info_format, buf, n + 1);
        fputs(buf, stdout);
        free(buf);
        return 0;
    }
    case TKV_CONFIG_RUN:
        break;
    }

#if defined(TKV_FAILPOINTS) && TKV_FAILPOINTS
    /* Test builds: failpoints controllable with fiu-ctrl through FIFOs
     * named by TKV_FIU_CTRL (<prefix>-<pid>.in/.out). */
    fiu_init(0);
    if (getenv("TKV_FIU_CTRL") && fiu_rc_fifo(getenv("TKV_FIU_CTRL")) < 0) {
        fprintf(stderr, "tinykv-server: cannot open the fiu control FIFO\n");
        return 1;
    }
    /* TKV_FAILPOINTS=name[,name...]: failpoints on from the start (e.g. the
     * txn/... bugs the workload tests must catch). */
    if (enable_failpoints(getenv("TKV_FAILPOINTS")) != 0)
        return 1;
#endif
    tkv_log_set_level(node.cfg.log.level);
    tkv_log_set_format(node.cfg.log.format == TKV_CONFIG_LOG_JSON ? TKV_LOG_FORMAT_JSON
                                                                  : TKV_LOG_FORMAT_TEXT);
    if (node.cfg.log.file.filename[0]) {
        /* Reopened on SIGHUP (logrotate's postrotate; deploy/README.md). */
        rv = tkv_log_open_file(node.cfg.log.file.filename);
        if (rv) {
            fprintf(stderr, "tinykv-server: cannot open log.file.filename %s: %s\n",
                    node.cfg.log.file.filename, tkv_strerror(rv));
            return 1;
        }
    }
    return server_node_run(&node);
}
