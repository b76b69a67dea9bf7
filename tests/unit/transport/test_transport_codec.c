/* The wire codec: every raft message type round-trips through
 * raft_serverpb.RaftMessage losslessly (reject_hint, context, PreVote and
 * ReadIndex included), the extension types use TiKV's numbers on the wire,
 * and bad RaftMessages are refused with the right reason. */
#include <criterion/criterion.h>
#include <string.h>

#include "eraftpb.pb.h"
#include "raft_serverpb.pb.h"
#include "tkv/arena.h"
#include "tkv/err.h"
#include "tkv/pb.h"
#include "tkv/transport.h"

static struct tkv_raft_buf *buf_of(const char *s)
{
    struct tkv_raft_buf *b = NULL;
    cr_assert_eq(tkv_raft_buf_copy(s, strlen(s), &b), 0);
    return b;
}

static struct tkv_rs_msg base_msg(uint32_t type)
{
    struct tkv_rs_msg m;
    memset(&m, 0, sizeof(m));
    m.region_id = 7;
    m.from = (struct tkv_rs_peer){.id = 11, .store_id = 1};
    m.to = (struct tkv_rs_peer){.id = 12, .store_id = 2};
    m.epoch = (struct tkv_rs_epoch){.conf_ver = 3, .version = 4};
    m.msg.type = type;
    m.msg.from = 11;
    m.msg.to = 12;
    m.msg.term = 9;
    m.msg.log_term = 8;
    m.msg.index = 100;
    m.msg.commit = 99;
    return m;
}

static void assert_same(const struct tkv_rs_msg *a, const struct tkv_rs_msg *b)
{
    cr_assert_eq(a->region_id, b->region_id);
    cr_assert_eq(a->from.id, b->from.id);
    cr_assert_eq(a->from.store_id, b->from.store_id);
    cr_assert_eq(a->to.id, b->to.id);
    cr_assert_eq(a->to.store_id, b->to.store_id);
    cr_assert_eq(a->epoch.conf_ver, b->epoch.conf_ver);
    cr_assert_eq(a->epoch.version, b->epoch.version);
    cr_assert_eq(a->is_tombstone, b->is_tombstone);
    const struct tkv_raft_msg *x = &a->msg, *y = &b->msg;
    cr_assert_eq(x->type, y->type, "type %u came back as %u", x->type, y->type);
    cr_assert_eq(x->to, y->to);
    cr_assert_eq(x->from, y->from);
    cr_assert_eq(x->term, y->term);
    cr_assert_eq(x->log_term, y->log_term);
    cr_assert_eq(x->index, y->index);
    cr_assert_eq(x->commit, y->commit);
    cr_assert_eq(x->reject, y->reject);
    cr_assert_eq(x->reject_hint, y->reject_hint, "reject_hint lost");
    cr_assert_eq(x->ctx, y->ctx, "context lost");
    cr_assert_eq(x->n_entries, y->n_entries);
    for (size_t i = 0; i < x->n_entries; i++) {
        const struct tkv_raft_entry *e = &x->entries[i], *f = &y->entries[i];
        cr_assert_eq(e->term, f->term);
        cr_assert_eq(e->index, f->index);
        cr_assert_eq(e->type, f->type);
        size_t el = e->data ? e->data->len : 0, fl = f->data ? f->data->len : 0;
        cr_assert_eq(el, fl, "entry %zu data length", i);
        if (el)
            cr_assert_eq(memcmp(e->data->data, f->data->data, el), 0);
    }
    cr_assert_eq(!x->snapshot, !y->snapshot);
    if (x->snapshot) {
        cr_assert_eq(x->snapshot->index, y->snapshot->index);
        cr_assert_eq(x->snapshot->term, y->snapshot->term);
        cr_assert_eq(x->snapshot->conf_state.n_voters, y->snapshot->conf_state.n_voters);
        for (uint32_t i = 0; i < x->snapshot->conf_state.n_voters; i++)
            cr_assert_eq(x->snapshot->conf_state.voters[i], y->snapshot->conf_state.voters[i]);
        cr_assert_eq(x->snapshot->data->len, y->snapshot->data->len);
        cr_assert_eq(memcmp(x->snapshot->data->data, y->snapshot->data->data,
                            x->snapshot->data->len), 0);
    }
}

static void roundtrip(const struct tkv_rs_msg *m)
{
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    struct tkv_slice enc;
    cr_assert_eq(tkv_transport_encode(m, &a, &enc), 0, "encode type %u", m->msg.type);
    struct tkv_arena scratch;
    tkv_arena_init(&scratch, 0);
    struct tkv_rs_msg out;
    int r = tkv_transport_decode(enc, 2, &scratch, &out);
    cr_assert_eq(r, TKV_TRANSPORT_OK, "type %u rejected: %s", m->msg.type,
                 tkv_transport_reject_name(r));
    tkv_arena_close(&scratch);
    assert_same(m, &out);
    tkv_rs_msg_release(&out);
    tkv_arena_close(&a);
}

Test(transport_codec, every_message_type_round_trips)
{
    static const uint32_t types[] = {
        TKV_RAFT_MSG_APPEND,         TKV_RAFT_MSG_APPEND_RESP,     TKV_RAFT_MSG_VOTE,
        TKV_RAFT_MSG_VOTE_RESP,      TKV_RAFT_MSG_SNAPSHOT,        TKV_RAFT_MSG_HEARTBEAT,
        TKV_RAFT_MSG_HEARTBEAT_RESP, TKV_RAFT_MSG_TRANSFER_LEADER, TKV_RAFT_MSG_TIMEOUT_NOW,
        TKV_RAFT_MSG_PRE_VOTE,       TKV_RAFT_MSG_PRE_VOTE_RESP,   TKV_RAFT_MSG_READ_INDEX,
        TKV_RAFT_MSG_READ_INDEX_RESP,
    };
    for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
        struct tkv_rs_msg m = base_msg(types[k]);
        struct tkv_raft_entry ents[3];
        struct tkv_raft_snapshot snap;
        m.is_tombstone = (k % 2) == 1;
        m.msg.reject = (k % 3) == 0;
        m.msg.reject_hint = 50 + k;
        m.msg.ctx = k % 4 == 0 ? 0 : 0x0102030405060708ull + k; /* 0 = absent */
        if (types[k] == TKV_RAFT_MSG_APPEND || types[k] == TKV_RAFT_MSG_READ_INDEX) {
            ents[0] = (struct tkv_raft_entry){.term = 9, .index = 101, .data = NULL};
            ents[1] = (struct tkv_raft_entry){.term = 9, .index = 102, .data = buf_of("put k v")};
            ents[2] = (struct tkv_raft_entry){
                .term = 9, .index = 103, .type = TKV_RAFT_ENTRY_CONF_CHANGE, .data = buf_of("cc")};
            m.msg.entries = ents;
            m.msg.n_entries = 3;
        }
        if (types[k] == TKV_RAFT_MSG_SNAPSHOT) {
            memset(&snap, 0, sizeof(snap));
            snap.index = 500;
            snap.term = 7;
            snap.conf_state.n_voters = 3;
            snap.conf_state.voters[0] = 11;
            snap.conf_state.voters[1] = 12;
            snap.conf_state.voters[2] = 13;
            snap.data = buf_of("snapshot payload bytes");
            m.msg.snapshot = &snap;
        }
        roundtrip(&m);
        for (size_t i = 0; i < m.msg.n_entries; i++)
            tkv_raft_buf_unref(m.msg.entries[i].data);
        if (m.msg.snapshot)
            tkv_raft_buf_unref(snap.data);
    }
}

/* The extension types travel with TiKV's numbers; TinyKV's keep theirs. */
Test(transport_codec, wire_numbers_follow_tinykv_then_tikv)
{
    static const struct {
        uint32_t ours, wire;
    } map[] = {{TKV_RAFT_MSG_APPEND, 3}, {TKV_RAFT_MSG_TIMEOUT_NOW, 12},
               {TKV_RAFT_MSG_PRE_VOTE, 17}, {TKV_RAFT_MSG_PRE_VOTE_RESP, 18},
               {TKV_RAFT_MSG_READ_INDEX, 15}, {TKV_RAFT_MSG_READ_INDEX_RESP, 16}};
    for (size_t k = 0; k < sizeof(map) / sizeof(map[0]); k++) {
        struct tkv_rs_msg m = base_msg(map[k].ours);
        m.msg.ctx = 0xabcdefull;
        m.msg.reject_hint = 77;
        struct tkv_arena a;
        tkv_arena_init(&a, 0);
        struct tkv_slice enc;
        cr_assert_eq(tkv_transport_encode(&m, &a, &enc), 0);
        raft_serverpb_RaftMessage rm;
        cr_assert_eq(tkv_pb_decode(raft_serverpb_RaftMessage_fields, &rm, enc.ptr, enc.len, &a), 0);
        cr_assert_eq((uint32_t)rm.message.msg_type, map[k].wire, "type %u on the wire as %u",
                     map[k].ours, (uint32_t)rm.message.msg_type);
        cr_assert_eq(rm.message.reject_hint, 77);
        cr_assert_eq(rm.message.context.len, 8);
        cr_assert(rm.has_region_epoch);
        tkv_arena_close(&a);
    }
    /* local-only types are not encodable */
    struct tkv_rs_msg hup = base_msg(TKV_RAFT_MSG_HUP);
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    struct tkv_slice enc;
    cr_assert_eq(tkv_transport_encode(&hup, &a, &enc), 0, "HUP is eraftpb MsgHup=0: encodable");
    struct tkv_rs_msg out;
    cr_assert_eq(tkv_transport_decode(enc, 2, &a, &out), TKV_TRANSPORT_REJECT_BAD_TYPE,
                 "a MsgHup from the network must be refused");
    struct tkv_rs_msg bad = base_msg(10);
    cr_assert_eq(tkv_transport_encode(&bad, &a, &enc), TKV_EINVAL);
    tkv_arena_close(&a);
}

/* Build a RaftMessage protobuf by hand (valid baseline), let the test break
 * one thing, and decode it as store 2. */
static int decode_broken(void (*breakit)(raft_serverpb_RaftMessage *rm, struct tkv_arena *a))
{
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    raft_serverpb_RaftMessage rm = {0};
    rm.region_id = 7;
    rm.has_from_peer = rm.has_to_peer = rm.has_region_epoch = rm.has_message = true;
    rm.from_peer = (metapb_Peer){.id = 11, .store_id = 1};
    rm.to_peer = (metapb_Peer){.id = 12, .store_id = 2};
    rm.region_epoch = (metapb_RegionEpoch){.conf_ver = 1, .version = 1};
    rm.message.msg_type = eraftpb_MessageType_MsgHeartbeat;
    rm.message.from = 11;
    rm.message.to = 12;
    rm.message.term = 3;
    if (breakit)
        breakit(&rm, &a);
    struct tkv_slice enc;
    cr_assert_eq(tkv_pb_encode_arena(raft_serverpb_RaftMessage_fields, &rm, &a, 0, &enc), 0);
    struct tkv_rs_msg out;
    int r = tkv_transport_decode(enc, 2, &a, &out);
    if (r == TKV_TRANSPORT_OK)
        tkv_rs_msg_release(&out);
    else
        for (size_t i = 0; i < sizeof(out); i++)
            cr_assert_eq(((uint8_t *)&out)[i], 0, "a refused message must come back zeroed");
    tkv_arena_close(&a);
    return r;
}

static void b_store(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->to_peer.store_id = 3;
}
static void b_epoch(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->has_region_epoch = false;
}
static void b_from(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->has_from_peer = false;
}
static void b_region(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->region_id = 0;
}
static void b_message(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->has_message = false;
}
static void b_to_mismatch(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->message.to = 13;
}
static void b_hup(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->message.msg_type = eraftpb_MessageType_MsgHup;
}
static void b_propose(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->message.msg_type = eraftpb_MessageType_MsgPropose;
}
static void b_unknown_type(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->message.msg_type = (eraftpb_MessageType)99;
}
static void b_context(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->message.context = TKV_SLICE("abc", 3);
}
static void b_key(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    uint8_t *k = tkv_arena_calloc(a, 1, TKV_RS_BOUND_MAX + 1);
    rm->start_key = TKV_SLICE(k, TKV_RS_BOUND_MAX + 1);
}
static void b_snap_on_heartbeat(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->message.has_snapshot = true;
    rm->message.snapshot.has_metadata = true;
    rm->message.snapshot.metadata.index = 10;
}
static void b_snapshot_without_snapshot(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    (void)a;
    rm->message.msg_type = eraftpb_MessageType_MsgSnapshot;
}
static void b_voters(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    rm->message.msg_type = eraftpb_MessageType_MsgSnapshot;
    b_snap_on_heartbeat(rm, a);
    uint64_t *v = tkv_arena_calloc(a, TKV_RAFT_MAX_VOTERS + 1, sizeof(uint64_t));
    for (size_t i = 0; i <= TKV_RAFT_MAX_VOTERS; i++)
        v[i] = i + 1;
    rm->message.snapshot.metadata.conf_state.nodes.items = v;
    rm->message.snapshot.metadata.conf_state.nodes.n = TKV_RAFT_MAX_VOTERS + 1;
    rm->message.snapshot.metadata.has_conf_state = true;
}
static void b_entry_type(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    rm->message.msg_type = eraftpb_MessageType_MsgAppend;
    eraftpb_Entry *e = tkv_arena_calloc(a, 1, sizeof(*e));
    e->entry_type = (eraftpb_EntryType)5;
    e->index = 1;
    rm->message.entries.items = e;
    rm->message.entries.n = 1;
}
static void b_many_entries(raft_serverpb_RaftMessage *rm, struct tkv_arena *a)
{
    rm->message.msg_type = eraftpb_MessageType_MsgAppend;
    size_t n = TKV_TRANSPORT_MAX_ENTRIES + 1;
    eraftpb_Entry *e = tkv_arena_calloc(a, n, sizeof(*e));
    /* 40 bytes of data each, as real commands have (tiny entries would hit
     * the pb layer's decode-amplification bound first) */
    static const uint8_t data[40];
    for (size_t i = 0; i < n; i++) {
        e[i].index = i + 1;
        e[i].data = TKV_SLICE(data, sizeof(data));
    }
    rm->message.entries.items = e;
    rm->message.entries.n = n;
}

Test(transport_codec, bad_messages_are_refused_with_their_reason)
{
    cr_assert_eq(decode_broken(NULL), TKV_TRANSPORT_OK, "the baseline must be accepted");
    cr_assert_eq(decode_broken(b_store), TKV_TRANSPORT_REJECT_WRONG_STORE);
    cr_assert_eq(decode_broken(b_epoch), TKV_TRANSPORT_REJECT_MISSING);
    cr_assert_eq(decode_broken(b_from), TKV_TRANSPORT_REJECT_MISSING);
    cr_assert_eq(decode_broken(b_region), TKV_TRANSPORT_REJECT_MISSING);
    cr_assert_eq(decode_broken(b_message), TKV_TRANSPORT_REJECT_MISSING);
    cr_assert_eq(decode_broken(b_to_mismatch), TKV_TRANSPORT_REJECT_MISMATCH);
    cr_assert_eq(decode_broken(b_hup), TKV_TRANSPORT_REJECT_BAD_TYPE);
    cr_assert_eq(decode_broken(b_propose), TKV_TRANSPORT_REJECT_BAD_TYPE);
    cr_assert_eq(decode_broken(b_unknown_type), TKV_TRANSPORT_REJECT_BAD_TYPE);
    cr_assert_eq(decode_broken(b_context), TKV_TRANSPORT_REJECT_MALFORMED);
    cr_assert_eq(decode_broken(b_key), TKV_TRANSPORT_REJECT_TOO_BIG);
    cr_assert_eq(decode_broken(b_snap_on_heartbeat), TKV_TRANSPORT_REJECT_MALFORMED);
    cr_assert_eq(decode_broken(b_snapshot_without_snapshot), TKV_TRANSPORT_REJECT_MALFORMED);
    cr_assert_eq(decode_broken(b_voters), TKV_TRANSPORT_REJECT_TOO_BIG);
    cr_assert_eq(decode_broken(b_entry_type), TKV_TRANSPORT_REJECT_MALFORMED);
    int many = decode_broken(b_many_entries);
    cr_assert_eq(many, TKV_TRANSPORT_REJECT_TOO_BIG, "%d entries: %s", TKV_TRANSPORT_MAX_ENTRIES + 1, tkv_transport_reject_name(many));
}

Test(transport_codec, garbage_and_truncation_never_crash)
{
    struct tkv_rs_msg m = base_msg(TKV_RAFT_MSG_APPEND);
    struct tkv_raft_entry e = {.term = 9, .index = 101, .data = buf_of("some entry data")};
    m.msg.entries = &e;
    m.msg.n_entries = 1;
    m.msg.ctx = 42;
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    struct tkv_slice enc;
    cr_assert_eq(tkv_transport_encode(&m, &a, &enc), 0);
    uint8_t copy[512];
    cr_assert_lt(enc.len, sizeof(copy));
    memcpy(copy, enc.ptr, enc.len);
    size_t accepted = 0;
    /* every truncation, and every single-byte corruption */
    for (size_t n = 0; n < enc.len; n++) {
        struct tkv_rs_msg out;
        int r = tkv_transport_decode(TKV_SLICE(copy, n), 2, &a, &out);
        if (r == TKV_TRANSPORT_OK) {
            accepted++;
            tkv_rs_msg_release(&out);
        }
    }
    for (size_t i = 0; i < enc.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            copy[i] ^= (uint8_t)(1u << bit);
            struct tkv_rs_msg out;
            if (tkv_transport_decode(TKV_SLICE(copy, enc.len), 2, &a, &out) == TKV_TRANSPORT_OK)
                tkv_rs_msg_release(&out);
            copy[i] ^= (uint8_t)(1u << bit);
            tkv_arena_reset(&a);
        }
    }
    cr_assert_lt(accepted, enc.len, "truncated messages cannot all be accepted");
    struct tkv_rs_msg out;
    cr_assert_eq(tkv_transport_decode(TKV_SLICE("\xff\xff\xff", 3), 2, &a, &out),
                 TKV_TRANSPORT_REJECT_MALFORMED);
    tkv_raft_buf_unref(e.data);
    tkv_arena_close(&a);
}
