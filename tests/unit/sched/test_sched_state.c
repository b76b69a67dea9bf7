/* TSO, ID allocator, and the durable state across crashes (mem engine:
 * only synced writes survive tkv_engine_mem_crash; WiredTiger in the
 * integration tests). */
#include "sched_fixture.h"
#include "tkv/engine.h"

static struct tkv_engine *eng;
static struct tkv_engine_session *sess;
static struct tkv_sched_cluster *c;

static void open_cluster(uint64_t wall_ms)
{
    struct tkv_sched_options o = test_opts(3);
    cr_assert_eq(tkv_engine_session_open(eng, &sess), 0);
    cr_assert_eq(tkv_sched_cluster_open(sess, &o, wall_ms, 99, T0, &c), 0);
}

/* Crash: drop the cluster without its final flush, lose unsynced writes. */
static void crash(void)
{
    tkv_sched_cluster_drop(c);
    tkv_engine_session_close(sess);
    cr_assert_eq(tkv_engine_mem_crash(eng), 0);
    c = NULL;
    sess = NULL;
}

static void setup(void)
{
    struct tkv_engine_opts eo = {.kind = TKV_ENGINE_MEM, .sync = true};
    cr_assert_eq(tkv_engine_open(&eo, &eng), 0);
}

static void teardown(void)
{
    tkv_sched_cluster_close(c);
    tkv_engine_session_close(sess);
    tkv_engine_close(eng);
}

TestSuite(state, .init = setup, .fini = teardown);

static uint64_t ts_of(int64_t p, int64_t l)
{
    return ((uint64_t)p << 18) | (uint64_t)l;
}

Test(state, tso_strictly_increasing_batches_and_clock_steps)
{
    int64_t p, l;
    uint64_t last = 0, wall = 1700000000000ull;
    open_cluster(wall);
    for (int i = 0; i < 20000; i++) {
        uint32_t count = 1 + (uint32_t)(i % 1000);
        /* The wall clock jumps back and forth, and sometimes stalls. */
        uint64_t w = wall + (uint64_t)(i / 100) - (i % 7 == 0 ? 5000 : 0);
        cr_assert_eq(tkv_sched_tso(c, count, w, 3000, &p, &l), 0);
        uint64_t ts = ts_of(p, l);
        cr_assert(l >= (int64_t)count, "batch of %u does not fit in logical %lld", count,
                  (long long)l);
        cr_assert(l < (1 << 18));
        cr_assert(ts - count + 1 > last, "timestamps overlap or go back at request %d", i);
        last = ts;
    }
    /* A clock an hour behind changes nothing. */
    cr_assert_eq(tkv_sched_tso(c, 1, wall - 3600000, 3000, &p, &l), 0);
    cr_assert(ts_of(p, l) > last);
}

Test(state, tso_count_limits)
{
    int64_t p, l;
    open_cluster(1000);
    cr_assert_eq(tkv_sched_tso(c, 0, 1000, 3000, &p, &l), TKV_EINVAL, "count 0 must be an error");
    cr_assert_eq(tkv_sched_tso(c, TKV_SCHED_MAX_TSO_COUNT + 1, 1000, 3000, &p, &l), TKV_EINVAL);
    /* Filling the logical space borrows the next millisecond. */
    cr_assert_eq(tkv_sched_tso(c, TKV_SCHED_MAX_TSO_COUNT, 1000, 3000, &p, &l), 0);
    int64_t p1 = p;
    cr_assert_eq(tkv_sched_tso(c, 10, 1000, 3000, &p, &l), 0);
    cr_assert_eq(p, p1 + 1);
    cr_assert_eq(l, 10);
}

Test(state, tso_after_crash_is_greater_even_with_clock_behind)
{
    int64_t p, l;
    uint64_t wall = 1700000000000ull, last = 0;
    open_cluster(wall);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(tkv_sched_tso(c, 3, wall + (uint64_t)i * 10, 3000, &p, &l), 0);
        last = ts_of(p, l);
    }
    crash();
    /* Restart with the clock one day behind. */
    open_cluster(wall - 86400000ull);
    cr_assert_eq(tkv_sched_tso(c, 1, wall - 86400000ull, 3000, &p, &l), 0);
    cr_assert(ts_of(p, l) > last, "TSO went back across a crash: %llu <= %llu",
              (unsigned long long)ts_of(p, l), (unsigned long long)last);
}

Test(state, ids_unique_across_crashes)
{
    uint64_t seen_max = 0, id;
    for (int round = 0; round < 5; round++) {
        open_cluster(1000);
        for (int i = 0; i < 1500; i++) {
            cr_assert_eq(tkv_sched_alloc_id(c, &id), 0);
            cr_assert(id > seen_max, "id %llu handed out again after a crash",
                      (unsigned long long)id);
            seen_max = id;
        }
        crash();
    }
}

Test(state, cluster_id_stores_regions_and_gc_survive_a_crash)
{
    const char *why = "";
    uint64_t sp;
    open_cluster(1700000000000ull);
    uint64_t cid = tkv_sched_cluster_id(c);
    cr_assert_eq(cid >> 32, 1700000000ull, "cluster id = (unix seconds << 32) + random");
    cr_assert_not(tkv_sched_is_bootstrapped(c));
    metapb_Store st = {.id = 1, .address = TKV_SLICE_STR("127.0.0.1:20160")};
    cr_assert_eq(tkv_sched_bootstrap(c, &st, T0, &why), 0);
    cr_assert_eq(tkv_sched_bootstrap(c, &st, T0, &why), TKV_ECONFLICT);
    add_store(c, 2, "n2");
    add_store(c, 3, "n3");
    cr_assert_eq(tkv_sched_update_gc_safe_point(c, 500, &sp), 0);
    cr_assert_eq(sp, 500);
    cr_assert_eq(tkv_sched_update_gc_safe_point(c, 400, &sp), 0);
    cr_assert_eq(sp, 500, "GC safe point must not go back");
    metapb_Cluster cfg = {.id = cid, .max_peer_count = 5};
    cr_assert_eq(tkv_sched_put_config(c, &cfg, &why), 0);
    struct hb h;
    hb_make(&h, 7, "", "m", (uint64_t[]){1, 2, 3}, 3, 2, 4, 5, 33);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    hb_make(&h, 8, "m", "", (uint64_t[]){1, 2, 3}, 3, 3, 4, 5, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    cr_assert_eq(tkv_sched_flush_regions(c), 0);
    /* Written after the last flush: a cache the stores re-report, may be lost. */
    hb_make(&h, 8, "m", "", (uint64_t[]){1, 2, 3}, 3, 1, 4, 5, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    crash();

    open_cluster(1700000000000ull + 5000);
    cr_assert_eq(tkv_sched_cluster_id(c), cid, "cluster id changed across a crash");
    cr_assert(tkv_sched_is_bootstrapped(c));
    cr_assert_eq(tkv_sched_n_stores(c), 3);
    struct tkv_sched_store *s2 = tkv_sched_get_store(c, 2);
    cr_assert_not_null(s2);
    cr_assert_str_eq(s2->labels[0].value, "n2");
    cr_assert_eq(tkv_sched_gc_safe_point(c), 500);
    metapb_Cluster got;
    tkv_sched_get_config(c, &got);
    cr_assert_eq(got.max_peer_count, 5);
    cr_assert_eq(tkv_sched_n_regions(c), 2, "regions must be known before the first heartbeat");
    const struct tkv_sched_region *r = tkv_sched_region_by_id(c, 7);
    cr_assert_eq(r->approximate_size, 33);
    cr_assert_eq(r->leader.store_id, 2);
    cr_assert_eq(r->version, 5);
    cr_assert_eq(tkv_sched_get_store(c, 2)->leader_count, 1, "counters rebuilt on load");
    /* A stale heartbeat from before the crash is still rejected. */
    hb_make(&h, 7, "", "m", (uint64_t[]){1, 2, 3}, 3, 2, 4, 4, 33);
    cr_assert_eq(hb_send(c, &h, NULL), TKV_ESTALE);
}

Test(state, put_store_rules)
{
    const char *why = "";
    open_cluster(1000);
    metapb_Store st = {.id = 0, .address = TKV_SLICE_STR("127.0.0.1:1")};
    cr_assert_eq(tkv_sched_put_store(c, &st, T0, &why), TKV_EINVAL, "store id 0");
    st.id = 1;
    st.address = (struct tkv_slice){0};
    cr_assert_eq(tkv_sched_put_store(c, &st, T0, &why), TKV_EINVAL, "empty address");
    st.address = TKV_SLICE_STR("127.0.0.1:1");
    cr_assert_eq(tkv_sched_put_store(c, &st, T0, &why), 0);
    st.id = 2;
    cr_assert_eq(tkv_sched_put_store(c, &st, T0, &why), TKV_ECONFLICT,
                 "two stores with one address");
    tkv_sched_get_store(c, 1)->state = metapb_StoreState_Tombstone;
    cr_assert_eq(tkv_sched_put_store(c, &st, T0, &why), 0, "a tombstone's address may be reused");
    st.id = 1;
    cr_assert_eq(tkv_sched_put_store(c, &st, T0, &why), TKV_ESTALE, "tombstone store");
    metapb_StoreLabel labels[9];
    for (int i = 0; i < 9; i++)
        labels[i] = (metapb_StoreLabel){TKV_SLICE_STR("k"), TKV_SLICE_STR("v")};
    st.id = 3;
    st.address = TKV_SLICE_STR("127.0.0.1:3");
    st.labels.items = labels;
    st.labels.n = 9;
    cr_assert_eq(tkv_sched_put_store(c, &st, T0, &why), TKV_EINVAL, "too many labels");
    st.labels.n = 2;
    cr_assert_eq(tkv_sched_put_store(c, &st, T0, &why), TKV_EINVAL, "duplicate label key");
}

Test(state, ask_split)
{
    const char *why = "";
    uint64_t rid, peers[TKV_SCHED_MAX_PEERS];
    size_t n = 0;
    open_cluster(1000);
    for (uint64_t s = 1; s <= 3; s++)
        add_store(c, s, NULL);
    struct hb h;
    hb_make(&h, 7, "", "", (uint64_t[]){1, 2, 3}, 3, 1, 2, 3, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    cr_assert_eq(tkv_sched_ask_split(c, &h.req.region, &rid, peers, &n, &why), 0);
    cr_assert_eq(n, 3);
    cr_assert(rid != peers[0] && peers[0] != peers[1] && peers[1] != peers[2]);
    h.req.region.region_epoch.version = 2;
    cr_assert_eq(tkv_sched_ask_split(c, &h.req.region, &rid, peers, &n, &why), TKV_ESTALE);
    h.req.region.region_epoch.version = 3;
    h.req.region.id = 8;
    cr_assert_eq(tkv_sched_ask_split(c, &h.req.region, &rid, peers, &n, &why), TKV_ESTALE);
    h.req.region.peers.n = 0;
    cr_assert_eq(tkv_sched_ask_split(c, &h.req.region, &rid, peers, &n, &why), TKV_EINVAL);
}

/* ---- the replicated write path (sched_raft.c): commands, not engine writes ---- */

/* A writer that stands for the raft group: records every command, and
 * refuses them once `refuse` is set (leadership lost). */
struct fake_group {
    struct tkv_engine_batch log[256];
    size_t n;
    bool refuse;
    size_t lazy;
};

static int fake_writer(void *ctx, struct tkv_slice cmd, bool lazy)
{
    struct fake_group *g = ctx;
    if (g->refuse)
        return TKV_ENOTLEADER;
    cr_assert(g->n < 256);
    tkv_engine_batch_init(&g->log[g->n]);
    cr_assert_eq(tkv_sched_cmd_to_batch(cmd, &g->log[g->n]), 0, "own command does not decode");
    g->n++;
    g->lazy += lazy;
    return 0;
}

Test(state, writer_gets_every_durable_change_and_a_new_leader_starts_above_the_bounds)
{
    static struct fake_group g;
    struct tkv_sched_options o = test_opts(3);
    o.writer = fake_writer;
    o.writer_ctx = &g;
    const char *why = "";
    uint64_t id = 0, first_max_id = 0, sp = 0;
    int64_t phys = 0, logical = 0;

    /* Leader A: its own engine stays empty (everything goes to the writer). */
    cr_assert_eq(tkv_engine_session_open(eng, &sess), 0);
    cr_assert_eq(tkv_sched_cluster_open(sess, &o, 5000, 7, T0, &c), 0);
    uint64_t cid = tkv_sched_cluster_id(c);
    cr_assert_eq(g.n, 1, "the new cluster id is one command");
    metapb_Store st = {.id = 1, .address = tkv_pb_str("127.0.0.1:20160")};
    cr_assert_eq(tkv_sched_bootstrap(c, &st, T0, &why), 0);
    for (int i = 0; i < 1500; i++)
        cr_assert_eq(tkv_sched_alloc_id(c, &id), 0);
    first_max_id = id;
    cr_assert_eq(tkv_sched_tso(c, 10, 5000, 3000, &phys, &logical), 0);
    cr_assert_eq(tkv_sched_update_gc_safe_point(c, 77, &sp), 0);
    size_t n_cmds = g.n;
    cr_assert_eq(n_cmds, 6, "cluster id, bootstrap, 2 id bounds, TSO bound, GC: got %zu", g.n);
    /* Nothing reached A's engine directly. */
    struct tkv_slice v;
    cr_assert_eq(tkv_engine_get(sess, TKV_CF_META, tkv_pb_str("sched/alloc_bound"), &v),
                 TKV_ENOTFOUND);
    /* Leadership lost: a write is refused and nothing is handed out. */
    g.refuse = true;
    uint64_t before = id;
    for (int i = 0; i < 600 && tkv_sched_alloc_id(c, &id) == 0; i++)
        ;
    cr_assert_eq(tkv_sched_alloc_id(c, &id), TKV_ENOTLEADER);
    cr_assert(id < before + 600, "ids past the replicated window were handed out");
    tkv_sched_cluster_drop(c);
    c = NULL;

    /* Member B applies the committed commands, then leads from its engine. */
    for (size_t i = 0; i < g.n; i++) {
        cr_assert_eq(tkv_engine_write(sess, &g.log[i]), 0);
        tkv_engine_batch_close(&g.log[i]);
    }
    g.n = 0;
    g.refuse = false;
    cr_assert_eq(tkv_sched_cluster_open(sess, &o, 1000 /* clock behind */, 8, T0, &c), 0);
    cr_assert_eq(tkv_sched_cluster_id(c), cid);
    cr_assert(tkv_sched_is_bootstrapped(c));
    cr_assert_not_null(tkv_sched_get_store(c, 1));
    cr_assert_eq(tkv_sched_gc_safe_point(c), 77);
    cr_assert_eq(tkv_sched_alloc_id(c, &id), 0);
    cr_assert(id > first_max_id && id > before, "new leader's id %llu not above the bound",
              (unsigned long long)id);
    int64_t p2, l2;
    cr_assert_eq(tkv_sched_tso(c, 1, 1000, 3000, &p2, &l2), 0);
    cr_assert(ts_of(p2, l2) > ts_of(phys, logical), "new leader's timestamp went back");
}

Test(state, malformed_commands_are_refused)
{
    struct tkv_engine_batch b;
    static const uint8_t ok[] = {1, 0, 0, 0, 8, 's', 'c', 'h', 'e', 'd', '/', 'x', 'y', 0, 0, 0, 1, 'v'};
    static const uint8_t outside[] = {1, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0};
    static const uint8_t bad_op[] = {9, 0, 0, 0, 8, 's', 'c', 'h', 'e', 'd', '/', 'x', 'y'};
    static const uint8_t huge_len[] = {2, 0xff, 0xff, 0xff, 0xff, 's'};
    tkv_engine_batch_init(&b);
    cr_assert_eq(tkv_sched_cmd_to_batch(TKV_SLICE(ok, sizeof(ok)), &b), 0);
    cr_assert_eq(b.n_ops, 1);
    for (size_t cut = 1; cut < sizeof(ok); cut++)
        cr_assert_eq(tkv_sched_cmd_to_batch(TKV_SLICE(ok, cut), &b), TKV_ECORRUPT,
                     "truncated at %zu accepted", cut);
    cr_assert_eq(tkv_sched_cmd_to_batch(TKV_SLICE(outside, sizeof(outside)), &b), TKV_ECORRUPT);
    cr_assert_eq(tkv_sched_cmd_to_batch(TKV_SLICE(bad_op, sizeof(bad_op)), &b), TKV_ECORRUPT);
    cr_assert_eq(tkv_sched_cmd_to_batch(TKV_SLICE(huge_len, sizeof(huge_len)), &b), TKV_ECORRUPT);
    tkv_engine_batch_close(&b);
}
