/* Cross-codec tests: bytes written by Debian's python3-protobuf (a second,
 * independent encoder, tests/unit/proto/pyfixtures.py) decode in C with
 * every field checked; then C re-encodes the decoded struct into c-out/,
 * and the ctest test_unit_proto_pycheck (run after this one) has Python
 * parse every file and compare it with its own message, byte for byte. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "coprocessor.pb.h"
#include "eraftpb.pb.h"
#include "errorpb.pb.h"
#include "kvrpcpb.pb.h"
#include "metapb.pb.h"
#include "raft_cmdpb.pb.h"
#include "raft_serverpb.pb.h"
#include "schedulerpb.pb.h"
#include "tkv/err.h"
#include "tkv/pb.h"

static struct tkv_arena arena;

static void setup(void)
{
    tkv_arena_init(&arena, 0);
}

static void teardown(void)
{
    tkv_arena_close(&arena);
}

TestSuite(proto_py, .init = setup, .fini = teardown);

/* Fixture bytes live in the arena for the whole test (decoded slices borrow them). */
static const uint8_t *load(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.bin", TKV_FIXTURE_DIR, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "missing fixture %s (built by pyfixtures.py write)", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = tkv_arena_alloc(&arena, (size_t)n);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void decode(const char *name, const pb_msgdesc_t *fields, void *msg)
{
    size_t len;
    const uint8_t *buf = load(name, &len);
    const char *why = NULL;
    int rv = tkv_pb_decode_ex(fields, msg, buf, len, &arena, &why);
    cr_assert_eq(rv, 0, "%s: decode as %s failed: %s (%s)", name, tkv_pb_msg_name(fields),
                 tkv_strerror(rv), why ? why : "");
}

/* Remove the previous run's encodings so the Python check never sees stale
 * files (it requires one per fixture). Runs once in the runner process. */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    DIR *d = opendir(TKV_C_OUT_DIR);
    if (!d)
        return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".c.bin")) {
            snprintf(path, sizeof(path), "%s/%s", TKV_C_OUT_DIR, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

/* C encodes msg into c-out/<name>.c.bin for the Python check. */
static void python_agrees(const char *name, const pb_msgdesc_t *fields, const void *msg)
{
    struct tkv_slice enc;
    cr_assert_eq(tkv_pb_encode_arena(fields, msg, &arena, 0, &enc), 0, "%s: encode failed", name);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.c.bin", TKV_C_OUT_DIR, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(enc.ptr, 1, enc.len, f), enc.len);
    fclose(f);
}

#define SEQ(s, lit)                                                                          \
    cr_assert((s).len == sizeof(lit) - 1 && memcmp((s).ptr, lit, sizeof(lit) - 1) == 0,      \
              "%s: got \"%.*s\" (%zu bytes), want \"%s\"", #s, (int)(s).len, (const char *)(s).ptr, \
              (s).len, lit)

static void check_ctx(const kvrpcpb_Context *c)
{
    cr_assert_eq(c->region_id, 2);
    cr_assert(c->has_region_epoch);
    cr_assert_eq(c->region_epoch.conf_ver, 1);
    cr_assert_eq(c->region_epoch.version, 3);
    cr_assert(c->has_peer);
    cr_assert_eq(c->peer.id, 4);
    cr_assert_eq(c->peer.store_id, 5);
    cr_assert_eq(c->term, 6);
}

static void check_region(const metapb_Region *r, uint64_t id, const char *start, const char *end,
                         size_t n_peers)
{
    cr_assert_eq(r->id, id);
    cr_assert(tkv_pb_eq_str(r->start_key, start), "region %lu start", (unsigned long)id);
    cr_assert(tkv_pb_eq_str(r->end_key, end), "region %lu end", (unsigned long)id);
    cr_assert(r->has_region_epoch);
    cr_assert_eq(r->region_epoch.conf_ver, id + 1);
    cr_assert_eq(r->region_epoch.version, id + 2);
    cr_assert_eq(r->peers.n, n_peers, "region %lu: %zu peers", (unsigned long)id, r->peers.n);
}

Test(proto_py, empty_present_stale_command)
{
    kvrpcpb_RawGetResponse m;
    decode("raw_get_resp_stale", kvrpcpb_RawGetResponse_fields, &m);
    cr_assert(m.has_region_error);
    cr_assert(m.region_error.has_stale_command, "empty StaleCommand must be present");
    cr_assert_not(m.region_error.has_not_leader);
    cr_assert_not(m.region_error.has_epoch_not_match);
    cr_assert_eq(m.region_error.message.len, 0);
    cr_assert_not(m.not_found);
    python_agrees("raw_get_resp_stale", kvrpcpb_RawGetResponse_fields, &m);
}

Test(proto_py, done_is_empty)
{
    raft_serverpb_Done m;
    decode("done", raft_serverpb_Done_fields, &m);
    python_agrees("done", raft_serverpb_Done_fields, &m);
}

Test(proto_py, error_every_variant)
{
    errorpb_Error m;
    decode("error_full", errorpb_Error_fields, &m);
    SEQ(m.message, "not leader: try 7");
    cr_assert(m.has_not_leader);
    cr_assert_eq(m.not_leader.region_id, 9);
    cr_assert(m.not_leader.has_leader);
    cr_assert_eq(m.not_leader.leader.id, 7);
    cr_assert_eq(m.not_leader.leader.store_id, 3);
    cr_assert(m.has_region_not_found);
    cr_assert_eq(m.region_not_found.region_id, 11);
    cr_assert(m.has_key_not_in_region);
    SEQ(m.key_not_in_region.key, "k\0y");
    cr_assert_eq(m.key_not_in_region.region_id, 12);
    SEQ(m.key_not_in_region.start_key, "a");
    cr_assert_eq(m.key_not_in_region.end_key.len, 0);
    cr_assert(m.has_store_not_match);
    cr_assert_eq(m.store_not_match.request_store_id, 1);
    cr_assert_eq(m.store_not_match.actual_store_id, 2);
    cr_assert_not(m.has_stale_command);
    cr_assert(m.has_epoch_not_match);
    cr_assert_eq(m.epoch_not_match.current_regions.n, 3);
    const metapb_Region *r = m.epoch_not_match.current_regions.items;
    check_region(&r[0], 20, "", "m", 3);
    for (uint64_t i = 0; i < 3; i++) {
        cr_assert_eq(r[0].peers.items[i].id, 21 + i);
        cr_assert_eq(r[0].peers.items[i].store_id, 1 + i);
    }
    cr_assert_eq(r[1].id, 0, "empty Region element");
    cr_assert_not(r[1].has_region_epoch);
    cr_assert_eq(r[1].peers.n, 0);
    check_region(&r[2], 30, "m", "", 0);
    python_agrees("error_full", errorpb_Error_fields, &m);
}

Test(proto_py, not_leader_without_leader)
{
    errorpb_Error m;
    decode("not_leader_unknown", errorpb_Error_fields, &m);
    cr_assert(m.has_not_leader);
    cr_assert_eq(m.not_leader.region_id, 5);
    cr_assert_not(m.not_leader.has_leader, "absent leader must stay absent");
    python_agrees("not_leader_unknown", errorpb_Error_fields, &m);
}

Test(proto_py, raw_put_3mib_value_zero_copy)
{
    size_t len;
    const uint8_t *buf = load("raw_put_big", &len);
    kvrpcpb_RawPutRequest m;
    cr_assert_eq(tkv_pb_decode(kvrpcpb_RawPutRequest_fields, &m, buf, len, &arena), 0);
    check_ctx(&m.context);
    SEQ(m.key, "big-key");
    SEQ(m.cf, "default");
    cr_assert_eq(m.value.len, 3 * 1024 * 1024 + 5);
    cr_assert(m.value.ptr > buf && m.value.ptr + m.value.len <= buf + len, "value is not zero-copy");
    for (size_t i = 0; i < m.value.len; i++)
        if (m.value.ptr[i] != (uint8_t)((i * 7 + 3) & 0xff))
            cr_assert_fail("value byte %zu differs", i);
    python_agrees("raw_put_big", kvrpcpb_RawPutRequest_fields, &m);
}

Test(proto_py, raw_scan_response_300_pairs)
{
    kvrpcpb_RawScanResponse m;
    decode("raw_scan_resp", kvrpcpb_RawScanResponse_fields, &m);
    cr_assert_not(m.has_region_error);
    cr_assert_eq(m.error.len, 0);
    cr_assert_eq(m.kvs.n, 300);
    for (size_t i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof(k), "key%04zu", i);
        const kvrpcpb_KvPair *p = &m.kvs.items[i];
        cr_assert(p->key.len == 7 && memcmp(p->key.ptr, k, 7) == 0, "pair %zu key", i);
        cr_assert_eq(p->value.len, i % 17, "pair %zu value length", i);
        cr_assert_eq(p->has_error, i == 7, "pair %zu has_error", i);
    }
    const kvrpcpb_KeyError *e = &m.kvs.items[7].error;
    cr_assert(e->has_locked);
    SEQ(e->locked.primary_lock, "pk");
    cr_assert_eq(e->locked.lock_version, 99);
    SEQ(e->locked.key, "key0007");
    cr_assert_eq(e->locked.lock_ttl, 3000);
    python_agrees("raw_scan_resp", kvrpcpb_RawScanResponse_fields, &m);
}

Test(proto_py, prewrite_request_and_response)
{
    kvrpcpb_PrewriteRequest m;
    decode("prewrite_req", kvrpcpb_PrewriteRequest_fields, &m);
    check_ctx(&m.context);
    SEQ(m.primary_lock, "p");
    cr_assert_eq(m.start_version, (1ull << 62) + 5);
    cr_assert_eq(m.lock_ttl, 3000);
    cr_assert_eq(m.mutations.n, 4);
    const kvrpcpb_Mutation *mu = m.mutations.items;
    cr_assert_eq(mu[0].op, kvrpcpb_Op_Put);
    SEQ(mu[0].key, "p");
    SEQ(mu[0].value, "pv");
    cr_assert_eq(mu[1].op, kvrpcpb_Op_Del);
    SEQ(mu[1].key, "d");
    cr_assert_eq(mu[1].value.len, 0);
    cr_assert_eq(mu[2].op, kvrpcpb_Op_Lock);
    cr_assert_eq(mu[3].op, kvrpcpb_Op_Rollback);
    cr_assert_eq(mu[3].key.len, 0);
    python_agrees("prewrite_req", kvrpcpb_PrewriteRequest_fields, &m);

    kvrpcpb_PrewriteResponse r;
    decode("prewrite_resp", kvrpcpb_PrewriteResponse_fields, &r);
    cr_assert_eq(r.errors.n, 3);
    cr_assert(r.errors.items[0].has_conflict);
    cr_assert_eq(r.errors.items[0].conflict.start_ts, 1);
    cr_assert_eq(r.errors.items[0].conflict.conflict_ts, 2);
    SEQ(r.errors.items[0].conflict.key, "k");
    SEQ(r.errors.items[0].conflict.primary, "p");
    SEQ(r.errors.items[1].retryable, "retry me");
    cr_assert_not(r.errors.items[2].has_locked);
    cr_assert_not(r.errors.items[2].has_conflict);
    python_agrees("prewrite_resp", kvrpcpb_PrewriteResponse_fields, &r);
}

Test(proto_py, commit_request_repeated_bytes)
{
    kvrpcpb_CommitRequest m;
    decode("commit_req", kvrpcpb_CommitRequest_fields, &m);
    check_ctx(&m.context);
    cr_assert_eq(m.start_version, 10);
    cr_assert_eq(m.commit_version, 11);
    cr_assert_eq(m.keys.n, 3);
    SEQ(m.keys.items[0], "a");
    cr_assert_eq(m.keys.items[1].len, 0);
    SEQ(m.keys.items[2], "\xff\x00");
    python_agrees("commit_req", kvrpcpb_CommitRequest_fields, &m);

    kvrpcpb_CheckTxnStatusResponse c;
    decode("check_txn_resp", kvrpcpb_CheckTxnStatusResponse_fields, &c);
    cr_assert_eq(c.action, kvrpcpb_Action_LockNotExistRollback);
    cr_assert_eq(c.lock_ttl, 0);
    cr_assert_eq(c.commit_version, 0);
    python_agrees("check_txn_resp", kvrpcpb_CheckTxnStatusResponse_fields, &c);
}

Test(proto_py, eraft_message_entries_and_snapshot)
{
    eraftpb_Message m;
    decode("eraft_message", eraftpb_Message_fields, &m);
    cr_assert_eq(m.msg_type, eraftpb_MessageType_MsgAppend);
    cr_assert_eq(m.to, 2);
    cr_assert_eq(m.from, 1);
    cr_assert_eq(m.term, 5);
    cr_assert_eq(m.log_term, 4);
    cr_assert_eq(m.index, 100);
    cr_assert_eq(m.commit, 99);
    cr_assert(m.reject);
    cr_assert_eq(m.entries.n, 3);
    const eraftpb_Entry *e = m.entries.items;
    cr_assert_eq(e[0].entry_type, eraftpb_EntryType_EntryNormal);
    cr_assert_eq(e[0].term, 5);
    cr_assert_eq(e[0].index, 101);
    cr_assert_eq(e[0].data.len, 70000, "entry larger than nanopb's 16-bit sizes");
    for (size_t i = 0; i < e[0].data.len; i++)
        if (e[0].data.ptr[i] != 'x')
            cr_assert_fail("entry data byte %zu", i);
    cr_assert_eq(e[1].entry_type, eraftpb_EntryType_EntryConfChange);
    cr_assert_eq(e[1].index, 102);
    cr_assert_eq(e[1].data.len, 0);
    cr_assert_eq(e[2].term, 0);
    cr_assert(m.has_snapshot);
    SEQ(m.snapshot.data, "snapdata");
    cr_assert(m.snapshot.has_metadata);
    cr_assert_eq(m.snapshot.metadata.index, 50);
    cr_assert_eq(m.snapshot.metadata.term, 3);
    cr_assert(m.snapshot.metadata.has_conf_state);
    cr_assert_eq(m.snapshot.metadata.conf_state.nodes.n, 4);
    const uint64_t *n = m.snapshot.metadata.conf_state.nodes.items;
    cr_assert(n[0] == 1 && n[1] == 2 && n[2] == 3 && n[3] == UINT64_MAX);
    python_agrees("eraft_message", eraftpb_Message_fields, &m);
}

Test(proto_py, unknown_enum_value_is_kept)
{
    eraftpb_Message m;
    decode("unknown_enum", eraftpb_Message_fields, &m);
    cr_assert_eq((int)m.msg_type, 99);
    cr_assert_eq(m.term, 1);
    python_agrees("unknown_enum", eraftpb_Message_fields, &m);
}

Test(proto_py, repeated_uint64_packed_unpacked_mixed)
{
    eraftpb_ConfState m;
    decode("conf_state_packed", eraftpb_ConfState_fields, &m);
    cr_assert_eq(m.nodes.n, 3);
    cr_assert(m.nodes.items[0] == 1 && m.nodes.items[1] == 300 && m.nodes.items[2] == 1ull << 40);
    python_agrees("conf_state_packed", eraftpb_ConfState_fields, &m);

    decode("conf_state_unpacked", eraftpb_ConfState_fields, &m);
    static const uint64_t want[] = {1, 300, 5, 1ull << 40, 7};
    cr_assert_eq(m.nodes.n, 5, "unpacked + packed + unpacked: got %zu", m.nodes.n);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(m.nodes.items[i], want[i], "node %zu", i);

    decode("conf_state_empty_packed", eraftpb_ConfState_fields, &m);
    cr_assert_eq(m.nodes.n, 0);
}

Test(proto_py, unknown_fields_are_skipped)
{
    kvrpcpb_RawPutRequest m;
    decode("raw_put_unknown", kvrpcpb_RawPutRequest_fields, &m);
    cr_assert(m.has_context);
    cr_assert_eq(m.context.region_id, 2);
    cr_assert_not(m.context.has_peer);
    SEQ(m.key, "k");
    SEQ(m.value, "v");
    SEQ(m.cf, "lock");
}

Test(proto_py, split_submessage_merges)
{
    kvrpcpb_RawGetRequest m;
    decode("context_merged", kvrpcpb_RawGetRequest_fields, &m);
    cr_assert(m.has_context);
    cr_assert_eq(m.context.region_id, 5);
    cr_assert_eq(m.context.term, 9);
}

Test(proto_py, raft_cmd_request_every_command)
{
    raft_cmdpb_RaftCmdRequest m;
    decode("raft_cmd_req", raft_cmdpb_RaftCmdRequest_fields, &m);
    cr_assert(m.has_header);
    cr_assert_eq(m.header.region_id, 3);
    cr_assert(m.header.has_peer && m.header.peer.id == 4 && m.header.peer.store_id == 5);
    cr_assert(m.header.has_region_epoch && m.header.region_epoch.conf_ver == 6 &&
              m.header.region_epoch.version == 7);
    cr_assert_eq(m.header.term, 8);
    cr_assert_eq(m.requests.n, 4);
    const raft_cmdpb_Request *r = m.requests.items;
    cr_assert_eq(r[0].cmd_type, raft_cmdpb_CmdType_Get);
    cr_assert(r[0].has_get);
    SEQ(r[0].get.cf, "lock");
    SEQ(r[0].get.key, "g");
    cr_assert_eq(r[1].cmd_type, raft_cmdpb_CmdType_Put);
    cr_assert(r[1].has_put);
    SEQ(r[1].put.cf, "default");
    SEQ(r[1].put.key, "p");
    SEQ(r[1].put.value, "v");
    cr_assert_eq(r[2].cmd_type, raft_cmdpb_CmdType_Delete);
    cr_assert(r[2].has_delete);
    SEQ(r[2].delete.cf, "write");
    SEQ(r[2].delete.key, "d");
    cr_assert_eq(r[3].cmd_type, raft_cmdpb_CmdType_Snap);
    cr_assert(r[3].has_snap, "empty SnapRequest must be present");
    cr_assert_not(r[3].has_get);
    cr_assert(m.has_admin_request);
    const raft_cmdpb_AdminRequest *a = &m.admin_request;
    cr_assert_eq(a->cmd_type, raft_cmdpb_AdminCmdType_Split);
    cr_assert(a->has_split);
    SEQ(a->split.split_key, "m");
    cr_assert_eq(a->split.new_region_id, 100);
    cr_assert_eq(a->split.new_peer_ids.n, 3);
    for (uint64_t i = 0; i < 3; i++)
        cr_assert_eq(a->split.new_peer_ids.items[i], 101 + i);
    cr_assert(a->has_change_peer);
    cr_assert_eq(a->change_peer.change_type, eraftpb_ConfChangeType_RemoveNode);
    cr_assert(a->change_peer.has_peer && a->change_peer.peer.id == 9);
    cr_assert(a->has_compact_log && a->compact_log.compact_index == 10 &&
              a->compact_log.compact_term == 11);
    cr_assert(a->has_transfer_leader && a->transfer_leader.peer.store_id == 12);
    python_agrees("raft_cmd_req", raft_cmdpb_RaftCmdRequest_fields, &m);
}

Test(proto_py, raft_cmd_response_empty_messages)
{
    raft_cmdpb_RaftCmdResponse m;
    decode("raft_cmd_resp", raft_cmdpb_RaftCmdResponse_fields, &m);
    cr_assert(m.has_header && m.header.has_error && m.header.error.has_stale_command);
    SEQ(m.header.uuid, "0123456789abcdef");
    cr_assert_eq(m.header.current_term, 4);
    cr_assert_eq(m.responses.n, 2);
    cr_assert_eq(m.responses.items[0].cmd_type, raft_cmdpb_CmdType_Snap);
    cr_assert(m.responses.items[0].has_snap && m.responses.items[0].snap.has_region);
    check_region(&m.responses.items[0].snap.region, 1, "", "", 1);
    cr_assert(m.responses.items[1].has_put, "empty PutResponse must be present");
    cr_assert(m.has_admin_response);
    cr_assert_eq(m.admin_response.cmd_type, raft_cmdpb_AdminCmdType_Split);
    cr_assert(m.admin_response.has_split);
    cr_assert_eq(m.admin_response.split.regions.n, 2);
    check_region(&m.admin_response.split.regions.items[0], 1, "", "m", 1);
    check_region(&m.admin_response.split.regions.items[1], 2, "m", "", 1);
    cr_assert(m.admin_response.has_transfer_leader);
    cr_assert(m.admin_response.has_compact_log);
    cr_assert_not(m.admin_response.has_change_peer);
    python_agrees("raft_cmd_resp", raft_cmdpb_RaftCmdResponse_fields, &m);
}

Test(proto_py, raft_message_and_snapshot_chunk)
{
    raft_serverpb_RaftMessage m;
    decode("raft_message", raft_serverpb_RaftMessage_fields, &m);
    cr_assert_eq(m.region_id, 1);
    cr_assert(m.has_from_peer && m.from_peer.id == 1 && m.from_peer.store_id == 1);
    cr_assert(m.has_to_peer && m.to_peer.id == 2 && m.to_peer.store_id == 2);
    cr_assert(m.has_region_epoch && m.region_epoch.conf_ver == 1 && m.region_epoch.version == 1);
    cr_assert(m.is_tombstone);
    SEQ(m.start_key, "a");
    SEQ(m.end_key, "z");
    cr_assert(m.has_message);
    cr_assert_eq(m.message.msg_type, eraftpb_MessageType_MsgHeartbeat);
    python_agrees("raft_message", raft_serverpb_RaftMessage_fields, &m);

    raft_serverpb_SnapshotChunk c;
    decode("snapshot_chunk", raft_serverpb_SnapshotChunk_fields, &c);
    cr_assert_eq(c.data.len, 3000);
    cr_assert(c.has_message && c.message.region_id == 77);
    cr_assert(c.message.has_message && c.message.message.has_snapshot);
    /* Snapshot.data is itself an encoded RaftSnapshotData: decode the slice. */
    raft_serverpb_RaftSnapshotData sd;
    cr_assert_eq(tkv_pb_decode(raft_serverpb_RaftSnapshotData_fields, &sd,
                               c.message.message.snapshot.data.ptr,
                               c.message.message.snapshot.data.len, &arena),
                 0);
    cr_assert(sd.has_region);
    check_region(&sd.region, 77, "", "", 1);
    cr_assert_eq(sd.file_size, 123);
    cr_assert(sd.has_meta);
    cr_assert_eq(sd.meta.cf_files.n, 2);
    SEQ(sd.meta.cf_files.items[0].cf, "default");
    cr_assert_eq(sd.meta.cf_files.items[0].size, 1);
    cr_assert_eq(sd.meta.cf_files.items[0].checksum, 0xFFFFFFFFu);
    SEQ(sd.meta.cf_files.items[1].cf, "write");
    cr_assert_eq(sd.meta.cf_files.items[1].checksum, 7);
    python_agrees("snapshot_chunk", raft_serverpb_SnapshotChunk_fields, &c);

    raft_serverpb_RegionLocalState s;
    decode("raft_states", raft_serverpb_RegionLocalState_fields, &s);
    cr_assert_eq(s.state, raft_serverpb_PeerState_Tombstone);
    check_region(&s.region, 5, "a", "b", 1);
    cr_assert(s.region.peers.items[0].id == 6 && s.region.peers.items[0].store_id == 7);
    python_agrees("raft_states", raft_serverpb_RegionLocalState_fields, &s);
}

Test(proto_py, coprocessor_request_response)
{
    coprocessor_Request m;
    decode("cop_request", coprocessor_Request_fields, &m);
    check_ctx(&m.context);
    cr_assert_eq(m.tp, -104);
    SEQ(m.data, "dag");
    cr_assert_eq(m.start_ts, 1ull << 63);
    cr_assert_eq(m.ranges.n, 2);
    SEQ(m.ranges.items[0].start, "a");
    SEQ(m.ranges.items[0].end, "b");
    cr_assert_eq(m.ranges.items[1].start.len, 0);
    python_agrees("cop_request", coprocessor_Request_fields, &m);

    coprocessor_Response r;
    decode("cop_response", coprocessor_Response_fields, &r);
    SEQ(r.data, "d");
    cr_assert(r.has_region_error);
    SEQ(r.region_error.message, "m");
    cr_assert(r.has_locked && r.locked.lock_version == 1 && r.locked.lock_ttl == 2);
    SEQ(r.locked.primary_lock, "p");
    SEQ(r.locked.key, "k");
    SEQ(r.other_error, "oops");
    cr_assert(r.has_range);
    SEQ(r.range.start, "s");
    SEQ(r.range.end, "e");
    python_agrees("cop_response", coprocessor_Response_fields, &r);
}

Test(proto_py, scheduler_members_and_strings)
{
    schedulerpb_GetMembersResponse m;
    decode("members_resp", schedulerpb_GetMembersResponse_fields, &m);
    cr_assert(m.has_header);
    cr_assert_eq(m.header.cluster_id, 1ull << 60);
    cr_assert_eq(m.members.n, 2);
    const schedulerpb_Member *a = &m.members.items[0];
    SEQ(a->name, "pd-1");
    cr_assert_eq(a->member_id, 1);
    cr_assert_eq(a->leader_priority, -3);
    cr_assert_eq(a->peer_urls.n, 2);
    SEQ(a->peer_urls.items[0], "http://127.0.0.1:2380");
    cr_assert_eq(a->peer_urls.items[1].len, 0);
    cr_assert_eq(a->client_urls.n, 1);
    SEQ(a->client_urls.items[0], "http://127.0.0.1:2379");
    SEQ(m.members.items[1].name, "pd-2");
    cr_assert(m.has_leader);
    SEQ(m.leader.name, "pd-1");
    cr_assert_eq(m.leader.peer_urls.n, 2);
    cr_assert(m.has_etcd_leader, "empty etcd_leader must be present");
    cr_assert_eq(m.etcd_leader.name.len, 0);
    python_agrees("members_resp", schedulerpb_GetMembersResponse_fields, &m);
}

Test(proto_py, scheduler_store_heartbeat_stats)
{
    schedulerpb_StoreHeartbeatRequest m;
    decode("store_heartbeat", schedulerpb_StoreHeartbeatRequest_fields, &m);
    cr_assert(m.has_header && m.header.cluster_id == 1);
    cr_assert(m.has_stats);
    const schedulerpb_StoreStats *s = &m.stats;
    cr_assert_eq(s->store_id, 1);
    cr_assert_eq(s->capacity, 1ull << 40);
    cr_assert_eq(s->available, 1ull << 39);
    cr_assert_eq(s->region_count, 10);
    cr_assert_eq(s->sending_snap_count, 1);
    cr_assert_eq(s->receiving_snap_count, 2);
    cr_assert_eq(s->start_time, 0xFFFFFFFFu);
    cr_assert_eq(s->applying_snap_count, 3);
    cr_assert(s->is_busy);
    cr_assert_eq(s->used_size, 12345);
    cr_assert(s->has_interval && s->interval.start_timestamp == 1 && s->interval.end_timestamp == 2);
    cr_assert_eq(s->cpu_usages.n, 1);
    SEQ(s->cpu_usages.items[0].key, "cpu0");
    cr_assert_eq(s->cpu_usages.items[0].value, 50);
    cr_assert_eq(s->read_io_rates.n, 1);
    SEQ(s->read_io_rates.items[0].key, "sda");
    cr_assert_eq(s->write_io_rates.n, 1, "empty RecordPair element");
    cr_assert_eq(s->write_io_rates.items[0].key.len, 0);
    cr_assert_eq(s->op_latencies.n, 1);
    cr_assert_eq(s->op_latencies.items[0].value, 7);
    python_agrees("store_heartbeat", schedulerpb_StoreHeartbeatRequest_fields, &m);
}

Test(proto_py, scheduler_signed_and_misc)
{
    schedulerpb_ScanRegionsRequest q;
    decode("scan_regions_req", schedulerpb_ScanRegionsRequest_fields, &q);
    cr_assert_eq(q.limit, -1);
    SEQ(q.start_key, "a");
    cr_assert_eq(q.end_key.len, 0);
    python_agrees("scan_regions_req", schedulerpb_ScanRegionsRequest_fields, &q);

    schedulerpb_TsoResponse t;
    decode("tso_resp", schedulerpb_TsoResponse_fields, &t);
    cr_assert(t.has_header && t.header.has_error);
    cr_assert_eq(t.header.error.type, schedulerpb_ErrorType_NOT_BOOTSTRAPPED);
    SEQ(t.header.error.message, "nb");
    cr_assert_eq(t.count, 3);
    cr_assert(t.has_timestamp);
    cr_assert_eq(t.timestamp.physical, -1);
    cr_assert_eq(t.timestamp.logical, (1 << 18) - 1);
    python_agrees("tso_resp", schedulerpb_TsoResponse_fields, &t);

    schedulerpb_RegionHeartbeatResponse h;
    decode("heartbeat_resp", schedulerpb_RegionHeartbeatResponse_fields, &h);
    cr_assert(h.has_change_peer);
    cr_assert(h.change_peer.has_peer && h.change_peer.peer.id == 3 && h.change_peer.peer.store_id == 4);
    cr_assert_eq(h.change_peer.change_type, eraftpb_ConfChangeType_RemoveNode);
    cr_assert_not(h.has_transfer_leader);
    cr_assert_eq(h.region_id, 5);
    cr_assert(h.has_region_epoch && h.region_epoch.conf_ver == 1 && h.region_epoch.version == 2);
    cr_assert(h.has_target_peer, "empty target_peer must be present");
    python_agrees("heartbeat_resp", schedulerpb_RegionHeartbeatResponse_fields, &h);

    schedulerpb_AskSplitResponse s;
    decode("ask_split_resp", schedulerpb_AskSplitResponse_fields, &s);
    cr_assert_not(s.has_header);
    cr_assert_eq(s.new_region_id, 8);
    cr_assert_eq(s.new_peer_ids.n, 3);
    cr_assert(s.new_peer_ids.items[0] == 9 && s.new_peer_ids.items[2] == 11);
    python_agrees("ask_split_resp", schedulerpb_AskSplitResponse_fields, &s);
}
