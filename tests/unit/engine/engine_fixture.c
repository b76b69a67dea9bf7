/* Fixture for the engine suite: temp dirs, engine/session lifecycle. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <unistd.h>

#include "engine_fixture.h"
#include "tkv/log.h"

struct engine_fx fx;

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void fx_rmtree(const char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void fx_start(void)
{
    struct tkv_engine_opts o = {
        .kind = fx.kind, .path = fx.dir, .sync = fx.sync, .cache_bytes = 64u << 20};
    int rv = tkv_engine_open(&o, &fx.e);
    cr_assert_eq(rv, 0, "engine open failed: %s", tkv_strerror(rv));
    rv = tkv_engine_session_open(fx.e, &fx.s);
    cr_assert_eq(rv, 0, "session open failed: %s", tkv_strerror(rv));
}

void fx_open(enum tkv_engine_kind kind, bool sync)
{
    fx_teardown();
    tkv_log_set_level(TKV_LOG_LEVEL_WARN); /* one INFO line per open is noise here */
    fx.kind = kind;
    fx.sync = sync;
    /* only WT needs a directory (the mem engine ignores the path), so a
     * mem test that dies on a signal leaves nothing behind */
    if (kind == TKV_ENGINE_WT) {
        strcpy(fx.dir, "/tmp/tkv-engine-test-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp");
    }
    fx_start();
}

void fx_reopen(void)
{
    /* also starts a closed fixture (fx.s and fx.e NULL) */
    tkv_engine_session_close(fx.s);
    tkv_engine_close(fx.e);
    fx.s = NULL;
    fx.e = NULL;
    fx_start();
}

void fx_teardown(void)
{
    tkv_engine_session_close(fx.s);
    tkv_engine_close(fx.e);
    fx.s = NULL;
    fx.e = NULL;
    if (fx.dir[0]) {
        fx_rmtree(fx.dir);
        fx.dir[0] = '\0';
    }
}

static void setup_mem(void)
{
    fx_open(TKV_ENGINE_MEM, true);
}

static void setup_wt(void)
{
    fx_open(TKV_ENGINE_WT, true);
}

TestSuite(engine_mem, .init = setup_mem, .fini = fx_teardown);
TestSuite(engine_wt, .init = setup_wt, .fini = fx_teardown);
