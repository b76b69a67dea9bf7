/* TinyKV raft/rawnode_test.go scenarios driven straight through
 * tkv_raft_step and a memstore, checking the update contract itself. */
#include <criterion/criterion.h>
#include <string.h>

#include "raft_memstore.h"
#include "tkv/err.h"
#include "tkv/raft.h"

struct drv {
    struct tkv_raft *r;
    struct raft_memstore ms;
    /* everything seen since the last reset */
    struct tkv_raft_entry appended[64], committed[64];
    size_t n_appended, n_committed, n_updates_nonempty;
};

static void keep(struct tkv_raft_entry *dst, size_t *n, const struct tkv_raft_entry *src, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        cr_assert(*n < 64);
        dst[*n] = src[i];
        tkv_raft_buf_ref(dst[*n].data);
        (*n)++;
    }
}

static void drv_reset(struct drv *d)
{
    for (size_t i = 0; i < d->n_appended; i++)
        tkv_raft_buf_unref(d->appended[i].data);
    for (size_t i = 0; i < d->n_committed; i++)
        tkv_raft_buf_unref(d->committed[i].data);
    d->n_appended = d->n_committed = d->n_updates_nonempty = 0;
}

/* Step, then persist and acknowledge like a caller would, until quiet. The
 * reports are stepped while the update is outstanding (the natural loop). */
static int drv_step(struct drv *d, const struct tkv_raft_event *ev)
{
    struct tkv_raft_update up;
    int rv = tkv_raft_step(d->r, ev, &up);
    while (up.flags) {
        if (up.flags & ~(uint32_t)TKV_RAFT_UPDATE_SOFT_STATE)
            d->n_updates_nonempty++;
        struct tkv_raft_update nested;
        if (up.snapshot) {
            raft_memstore_apply_snapshot(&d->ms, up.snapshot);
            struct tkv_raft_event pe = {.type = TKV_RAFT_EV_SNAPSHOT_PERSISTED};
            pe.u.persisted.index = up.snapshot->index;
            cr_assert_eq(tkv_raft_step(d->r, &pe, &nested), 0);
            cr_assert_eq(nested.flags, 0, "an outstanding update makes nested updates empty");
        }
        if (up.n_entries) {
            raft_memstore_append(&d->ms, up.entries, up.n_entries);
            keep(d->appended, &d->n_appended, up.entries, up.n_entries);
        }
        if (up.flags & TKV_RAFT_UPDATE_HARD_STATE)
            d->ms.hs = up.hard_state;
        if (up.n_entries) {
            struct tkv_raft_event pe = {.type = TKV_RAFT_EV_LOG_PERSISTED};
            pe.u.persisted.index = up.entries[up.n_entries - 1].index;
            pe.u.persisted.term = up.entries[up.n_entries - 1].term;
            cr_assert_eq(tkv_raft_step(d->r, &pe, &nested), 0);
            cr_assert_eq(nested.flags, 0);
        }
        for (size_t i = 0; i < up.n_committed; i++) {
            keep(d->committed, &d->n_committed, &up.committed[i], 1);
            struct tkv_raft_event pe = {.type = TKV_RAFT_EV_APPLIED,
                                        .u.applied = up.committed[i].index};
            cr_assert_eq(tkv_raft_step(d->r, &pe, &nested), 0);
            cr_assert_eq(nested.flags, 0);
        }
        tkv_raft_advance(d->r, &up);
    }
    return rv;
}

static void drv_open(struct drv *d, const uint64_t *peers, size_t n, tkv_index applied)
{
    struct tkv_raft_config cfg = {.id = 1, .election_tick = 10, .heartbeat_tick = 1,
                                  .storage = raft_memstore_storage(&d->ms), .peers = peers,
                                  .n_peers = n, .applied = applied, .seed = 1};
    cr_assert_eq(tkv_raft_init(&cfg, &d->r), 0);
}

static void drv_close(struct drv *d)
{
    drv_reset(d);
    tkv_raft_close(d->r);
    raft_memstore_free(&d->ms);
}

static int propose(struct drv *d, const char *s)
{
    struct tkv_raft_buf *b;
    cr_assert_eq(tkv_raft_buf_copy(s, strlen(s), &b), 0);
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE};
    ev.u.propose.data = &b;
    ev.u.propose.n = 1;
    int rv = drv_step(d, &ev);
    tkv_raft_buf_unref(b);
    return rv;
}

static int propose_cc(struct drv *d, uint32_t type, uint64_t node)
{
    uint8_t cc[9];
    cc[0] = (uint8_t)type;
    memcpy(cc + 1, &node, 8);
    struct tkv_raft_buf *b;
    cr_assert_eq(tkv_raft_buf_copy(cc, 9, &b), 0);
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE_CONF_CHANGE, .u.conf_change_data = b};
    int rv = drv_step(d, &ev);
    tkv_raft_buf_unref(b);
    return rv;
}

static void campaign(struct drv *d)
{
    struct tkv_raft_msg hup = {.type = TKV_RAFT_MSG_HUP};
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &hup};
    drv_step(d, &ev);
    struct tkv_raft_status s;
    tkv_raft_status(d->r, &s);
    cr_assert_eq(s.ss.role, TKV_RAFT_LEADER);
}

static void apply_cc(struct drv *d, uint32_t type, uint64_t node)
{
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_APPLY_CONF_CHANGE};
    ev.u.conf_change.change_type = type;
    ev.u.conf_change.node_id = node;
    cr_assert_eq(drv_step(d, &ev), 0);
}

Test(rawnode, propose_and_conf_change)
{
    struct drv d;
    memset(&d, 0, sizeof(d));
    uint64_t peers[] = {1};
    drv_open(&d, peers, 1, 0);
    campaign(&d);
    drv_reset(&d);
    cr_assert_eq(propose(&d, "somedata"), 0);
    cr_assert_eq(propose_cc(&d, TKV_RAFT_CONF_ADD_NODE, 1), 0);
    cr_assert_eq(d.n_appended, 2);
    cr_assert_eq(d.appended[0].type, TKV_RAFT_ENTRY_NORMAL);
    cr_assert(d.appended[0].data->len == 8 && !memcmp(d.appended[0].data->data, "somedata", 8));
    cr_assert_eq(d.appended[1].type, TKV_RAFT_ENTRY_CONF_CHANGE);
    cr_assert_eq(d.appended[1].data->len, 9, "conf change payload carried unchanged");
    cr_assert_eq(d.appended[1].data->data[0], TKV_RAFT_CONF_ADD_NODE);
    drv_close(&d);
}

Test(rawnode, propose_add_duplicate_node)
{
    struct drv d;
    memset(&d, 0, sizeof(d));
    uint64_t peers[] = {1};
    drv_open(&d, peers, 1, 0);
    campaign(&d);
    cr_assert_eq(propose_cc(&d, TKV_RAFT_CONF_ADD_NODE, 1), 0);
    apply_cc(&d, TKV_RAFT_CONF_ADD_NODE, 1); /* duplicate: harmless */
    struct tkv_raft_status s;
    tkv_raft_status(d.r, &s);
    cr_assert_eq(s.conf.n_voters, 1);
    cr_assert_eq(propose_cc(&d, TKV_RAFT_CONF_ADD_NODE, 2), 0, "earlier change applied: accepted");
    apply_cc(&d, TKV_RAFT_CONF_ADD_NODE, 2);
    tkv_raft_status(d.r, &s);
    cr_assert_eq(s.conf.n_voters, 2);
    cr_assert_eq(s.conf.voters[1], 2);
    /* the two conf change entries are in the log, once each */
    size_t cc = 0;
    for (size_t i = 0; i < d.n_appended; i++)
        cc += d.appended[i].type == TKV_RAFT_ENTRY_CONF_CHANGE;
    cr_assert_eq(cc, 2);
    drv_close(&d);
}

Test(rawnode, start)
{
    struct drv d;
    memset(&d, 0, sizeof(d));
    uint64_t peers[] = {1};
    drv_open(&d, peers, 1, 0);
    campaign(&d);
    drv_reset(&d);
    cr_assert_eq(propose(&d, "foo"), 0);
    cr_assert_eq(d.n_appended, 1);
    cr_assert_eq(d.n_committed, 1, "foo committed (the no-op was at campaign time)");
    cr_assert(d.committed[0].data->len == 3 && !memcmp(d.committed[0].data->data, "foo", 3));
    /* nothing left to do: a further event yields an empty update */
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_APPLIED, .u.applied = 2};
    struct tkv_raft_update up;
    cr_assert_eq(tkv_raft_step(d.r, &ev, &up), 0);
    cr_assert_eq(up.flags & ~(uint32_t)TKV_RAFT_UPDATE_SOFT_STATE, 0, "flags %#x", up.flags);
    tkv_raft_advance(d.r, &up);
    drv_close(&d);
}

static void seed_log(struct drv *d, const char **data, size_t n, tkv_index first)
{
    for (size_t i = 0; i < n; i++) {
        struct tkv_raft_entry e = {.term = 1, .index = first + i};
        if (data[i])
            cr_assert_eq(tkv_raft_buf_copy(data[i], strlen(data[i]), &e.data), 0);
        raft_memstore_append(&d->ms, &e, 1);
        tkv_raft_buf_unref(e.data);
    }
}

Test(rawnode, restart)
{
    struct drv d;
    memset(&d, 0, sizeof(d));
    const char *data[] = {NULL, "foo"};
    seed_log(&d, data, 2, 1);
    d.ms.hs = (struct tkv_raft_hard_state){.term = 1, .commit = 1};
    uint64_t peers[] = {1};
    drv_open(&d, peers, 1, 0);
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TICK};
    struct tkv_raft_update up;
    cr_assert_eq(tkv_raft_step(d.r, &ev, &up), 0);
    cr_assert_eq(up.n_entries, 0, "nothing new to persist");
    cr_assert(!(up.flags & TKV_RAFT_UPDATE_HARD_STATE));
    cr_assert_eq(up.n_committed, 1, "only committed entries are handed out");
    cr_assert_eq(up.committed[0].index, 1);
    drv_close(&d);
}

Test(rawnode, restart_from_snapshot)
{
    struct drv d;
    memset(&d, 0, sizeof(d));
    struct tkv_raft_snapshot s = {.index = 2, .term = 1};
    s.conf_state.n_voters = 2;
    s.conf_state.voters[0] = 1;
    s.conf_state.voters[1] = 2;
    raft_memstore_apply_snapshot(&d.ms, &s);
    const char *data[] = {"foo"};
    seed_log(&d, data, 1, 3);
    d.ms.hs = (struct tkv_raft_hard_state){.term = 1, .commit = 3};
    drv_open(&d, NULL, 0, 0);
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TICK};
    struct tkv_raft_update up;
    cr_assert_eq(tkv_raft_step(d.r, &ev, &up), 0);
    cr_assert_eq(up.n_entries, 0);
    cr_assert_eq(up.n_committed, 1);
    cr_assert_eq(up.committed[0].index, 3);
    cr_assert(up.committed[0].data->len == 3 && !memcmp(up.committed[0].data->data, "foo", 3));
    struct tkv_raft_status st;
    tkv_raft_status(d.r, &st);
    cr_assert_eq(st.conf.n_voters, 2, "voters from the snapshot");
    drv_close(&d);
}

Test(rawnode, payloads_are_shared_not_copied)
{
    struct drv d;
    memset(&d, 0, sizeof(d));
    uint64_t peers[] = {1, 2};
    drv_open(&d, peers, 2, 0);
    struct tkv_raft_msg hup = {.type = TKV_RAFT_MSG_HUP};
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_RECEIVE, .u.msg = &hup};
    drv_step(&d, &ev);
    struct tkv_raft_msg v = {.type = TKV_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 1};
    ev.u.msg = &v;
    drv_step(&d, &ev);
    struct tkv_raft_msg ack = {.type = TKV_RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 1,
                               .index = 1};
    ev.u.msg = &ack;
    drv_step(&d, &ev); /* follower 2 now in replicate state */
    struct tkv_raft_buf *b;
    cr_assert_eq(tkv_raft_buf_copy("payload", 7, &b), 0);
    ev = (struct tkv_raft_event){.type = TKV_RAFT_EV_PROPOSE};
    ev.u.propose.data = &b;
    ev.u.propose.n = 1;
    struct tkv_raft_update up;
    cr_assert_eq(tkv_raft_step(d.r, &ev, &up), 0);
    cr_assert_eq(up.n_entries, 1);
    cr_assert_eq(up.entries[0].data, b, "the log holds the caller's buffer");
    bool in_msg = false;
    for (size_t i = 0; i < up.n_msgs; i++)
        if (up.msgs[i].n_entries && up.msgs[i].entries[0].data == b)
            in_msg = true;
    cr_assert(in_msg, "the append message shares the same buffer");
    cr_assert_geq(b->refs, 3u);
    tkv_raft_buf_unref(b);
    drv_close(&d);
}

static int freed;

static void count_free(void *ctx, uint8_t *data)
{
    (void)data;
    *(int *)ctx += 1;
}

Test(rawnode, wrapped_buffer_freed_by_last_reference)
{
    static uint8_t bytes[4] = {1, 2, 3, 4};
    struct tkv_raft_buf *b;
    freed = 0;
    cr_assert_eq(tkv_raft_buf_wrap(bytes, 4, count_free, &freed, &b), 0);
    cr_assert_eq(b->data, bytes, "wrapped, not copied");
    tkv_raft_buf_ref(b);
    tkv_raft_buf_unref(b);
    cr_assert_eq(freed, 0);
    tkv_raft_buf_unref(b);
    cr_assert_eq(freed, 1);
}

/* Contract (a): the update lives until tkv_raft_advance. Apply committed
 * entries one by one, feeding APPLIED, APPLY_CONF_CHANGE, a proposal and a
 * LOG_PERSISTED between them, and keep reading the update: under ASan any
 * release of the update's arrays or payloads by those steps is a
 * use-after-free. What the nested steps produced arrives, in order, from
 * the advance. */
Test(rawnode, update_lives_until_advance)
{
    struct drv d;
    memset(&d, 0, sizeof(d));
    uint64_t peers[] = {1};
    drv_open(&d, peers, 1, 0);
    campaign(&d);
    /* Five entries and a conf change appended and persisted, not yet handed
     * out as committed: do the persisting by hand. */
    const char *vals[] = {"a", "bb", "ccc", "dddd", "eeeee"};
    struct tkv_raft_buf *bufs[5];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(tkv_raft_buf_copy(vals[i], strlen(vals[i]), &bufs[i]), 0);
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_PROPOSE};
    ev.u.propose.data = bufs;
    ev.u.propose.n = 5;
    struct tkv_raft_update up, nested;
    cr_assert_eq(tkv_raft_step(d.r, &ev, &up), 0);
    for (int i = 0; i < 5; i++)
        tkv_raft_buf_unref(bufs[i]);
    cr_assert_eq(up.n_entries, 5);
    raft_memstore_append(&d.ms, up.entries, up.n_entries);
    struct tkv_raft_event pe = {.type = TKV_RAFT_EV_LOG_PERSISTED};
    pe.u.persisted.index = up.entries[4].index;
    pe.u.persisted.term = up.entries[4].term;
    cr_assert_eq(tkv_raft_step(d.r, &pe, &nested), 0);
    cr_assert_eq(nested.flags, 0, "nested update must be empty while one is outstanding");
    tkv_raft_advance(d.r, &up);
    cr_assert_eq(up.n_committed, 5, "the five entries commit once persisted");
    if (up.flags & TKV_RAFT_UPDATE_HARD_STATE)
        d.ms.hs = up.hard_state;
    tkv_index proposed_last = 0;
    for (size_t i = 0; i < up.n_committed; i++) {
        const struct tkv_raft_entry *e = &up.committed[i];
        cr_assert(e->data && e->data->len == strlen(vals[i]) &&
                      !memcmp(e->data->data, vals[i], e->data->len),
                  "committed entry %zu changed under the caller", i);
        struct tkv_raft_event ap = {.type = TKV_RAFT_EV_APPLIED, .u.applied = e->index};
        cr_assert_eq(tkv_raft_step(d.r, &ap, &nested), 0);
        cr_assert_eq(nested.flags, 0);
        if (i == 1) {
            /* a conf change applied mid-way (no-op re-add of ourselves) */
            struct tkv_raft_event cc = {.type = TKV_RAFT_EV_APPLY_CONF_CHANGE};
            cc.u.conf_change.change_type = TKV_RAFT_CONF_ADD_NODE;
            cc.u.conf_change.node_id = 1;
            cr_assert_eq(tkv_raft_step(d.r, &cc, &nested), 0);
            cr_assert_eq(nested.flags, 0);
        }
        if (i == 2) {
            struct tkv_raft_buf *b;
            cr_assert_eq(tkv_raft_buf_copy("late", 4, &b), 0);
            struct tkv_raft_event pr = {.type = TKV_RAFT_EV_PROPOSE};
            pr.u.propose.data = &b;
            pr.u.propose.n = 1;
            cr_assert_eq(tkv_raft_step(d.r, &pr, &nested), 0);
            cr_assert_eq(nested.flags, 0, "the proposal waits for the advance");
            tkv_raft_buf_unref(b);
            struct tkv_raft_status st;
            tkv_raft_status(d.r, &st);
            proposed_last = st.last_index;
        }
    }
    /* Still intact after all those steps. */
    cr_assert(up.committed[0].data->len == 1 && up.committed[0].data->data[0] == 'a');
    tkv_raft_advance(d.r, &up);
    cr_assert_eq(up.n_entries, 1, "the proposal made between was not lost");
    cr_assert_eq(up.entries[0].index, proposed_last);
    cr_assert(up.entries[0].data->len == 4 && !memcmp(up.entries[0].data->data, "late", 4));
    tkv_raft_advance(d.r, &up);
    cr_assert_eq(up.flags, 0);
    drv_close(&d);
}

/* Contract (b): a follower that persisted a received snapshot but crashed
 * before the same update's hard state restarts: the snapshot index is
 * committed, the term is raised to the snapshot's (without a vote), and
 * the first update writes the repaired hard state. */
Test(rawnode, restart_after_snapshot_without_its_hard_state)
{
    struct drv d;
    memset(&d, 0, sizeof(d));
    struct tkv_raft_snapshot s = {.index = 10, .term = 3};
    s.conf_state.n_voters = 3;
    for (uint32_t i = 0; i < 3; i++)
        s.conf_state.voters[i] = i + 1;
    raft_memstore_apply_snapshot(&d.ms, &s);
    d.ms.hs = (struct tkv_raft_hard_state){.term = 2, .vote = 2, .commit = 4};
    drv_open(&d, NULL, 0, 0);
    struct tkv_raft_status st;
    tkv_raft_status(d.r, &st);
    cr_assert_eq(st.hs.commit, 10, "snapshot index is committed");
    cr_assert_eq(st.hs.term, 3, "term raised to the snapshot's");
    cr_assert_eq(st.hs.vote, 0, "no vote invented for the new term");
    cr_assert_eq(st.applied, 10);
    struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TICK};
    struct tkv_raft_update up;
    cr_assert_eq(tkv_raft_step(d.r, &ev, &up), 0);
    cr_assert(up.flags & TKV_RAFT_UPDATE_HARD_STATE, "repaired hard state is persisted");
    cr_assert_eq(up.hard_state.commit, 10);
    cr_assert_eq(up.hard_state.term, 3);
    tkv_raft_advance(d.r, &up);
    drv_close(&d);
}

/* Contract (b), the still-rejected case: a hard state committing beyond
 * the stored log is corruption, not a crash window. */
Test(rawnode, commit_beyond_the_log_is_refused)
{
    struct raft_memstore ms;
    raft_memstore_init(&ms);
    ms.hs = (struct tkv_raft_hard_state){.term = 1, .commit = 3};
    uint64_t peers[] = {1};
    struct tkv_raft_config cfg = {.id = 1, .election_tick = 10, .heartbeat_tick = 1,
                                  .storage = raft_memstore_storage(&ms), .peers = peers,
                                  .n_peers = 1, .seed = 1};
    struct tkv_raft *r = NULL;
    cr_assert_eq(tkv_raft_init(&cfg, &r), TKV_EINVAL);
    raft_memstore_free(&ms);
}
