/* When a store's Raft messages leave relative to its raft log sync
 * (raftstore.h, "the turn's messages"): a leader's appends leave at once,
 * so it writes its log in parallel with its followers (the commit still
 * waits for its own persistence); a follower's append acknowledgement
 * leaves only after the sync that made the entries durable (an early one
 * would let a leader commit what a crash can lose), and the leader does not
 * count its own unsynced copy toward the commit; in a region of two voters
 * the leader's messages too wait for its sync (the commit index they carry
 * must be durable: a peer leaving a region of two goes once it sees its
 * removal committed). One store on the in-memory raft log; peer 2 on store
 * 2 is played by the test, peer 3 on store 3 (three voters) stays silent. */
#include <criterion/criterion.h>
#include <string.h>

#include "tkv/err.h"
#include "tkv/raftlog.h"
#include "tkv/raftstore.h"

#define MAX_SENT 256

struct fx {
    struct tkv_raftlog_memdisk *disk;
    struct tkv_raftlog *log;
    struct tkv_engine *engine;
    struct tkv_raftstore *rs;
    struct tkv_rs_region region;
    struct tkv_raft_msg sent[MAX_SENT]; /* header fields only (entries not kept) */
    size_t n_sent;
};

static void record_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m)
{
    struct fx *f = ctx;
    cr_assert(to_store == 2 || to_store == 3, "a message to store %lu", (unsigned long)to_store);
    if (to_store != 2)
        return; /* peer 3 stays silent */
    cr_assert_lt(f->n_sent, MAX_SENT);
    f->sent[f->n_sent] = m->msg;
    f->sent[f->n_sent].entries = NULL;
    f->sent[f->n_sent].snapshot = NULL;
    f->n_sent++;
}

/* Region 1 [b, m) with peer 1 on store 1 (ours), peer 2 on store 2 and,
 * with three voters, peer 3 on store 3. */
static void setup_voters(struct fx *f, uint32_t voters)
{
    memset(f, 0, sizeof(*f));
    f->disk = tkv_raftlog_memdisk_new();
    struct tkv_engine_opts eo = {.kind = TKV_ENGINE_MEM, .sync = false};
    cr_assert_eq(tkv_engine_open(&eo, &f->engine), 0);
    struct tkv_rs_region *rg = &f->region;
    rg->id = 1;
    rg->epoch = (struct tkv_rs_epoch){.conf_ver = 1, .version = 1};
    rg->start[0] = 'b';
    rg->start_len = 1;
    rg->end[0] = 'm';
    rg->end_len = 1;
    rg->n_peers = voters;
    rg->peers[0] = (struct tkv_rs_peer){.id = 1, .store_id = 1};
    rg->peers[1] = (struct tkv_rs_peer){.id = 2, .store_id = 2};
    if (voters == 3)
        rg->peers[2] = (struct tkv_rs_peer){.id = 3, .store_id = 3};
    struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
    struct tkv_raftlog *log;
    cr_assert_eq(tkv_raftlog_open_mem(&lc, f->disk, &log, NULL), 0);
    cr_assert_eq(tkv_raftstore_bootstrap(log, f->engine, 1, rg), 0);
    tkv_raftlog_close(log);
    cr_assert_eq(tkv_raftlog_open_mem(&lc, f->disk, &f->log, NULL), 0);
    struct tkv_raftstore_config cfg = {.store_id = 1, .election_tick = 10, .heartbeat_tick = 2,
                                       .seed = 1};
    struct tkv_raftstore_env env = {.ctx = f, .send = record_send, .raftlog = f->log,
                                    .engine = f->engine};
    cr_assert_eq(tkv_raftstore_open(&cfg, &env, &f->rs), 0);
}

static void setup(struct fx *f)
{
    setup_voters(f, 3);
}

static void teardown(struct fx *f)
{
    tkv_raftstore_close(f->rs);
    tkv_raftlog_close(f->log);
    tkv_engine_close(f->engine);
    tkv_raftlog_memdisk_free(f->disk);
}

/* Peer 2 says m to peer 1. */
static void from_peer2(struct fx *f, struct tkv_raft_msg m)
{
    m.from = 2;
    m.to = 1;
    struct tkv_rs_msg rm = {.region_id = 1,
                            .from = {.id = 2, .store_id = 2},
                            .to = {.id = 1, .store_id = 1},
                            .epoch = f->region.epoch,
                            .msg = m};
    tkv_raftstore_receive(f->rs, &rm);
}

/* One loop turn: ready, then the sync completes. */
static void turn_synced(struct fx *f)
{
    tkv_raftstore_ready(f->rs);
    cr_assert_eq(tkv_raftlog_flush(f->log), 0);
}

static const struct tkv_raft_msg *find_sent(struct fx *f, size_t from, uint32_t type)
{
    for (size_t i = from; i < f->n_sent; i++)
        if (f->sent[i].type == type)
            return &f->sent[i];
    return NULL;
}

static bool is_leader(struct fx *f)
{
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(f->rs, 1, &st);
    return st.is_leader;
}

static void on_put(void *arg, const struct tkv_rs_result *res)
{
    *(int *)arg = res->rv == 0 ? 1 : -1;
}

/* Peer 1 campaigns (pre-vote, then vote) and peer 2 grants both, then
 * accepts the new leader's appends; returns how many sends were seen. */
static size_t make_leader(struct fx *f)
{
    size_t seen = 0;
    for (int i = 0; i < 200 && !is_leader(f); i++) {
        tkv_raftstore_tick(f->rs);
        turn_synced(f);
        for (; seen < f->n_sent; seen++) {
            uint32_t t = f->sent[seen].type;
            if (t == TKV_RAFT_MSG_PRE_VOTE || t == TKV_RAFT_MSG_VOTE)
                from_peer2(f, (struct tkv_raft_msg){
                                  .type = t == TKV_RAFT_MSG_VOTE ? TKV_RAFT_MSG_VOTE_RESP
                                                                 : TKV_RAFT_MSG_PRE_VOTE_RESP,
                                  .term = f->sent[seen].term});
        }
        turn_synced(f);
    }
    cr_assert(is_leader(f), "peer 1 never became leader with peer 2's votes");
    for (int i = 0; i < 5; i++) {
        turn_synced(f);
        for (; seen < f->n_sent; seen++)
            if (f->sent[seen].type == TKV_RAFT_MSG_APPEND)
                from_peer2(f, (struct tkv_raft_msg){
                                  .type = TKV_RAFT_MSG_APPEND_RESP, .term = f->sent[seen].term,
                                  .index = f->sent[seen].index + f->sent[seen].n_entries});
    }
    return seen;
}

/* The puts of one loop turn reach a follower as ONE append carrying all of
 * them (one message to encode, send and acknowledge), not one per put. */
Test(raftstore_send_order, a_turns_puts_leave_as_one_append)
{
    struct fx f;
    setup(&f);
    make_leader(&f);
    enum { N = 10 };
    int answered[N] = {0};
    struct tkv_rs_header h = {.region_id = 1, .peer = {.id = 1, .store_id = 1},
                              .epoch = f.region.epoch};
    for (int i = 0; i < N; i++) {
        char k[2] = {(char)('c' + i), 0};
        tkv_raftstore_put(f.rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, 1), TKV_SLICE("v", 1), on_put,
                          &answered[i]);
    }
    size_t before = f.n_sent;
    tkv_raftstore_ready(f.rs);
    size_t n_app = 0, n_ent = 0;
    const struct tkv_raft_msg *app = NULL;
    for (size_t i = before; i < f.n_sent; i++)
        if (f.sent[i].type == TKV_RAFT_MSG_APPEND) {
            n_app++;
            n_ent += f.sent[i].n_entries;
            app = &f.sent[i];
        }
    cr_assert_eq(n_app, 1, "%d puts of one turn left as %zu appends (%zu entries)", N, n_app,
                 n_ent);
    cr_assert_eq(n_ent, N, "the append carries %zu of the turn's %d puts", n_ent, N);
    from_peer2(&f, (struct tkv_raft_msg){.type = TKV_RAFT_MSG_APPEND_RESP, .term = app->term,
                                         .index = app->index + app->n_entries});
    for (int t = 0; t < 5; t++)
        turn_synced(&f);
    for (int i = 0; i < N; i++)
        cr_assert_eq(answered[i], 1, "put %d not answered once committed and applied", i);
    teardown(&f);
}

Test(raftstore_send_order, a_leader_sends_its_appends_before_its_own_sync)
{
    struct fx f;
    setup(&f);
    make_leader(&f);

    /* A put: the turn that stages its entry sends the append at once. */
    int answered = 0;
    struct tkv_rs_header h = {.region_id = 1, .peer = {.id = 1, .store_id = 1},
                              .epoch = f.region.epoch};
    tkv_raftstore_put(f.rs, &h, TKV_CF_DEFAULT, TKV_SLICE("c", 1), TKV_SLICE("v", 1), on_put,
                      &answered);
    size_t before = f.n_sent;
    tkv_raftstore_ready(f.rs); /* staged, NOT synced */
    const struct tkv_raft_msg *app = find_sent(&f, before, TKV_RAFT_MSG_APPEND);
    cr_assert_not_null(app, "the leader's append waited for its own log sync (%zu sent)",
                       f.n_sent - before);
    /* Peer 2 acknowledges; the leader's own copy is not durable yet, so
     * nothing commits (a quorum of 2 of 3 needs the leader's copy too). */
    tkv_index last = app->index + app->n_entries;
    from_peer2(&f, (struct tkv_raft_msg){.type = TKV_RAFT_MSG_APPEND_RESP, .term = app->term,
                                         .index = last});
    size_t after_ack = f.n_sent;
    tkv_raftstore_ready(f.rs);
    cr_assert_eq(answered, 0, "the put was answered before the leader's log was synced");
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(f.rs, 1, &st);
    cr_assert_lt(st.commit, last,
                 "the leader committed %lu counting its own unsynced copy toward the quorum",
                 (unsigned long)st.commit);
    for (size_t i = after_ack; i < f.n_sent; i++)
        cr_assert_lt(f.sent[i].commit, last, "the leader told peer 2 that %lu is committed "
                     "before its own copy was durable", (unsigned long)f.sent[i].commit);
    /* Its sync completes: committed, applied, answered. */
    cr_assert_eq(tkv_raftlog_flush(f.log), 0);
    for (int i = 0; i < 5 && !answered; i++)
        turn_synced(&f);
    cr_assert_eq(answered, 1, "the put was not answered once both copies were durable");
    teardown(&f);
}

Test(raftstore_send_order, a_follower_acknowledges_only_after_its_sync)
{
    struct fx f;
    setup(&f);
    turn_synced(&f);
    /* Peer 2, leader of a later term, appends one entry after the
     * bootstrap log. */
    from_peer2(&f, (struct tkv_raft_msg){.type = TKV_RAFT_MSG_HEARTBEAT, .term = 7});
    turn_synced(&f);
    const struct tkv_raft_msg *hb = find_sent(&f, 0, TKV_RAFT_MSG_HEARTBEAT_RESP);
    cr_assert_not_null(hb, "no heartbeat response");
    /* The bootstrap log ends at TinyKV's initial index and term (5, 5). */
    tkv_index last = 5;
    tkv_term last_term = 5;
    struct tkv_raft_entry e = {.term = 7, .index = last + 1, .type = TKV_RAFT_ENTRY_NORMAL};
    size_t before = f.n_sent;
    from_peer2(&f, (struct tkv_raft_msg){.type = TKV_RAFT_MSG_APPEND, .term = 7, .index = last,
                                         .log_term = last_term, .commit = last,
                                         .entries = &e, .n_entries = 1});
    tkv_raftstore_ready(f.rs); /* staged, NOT synced */
    cr_assert_null(find_sent(&f, before, TKV_RAFT_MSG_APPEND_RESP),
                   "the follower acknowledged an append before its log sync");
    cr_assert_eq(tkv_raftlog_flush(f.log), 0);
    turn_synced(&f);
    const struct tkv_raft_msg *resp = find_sent(&f, before, TKV_RAFT_MSG_APPEND_RESP);
    cr_assert_not_null(resp, "no append acknowledgement after the sync");
    cr_assert(!resp->reject, "append rejected (hint %lu): the bootstrap log is not at 5/5",
              (unsigned long)resp->reject_hint);
    cr_assert_eq(resp->index, last + 1);
    teardown(&f);
}

/* A region of two voters: the leader's append waits for its own sync, so
 * the commit index any message carries is durable on the leader first. */
Test(raftstore_send_order, a_leader_of_two_voters_sends_only_after_its_sync)
{
    struct fx f;
    setup_voters(&f, 2);
    make_leader(&f);
    int answered = 0;
    struct tkv_rs_header h = {.region_id = 1, .peer = {.id = 1, .store_id = 1},
                              .epoch = f.region.epoch};
    tkv_raftstore_put(f.rs, &h, TKV_CF_DEFAULT, TKV_SLICE("c", 1), TKV_SLICE("v", 1), on_put,
                      &answered);
    size_t before = f.n_sent;
    tkv_raftstore_ready(f.rs); /* staged, NOT synced */
    cr_assert_null(find_sent(&f, before, TKV_RAFT_MSG_APPEND),
                   "a leader of two voters sent its append before its own log sync (a peer "
                   "leaving the region could see a commit index a crash of the leader forgets)");
    cr_assert_eq(tkv_raftlog_flush(f.log), 0);
    turn_synced(&f);
    const struct tkv_raft_msg *app = find_sent(&f, before, TKV_RAFT_MSG_APPEND);
    cr_assert_not_null(app, "no append after the leader's sync");
    from_peer2(&f, (struct tkv_raft_msg){.type = TKV_RAFT_MSG_APPEND_RESP, .term = app->term,
                                         .index = app->index + app->n_entries});
    for (int i = 0; i < 5 && !answered; i++)
        turn_synced(&f);
    cr_assert_eq(answered, 1, "the put was not answered once both copies were durable");
    teardown(&f);
}
