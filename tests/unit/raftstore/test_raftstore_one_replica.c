/* One replica's write path, turn by turn (perf/README.md "Cluster mode, one
 * replica"): a put costs ONE raft log write + sync (its entry), and is
 * applied and answered in the turn that sync completes -- never before it.
 * The region's only voter recomputes its commit index alone after a
 * restart (at least the applied index), so a hard state that moves only the
 * commit index rides with the region's next append instead of a write of
 * its own (with two voters it is still written at once: a held removal
 * from a region of two relies on it, see raftstore.c sole_voter). One store on the
 * in-memory raft log in synchronous mode: tkv_raftlog_flush writes and
 * syncs the staged batch and runs its completion at once, like the
 * completion step of a reactor turn; tkv_raftstore_ready is the Ready hook
 * of that turn. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tkv/err.h"
#include "tkv/raftlog.h"
#include "tkv/raftstore.h"

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>
#endif

struct one {
    struct tkv_raftlog_memdisk *disk;
    struct tkv_raftlog *log;
    struct tkv_engine *engine;
    struct tkv_raftstore *rs;
    struct tkv_rs_region region;
};

struct answer {
    bool done;
    int rv;
    char val[32];
};

static void on_answer(void *arg, const struct tkv_rs_result *res)
{
    struct answer *a = arg;
    a->done = true;
    a->rv = res->rv;
    snprintf(a->val, sizeof(a->val), "%.*s", (int)res->value.len, (const char *)res->value.ptr);
}

static void no_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m)
{
    (void)ctx, (void)m;
    cr_assert_fail("one replica sent a message to store %lu", (unsigned long)to_store);
}

static void open_store(struct one *o)
{
    struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
    cr_assert_eq(tkv_raftlog_open_mem(&lc, o->disk, &o->log, NULL), 0);
    struct tkv_raftstore_config cfg = {.store_id = 1, .election_tick = 10, .heartbeat_tick = 2,
                                       .seed = 1};
    struct tkv_raftstore_env env = {.ctx = o, .send = no_send, .raftlog = o->log,
                                    .engine = o->engine};
    cr_assert_eq(tkv_raftstore_open(&cfg, &env, &o->rs), 0);
}

static bool is_leader(struct one *o)
{
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(o->rs, 1, &st);
    return st.is_leader;
}

/* Ticks and turns until the single peer leads and has committed its term. */
static void elect(struct one *o)
{
    for (int i = 0; i < 60; i++) {
        tkv_raftstore_tick(o->rs);
        for (int k = 0; k < 3; k++) {
            tkv_raftstore_ready(o->rs);
            cr_assert_eq(tkv_raftlog_flush(o->log), 0);
        }
    }
    cr_assert(is_leader(o), "the single peer did not elect itself");
}

/* Region 1 [b, m) with the single peer 1 on store 1. */
static void setup(struct one *o)
{
    memset(o, 0, sizeof(*o));
    o->disk = tkv_raftlog_memdisk_new();
    struct tkv_engine_opts eo = {.kind = TKV_ENGINE_MEM, .sync = false};
    cr_assert_eq(tkv_engine_open(&eo, &o->engine), 0);
    struct tkv_rs_region *rg = &o->region;
    rg->id = 1;
    rg->epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
    rg->start[0] = 'b';
    rg->start_len = 1;
    rg->end[0] = 'm';
    rg->end_len = 1;
    rg->n_peers = 1;
    rg->peers[0] = (struct tkv_rs_peer){.id = 1, .store_id = 1};
    struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
    struct tkv_raftlog *log;
    cr_assert_eq(tkv_raftlog_open_mem(&lc, o->disk, &log, NULL), 0);
    cr_assert_eq(tkv_raftstore_bootstrap(log, o->engine, 1, rg), 0);
    tkv_raftlog_close(log);
    open_store(o);
    elect(o);
}

static void teardown(struct one *o)
{
    tkv_raftstore_close(o->rs);
    tkv_raftlog_close(o->log);
    tkv_engine_close(o->engine);
    tkv_raftlog_memdisk_free(o->disk);
}

static struct tkv_rs_header hdr(struct one *o)
{
    return (struct tkv_rs_header){.region_id = 1, .peer = {.id = 1, .store_id = 1},
                                  .epoch = o->region.epoch};
}

static uint64_t log_batches(struct one *o)
{
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(o->log, &st);
    return st.batches;
}

/* n puts one after the other, each driven turn by turn. NULL when every put
 * was answered only after the sync covering its entry, in the very turn
 * that sync completed, at one raft log write + sync each; else what went
 * wrong, in msg. */
static const char *puts_turn_by_turn(struct one *o, int n, char *msg, size_t cap)
{
    uint64_t b0 = log_batches(o);
    for (int i = 0; i < n; i++) {
        char k[16], v[16];
        snprintf(k, sizeof(k), "c%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        struct answer a = {0};
        struct tkv_rs_header h = hdr(o);
        tkv_raftstore_put(o->rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)),
                          TKV_SLICE(v, strlen(v)), on_answer, &a);
        /* the turn the request arrives: proposed and staged, not synced */
        tkv_raftstore_ready(o->rs);
        if (a.done) {
            snprintf(msg, cap, "put %d answered before the sync covering its entry", i);
            return msg;
        }
        /* the raft log writes and syncs the turn's batch; its completion
         * runs in the next turn, whose Ready must apply and answer */
        cr_assert_eq(tkv_raftlog_flush(o->log), 0);
        tkv_raftstore_ready(o->rs);
        if (!a.done) {
            snprintf(msg, cap, "put %d not answered in the turn its sync completed", i);
            return msg;
        }
        if (a.rv != 0) {
            snprintf(msg, cap, "put %d failed: %d", i, a.rv);
            return msg;
        }
        cr_assert_eq(tkv_raftlog_flush(o->log), 0);
    }
    uint64_t writes = log_batches(o) - b0;
    if (writes != (uint64_t)n) {
        snprintf(msg, cap, "%d puts cost %lu raft log writes + syncs (want one each)", n,
                 (unsigned long)writes);
        return msg;
    }
    return NULL;
}

Test(one_replica, a_put_is_one_log_sync_and_answered_in_the_turn_it_completes)
{
    struct one o;
    setup(&o);
    char msg[160];
    const char *err = puts_turn_by_turn(&o, 20, msg, sizeof(msg));
    cr_assert_null(err, "%s", err);
    struct tkv_raftstore_stats st;
    tkv_raftstore_stats(o.rs, &st);
    cr_assert_geq(st.commit_only_deferred, 20, "commit-only hard states deferred: %lu",
                  (unsigned long)st.commit_only_deferred);
    teardown(&o);
}

/* Puts acknowledged while their commit index was never written (the
 * durable hard state lags), then a crash that loses every engine write
 * after the last checkpoint, then a restart. Checkpointed before the puts,
 * the restart replays them from the raft log; checkpointed after them, the
 * engine's applied index is past the durable commit index, which the
 * restart must take as committed (st_initial_state). */
static void restart_with_a_lagging_commit(bool checkpoint_after_puts)
{
    struct one o;
    setup(&o);
    if (!checkpoint_after_puts) {
        tkv_raftstore_checkpoint_begin(o.rs);
        cr_assert_eq(tkv_engine_checkpoint(o.engine), 0);
        tkv_raftstore_checkpoint_done(o.rs);
    }
    char msg[160];
    const char *err = puts_turn_by_turn(&o, 5, msg, sizeof(msg));
    cr_assert_null(err, "%s", err);
    if (checkpoint_after_puts) {
        tkv_raftstore_checkpoint_begin(o.rs);
        cr_assert_eq(tkv_engine_checkpoint(o.engine), 0);
        tkv_raftstore_checkpoint_done(o.rs);
    }
    struct tkv_rs_region_status before;
    tkv_raftstore_region_status(o.rs, 1, &before);
    struct tkv_raftlog_hardstate hs;
    cr_assert_eq(tkv_raftlog_hardstate(o.log, 1, &hs), 0);
    cr_assert_lt(hs.commit, before.applied,
                 "the durable commit index (%lu) is not behind the applied one (%lu): nothing "
                 "deferred", (unsigned long)hs.commit, (unsigned long)before.applied);
    cr_assert_eq(hs.term, before.term, "the durable term %lu is not the leader's %lu",
                 (unsigned long)hs.term, (unsigned long)before.term);
    tkv_raftstore_close(o.rs);
    tkv_raftlog_close(o.log);
    cr_assert_eq(tkv_engine_mem_crash(o.engine), 0);
    open_store(&o);
    elect(&o);
    struct tkv_rs_region_status after;
    tkv_raftstore_region_status(o.rs, 1, &after);
    cr_assert_gt(after.term, before.term, "re-elected in term %lu, not after %lu",
                 (unsigned long)after.term, (unsigned long)before.term);
    for (int i = 0; i < 5; i++) {
        char k[16], v[16];
        snprintf(k, sizeof(k), "c%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        struct answer a = {0};
        struct tkv_rs_header h = hdr(&o);
        tkv_raftstore_get(o.rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), on_answer, &a);
        for (int t = 0; t < 10 && !a.done; t++) {
            tkv_raftstore_ready(o.rs);
            cr_assert_eq(tkv_raftlog_flush(o.log), 0);
        }
        cr_assert(a.done, "get %s never answered", k);
        cr_assert_eq(a.rv, 0, "acknowledged put %s lost after the restart (rv %d)", k, a.rv);
        cr_assert_str_eq(a.val, v, "put %s reads back %s", k, a.val);
    }
    teardown(&o);
}

Test(one_replica, puts_with_a_lagging_commit_replay_after_a_crash)
{
    restart_with_a_lagging_commit(false);
}

Test(one_replica, a_checkpoint_past_the_durable_commit_restarts)
{
    restart_with_a_lagging_commit(true);
}

#ifdef FIU_ENABLE
/* Negative controls: the check above must catch a store that writes each
 * commit-only hard state on its own (two syncs per put) and one that
 * answers a put when it is proposed. */
Test(one_replica, negative_control_commit_written_on_its_own)
{
    struct one o;
    setup(&o);
    fiu_init(0);
    fiu_enable("raftstore/commit_hs_eager", 1, NULL, 0);
    char msg[160];
    const char *err = puts_turn_by_turn(&o, 20, msg, sizeof(msg));
    fiu_disable("raftstore/commit_hs_eager");
    cr_assert_not_null(err, "two syncs per put went unnoticed");
    cr_assert(strstr(err, "20 puts cost 40 raft log writes"), "unexpected: %s", err);
    teardown(&o);
}

Test(one_replica, negative_control_answered_when_proposed)
{
    struct one o;
    setup(&o);
    fiu_init(0);
    fiu_enable("raftstore/ack_before_apply", 1, NULL, 0);
    char msg[160];
    const char *err = puts_turn_by_turn(&o, 3, msg, sizeof(msg));
    fiu_disable("raftstore/ack_before_apply");
    cr_assert_not_null(err, "a put answered before its sync went unnoticed");
    cr_assert(strstr(err, "answered before the sync"), "unexpected: %s", err);
    teardown(&o);
}
#endif
