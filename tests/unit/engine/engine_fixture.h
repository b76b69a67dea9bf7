/* Shared fixture for the engine suite: the same test bodies run against the
 * in-memory and the WiredTiger engines (suites engine_mem and engine_wt). */
#ifndef TKV_TEST_ENGINE_FIXTURE_H
#define TKV_TEST_ENGINE_FIXTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tkv/engine.h"
#include "tkv/err.h"

struct engine_fx {
    enum tkv_engine_kind kind;
    bool sync;
    char dir[64];
    struct tkv_engine *e;
    struct tkv_engine_session *s;
};

extern struct engine_fx fx;

void fx_open(enum tkv_engine_kind kind, bool sync);
/* Close session and engine, then open them again on the same directory. */
void fx_reopen(void);
void fx_teardown(void);
void fx_rmtree(const char *dir);

/* Each body runs once per backend; the suites' init/fini open and remove a
 * fresh engine (WT in a temp dir under /tmp, sync mode). */
#define ENGINE_TEST(name)                                                                          \
    static void body_##name(void);                                                                 \
    Test(engine_mem, name)                                                                         \
    {                                                                                              \
        body_##name();                                                                             \
    }                                                                                              \
    Test(engine_wt, name)                                                                          \
    {                                                                                              \
        body_##name();                                                                             \
    }                                                                                              \
    static void body_##name(void)

#define S(str) TKV_SLICE_STR(str)
#define NOS TKV_SLICE(NULL, 0)

/* Assert get(cf, key) == want (want.ptr == NULL: must be absent). */
#define expect_get(cf, key, want)                                                                  \
    do {                                                                                           \
        struct tkv_slice v_;                                                                       \
        struct tkv_slice w_ = (want);                                                              \
        int rv_ = tkv_engine_get(fx.s, (cf), (key), &v_);                                          \
        if (w_.ptr == NULL) {                                                                      \
            cr_assert_eq(rv_, TKV_ENOTFOUND, "%s:%d: expected not found, got rv=%d", __FILE__,     \
                         __LINE__, rv_);                                                           \
        } else {                                                                                   \
            cr_assert_eq(rv_, 0, "%s:%d: get failed: %s", __FILE__, __LINE__, tkv_strerror(rv_));  \
            cr_assert(v_.len == w_.len && (w_.len == 0 || memcmp(v_.ptr, w_.ptr, w_.len) == 0),    \
                      "%s:%d: value mismatch (len %zu vs %zu)", __FILE__, __LINE__, v_.len,        \
                      w_.len);                                                                     \
        }                                                                                          \
    } while (0)

/* An expression (usable in a for-loop header): assert that expr returned 0. */
static inline void must_ok(int rv, const char *expr, const char *file, int line)
{
    cr_assert_eq(rv, 0, "%s:%d: %s failed: %d %s", file, line, expr, rv, tkv_strerror(rv));
}
#define must(expr) must_ok((expr), #expr, __FILE__, __LINE__)

#endif
