/* One store on the in-memory raft log and engine: the exact region errors
 * of TINYKV-API.md 2.4, bad RaftMessages rejected and counted (2.14),
 * writes visible after apply, restart from the checkpoint replaying the
 * raft log. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/raftlog.h"
#include "tkv/raftstore.h"

struct one {
    struct tkv_raftlog_memdisk *disk;
    struct tkv_raftlog *log;
    struct tkv_engine *engine;
    struct tkv_raftstore *rs;
    struct tkv_rs_region region;
    int sent;
};

struct answer {
    bool done;
    int rv;
    struct tkv_rs_region_error e;
    char val[64];
    size_t n_kvs;
    char keys[256];
};

static void on_answer(void *arg, const struct tkv_rs_result *res)
{
    struct answer *a = arg;
    a->done = true;
    a->rv = res->rv;
    a->e = res->region_error;
    snprintf(a->val, sizeof(a->val), "%.*s", (int)res->value.len, (const char *)res->value.ptr);
    a->n_kvs = res->n_kvs;
    a->keys[0] = 0;
    for (size_t i = 0; i < res->n_kvs; i++) {
        size_t l = strlen(a->keys);
        snprintf(a->keys + l, sizeof(a->keys) - l, "%s%.*s=%.*s", i ? "," : "",
                 (int)res->kvs[i].key.len, (const char *)res->kvs[i].key.ptr,
                 (int)res->kvs[i].value.len, (const char *)res->kvs[i].value.ptr);
    }
}

static void count_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m)
{
    (void)to_store;
    (void)m;
    ((struct one *)ctx)->sent++;
}

static void open_store(struct one *o)
{
    struct tkv_raftlog_config lc = {.segment_size = 1u << 20};
    cr_assert_eq(tkv_raftlog_open_mem(&lc, o->disk, &o->log, NULL), 0);
    struct tkv_raftstore_config cfg = {.store_id = 1, .election_tick = 10, .heartbeat_tick = 2,
                                       .seed = 1};
    struct tkv_raftstore_env env = {.ctx = o, .send = count_send, .raftlog = o->log,
                                    .engine = o->engine};
    cr_assert_eq(tkv_raftstore_open(&cfg, &env, &o->rs), 0);
}

static void turn(struct one *o, int ticks)
{
    for (int i = 0; i < ticks; i++) {
        tkv_raftstore_tick(o->rs);
        for (int k = 0; k < 3; k++) {
            tkv_raftstore_ready(o->rs);
            cr_assert_eq(tkv_raftlog_flush(o->log), 0);
        }
    }
}

/* Region 1 [b, m) with the single peer 1 on store 1: it elects itself. */
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
    turn(o, 40);
    struct tkv_rs_region_status st;
    tkv_raftstore_region_status(o->rs, 1, &st);
    cr_assert(st.is_leader, "single peer did not elect itself");
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

static struct answer put(struct one *o, struct tkv_rs_header h, const char *k, const char *v)
{
    struct answer a = {0};
    tkv_raftstore_put(o->rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), TKV_SLICE(v, strlen(v)),
                      on_answer, &a);
    for (int i = 0; i < 10 && !a.done; i++)
        turn(o, 1);
    cr_assert(a.done, "put %s never answered", k);
    return a;
}

static struct answer get(struct one *o, struct tkv_rs_header h, const char *k)
{
    struct answer a = {0};
    tkv_raftstore_get(o->rs, &h, TKV_CF_DEFAULT, TKV_SLICE(k, strlen(k)), on_answer, &a);
    for (int i = 0; i < 10 && !a.done; i++)
        turn(o, 1);
    cr_assert(a.done, "get %s never answered", k);
    return a;
}

Test(raftstore_requests, put_then_get)
{
    struct one o;
    setup(&o);
    cr_assert_eq(put(&o, hdr(&o), "cat", "meow").rv, 0);
    struct answer a = get(&o, hdr(&o), "cat");
    cr_assert_eq(a.rv, 0);
    cr_assert_str_eq(a.val, "meow");
    cr_assert_eq(get(&o, hdr(&o), "dog").rv, TKV_ENOTFOUND);
    teardown(&o);
}

Test(raftstore_requests, region_errors_are_tinykv_exact)
{
    struct one o;
    setup(&o);
    struct tkv_rs_header h = hdr(&o);
    h.region_id = 9;
    struct answer a = put(&o, h, "cat", "x");
    cr_assert_eq(a.rv, TKV_EREGION);
    cr_assert_eq(a.e.kind, TKV_RS_REGION_NOT_FOUND);
    cr_assert_eq(a.e.region_id, 9);

    h = hdr(&o);
    h.peer.store_id = 2;
    a = get(&o, h, "cat");
    cr_assert_eq(a.e.kind, TKV_RS_STORE_NOT_MATCH);

    h = hdr(&o);
    h.epoch.version = 7;
    a = put(&o, h, "cat", "x");
    cr_assert_eq(a.e.kind, TKV_RS_EPOCH_NOT_MATCH);
    cr_assert_eq(a.e.n_current, 1);
    cr_assert_eq(a.e.current[0].id, 1);
    cr_assert_eq(a.e.current[0].epoch.version, 1, "EpochNotMatch carries the current region");

    a = put(&o, hdr(&o), "zebra", "x");
    cr_assert_eq(a.e.kind, TKV_RS_KEY_NOT_IN_REGION);
    cr_assert_eq(a.e.key_len, 5);
    cr_assert(!memcmp(a.e.key, "zebra", 5));
    cr_assert_eq(a.e.current[0].end[0], 'm');
    a = get(&o, hdr(&o), "a");
    cr_assert_eq(a.e.kind, TKV_RS_KEY_NOT_IN_REGION, "start key is inclusive, below it is out");
    cr_assert_eq(get(&o, hdr(&o), "b").rv, TKV_ENOTFOUND, "start key itself is in the region");
    a = get(&o, hdr(&o), "m");
    cr_assert_eq(a.e.kind, TKV_RS_KEY_NOT_IN_REGION, "end key is exclusive");

    h = hdr(&o);
    h.term = 1; /* our term is higher than 1 + 1 after the genesis term 5 */
    a = put(&o, h, "cat", "x");
    cr_assert_eq(a.e.kind, TKV_RS_STALE_COMMAND);

    h = hdr(&o);
    h.peer.id += 100; /* a peer of this store that was removed and re-added */
    a = put(&o, h, "cat", "x");
    cr_assert_eq(a.rv, TKV_EREGION, "a stale peer id is a region error (retry), not a bad request");
    cr_assert_eq(a.e.kind, TKV_RS_PEER_NOT_MATCH);
    cr_assert_eq(a.e.region_id, 1);

    a = put(&o, hdr(&o), "", "x");
    cr_assert_eq(a.rv, TKV_EINVAL, "empty key");
    teardown(&o);
}

static struct tkv_rs_msg msg_to_me(uint32_t type)
{
    struct tkv_rs_msg m;
    memset(&m, 0, sizeof(m));
    m.region_id = 1;
    m.from = (struct tkv_rs_peer){.id = 2, .store_id = 2};
    m.to = (struct tkv_rs_peer){.id = 1, .store_id = 1};
    m.epoch = (struct tkv_rs_epoch){1, 1};
    m.msg.type = type;
    m.msg.from = 2;
    m.msg.to = 1;
    m.msg.term = 100;
    return m;
}

Test(raftstore_bad_input, misaddressed_malformed_and_corrupt_messages_are_counted)
{
    struct one o;
    setup(&o);
    struct tkv_raftstore_stats st0, st1;
    tkv_raftstore_stats(o.rs, &st0);
    struct tkv_rs_region_status before, after;
    tkv_raftstore_region_status(o.rs, 1, &before);

    struct tkv_rs_msg m = msg_to_me(TKV_RAFT_MSG_APPEND);
    m.to.store_id = 3; /* another store */
    tkv_raftstore_receive(o.rs, &m);
    m = msg_to_me(TKV_RAFT_MSG_APPEND);
    m.msg.to = 5; /* envelope and raft message disagree */
    tkv_raftstore_receive(o.rs, &m);
    m = msg_to_me(TKV_RAFT_MSG_APPEND);
    m.region_id = 0;
    tkv_raftstore_receive(o.rs, &m);
    m = msg_to_me(99); /* no such raft message type */
    tkv_raftstore_receive(o.rs, &m);
    /* entries not contiguous */
    struct tkv_raft_entry ents[2] = {{.term = 100, .index = 9}, {.term = 100, .index = 7}};
    m = msg_to_me(TKV_RAFT_MSG_APPEND);
    m.msg.index = 5;
    m.msg.log_term = 5;
    m.msg.entries = ents;
    m.msg.n_entries = 2;
    tkv_raftstore_receive(o.rs, &m);
    /* a snapshot whose checksum does not match */
    uint8_t junk[64];
    memset(junk, 0xab, sizeof(junk));
    struct tkv_raft_buf *b;
    cr_assert_eq(tkv_raft_buf_copy(junk, sizeof(junk), &b), 0);
    struct tkv_raft_snapshot sn = {.index = 50, .term = 100, .data = b};
    sn.conf_state.n_voters = 1;
    sn.conf_state.voters[0] = 1;
    m = msg_to_me(TKV_RAFT_MSG_SNAPSHOT);
    m.msg.snapshot = &sn;
    tkv_raftstore_receive(o.rs, &m);
    tkv_raft_buf_unref(b);
    /* a non-initial message for an unknown region must not create a peer */
    m = msg_to_me(TKV_RAFT_MSG_APPEND);
    m.region_id = 7;
    tkv_raftstore_receive(o.rs, &m);
    turn(&o, 2);
    tkv_raftstore_stats(o.rs, &st1);
    cr_assert_eq(st1.msgs_dropped - st0.msgs_dropped, 7, "dropped %llu of 7 bad messages",
                 (unsigned long long)(st1.msgs_dropped - st0.msgs_dropped));
    struct tkv_rs_region_status r7;
    tkv_raftstore_region_status(o.rs, 7, &r7);
    cr_assert(!r7.exists, "an append created a peer");
    tkv_raftstore_region_status(o.rs, 1, &after);
    cr_assert(after.is_leader && after.term == before.term, "bad input disturbed the region");
    cr_assert_eq(put(&o, hdr(&o), "cat", "ok").rv, 0, "region still serves");

    /* a vote for an unknown region creates an uninitialized peer only */
    m = msg_to_me(TKV_RAFT_MSG_VOTE);
    m.region_id = 8;
    m.to.id = 80;
    m.msg.to = 80;
    tkv_raftstore_receive(o.rs, &m);
    struct tkv_rs_region_status r8;
    tkv_raftstore_region_status(o.rs, 8, &r8);
    cr_assert(r8.exists && r8.peer_id == 80);
    struct tkv_rs_header h = {.region_id = 8};
    struct answer a = get(&o, h, "cat");
    cr_assert_eq(a.e.kind, TKV_RS_REGION_NOT_FOUND, "uninitialized peer served a request");
    teardown(&o);
}

Test(raftstore_durability, restart_replays_from_the_checkpointed_applied_index)
{
    struct one o;
    setup(&o);
    cr_assert_eq(put(&o, hdr(&o), "cat", "one").rv, 0);
    tkv_raftstore_checkpoint_begin(o.rs);
    cr_assert_eq(tkv_engine_checkpoint(o.engine), 0);
    tkv_raftstore_checkpoint_done(o.rs);
    cr_assert_eq(put(&o, hdr(&o), "cat", "two").rv, 0);
    cr_assert_eq(put(&o, hdr(&o), "dog", "woof").rv, 0);
    /* crash: the engine forgets everything after the checkpoint */
    tkv_raftstore_close(o.rs);
    tkv_raftlog_close(o.log);
    cr_assert_eq(tkv_engine_mem_crash(o.engine), 0);
    open_store(&o);
    turn(&o, 40);
    struct answer a = get(&o, hdr(&o), "cat");
    cr_assert_eq(a.rv, 0);
    cr_assert_str_eq(a.val, "two", "acknowledged write lost: replay from the raft log missing");
    a = get(&o, hdr(&o), "dog");
    cr_assert_str_eq(a.val, "woof");
    teardown(&o);
}

static struct answer scan(struct one *o, const char *start, uint32_t limit)
{
    struct answer a = {0};
    struct tkv_rs_header h = hdr(o);
    tkv_raftstore_scan(o->rs, &h, TKV_CF_DEFAULT, TKV_SLICE(start, strlen(start)), limit,
                       on_answer, &a);
    for (int i = 0; i < 10 && !a.done; i++)
        turn(o, 1);
    cr_assert(a.done, "scan never answered");
    return a;
}

Test(raftstore_requests, scan_stays_inside_the_region)
{
    struct one o;
    setup(&o);
    const char *keys[] = {"bat", "cat", "dog", "eel", "lynx"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(put(&o, hdr(&o), keys[i], "1").rv, 0);
    struct answer a = scan(&o, "c", 3);
    cr_assert_eq(a.rv, 0);
    cr_assert_str_eq(a.keys, "cat=1,dog=1,eel=1");
    a = scan(&o, "dog", 100);
    cr_assert_str_eq(a.keys, "dog=1,eel=1,lynx=1", "scan must stop at the region end");
    a = scan(&o, "b", 0);
    cr_assert_eq(a.rv, 0);
    cr_assert_eq(a.n_kvs, 0, "limit 0 returns nothing");
    a = scan(&o, "zebra", 10);
    cr_assert_eq(a.e.kind, TKV_RS_KEY_NOT_IN_REGION, "start outside the region");
    a = scan(&o, "", 10); /* an empty start is a scan from the first key, not a bad key */
    cr_assert_eq(a.e.kind, TKV_RS_KEY_NOT_IN_REGION, "empty start is below the region start b");
    a = scan(&o, "b", TKV_RS_SCAN_LIMIT_MAX + 1);
    cr_assert_eq(a.rv, TKV_EINVAL);
    teardown(&o);
}

/* ---- transactional commands (tkv_raftstore_txn) ---- */

/* run() and done() share one argument (tkv_raftstore_txn) */
struct txn_run {
    struct answer a;
    int calls;
    int rv;
    struct tkv_rs_modify mods[2];
    size_t n;
};

static int txn_run(void *arg, struct tkv_engine_snap *snap, const struct tkv_rs_region *region,
                   const struct tkv_rs_modify **mods, size_t *n)
{
    struct txn_run *r = arg;
    (void)snap;
    cr_assert_eq(region->id, 1);
    r->calls++;
    *mods = r->mods;
    *n = r->n;
    return r->rv;
}

static void on_txn_answer(void *arg, const struct tkv_rs_result *res)
{
    on_answer(&((struct txn_run *)arg)->a, res);
}

static struct answer txn(struct one *o, const char *key, struct txn_run *r)
{
    memset(&r->a, 0, sizeof(r->a));
    struct tkv_rs_header h = hdr(o);
    struct tkv_slice k = TKV_SLICE(key, strlen(key));
    tkv_raftstore_txn(o->rs, &h, &k, 1, txn_run, on_txn_answer, r);
    for (int i = 0; i < 10 && !r->a.done; i++)
        turn(o, 1);
    cr_assert(r->a.done, "txn on %s never answered", key);
    return r->a;
}

Test(raftstore_txn, user_keys_are_compared_with_the_region_in_encoded_form)
{
    struct tkv_rs_region rg;
    memset(&rg, 0, sizeof(rg));
    rg.start_len = (uint32_t)tkv_codec_encode_bytes(rg.start, (const uint8_t *)"cat", 3);
    rg.end_len = (uint32_t)tkv_codec_encode_bytes(rg.end, (const uint8_t *)"dog", 3);
    cr_assert(tkv_rs_region_contains_txn_key(&rg, TKV_SLICE("cat", 3)),
              "the start key (a raw compare would put \"cat\" below EncodeBytes(\"cat\"))");
    cr_assert(tkv_rs_region_contains_txn_key(&rg, TKV_SLICE("cats", 4)));
    cr_assert(tkv_rs_region_contains_txn_key(&rg, TKV_SLICE("do", 2)));
    cr_assert(!tkv_rs_region_contains_txn_key(&rg, TKV_SLICE("ca", 2)));
    cr_assert(!tkv_rs_region_contains_txn_key(&rg, TKV_SLICE("dog", 3)), "the end is exclusive");
}

Test(raftstore_txn, write_list_applies_as_one_entry_or_not_at_all)
{
    struct one o;
    setup(&o);
    struct txn_run r = {.n = 2};
    r.mods[0] = (struct tkv_rs_modify){.cf = TKV_CF_LOCK, .key = TKV_SLICE("cat", 3),
                                       .value = TKV_SLICE("L", 1)};
    r.mods[1] = (struct tkv_rs_modify){.cf = TKV_CF_WRITE, .key = TKV_SLICE("cow", 3),
                                       .value = TKV_SLICE("W", 1)};
    struct answer a = txn(&o, "zebra", &r);
    cr_assert_eq(a.e.kind, TKV_RS_KEY_NOT_IN_REGION, "checked before anything runs");
    cr_assert_eq(r.calls, 0);

    a = txn(&o, "cat", &r);
    cr_assert_eq(a.rv, 0);
    cr_assert_eq(r.calls, 1);
    struct tkv_slice v;
    struct tkv_engine_session *sess;
    cr_assert_eq(tkv_engine_session_open(o.engine, &sess), 0);
    cr_assert_eq(tkv_engine_get(sess, TKV_CF_LOCK, TKV_SLICE("cat", 3), &v), 0);
    cr_assert_eq(tkv_engine_get(sess, TKV_CF_WRITE, TKV_SLICE("cow", 3), &v), 0);

    /* a run error is answered, nothing proposed */
    struct txn_run bad = {.rv = TKV_EINVAL, .n = 1};
    bad.mods[0] = (struct tkv_rs_modify){.cf = TKV_CF_LOCK, .key = TKV_SLICE("dog", 3),
                                         .value = TKV_SLICE("L", 1)};
    a = txn(&o, "dog", &bad);
    cr_assert_eq(a.rv, TKV_EINVAL);
    cr_assert_eq(tkv_engine_get(sess, TKV_CF_LOCK, TKV_SLICE("dog", 3), &v), TKV_ENOTFOUND);

    /* one modify outside the region: the whole entry is refused at apply */
    struct txn_run half = {.n = 2};
    half.mods[0] = (struct tkv_rs_modify){.cf = TKV_CF_LOCK, .key = TKV_SLICE("eel", 3),
                                          .value = TKV_SLICE("L", 1)};
    half.mods[1] = (struct tkv_rs_modify){.cf = TKV_CF_LOCK, .key = TKV_SLICE("zebra", 5),
                                          .value = TKV_SLICE("L", 1)};
    a = txn(&o, "eel", &half);
    cr_assert_eq(a.rv, TKV_EINVAL);
    cr_assert_eq(tkv_engine_get(sess, TKV_CF_LOCK, TKV_SLICE("eel", 3), &v), TKV_ENOTFOUND,
                 "half of a write list was applied");
    tkv_engine_session_close(sess);
    teardown(&o);
}
