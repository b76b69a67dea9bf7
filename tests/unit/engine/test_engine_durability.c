/* The shared engine suite, part 3: what survives a close, a checkpoint and a
 * (simulated, for the mem engine) crash. The kill -9 tests live in
 * crash_engine.c (label fault). */
#include <errno.h>

#include "engine_fixture.h"

ENGINE_TEST(reopen_keeps_committed_data)
{
    if (fx.kind == TKV_ENGINE_MEM) {
        /* a mem engine lives in its process: a "restart" is new sessions */
        must(tkv_engine_put(fx.s, TKV_CF_WRITE, S("k"), S("v")));
        tkv_engine_session_close(fx.s);
        must(tkv_engine_session_open(fx.e, &fx.s));
        expect_get(TKV_CF_WRITE, S("k"), S("v"));
        return;
    }
    struct tkv_engine_batch b;
    tkv_engine_batch_init(&b);
    must(tkv_engine_batch_put(&b, TKV_CF_DEFAULT, S("d"), S("dv")));
    must(tkv_engine_batch_put(&b, TKV_CF_LOCK, S("l"), S("lv")));
    must(tkv_engine_batch_put(&b, TKV_CF_META, S("applied"), S("42")));
    must(tkv_engine_write(fx.s, &b));
    tkv_engine_batch_close(&b);
    must(tkv_engine_delete(fx.s, TKV_CF_DEFAULT, S("d")));
    fx_reopen();
    expect_get(TKV_CF_DEFAULT, S("d"), NOS);
    expect_get(TKV_CF_LOCK, S("l"), S("lv"));
    expect_get(TKV_CF_META, S("applied"), S("42"));
    cr_assert(tkv_engine_is_sync(fx.e));
    cr_assert_eq(tkv_engine_kind_of(fx.e), TKV_ENGINE_WT);
    /* the same directory reopened in no-log (raft) mode keeps it too */
    tkv_engine_session_close(fx.s);
    tkv_engine_close(fx.e);
    fx.s = NULL;
    fx.e = NULL;
    fx.sync = false;
    fx_reopen();
    expect_get(TKV_CF_LOCK, S("l"), S("lv"));
    must(tkv_engine_put(fx.s, TKV_CF_LOCK, S("l2"), S("v2")));
    must(tkv_engine_checkpoint(fx.e));
    fx_reopen();
    expect_get(TKV_CF_LOCK, S("l2"), S("v2"));
}

ENGINE_TEST(mem_crash_keeps_only_durable_state)
{
    if (fx.kind == TKV_ENGINE_WT) {
        tkv_engine_session_close(fx.s);
        fx.s = NULL;
        cr_assert_eq(tkv_engine_mem_crash(fx.e), TKV_EUNIMPL);
        return;
    }
    /* sync=true (the fixture): every write survives */
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("1")));
    tkv_engine_session_close(fx.s);
    fx.s = NULL;
    must(tkv_engine_mem_crash(fx.e));
    must(tkv_engine_session_open(fx.e, &fx.s));
    expect_get(TKV_CF_DEFAULT, S("a"), S("1"));
    tkv_engine_session_close(fx.s);
    tkv_engine_close(fx.e);

    /* sync=false: only what the last checkpoint captured */
    struct tkv_engine_opts o = {.kind = TKV_ENGINE_MEM, .sync = false};
    must(tkv_engine_open(&o, &fx.e));
    must(tkv_engine_session_open(fx.e, &fx.s));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("1")));
    must(tkv_engine_put(fx.s, TKV_CF_META, S("applied"), S("1")));
    must(tkv_engine_checkpoint(fx.e));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("a"), S("2")));
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("b"), S("2")));
    must(tkv_engine_put(fx.s, TKV_CF_META, S("applied"), S("2")));
    expect_get(TKV_CF_DEFAULT, S("a"), S("2"));
    tkv_engine_session_close(fx.s);
    fx.s = NULL;
    must(tkv_engine_mem_crash(fx.e));
    must(tkv_engine_session_open(fx.e, &fx.s));
    expect_get(TKV_CF_DEFAULT, S("a"), S("1"));
    expect_get(TKV_CF_DEFAULT, S("b"), NOS);
    expect_get(TKV_CF_META, S("applied"), S("1"));
    /* and it keeps working after the crash */
    must(tkv_engine_put(fx.s, TKV_CF_DEFAULT, S("c"), S("3")));
    must(tkv_engine_checkpoint(fx.e));
    tkv_engine_session_close(fx.s);
    fx.s = NULL;
    must(tkv_engine_mem_crash(fx.e));
    must(tkv_engine_session_open(fx.e, &fx.s));
    expect_get(TKV_CF_DEFAULT, S("c"), S("3"));
}

Test(engine_wt, open_errors_are_reported)
{
    struct tkv_engine *e = NULL;
    struct tkv_engine_opts o = {.kind = TKV_ENGINE_WT, .path = NULL, .sync = true};
    cr_assert_eq(tkv_engine_open(&o, &e), TKV_EINVAL, "WT needs a path");
    o.kind = (enum tkv_engine_kind)7;
    cr_assert_eq(tkv_engine_open(&o, &e), TKV_EINVAL, "unknown kind");
    /* a second open of a directory in use must fail, not share it */
    o.kind = TKV_ENGINE_WT;
    o.path = fx.dir;
    int rv = tkv_engine_open(&o, &e);
    cr_assert_neq(rv, 0, "second open of %s succeeded", fx.dir);
    cr_assert_null(e);
    /* a path under a regular file */
    char file[128];
    snprintf(file, sizeof(file), "%s/plain", fx.dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(file, sizeof(file), "%s/plain/db", fx.dir);
    o.path = file;
    rv = tkv_engine_open(&o, &e);
    cr_assert_eq(rv, -ENOTDIR, "got %d %s", rv, tkv_strerror(rv));
    cr_assert_null(e);
}
