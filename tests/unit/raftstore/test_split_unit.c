/* Region split on one store (TINYKV-API.md 2.13): the split checker's key
 * choice (a transactional key's versions never split apart; raw keys as
 * they are), its bounded per-tick reading, Split applied (both halves,
 * epochs, the new region's peer elected), the region errors after it
 * (EpochNotMatch carrying both regions, KeyNotInRegion), bad Split
 * requests refused, and a split replayed from the raft log on restart. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/raftlog.h"
#include "tkv/raftstore.h"

struct store {
    struct tkv_raftlog_memdisk *disk;
    struct tkv_raftlog *log;
    struct tkv_engine *engine;
    struct tkv_raftstore *rs;
    uint64_t max_size, split_size;
    bool checker_off; /* open without ask_split: the checker does not run */
    /* what the hooks saw */
    int asks;
    struct tkv_rs_region ask_region;
    uint8_t ask_key[TKV_RS_BOUND_MAX];
    size_t ask_key_len;
    int changes;
    struct tkv_rs_region changed_left, changed_right;
};

struct answer {
    bool done;
    int rv;
    struct tkv_rs_region_error e;
    char val[64];
};

static void on_answer(void *arg, const struct tkv_rs_result *res)
{
    struct answer *a = arg;
    a->done = true;
    a->rv = res->rv;
    a->e = res->region_error;
    snprintf(a->val, sizeof(a->val), "%.*s", (int)res->value.len, (const char *)res->value.ptr);
}

static void no_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m)
{
    (void)ctx, (void)to_store, (void)m;
}

static void on_ask(void *ctx, const struct tkv_rs_region *region, struct tkv_slice key)
{
    struct store *o = ctx;
    o->asks++;
    o->ask_region = *region;
    cr_assert_leq(key.len, sizeof(o->ask_key));
    memcpy(o->ask_key, key.ptr, key.len);
    o->ask_key_len = key.len;
}

static void on_changed(void *ctx, const struct tkv_rs_region *left, const struct tkv_rs_region *right,
                       bool removed)
{
    struct store *o = ctx;
    cr_assert(!removed);
    o->changes++;
    o->changed_left = *left;
    if (right)
        o->changed_right = *right;
}

static void open_store(struct store *o)
{
    struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
    cr_assert_eq(tkv_raftlog_open_mem(&lc, o->disk, &o->log, NULL), 0);
    struct tkv_raftstore_config cfg = {.store_id = 1, .election_tick = 10, .heartbeat_tick = 2,
                                       .seed = 1, .region_max_size = o->max_size,
                                       .region_split_size = o->split_size, .split_check_tick = 1};
    struct tkv_raftstore_env env = {.ctx = o, .send = no_send, .raftlog = o->log,
                                    .engine = o->engine, .ask_split = o->checker_off ? NULL : on_ask,
                                    .region_changed = on_changed};
    cr_assert_eq(tkv_raftstore_open(&cfg, &env, &o->rs), 0);
}

static void turn(struct store *o, int ticks)
{
    for (int i = 0; i < ticks; i++) {
        tkv_raftstore_tick(o->rs);
        for (int k = 0; k < 3; k++) {
            tkv_raftstore_ready(o->rs);
            cr_assert_eq(tkv_raftlog_flush(o->log), 0);
        }
    }
}

static bool leads(struct store *o, uint64_t region_id)
{
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(o->rs, region_id, &st);
    return st.exists && st.is_leader;
}

/* Region 1 ["", "") with the single peer 1 on store 1, elected. */
static void setup(struct store *o, uint64_t max_size, uint64_t split_size)
{
    memset(o, 0, sizeof(*o));
    o->max_size = max_size;
    o->split_size = split_size;
    o->disk = tkv_raftlog_memdisk_new();
    struct tkv_engine_opts eo = {.kind = TKV_ENGINE_MEM, .sync = false};
    cr_assert_eq(tkv_engine_open(&eo, &o->engine), 0);
    struct tkv_rs_region rg;
    memset(&rg, 0, sizeof(rg));
    rg.id = 1;
    rg.epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
    rg.n_peers = 1;
    rg.peers[0] = (struct tkv_rs_peer){.id = 1, .store_id = 1};
    struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
    struct tkv_raftlog *log;
    cr_assert_eq(tkv_raftlog_open_mem(&lc, o->disk, &log, NULL), 0);
    cr_assert_eq(tkv_raftstore_bootstrap(log, o->engine, 1, &rg), 0);
    tkv_raftlog_close(log);
    open_store(o);
    for (int i = 0; i < 40 && !leads(o, 1); i++)
        turn(o, 1);
    cr_assert(leads(o, 1), "single peer did not elect itself");
}

static void teardown(struct store *o)
{
    tkv_raftstore_close(o->rs);
    tkv_raftlog_close(o->log);
    tkv_engine_close(o->engine);
    tkv_raftlog_memdisk_free(o->disk);
}

static struct tkv_rs_region region_of(struct store *o, uint64_t id)
{
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(o->rs, id, &st);
    cr_assert(st.exists, "region %llu missing", (unsigned long long)id);
    return st.region;
}

static struct answer wait(struct store *o, struct answer *a, const char *what)
{
    for (int i = 0; i < 20 && !a->done; i++)
        turn(o, 1);
    cr_assert(a->done, "%s never answered", what);
    return *a;
}

static struct answer put_bytes(struct store *o, uint64_t region_id, struct tkv_rs_epoch ep,
                               struct tkv_slice k, struct tkv_slice v)
{
    struct answer a = {0};
    struct tkv_rs_header h = {.region_id = region_id, .epoch = ep};
    tkv_raftstore_put(o->rs, &h, TKV_CF_DEFAULT, k, v, on_answer, &a);
    return wait(o, &a, "put");
}

static struct answer put(struct store *o, uint64_t region_id, const char *k, const char *v)
{
    return put_bytes(o, region_id, region_of(o, region_id).epoch, TKV_SLICE(k, strlen(k)),
                     TKV_SLICE(v, strlen(v)));
}

static struct answer get_ep(struct store *o, uint64_t region_id, struct tkv_rs_epoch ep,
                            const char *k)
{
    struct answer a = {0};
    struct tkv_rs_header h = {.region_id = region_id, .epoch = ep};
    tkv_raftstore_get(o->rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), on_answer, &a);
    return wait(o, &a, "get");
}

static struct answer get(struct store *o, uint64_t region_id, const char *k)
{
    return get_ep(o, region_id, region_of(o, region_id).epoch, k);
}

static struct answer split(struct store *o, uint64_t region_id, struct tkv_slice key,
                           uint64_t new_id, uint64_t new_peer)
{
    struct answer a = {0};
    struct tkv_rs_epoch ep = region_of(o, region_id).epoch;
    tkv_raftstore_split(o->rs, region_id, &ep, key, new_id, &new_peer, 1, on_answer, &a);
    return wait(o, &a, "split");
}

static bool bound_is(const uint8_t *b, uint32_t n, const void *want, size_t wn)
{
    return n == wn && (n == 0 || memcmp(b, want, n) == 0);
}

/* ------------------------------------------------------------ key choice */

Test(split_checker, transactional_versions_stay_on_one_side)
{
    struct store o;
    setup(&o, 600, 300);
    /* three user keys, five versions each, keys EncodeKey(user key, ts) as
     * txn writes them in the DEFAULT CF; the split size falls inside the
     * versions of "bob" */
    const char *users[] = {"alice", "bob", "carol"};
    uint64_t sum = 0;
    char expect_user[16] = "";
    bool crossed_mid_versions = false;
    /* the engine orders a user key's versions newest first (~ts) */
    for (int u = 0; u < 3; u++) {
        for (int t = 5; t >= 1; t--) {
            uint8_t k[64];
            size_t kl = tkv_codec_encode_key(k, (const uint8_t *)users[u], strlen(users[u]),
                                             (tkv_ts)(100 * t));
            char v[32];
            memset(v, 'v', sizeof(v));
            sum += kl + sizeof(v);
            if (!expect_user[0] && sum > 300) {
                snprintf(expect_user, sizeof(expect_user), "%s", users[u]);
                crossed_mid_versions = t != 5;
            }
            cr_assert_eq(put_bytes(&o, 1, region_of(&o, 1).epoch, TKV_SLICE(k, kl),
                                   TKV_SLICE(v, sizeof(v)))
                             .rv,
                         0);
        }
    }
    cr_assert(crossed_mid_versions, "test setup: the split size must fall between versions");
    cr_assert_geq(sum, 600);
    turn(&o, 3);
    cr_assert_geq(o.asks, 1, "the checker asked %d times for a region over its max size", o.asks);
    uint8_t want[32];
    size_t wl = tkv_codec_encode_bytes(want, (const uint8_t *)expect_user, strlen(expect_user));
    cr_assert(o.ask_key_len == wl && !memcmp(o.ask_key, want, wl),
              "split key is not EncodeBytes(\"%s\") (len %zu): it would part its versions",
              expect_user, o.ask_key_len);
    /* asked once per epoch, repeated only after 5 check intervals (a
     * lost AskSplit) */
    int asked = o.asks;
    turn(&o, 3);
    cr_assert_leq(o.asks, asked + 1);
    turn(&o, 10);
    cr_assert_geq(o.asks, asked + 1, "a split that did not happen is never asked again");
    teardown(&o);
}

Test(split_checker, raw_keys_split_where_the_size_is_reached)
{
    struct store o;
    setup(&o, 400, 200);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%03d", i);
        cr_assert_eq(put(&o, 1, k, "value").rv, 0);
    }
    /* 9 bytes a pair: the running sum passes 200 at the 23rd key */
    turn(&o, 3);
    cr_assert_geq(o.asks, 1, "asks %d", o.asks);
    cr_assert(o.ask_key_len == 4 && !memcmp(o.ask_key, "k022", 4), "split key %.*s, want k022",
              (int)o.ask_key_len, o.ask_key);
    teardown(&o);
}

Test(split_checker, small_regions_are_not_split)
{
    struct store o;
    setup(&o, 4000, 2000);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%03d", i);
        cr_assert_eq(put(&o, 1, k, "value").rv, 0);
    }
    turn(&o, 20);
    cr_assert_eq(o.asks, 0);
    teardown(&o);
}

Test(split_checker, reading_is_bounded_per_tick)
{
    /* 4 MiB a tick over all regions: a 13.8 MB region needs 3 ticks to
     * pass a 12 MiB max */
    struct store o;
    setup(&o, 12u << 20, 6u << 20);
    tkv_raftstore_close(o.rs);
    tkv_raftlog_close(o.log);
    o.checker_off = true;
    open_store(&o);
    for (int i = 0; i < 40 && !leads(&o, 1); i++)
        turn(&o, 1);
    static char big[60000];
    memset(big, 'x', sizeof(big));
    for (int i = 0; i < 230; i++) {
        char k[16];
        snprintf(k, sizeof(k), "big%03d", i);
        cr_assert_eq(put_bytes(&o, 1, region_of(&o, 1).epoch, TKV_SLICE(k, strlen(k)),
                               TKV_SLICE(big, sizeof(big)))
                         .rv,
                     0);
    }
    tkv_raftstore_checkpoint_begin(o.rs);
    cr_assert_eq(tkv_engine_checkpoint(o.engine), 0);
    tkv_raftstore_checkpoint_done(o.rs);
    tkv_raftstore_close(o.rs);
    tkv_raftlog_close(o.log);
    o.checker_off = false;
    open_store(&o);
    int ticks_led = 0;
    for (int i = 0; i < 60 && o.asks == 0; i++) {
        bool led = leads(&o, 1);
        turn(&o, 1);
        ticks_led += led;
    }
    cr_assert_eq(o.asks, 1, "the resumed scan never asked for the split");
    cr_assert_geq(ticks_led, 3, "a 13.8 MB scan took %d ticks: more than 4 MiB read in one", ticks_led);
    cr_assert_leq(ticks_led, 5, "the scan took %d ticks", ticks_led);
    teardown(&o);
}

/* ------------------------------------------------------------ apply and errors */

Test(split_apply, halves_epochs_and_region_errors)
{
    struct store o;
    setup(&o, 0, 0);
    cr_assert_eq(put(&o, 1, "apple", "1").rv, 0);
    cr_assert_eq(put(&o, 1, "melon", "2").rv, 0);
    struct tkv_rs_region before = region_of(&o, 1);

    /* refused up front */
    cr_assert_eq(split(&o, 1, TKV_SLICE("", 0), 7, 70).rv, TKV_EINVAL, "empty key");
    uint64_t two[2] = {70, 71};
    struct answer a = {0};
    tkv_raftstore_split(o.rs, 1, &before.epoch, TKV_SLICE("m", 1), 7, two, 2, on_answer, &a);
    cr_assert(a.done && a.rv == TKV_EINVAL, "peer count must match the region's");
    struct tkv_rs_epoch stale = before.epoch;
    stale.conf_ver++;
    a = (struct answer){0};
    tkv_raftstore_split(o.rs, 1, &stale, TKV_SLICE("m", 1), 7, two, 1, on_answer, &a);
    cr_assert(a.done && a.rv == TKV_EREGION && a.e.kind == TKV_RS_EPOCH_NOT_MATCH,
              "split checks conf_ver too");
    cr_assert_eq(o.changes, 0);

    cr_assert_eq(split(&o, 1, TKV_SLICE("m", 1), 7, 70).rv, 0);
    struct tkv_rs_region left = region_of(&o, 1), right = region_of(&o, 7);
    cr_assert(bound_is(left.start, left.start_len, "", 0) && bound_is(left.end, left.end_len, "m", 1));
    cr_assert(bound_is(right.start, right.start_len, "m", 1) && right.end_len == 0);
    cr_assert_eq(left.epoch.version, before.epoch.version + 1);
    cr_assert_eq(right.epoch.version, before.epoch.version + 1);
    cr_assert_eq(right.epoch.conf_ver, before.epoch.conf_ver);
    cr_assert(right.n_peers == 1 && right.peers[0].id == 70 && right.peers[0].store_id == 1);
    cr_assert_eq(o.changes, 1, "region_changed once per split");
    cr_assert(o.changed_left.id == 1 && o.changed_right.id == 7);
    /* the store that led the parent campaigns in the new region at once */
    for (int i = 0; i < 5 && !leads(&o, 7); i++)
        turn(&o, 1);
    cr_assert(leads(&o, 7), "the new region has no leader");

    /* the old epoch: EpochNotMatch with both halves (TinyKV) */
    a = get_ep(&o, 1, before.epoch, "apple");
    cr_assert(a.rv == TKV_EREGION && a.e.kind == TKV_RS_EPOCH_NOT_MATCH);
    cr_assert_eq(a.e.n_current, 2);
    cr_assert(a.e.current[0].id == 1 && a.e.current[1].id == 7);
    /* a key that moved: KeyNotInRegion on the left */
    a = get(&o, 1, "melon");
    cr_assert(a.rv == TKV_EREGION && a.e.kind == TKV_RS_KEY_NOT_IN_REGION);
    cr_assert(a.e.key_len == 5 && !memcmp(a.e.key, "melon", 5));
    a = get(&o, 7, "apple");
    cr_assert(a.rv == TKV_EREGION && a.e.kind == TKV_RS_KEY_NOT_IN_REGION);
    /* both halves serve their keys, data kept */
    a = get(&o, 7, "melon");
    cr_assert(a.rv == 0 && !strcmp(a.val, "2"));
    a = get(&o, 1, "apple");
    cr_assert(a.rv == 0 && !strcmp(a.val, "1"));
    cr_assert_eq(put(&o, 7, "zebra", "3").rv, 0);
    /* the new region id is taken */
    cr_assert_eq(split(&o, 1, TKV_SLICE("c", 1), 7, 71).rv, TKV_EINVAL);
    /* a split at the region's start is refused */
    cr_assert_eq(split(&o, 7, TKV_SLICE("m", 1), 8, 80).rv, TKV_EINVAL);
    teardown(&o);
}

Test(split_apply, pending_write_with_the_old_epoch_is_refused)
{
    struct store o;
    setup(&o, 0, 0);
    struct tkv_rs_region before = region_of(&o, 1);
    /* propose a split and a write in the same turn: the write, proposed
     * with the old epoch, applies after the split and must not land */
    struct answer s = {0}, w = {0};
    uint64_t np = 70;
    tkv_raftstore_split(o.rs, 1, &before.epoch, TKV_SLICE("m", 1), 7, &np, 1, on_answer, &s);
    struct tkv_rs_header h = {.region_id = 1, .epoch = before.epoch};
    tkv_raftstore_put(o.rs, &h, TKV_CF_DEFAULT, TKV_SLICE("pear", 4), TKV_SLICE("x", 1), on_answer, &w);
    wait(&o, &s, "split");
    wait(&o, &w, "write");
    cr_assert_eq(s.rv, 0);
    cr_assert(w.rv == TKV_EREGION && w.e.kind == TKV_RS_EPOCH_NOT_MATCH,
              "a write proposed before the split applied after it: rv %d", w.rv);
    cr_assert_eq(w.e.n_current, 2);
    for (int i = 0; i < 5 && !leads(&o, 7); i++)
        turn(&o, 1);
    cr_assert_eq(get(&o, 7, "pear").rv, TKV_ENOTFOUND, "the refused write landed");
    teardown(&o);
}

Test(split_apply, split_replays_from_the_raft_log_after_a_crash)
{
    struct store o;
    setup(&o, 0, 0);
    cr_assert_eq(put(&o, 1, "apple", "1").rv, 0);
    tkv_raftstore_checkpoint_begin(o.rs);
    cr_assert_eq(tkv_engine_checkpoint(o.engine), 0);
    tkv_raftstore_checkpoint_done(o.rs);
    cr_assert_eq(split(&o, 1, TKV_SLICE("m", 1), 7, 70).rv, 0);
    for (int i = 0; i < 5 && !leads(&o, 7); i++)
        turn(&o, 1);
    cr_assert_eq(put(&o, 7, "melon", "2").rv, 0);
    /* crash: the engine forgets the split and the write after it */
    tkv_raftstore_close(o.rs);
    tkv_raftlog_close(o.log);
    cr_assert_eq(tkv_engine_mem_crash(o.engine), 0);
    o.changes = 0;
    open_store(&o);
    for (int i = 0; i < 40 && !(leads(&o, 1) && leads(&o, 7)); i++)
        turn(&o, 1);
    struct tkv_rs_region left = region_of(&o, 1), right = region_of(&o, 7);
    cr_assert(bound_is(left.end, left.end_len, "m", 1), "the split was not replayed");
    cr_assert(bound_is(right.start, right.start_len, "m", 1));
    cr_assert_eq(o.changes, 1, "region_changed on the replayed split");
    cr_assert(leads(&o, 7), "the replayed new region elects no leader");
    struct answer a = get(&o, 7, "melon");
    cr_assert(a.rv == 0 && !strcmp(a.val, "2"), "the new region's write was lost: rv %d", a.rv);
    a = get(&o, 1, "apple");
    cr_assert(a.rv == 0 && !strcmp(a.val, "1"));
    /* and once more from a checkpoint that has the split: both load */
    tkv_raftstore_checkpoint_begin(o.rs);
    cr_assert_eq(tkv_engine_checkpoint(o.engine), 0);
    tkv_raftstore_checkpoint_done(o.rs);
    tkv_raftstore_close(o.rs);
    tkv_raftlog_close(o.log);
    cr_assert_eq(tkv_engine_mem_crash(o.engine), 0);
    open_store(&o);
    for (int i = 0; i < 40 && !(leads(&o, 1) && leads(&o, 7)); i++)
        turn(&o, 1);
    a = get(&o, 7, "melon");
    cr_assert(a.rv == 0 && !strcmp(a.val, "2"));
    teardown(&o);
}
