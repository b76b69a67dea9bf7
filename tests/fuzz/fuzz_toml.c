/* Fuzz target (c): the TOML-subset parser and both config schemas. Parsed
 * documents must be searchable by every item's path; a document the server
 * (or scheduler) schema accepts must dump to TOML that parses and applies
 * again to the very same dump. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_harness.h"
#include "tkv/common.h"
#include "tkv/config.h"
#include "tkv/err.h"

#define DUMP_CAP (64 * 1024)

static int check_doc(const struct tkv_toml_doc *doc)
{
    for (size_t i = 0; i < doc->n_items; i++) {
        const struct tkv_toml_item *it = &doc->items[i];
        if (!it->path)
            return fuzz_fail("item %zu has no path", i);
        if (it->kind == TKV_TOML_ITEM_VALUE && tkv_config_toml_find(doc, it->path) != it)
            return fuzz_fail("toml_find(\"%.200s\") does not return its item", it->path);
        if (it->line < 1 || it->col < 1)
            return fuzz_fail("item \"%.200s\" at line %d col %d", it->path, it->line, it->col);
    }
    return 0;
}

/* dump -> parse -> apply onto defaults -> dump must give the same text. */
static int server_round_trip(const struct tkv_server_config *cfg)
{
    char err[256];
    char *a = malloc(DUMP_CAP), *b = malloc(DUMP_CAP);
    struct tkv_toml_doc doc = {0};
    struct tkv_server_config again;
    int ret = 0;
    if (!a || !b)
        abort();
    size_t na = tkv_config_dump(cfg, TKV_CONFIG_DUMP_TOML, a, DUMP_CAP);
    if (na >= DUMP_CAP) {
        ret = fuzz_fail("server dump needs %zu bytes", na);
        goto out;
    }
    if (tkv_config_toml_parse("dump", a, na, &doc, err, sizeof(err)) != 0) {
        ret = fuzz_fail("server dump does not parse: %s", err);
        goto out;
    }
    tkv_config_defaults(&again);
    if (tkv_config_apply_doc(&again, &doc, err, sizeof(err)) != 0) {
        ret = fuzz_fail("server dump does not apply: %s", err);
        goto out;
    }
    size_t nb = tkv_config_dump(&again, TKV_CONFIG_DUMP_TOML, b, DUMP_CAP);
    if (na != nb || memcmp(a, b, na) != 0)
        ret = fuzz_fail("server dump -> load -> dump differs");
    /* JSON must at least fit its reported length. */
    size_t nj = tkv_config_dump(cfg, TKV_CONFIG_DUMP_JSON, NULL, 0);
    if (nj < DUMP_CAP && tkv_config_dump(cfg, TKV_CONFIG_DUMP_JSON, b, DUMP_CAP) != nj)
        ret = fuzz_fail("server JSON dump length is not stable");
out:
    tkv_config_toml_free(&doc);
    free(a);
    free(b);
    return ret;
}

static int sched_round_trip(const struct tkv_sched_config *cfg)
{
    char err[256];
    char *a = malloc(DUMP_CAP), *b = malloc(DUMP_CAP);
    struct tkv_toml_doc doc = {0};
    struct tkv_sched_config again;
    int ret = 0;
    if (!a || !b)
        abort();
    size_t na = tkv_config_sched_dump(cfg, TKV_CONFIG_DUMP_TOML, a, DUMP_CAP);
    if (na >= DUMP_CAP) {
        ret = fuzz_fail("sched dump needs %zu bytes", na);
        goto out;
    }
    if (tkv_config_toml_parse("dump", a, na, &doc, err, sizeof(err)) != 0) {
        ret = fuzz_fail("sched dump does not parse: %s", err);
        goto out;
    }
    tkv_config_sched_defaults(&again);
    if (tkv_config_sched_apply_doc(&again, &doc, err, sizeof(err)) != 0) {
        ret = fuzz_fail("sched dump does not apply: %s", err);
        goto out;
    }
    size_t nb = tkv_config_sched_dump(&again, TKV_CONFIG_DUMP_TOML, b, DUMP_CAP);
    if (na != nb || memcmp(a, b, na) != 0)
        ret = fuzz_fail("sched dump -> load -> dump differs");
out:
    tkv_config_toml_free(&doc);
    free(a);
    free(b);
    return ret;
}

int fuzz_toml_one(const uint8_t *data, size_t size)
{
    char err[256];
    struct tkv_toml_doc doc;
    /* Exact-size copy, not NUL-terminated: the parser must honour len. */
    char *text = malloc(size ? size : 1);
    int ret = 0;
    if (!text)
        abort();
    memcpy(text, data, size);
    memset(err, 'x', sizeof(err));
    int rv = tkv_config_toml_parse("fuzz.toml", text, size, &doc, err, sizeof(err));
    if (rv != 0) {
        if (rv != TKV_ECONFIG)
            ret = fuzz_fail("toml_parse returned %d (want 0 or TKV_ECONFIG)", rv);
        else if (memchr(err, 0, sizeof(err)) == NULL)
            ret = fuzz_fail("error message not NUL-terminated");
        else if (doc.n_items != 0)
            ret = fuzz_fail("failed parse left %zu items", doc.n_items);
        tkv_config_toml_free(&doc);
        free(text);
        return ret;
    }
    ret = check_doc(&doc);

    struct tkv_server_config cfg;
    tkv_config_defaults(&cfg);
    if (ret == 0 && tkv_config_apply_doc(&cfg, &doc, err, sizeof(err)) == 0) {
        tkv_config_validate(&cfg, err, sizeof(err));
        ret = server_round_trip(&cfg);
    }
    struct tkv_sched_config scfg;
    tkv_config_sched_defaults(&scfg);
    if (ret == 0 && tkv_config_sched_apply_doc(&scfg, &doc, err, sizeof(err)) == 0) {
        tkv_config_sched_validate(&scfg, err, sizeof(err));
        ret = sched_round_trip(&scfg);
    }
    tkv_config_toml_free(&doc);
    free(text);
    return ret;
}

static const char *const snippets[] = {
    "# comment\n[server]\naddr = \"127.0.0.1:20160\"\ncores = 2\n",
    "[raftstore]\nraft-base-tick-interval = \"1s\"\nregion-split-size = \"64MiB\"\n",
    "a.b.\"c.d\" = 'lit'\n[x.y]\nz = [1, 2, 3,]\nf = -1.5e3\nt = true\n",
    "s = \"esc \\t \\u00e9 \\U0001F600 \\\\ \\\"\"\narr = [\n  \"a\", # c\n  \"b\"\n]\n",
    "\xef\xbb\xbfkey = 1_000\r\n[log]\r\nlevel = \"debug\"\r\n",
    "[pd]\nendpoints = [\"127.0.0.1:2379\", \"http://h:1\"]\n",
    "name = \"pd\"\nclient-urls = \"http://127.0.0.1:2379\"\n[schedule]\n",
};

void fuzz_toml_seeds(struct fuzz_seeds *s, uint64_t rng)
{
    (void)rng;
    char *buf = malloc(DUMP_CAP);
    struct tkv_server_config cfg;
    struct tkv_sched_config scfg;
    if (!buf)
        abort();
    tkv_config_defaults(&cfg);
    size_t n = tkv_config_dump(&cfg, TKV_CONFIG_DUMP_TOML, buf, DUMP_CAP);
    fuzz_seeds_add(s, buf, TKV_MIN(n, (size_t)8000));
    tkv_config_sched_defaults(&scfg);
    n = tkv_config_sched_dump(&scfg, TKV_CONFIG_DUMP_TOML, buf, DUMP_CAP);
    fuzz_seeds_add(s, buf, TKV_MIN(n, (size_t)8000));
    for (size_t i = 0; i < sizeof(snippets) / sizeof(snippets[0]); i++)
        fuzz_seeds_add(s, snippets[i], strlen(snippets[i]));
    free(buf);
}
