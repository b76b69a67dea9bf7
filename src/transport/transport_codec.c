/* tkv_rs_msg <-> raft_serverpb.RaftMessage. The decoder is the first line
 * of defence against another store's bytes: everything is bounded and
 * checked before the raftstore sees it (TINYKV-API.md 2.14: no epoch or
 * another store's address is a drop). */
#include <string.h>

#include "eraftpb.pb.h"
#include "raft_serverpb.pb.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/pb.h"
#include "tkv/transport.h"

static const char *const reject_names[TKV_TRANSPORT_REJECT_COUNT] = {
    [TKV_TRANSPORT_OK] = "ok",
    [TKV_TRANSPORT_REJECT_MALFORMED] = "malformed",
    [TKV_TRANSPORT_REJECT_MISSING] = "missing_field",
    [TKV_TRANSPORT_REJECT_WRONG_STORE] = "wrong_store",
    [TKV_TRANSPORT_REJECT_MISMATCH] = "peer_mismatch",
    [TKV_TRANSPORT_REJECT_BAD_TYPE] = "bad_type",
    [TKV_TRANSPORT_REJECT_TOO_BIG] = "too_big",
    [TKV_TRANSPORT_REJECT_SNAP_ON_RAFT] = "snapshot_on_raft_stream",
    [TKV_TRANSPORT_REJECT_SNAP_CHUNK] = "snapshot_bad_chunk",
    [TKV_TRANSPORT_REJECT_SNAP_CHECKSUM] = "snapshot_checksum",
    [TKV_TRANSPORT_REJECT_SNAP_BUSY] = "snapshot_busy",
};

const char *tkv_transport_reject_name(int reason)
{
    if (reason < 0 || reason >= TKV_TRANSPORT_REJECT_COUNT)
        return "unknown";
    return reject_names[reason];
}

/* Our message types are eraftpb's (TinyKV) up to 12; PreVote and ReadIndex
 * are ours (13..16) and travel with TiKV's numbers. 0 = not sendable. */
static uint32_t type_to_wire(uint32_t t, bool *ok)
{
    *ok = true;
    switch (t) {
    case TKV_RAFT_MSG_PRE_VOTE:
        return 17;
    case TKV_RAFT_MSG_PRE_VOTE_RESP:
        return 18;
    case TKV_RAFT_MSG_READ_INDEX:
        return 15;
    case TKV_RAFT_MSG_READ_INDEX_RESP:
        return 16;
    default:
        if (t <= TKV_RAFT_MSG_TIMEOUT_NOW && t != 10)
            return t;
        *ok = false;
        return 0;
    }
}

/* Types another store may send us: not the local-only HUP / BEAT / PROPOSE
 * (TINYKV-API.md 1.5). TRANSFER_LEADER is forwarded to the leader. */
static bool type_from_wire(uint32_t w, uint32_t *t)
{
    switch (w) {
    case 17:
        *t = TKV_RAFT_MSG_PRE_VOTE;
        return true;
    case 18:
        *t = TKV_RAFT_MSG_PRE_VOTE_RESP;
        return true;
    case 15:
        *t = TKV_RAFT_MSG_READ_INDEX;
        return true;
    case 16:
        *t = TKV_RAFT_MSG_READ_INDEX_RESP;
        return true;
    case TKV_RAFT_MSG_APPEND:
    case TKV_RAFT_MSG_APPEND_RESP:
    case TKV_RAFT_MSG_VOTE:
    case TKV_RAFT_MSG_VOTE_RESP:
    case TKV_RAFT_MSG_SNAPSHOT:
    case TKV_RAFT_MSG_HEARTBEAT:
    case TKV_RAFT_MSG_HEARTBEAT_RESP:
    case TKV_RAFT_MSG_TRANSFER_LEADER:
    case TKV_RAFT_MSG_TIMEOUT_NOW:
        *t = w;
        return true;
    default:
        return false;
    }
}

static struct tkv_slice buf_slice(const struct tkv_raft_buf *b)
{
    return b ? TKV_SLICE(b->data, b->len) : TKV_SLICE(NULL, 0);
}

int tkv_transport_encode(const struct tkv_rs_msg *m, struct tkv_arena *a, struct tkv_slice *out)
{
    bool ok;
    uint32_t wtype = type_to_wire(m->msg.type, &ok);
    if (!ok)
        return TKV_EINVAL;
    raft_serverpb_RaftMessage rm = {0};
    rm.region_id = m->region_id;
    rm.has_from_peer = rm.has_to_peer = rm.has_region_epoch = rm.has_message = true;
    rm.from_peer = (metapb_Peer){.id = m->from.id, .store_id = m->from.store_id};
    rm.to_peer = (metapb_Peer){.id = m->to.id, .store_id = m->to.store_id};
    rm.region_epoch =
        (metapb_RegionEpoch){.conf_ver = m->epoch.conf_ver, .version = m->epoch.version};
    rm.is_tombstone = m->is_tombstone;
    eraftpb_Message *em = &rm.message;
    const struct tkv_raft_msg *rmsg = &m->msg;
    em->msg_type = (eraftpb_MessageType)wtype;
    em->to = rmsg->to;
    em->from = rmsg->from;
    em->term = rmsg->term;
    em->log_term = rmsg->log_term;
    em->index = rmsg->index;
    em->commit = rmsg->commit;
    em->reject = rmsg->reject;
    em->reject_hint = rmsg->reject_hint;
    uint8_t *ctx = NULL;
    if (rmsg->ctx) {
        ctx = tkv_arena_alloc(a, 8);
        tkv_codec_put_u64be(ctx, rmsg->ctx);
        em->context = TKV_SLICE(ctx, 8);
    }
    if (rmsg->n_entries) {
        eraftpb_Entry *es = tkv_arena_calloc(a, rmsg->n_entries, sizeof(*es));
        for (size_t i = 0; i < rmsg->n_entries; i++) {
            const struct tkv_raft_entry *e = &rmsg->entries[i];
            es[i].entry_type = (eraftpb_EntryType)e->type;
            es[i].term = e->term;
            es[i].index = e->index;
            es[i].data = buf_slice(e->data);
        }
        em->entries.items = es;
        em->entries.n = rmsg->n_entries;
    }
    if (rmsg->snapshot) {
        const struct tkv_raft_snapshot *sn = rmsg->snapshot;
        em->has_snapshot = true;
        em->snapshot.data = buf_slice(sn->data);
        em->snapshot.has_metadata = true;
        em->snapshot.metadata.index = sn->index;
        em->snapshot.metadata.term = sn->term;
        em->snapshot.metadata.has_conf_state = true;
        em->snapshot.metadata.conf_state.nodes.items = (uint64_t *)sn->conf_state.voters;
        em->snapshot.metadata.conf_state.nodes.n = sn->conf_state.n_voters;
    }
    return tkv_pb_encode_arena(raft_serverpb_RaftMessage_fields, &rm, a, 0, out);
}

static void release_partial(struct tkv_rs_msg *m)
{
    tkv_rs_msg_release(m); /* handles half-built messages: n_entries counts copies made */
}

int tkv_transport_decode(struct tkv_slice bytes, uint64_t my_store, struct tkv_arena *scratch,
                         struct tkv_rs_msg *out)
{
    memset(out, 0, sizeof(*out));
    raft_serverpb_RaftMessage rm;
    if (tkv_pb_decode(raft_serverpb_RaftMessage_fields, &rm, bytes.ptr, bytes.len, scratch) < 0)
        return TKV_TRANSPORT_REJECT_MALFORMED;
    if (rm.region_id == 0 || !rm.has_from_peer || !rm.has_to_peer || !rm.has_region_epoch ||
        !rm.has_message || rm.to_peer.id == 0 || rm.from_peer.id == 0 ||
        rm.from_peer.store_id == 0 || rm.to_peer.store_id == 0)
        return TKV_TRANSPORT_REJECT_MISSING;
    if (my_store && rm.to_peer.store_id != my_store)
        return TKV_TRANSPORT_REJECT_WRONG_STORE;
    const eraftpb_Message *em = &rm.message;
    if (em->to != rm.to_peer.id || em->from != rm.from_peer.id)
        return TKV_TRANSPORT_REJECT_MISMATCH;
    uint32_t type;
    if (!type_from_wire((uint32_t)em->msg_type, &type))
        return TKV_TRANSPORT_REJECT_BAD_TYPE;
    if (rm.start_key.len > TKV_RS_BOUND_MAX || rm.end_key.len > TKV_RS_BOUND_MAX ||
        em->entries.n > TKV_TRANSPORT_MAX_ENTRIES)
        return TKV_TRANSPORT_REJECT_TOO_BIG;
    if (em->context.len != 0 && em->context.len != 8)
        return TKV_TRANSPORT_REJECT_MALFORMED;
    /* a snapshot rides only on MsgSnapshot, and MsgSnapshot needs one */
    if (em->has_snapshot != (type == TKV_RAFT_MSG_SNAPSHOT))
        return TKV_TRANSPORT_REJECT_MALFORMED;
    if (em->has_snapshot) {
        const eraftpb_SnapshotMetadata *md = &em->snapshot.metadata;
        if (!em->snapshot.has_metadata || md->index == 0)
            return TKV_TRANSPORT_REJECT_MALFORMED;
        if (md->conf_state.nodes.n > TKV_RAFT_MAX_VOTERS)
            return TKV_TRANSPORT_REJECT_TOO_BIG;
    }
    for (size_t i = 0; i < em->entries.n; i++) {
        uint32_t et = (uint32_t)em->entries.items[i].entry_type;
        if (et != TKV_RAFT_ENTRY_NORMAL && et != TKV_RAFT_ENTRY_CONF_CHANGE)
            return TKV_TRANSPORT_REJECT_MALFORMED;
    }

    out->region_id = rm.region_id;
    out->from = (struct tkv_rs_peer){.id = rm.from_peer.id, .store_id = rm.from_peer.store_id};
    out->to = (struct tkv_rs_peer){.id = rm.to_peer.id, .store_id = rm.to_peer.store_id};
    out->epoch = (struct tkv_rs_epoch){.conf_ver = rm.region_epoch.conf_ver,
                                       .version = rm.region_epoch.version};
    out->is_tombstone = rm.is_tombstone;
    struct tkv_raft_msg *m = &out->msg;
    m->type = type;
    m->to = em->to;
    m->from = em->from;
    m->term = em->term;
    m->log_term = em->log_term;
    m->index = em->index;
    m->commit = em->commit;
    m->reject = em->reject;
    m->reject_hint = em->reject_hint;
    m->ctx = em->context.len == 8 ? tkv_codec_get_u64be(em->context.ptr) : 0;
    /* Payloads are copied: raft keeps entries past this call (its unstable
     * log), while the bytes belong to the rpc layer's receive buffer. */
    if (em->entries.n) {
        m->entries = tkv_calloc(em->entries.n, sizeof(*m->entries));
        if (!m->entries) {
            memset(out, 0, sizeof(*out));
            return TKV_TRANSPORT_REJECT_TOO_BIG;
        }
        for (size_t i = 0; i < em->entries.n; i++) {
            const eraftpb_Entry *we = &em->entries.items[i];
            struct tkv_raft_entry *e = &m->entries[i];
            e->type = (uint32_t)we->entry_type;
            e->term = we->term;
            e->index = we->index;
            if (we->data.len && tkv_raft_buf_copy(we->data.ptr, we->data.len, &e->data) < 0) {
                release_partial(out);
                return TKV_TRANSPORT_REJECT_TOO_BIG;
            }
            m->n_entries = i + 1;
        }
    }
    if (em->has_snapshot) {
        const eraftpb_Snapshot *ws = &em->snapshot;
        m->snapshot = tkv_calloc(1, sizeof(*m->snapshot));
        if (!m->snapshot) {
            release_partial(out);
            return TKV_TRANSPORT_REJECT_TOO_BIG;
        }
        m->snapshot->index = ws->metadata.index;
        m->snapshot->term = ws->metadata.term;
        m->snapshot->conf_state.n_voters = (uint32_t)ws->metadata.conf_state.nodes.n;
        for (size_t i = 0; i < ws->metadata.conf_state.nodes.n; i++)
            m->snapshot->conf_state.voters[i] = ws->metadata.conf_state.nodes.items[i];
        if (ws->data.len &&
            tkv_raft_buf_copy(ws->data.ptr, ws->data.len, &m->snapshot->data) < 0) {
            release_partial(out);
            return TKV_TRANSPORT_REJECT_TOO_BIG;
        }
    }
    return TKV_TRANSPORT_OK;
}
