/* Region split (TINYKV-API.md 2.13, 2.14): the split checker, the Split
 * proposal and its apply, the new region's peer, and the range questions
 * (the region after another, overlapping snapshots). See README "Split". */
#include <stdlib.h>
#include <string.h>

#include "rs_private.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/raftlog.h"

#define MIB (1024ull * 1024ull)
#define DEFAULT_MAX_SIZE (144 * MIB)
#define DEFAULT_SPLIT_SIZE (96 * MIB)
#define DEFAULT_CHECK_TICK 10 /* 10 s with TinyKV's 1 s base tick */
/* An ask_split that did not lead to a split is repeated after this many
 * check intervals (the host's AskSplit or the proposal may have been lost). */
#define ASK_RETRY_CHECKS 5

/* Region and apply state of a region that is not (yet) a peer here. */
static void put_region_state(struct tkv_engine_batch *b, const struct tkv_rs_region *rg)
{
    uint8_t k[RS_META_KEY_LEN];
    struct rs_buf v = {0};
    rs_buf_u8(&v, RS_REGION_NORMAL);
    rs_encode_region(&v, rg);
    rs_key_region_state(k, rg->id);
    (void)tkv_engine_batch_put(b, TKV_CF_META, TKV_SLICE(k, sizeof(k)), TKV_SLICE(v.p, v.len));
    rs_buf_free(&v);
}

static void put_apply_state(struct tkv_engine_batch *b, uint64_t region_id,
                            const struct rs_apply_state *a)
{
    uint8_t k[RS_META_KEY_LEN];
    struct rs_buf v = {0};
    rs_key_apply_state(k, region_id);
    rs_encode_apply_state(&v, a);
    (void)tkv_engine_batch_put(b, TKV_CF_META, TKV_SLICE(k, sizeof(k)), TKV_SLICE(v.p, v.len));
    rs_buf_free(&v);
}

/* ------------------------------------------------------------ ranges */

/* split_key strictly inside rg: in the region and not its start. */
static bool strictly_inside(const struct tkv_rs_region *rg, struct tkv_slice k)
{
    return k.len > 0 && rs_key_in_region(rg, k) &&
           rs_bytes_cmp(k.ptr, k.len, rg->start, rg->start_len) != 0;
}

static bool ranges_overlap(const struct tkv_rs_region *a, const struct tkv_rs_region *b)
{
    /* [a.start, a.end) and [b.start, b.end); empty end = +infinity */
    bool a_before_b_end = b->end_len == 0 || rs_bytes_cmp(a->start, a->start_len, b->end, b->end_len) < 0;
    bool b_before_a_end = a->end_len == 0 || rs_bytes_cmp(b->start, b->start_len, a->end, a->end_len) < 0;
    return a_before_b_end && b_before_a_end;
}

bool rs_range_overlaps_other(const struct tkv_raftstore *s, const struct tkv_rs_region *rg)
{
    if (RS_BUG("accept_overlapping_snapshot"))
        return false;
    for (size_t i = 0; i < s->n_peers; i++) {
        const struct rs_peer *q = s->peers[i];
        if (q->initialized && q->region.id != rg->id && ranges_overlap(&q->region, rg))
            return true;
    }
    return false;
}

const struct tkv_rs_region *rs_region_after(const struct tkv_raftstore *s,
                                            const struct tkv_rs_region *rg)
{
    if (rg->end_len == 0)
        return NULL;
    for (size_t i = 0; i < s->n_peers; i++) {
        const struct rs_peer *q = s->peers[i];
        if (q->initialized && q->region.id != rg->id &&
            rs_bytes_cmp(q->region.start, q->region.start_len, rg->end, rg->end_len) == 0)
            return &q->region;
    }
    return NULL;
}

void rs_epoch_not_match(const struct rs_peer *p, struct tkv_rs_region_error *e)
{
    e->n_current = 1;
    e->current[0] = p->region;
    const struct tkv_rs_region *next = rs_region_after(p->s, &p->region);
    if (next) {
        e->current[1] = *next;
        e->n_current = 2;
    }
}

/* ------------------------------------------------------------ proposal */

static bool epoch_eq(const struct tkv_rs_epoch *a, const struct tkv_rs_epoch *b)
{
    return a->conf_ver == b->conf_ver && a->version == b->version;
}

void tkv_raftstore_split(struct tkv_raftstore *s, uint64_t region_id,
                         const struct tkv_rs_epoch *epoch, struct tkv_slice split_key,
                         uint64_t new_region_id, const uint64_t *new_peer_ids,
                         size_t n_new_peers, tkv_rs_done_fn cb, void *arg)
{
    struct rs_peer *p = rs_peer_get(s, region_id);
    if (!p || !p->initialized) {
        rs_answer_kind(cb, arg, TKV_RS_REGION_NOT_FOUND, NULL, region_id);
        return;
    }
    if (!p->is_leader) {
        rs_answer_kind(cb, arg, TKV_RS_NOT_LEADER, p, region_id);
        return;
    }
    if (!epoch || !epoch_eq(epoch, &p->region.epoch)) {
        rs_answer_kind(cb, arg, TKV_RS_EPOCH_NOT_MATCH, p, region_id);
        return;
    }
    bool ok = split_key.len <= TKV_RS_BOUND_MAX && strictly_inside(&p->region, split_key) &&
              new_region_id != 0 && new_region_id != region_id && new_peer_ids &&
              n_new_peers == p->region.n_peers && !rs_peer_get(s, new_region_id);
    for (size_t i = 0; ok && i < n_new_peers; i++) {
        ok = new_peer_ids[i] != 0;
        for (size_t k = 0; ok && k < i; k++)
            ok = new_peer_ids[k] != new_peer_ids[i];
    }
    if (!ok) {
        rs_answer(cb, arg, TKV_EINVAL);
        return;
    }
    if (p->n_props + p->n_pend + p->n_reads >= s->cfg.max_pending_per_region) {
        rs_answer_kind(cb, arg, TKV_RS_SERVER_BUSY, p, region_id);
        return;
    }
    struct rs_buf b = {0};
    rs_cmd_header(&b, RS_CMD_SPLIT, &p->region);
    rs_buf_slice(&b, split_key);
    rs_buf_u64(&b, new_region_id);
    rs_buf_u32(&b, (uint32_t)n_new_peers);
    for (size_t i = 0; i < n_new_peers; i++)
        rs_buf_u64(&b, new_peer_ids[i]);
    rs_propose_cmd(p, &b, cb, arg);
}

/* ------------------------------------------------------------ apply */

static void fatal(const char *what, uint64_t region_id, int rv)
{
    /* the state machine cannot skip part of a committed split */
    TKV_LOG_FATAL(what, TKV_LF_U64("region_id", region_id), TKV_LF_ERR(rv));
    abort();
}

/* The new region's peer on this store, initialized at the genesis point
 * (like bootstrap; its region and apply state are in the split's batch).
 * An uninitialized peer of the region (created by a vote from the new
 * region's candidate before the split applied here) is taken over: its
 * live term and vote carry over so it never votes twice in a term. */
static void create_split_peer(struct tkv_raftstore *s, const struct tkv_rs_region *right,
                              uint64_t my_peer_id, struct rs_peer *uninit)
{
    struct tkv_raft_hard_state boot = {.term = TKV_RAFT_INIT_TERM, .commit = TKV_RAFT_INIT_INDEX};
    struct rs_peer *np = uninit;
    if (uninit) {
        struct tkv_raft_status st;
        tkv_raft_status(uninit->raft, &st);
        if (st.hs.term > boot.term) {
            boot.term = st.hs.term;
            boot.vote = st.hs.vote;
        }
        /* its outstanding update (messages of the uninitialized raft) is
         * dropped, as a lossy network would */
        tkv_raft_close(uninit->raft);
        uninit->raft = NULL;
        uninit->has_up = false;
        memset(&uninit->up, 0, sizeof(uninit->up));
        uninit->serial = ++s->next_serial;
        uninit->region = *right;
        uninit->peer_id = my_peer_id;
        uninit->initialized = true;
    } else {
        np = rs_peer_new(s, right, my_peer_id, true);
    }
    np->apply = (struct rs_apply_state){.applied = TKV_RAFT_INIT_INDEX,
                                        .truncated_index = TKV_RAFT_INIT_INDEX,
                                        .truncated_term = TKV_RAFT_INIT_TERM};
    np->durable_applied = np->ckpt_applied = TKV_RAFT_INIT_INDEX;
    np->log_floor = TKV_RAFT_INIT_INDEX;
    np->boot_hs = boot;
    if (!uninit)
        rs_store_add_peer(s, np);
    /* The raft log learns the genesis point in this turn's group commit;
     * until it is synced, storage answers from log_floor. A log that
     * already holds the region (a replay after a crash: its entries and
     * hard state are newer) is left as it is. */
    struct tkv_raftlog *log = s->env.raftlog;
    int rv = 0;
    struct tkv_raftlog_hardstate dur;
    bool has_dur = tkv_raftlog_hardstate(log, right->id, &dur) == 0;
    if (tkv_raftlog_last_index(log, right->id) < TKV_RAFT_INIT_INDEX)
        rv = tkv_raftlog_compact(log, right->id, TKV_RAFT_INIT_INDEX, TKV_RAFT_INIT_TERM, NULL, NULL);
    if (rv == 0 && (!has_dur || dur.term < boot.term || (dur.term == boot.term && dur.vote == 0))) {
        struct tkv_raftlog_hardstate hs = {.term = boot.term, .vote = boot.vote,
                                           .commit = TKV_MAX(has_dur ? dur.commit : 0,
                                                             (tkv_index)TKV_RAFT_INIT_INDEX)};
        rv = tkv_raftlog_append(log, right->id, NULL, 0, &hs, NULL, NULL);
    }
    if (rv == 0)
        rv = rs_peer_start_raft(np);
    if (rv < 0)
        fatal("split: the new region's peer cannot start", right->id, rv);
}

void rs_split_apply(struct rs_peer *p, struct rs_rd *r, const struct tkv_rs_epoch *ep,
                    struct tkv_engine_batch *b, int *rv, bool *has_rerr,
                    struct tkv_rs_region_error *rerr)
{
    struct tkv_raftstore *s = p->s;
    struct tkv_slice key;
    uint64_t nid;
    uint32_t n;
    uint64_t ids[TKV_RS_MAX_PEERS];
    if (!rs_rd_slice(r, TKV_RS_BOUND_MAX, &key) || !rs_rd_u64(r, &nid) || !rs_rd_u32(r, &n) ||
        n > TKV_RS_MAX_PEERS) {
        *rv = TKV_ECORRUPT;
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        if (!rs_rd_u64(r, &ids[i])) {
            *rv = TKV_ECORRUPT;
            return;
        }
    /* Split checks both epoch numbers (2.4); the outcome depends only on
     * replicated state, so every replica decides alike. */
    if (!epoch_eq(ep, &p->region.epoch)) {
        *has_rerr = true;
        memset(rerr, 0, sizeof(*rerr));
        rerr->kind = TKV_RS_EPOCH_NOT_MATCH;
        rerr->region_id = p->region.id;
        rs_epoch_not_match(p, rerr);
        return;
    }
    if (!strictly_inside(&p->region, key) || n != p->region.n_peers || nid == 0 ||
        nid == p->region.id) {
        *rv = TKV_EINVAL;
        return;
    }
    struct tkv_rs_region right = p->region;
    right.id = nid;
    right.epoch.version++;
    right.start_len = (uint32_t)key.len;
    memcpy(right.start, key.ptr, key.len);
    uint64_t my_new_peer = 0;
    for (uint32_t i = 0; i < n; i++) {
        right.peers[i] = (struct tkv_rs_peer){.id = ids[i], .store_id = p->region.peers[i].store_id};
        if (right.peers[i].store_id == s->cfg.store_id)
            my_new_peer = ids[i];
    }
    /* the original region keeps [start, split_key) */
    if (!RS_BUG("split_no_version_bump"))
        p->region.epoch.version++;
    p->region.end_len = (uint32_t)key.len;
    memcpy(p->region.end, key.ptr, key.len);
    rs_write_region_state(p, b);
    p->split.size_known = false;
    p->split.scanning = false;
    p->split.asked_tick = 0;

    struct rs_peer *np = rs_peer_get(s, nid);
    if (np && (np->initialized || np->peer_id != my_new_peer)) {
        /* created since by a snapshot of the new region, or a peer of a
         * later incarnation (ours was removed and another added since):
         * newer than the split's; it fills itself by snapshot now that
         * the parent no longer covers its range */
        TKV_LOG_INFO("split: a newer peer of the new region exists here",
                     TKV_LF_U64("region_id", nid), TKV_LF_U64("peer_id", np->peer_id));
    } else if (my_new_peer) {
        struct rs_apply_state a = {.applied = TKV_RAFT_INIT_INDEX,
                                   .truncated_index = TKV_RAFT_INIT_INDEX,
                                   .truncated_term = TKV_RAFT_INIT_TERM};
        put_region_state(b, &right);
        put_apply_state(b, nid, &a);
        create_split_peer(s, &right, my_new_peer, np);
    }
    GROW(s->split_notes, s->n_split_notes, s->cap_split_notes);
    s->split_notes[s->n_split_notes++] =
        (struct rs_split_note){.left = p->region, .right = right, .campaign = p->is_leader};
    *rv = 0;
}

void rs_split_after_write(struct tkv_raftstore *s)
{
    /* detached: a hook may not call back, but a campaign steps a peer */
    for (size_t i = 0; i < s->n_split_notes; i++) {
        const struct rs_split_note *nt = &s->split_notes[i];
        TKV_LOG_INFO("region split", TKV_LF_U64("region_id", nt->left.id),
                     TKV_LF_U64("new_region_id", nt->right.id),
                     TKV_LF_U64("version", nt->left.epoch.version));
        struct rs_peer *np = rs_peer_get(s, nt->right.id);
        /* TiKV: the store that led the parent campaigns in the new region
         * at once instead of waiting for an election timeout */
        if (nt->campaign && np && np->initialized && epoch_eq(&np->region.epoch, &nt->right.epoch)) {
            struct tkv_raft_msg m = {.type = TKV_RAFT_MSG_HUP, .from = np->peer_id};
            struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &m};
            (void)rs_peer_step(np, &ev);
        }
        if (s->env.region_changed)
            s->env.region_changed(s->env.ctx, &nt->left, &nt->right, false);
    }
    s->n_split_notes = 0;
}

/* ------------------------------------------------------------ checker */

void rs_split_note_write(struct rs_peer *p, size_t bytes)
{
    p->split.size_diff += bytes;
}

void rs_split_peer_free(struct rs_peer *p)
{
    rs_buf_free(&p->split.resume);
    rs_buf_free(&p->split.split_key);
}

/* Where to split given the key at which the running size passed
 * region_split_size: a key that starts with a complete EncodeBytes group
 * encoding (a transactional DEFAULT/WRITE key, EncodeKey(user key, ts))
 * is cut to that encoding, so every version of the user key (and its
 * lock, compared in EncodeBytes form) stays on one side. Raw keys compare
 * as they are, so any boundary is correct for them, the cut one too. */
static size_t split_key_len(struct tkv_slice k)
{
    size_t out_len, consumed;
    if (tkv_codec_decode_bytes(k.ptr, k.len, NULL, &out_len, &consumed) == 0 && consumed < k.len)
        return consumed;
    return k.len;
}

static void scan_finish(struct rs_peer *p, bool complete)
{
    struct tkv_raftstore *s = p->s;
    struct rs_split_check *c = &p->split;
    c->scanning = false;
    uint64_t max = s->cfg.region_max_size ? s->cfg.region_max_size : DEFAULT_MAX_SIZE;
    if (complete) {
        c->approx_size = c->scan_sum;
        c->size_known = true;
    }
    if (c->scan_sum >= max && c->have_key) {
        c->asked_epoch = p->region.epoch;
        c->asked_tick = s->ticks ? s->ticks : 1;
        s->env.ask_split(s->env.ctx, &p->region, TKV_SLICE(c->split_key.p, c->split_key.len));
    }
}

/* Read the region's DEFAULT CF from where the last turn stopped, within
 * the store's budget for this tick. Each turn opens its own engine
 * snapshot (no long-lived read view); the size is approximate anyway. */
static void scan_step(struct rs_peer *p)
{
    struct tkv_raftstore *s = p->s;
    struct rs_split_check *c = &p->split;
    uint64_t max = s->cfg.region_max_size ? s->cfg.region_max_size : DEFAULT_MAX_SIZE;
    uint64_t split = s->cfg.region_split_size ? s->cfg.region_split_size : DEFAULT_SPLIT_SIZE;
    if (!epoch_eq(&c->scan_epoch, &p->region.epoch)) {
        c->scanning = false;
        return;
    }
    struct tkv_engine_snap *snap = NULL;
    struct tkv_engine_iter *it = NULL;
    struct tkv_slice lower = c->resume.len ? TKV_SLICE(c->resume.p, c->resume.len)
                                           : TKV_SLICE(p->region.start, p->region.start_len);
    int rv = tkv_engine_snap_open(s->sess, &snap);
    if (rv == 0)
        rv = tkv_engine_iter_open(snap, TKV_CF_DEFAULT, lower,
                                  TKV_SLICE(p->region.end, p->region.end_len), &it);
    bool done = true, over = false;
    if (rv == 0) {
        for (rv = tkv_engine_iter_seek_first(it); rv == 0 && tkv_engine_iter_valid(it);
             rv = tkv_engine_iter_next(it)) {
            if (s->split_scan_budget == 0) {
                /* resume here next tick */
                struct tkv_slice k = tkv_engine_iter_key(it);
                c->resume.len = 0;
                rs_buf_bytes(&c->resume, k.ptr, k.len);
                done = false;
                break;
            }
            struct tkv_slice k = tkv_engine_iter_key(it), v = tkv_engine_iter_value(it);
            uint64_t sz = k.len + v.len;
            c->scan_sum += sz;
            if (!c->have_key && c->scan_sum > split) {
                size_t cut = split_key_len(k);
                struct tkv_slice cand = TKV_SLICE(k.ptr, cut);
                if (cut <= TKV_RS_BOUND_MAX && strictly_inside(&p->region, cand)) {
                    c->split_key.len = 0;
                    rs_buf_bytes(&c->split_key, cand.ptr, cand.len);
                    c->have_key = true;
                }
            }
            uint64_t cost = sz < 64 ? 64 : sz;
            s->split_scan_budget = s->split_scan_budget > cost ? s->split_scan_budget - cost : 0;
            if (c->scan_sum > max) {
                over = true;
                break;
            }
        }
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    if (rv < 0) {
        c->scanning = false; /* try again at the next check */
        return;
    }
    if (done)
        scan_finish(p, !over);
}

void rs_split_tick(struct rs_peer *p)
{
    struct tkv_raftstore *s = p->s;
    struct rs_split_check *c = &p->split;
    if (!s->env.ask_split || !p->initialized)
        return;
    if (!p->is_leader) {
        c->scanning = false;
        c->asked_tick = 0;
        return;
    }
    if (!c->scanning) {
        uint32_t every = s->cfg.split_check_tick ? s->cfg.split_check_tick : DEFAULT_CHECK_TICK;
        uint64_t split = s->cfg.region_split_size ? s->cfg.region_split_size : DEFAULT_SPLIT_SIZE;
        uint64_t max = s->cfg.region_max_size ? s->cfg.region_max_size : DEFAULT_MAX_SIZE;
        if (s->ticks % every != 0)
            return;
        if (c->asked_tick && epoch_eq(&c->asked_epoch, &p->region.epoch) &&
            s->ticks - c->asked_tick < (uint64_t)every * ASK_RETRY_CHECKS)
            return; /* the split asked for is on its way */
        /* TinyKV's hint: skip while little was written since the last
         * scan, unless what was written may have taken it over the max */
        if (c->size_known && c->size_diff < split / 8 && c->approx_size + c->size_diff < max)
            return;
        c->scanning = true;
        c->scan_epoch = p->region.epoch;
        c->resume.len = 0;
        c->scan_sum = 0;
        c->have_key = false;
        c->size_diff = 0;
    }
    if (s->split_scan_budget)
        scan_step(p);
}
