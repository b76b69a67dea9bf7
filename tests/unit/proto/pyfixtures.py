#!/usr/bin/python3
"""Second, independent protobuf codec for tests/unit/proto: Debian's
python3-protobuf on the same .proto files (modules from tkv_proto_py).

  pyfixtures.py PYDIR write OUTDIR        write every fixture as OUTDIR/<name>.bin
  pyfixtures.py PYDIR services            check both services' method names, paths,
                                          message types and streaming kinds
  pyfixtures.py PYDIR check DIR [NAME...] parse DIR/<name>.c.bin (written by the C
                                          side) and compare with the fixture; no
                                          NAME: every fixture, each file required

Each fixture is built by one function below; test_proto_py.c checks every
field of the decoded C struct against the same values."""
import os
import sys

sys.path.insert(0, sys.argv[1])

import coprocessor_pb2 as cop  # noqa: E402
import eraftpb_pb2 as eraft  # noqa: E402
import errorpb_pb2 as errorpb  # noqa: E402
import kvrpcpb_pb2 as kv  # noqa: E402
import metapb_pb2 as meta  # noqa: E402
import raft_cmdpb_pb2 as cmd  # noqa: E402
import raft_serverpb_pb2 as rs  # noqa: E402
import schedulerpb_pb2 as sched  # noqa: E402
import tinykvpb_pb2_grpc  # noqa: E402,F401  (the stubs must import too)
import schedulerpb_pb2_grpc  # noqa: E402,F401



def big_value():
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(256))
    n = 3 * 1024 * 1024 + 5
    return (pattern * (n // 256 + 1))[:n]


def region(rid, start, end, peers):
    r = meta.Region(id=rid, start_key=start, end_key=end,
                    region_epoch=meta.RegionEpoch(conf_ver=rid + 1, version=rid + 2))
    for pid, sid in peers:
        r.peers.add(id=pid, store_id=sid)
    return r


def ctx():
    return kv.Context(region_id=2, region_epoch=meta.RegionEpoch(conf_ver=1, version=3),
                      peer=meta.Peer(id=4, store_id=5), term=6)


def raw_get_resp_stale():
    return kv.RawGetResponse(region_error=errorpb.Error(stale_command=errorpb.StaleCommand()))


def done():
    return rs.Done()


def error_full():
    e = errorpb.Error(message='not leader: try 7',
                      not_leader=errorpb.NotLeader(region_id=9, leader=meta.Peer(id=7, store_id=3)),
                      region_not_found=errorpb.RegionNotFound(region_id=11),
                      key_not_in_region=errorpb.KeyNotInRegion(key=b'k\x00y', region_id=12,
                                                               start_key=b'a', end_key=b''),
                      store_not_match=errorpb.StoreNotMatch(request_store_id=1, actual_store_id=2))
    e.epoch_not_match.current_regions.append(region(20, b'', b'm', [(21, 1), (22, 2), (23, 3)]))
    e.epoch_not_match.current_regions.append(meta.Region())  # empty element
    e.epoch_not_match.current_regions.append(region(30, b'm', b'', []))
    return e


def not_leader_unknown():
    # leader absent vs present-but-empty must differ.
    return errorpb.Error(not_leader=errorpb.NotLeader(region_id=5))


def raw_put_big():
    return kv.RawPutRequest(context=ctx(), key=b'big-key', value=big_value(), cf='default')


def raw_scan_resp():
    r = kv.RawScanResponse(error='')
    for i in range(300):
        p = r.kvs.add(key=b'key%04d' % i, value=b'v' * (i % 17))
        if i == 7:
            p.error.locked.primary_lock = b'pk'
            p.error.locked.lock_version = 99
            p.error.locked.key = b'key0007'
            p.error.locked.lock_ttl = 3000
    return r


def prewrite_req():
    r = kv.PrewriteRequest(context=ctx(), primary_lock=b'p', start_version=(1 << 62) + 5,
                           lock_ttl=3000)
    r.mutations.add(op=kv.Put, key=b'p', value=b'pv')
    r.mutations.add(op=kv.Del, key=b'd')
    r.mutations.add(op=kv.Lock, key=b'l')
    r.mutations.add(op=kv.Rollback, key=b'', value=b'')
    return r


def prewrite_resp():
    r = kv.PrewriteResponse()
    r.errors.add(conflict=kv.WriteConflict(start_ts=1, conflict_ts=2, key=b'k', primary=b'p'))
    r.errors.add(retryable='retry me')
    r.errors.add()  # empty KeyError element
    return r


def commit_req():
    r = kv.CommitRequest(context=ctx(), start_version=10, commit_version=11)
    r.keys.extend([b'a', b'', b'\xff\x00'])
    return r


def check_txn_resp():
    return kv.CheckTxnStatusResponse(lock_ttl=0, commit_version=0, action=kv.LockNotExistRollback)


def eraft_message():
    m = eraft.Message(msg_type=eraft.MsgAppend, to=2, term=5, log_term=4, index=100, commit=99,
                      reject=True)
    setattr(m, 'from', 1)  # a Python keyword
    m.entries.add(entry_type=eraft.EntryNormal, term=5, index=101, data=b'x' * 70000)
    m.entries.add(entry_type=eraft.EntryConfChange, term=5, index=102, data=b'')
    m.entries.add()  # all-default entry
    m.snapshot.data = b'snapdata'
    m.snapshot.metadata.index = 50
    m.snapshot.metadata.term = 3
    m.snapshot.metadata.conf_state.nodes.extend([1, 2, 3, (1 << 64) - 1])
    return m


def unknown_enum():
    # proto3 enums are open: a value the schema does not name must survive.
    return eraft.Message(msg_type=99, term=1)


def conf_state_packed():
    return eraft.ConfState(nodes=[1, 300, 1 << 40])


def raft_cmd_req():
    r = cmd.RaftCmdRequest()
    r.header.region_id = 3
    r.header.peer.id = 4
    r.header.peer.store_id = 5
    r.header.region_epoch.conf_ver = 6
    r.header.region_epoch.version = 7
    r.header.term = 8
    r.requests.add(cmd_type=cmd.Get, get=cmd.GetRequest(cf='lock', key=b'g'))
    r.requests.add(cmd_type=cmd.Put, put=cmd.PutRequest(cf='default', key=b'p', value=b'v'))
    r.requests.add(cmd_type=cmd.Delete, delete=cmd.DeleteRequest(cf='write', key=b'd'))
    r.requests.add(cmd_type=cmd.Snap, snap=cmd.SnapRequest())
    r.admin_request.cmd_type = cmd.Split
    r.admin_request.split.split_key = b'm'
    r.admin_request.split.new_region_id = 100
    r.admin_request.split.new_peer_ids.extend([101, 102, 103])
    r.admin_request.change_peer.change_type = eraft.RemoveNode
    r.admin_request.change_peer.peer.id = 9
    r.admin_request.compact_log.compact_index = 10
    r.admin_request.compact_log.compact_term = 11
    r.admin_request.transfer_leader.peer.store_id = 12
    return r


def raft_cmd_resp():
    r = cmd.RaftCmdResponse()
    r.header.error.stale_command.SetInParent()
    r.header.uuid = b'0123456789abcdef'
    r.header.current_term = 4
    r.responses.add(cmd_type=cmd.Snap, snap=cmd.SnapResponse(region=region(1, b'', b'', [(1, 1)])))
    r.responses.add(cmd_type=cmd.Put, put=cmd.PutResponse())
    r.admin_response.cmd_type = cmd.Split
    r.admin_response.split.regions.append(region(1, b'', b'm', [(1, 1)]))
    r.admin_response.split.regions.append(region(2, b'm', b'', [(2, 1)]))
    r.admin_response.transfer_leader.SetInParent()
    r.admin_response.compact_log.SetInParent()
    return r


def raft_message():
    m = rs.RaftMessage(region_id=1, from_peer=meta.Peer(id=1, store_id=1),
                       to_peer=meta.Peer(id=2, store_id=2),
                       region_epoch=meta.RegionEpoch(conf_ver=1, version=1), is_tombstone=True,
                       start_key=b'a', end_key=b'z')
    m.message.msg_type = eraft.MsgHeartbeat
    m.message.commit = 0
    return m


def snapshot_chunk():
    c = rs.SnapshotChunk(data=b'\x00\x01\x02' * 1000)
    c.message.region_id = 77
    c.message.message.msg_type = eraft.MsgSnapshot
    c.message.message.snapshot.data = rs.RaftSnapshotData(
        region=region(77, b'', b'', [(1, 1)]), file_size=123,
        meta=rs.SnapshotMeta(cf_files=[rs.SnapshotCFFile(cf='default', size=1, checksum=0xFFFFFFFF),
                                       rs.SnapshotCFFile(cf='write', size=2, checksum=7)])
    ).SerializeToString()
    return c


def raft_states():
    # Several persisted state records concatenated would not parse as one
    # message; RegionLocalState carries a Region and an enum with a gap.
    return rs.RegionLocalState(state=rs.Tombstone, region=region(5, b'a', b'b', [(6, 7)]))


def cop_request():
    r = cop.Request(context=ctx(), tp=-104, data=b'dag', start_ts=1 << 63)
    r.ranges.add(start=b'a', end=b'b')
    r.ranges.add()
    return r


def cop_response():
    return cop.Response(data=b'd', region_error=errorpb.Error(message='m'),
                        locked=kv.LockInfo(primary_lock=b'p', lock_version=1, key=b'k', lock_ttl=2),
                        other_error='oops', range=cop.KeyRange(start=b's', end=b'e'))


def members_resp():
    r = sched.GetMembersResponse()
    r.header.cluster_id = 1 << 60
    m = r.members.add(name='pd-1', member_id=1, leader_priority=-3)
    m.peer_urls.extend(['http://127.0.0.1:2380', ''])
    m.client_urls.extend(['http://127.0.0.1:2379'])
    r.members.add(name='pd-2', member_id=2)
    r.leader.CopyFrom(m)
    r.etcd_leader.SetInParent()
    return r


def store_heartbeat():
    s = sched.StoreStats(store_id=1, capacity=1 << 40, available=1 << 39, region_count=10,
                         sending_snap_count=1, receiving_snap_count=2, start_time=0xFFFFFFFF,
                         applying_snap_count=3, is_busy=True, used_size=12345,
                         interval=sched.TimeInterval(start_timestamp=1, end_timestamp=2))
    s.cpu_usages.add(key='cpu0', value=50)
    s.read_io_rates.add(key='sda', value=1)
    s.write_io_rates.add()
    s.op_latencies.add(key='get', value=7)
    return sched.StoreHeartbeatRequest(header=sched.RequestHeader(cluster_id=1), stats=s)


def scan_regions_req():
    return sched.ScanRegionsRequest(header=sched.RequestHeader(cluster_id=1), start_key=b'a',
                                    limit=-1, end_key=b'')


def tso_resp():
    return sched.TsoResponse(header=sched.ResponseHeader(
        cluster_id=1, error=sched.Error(type=sched.NOT_BOOTSTRAPPED, message='nb')),
        count=3, timestamp=sched.Timestamp(physical=-1, logical=(1 << 18) - 1))


def heartbeat_resp():
    return sched.RegionHeartbeatResponse(
        header=sched.ResponseHeader(cluster_id=1),
        change_peer=sched.ChangePeer(peer=meta.Peer(id=3, store_id=4), change_type=eraft.RemoveNode),
        region_id=5, region_epoch=meta.RegionEpoch(conf_ver=1, version=2),
        target_peer=meta.Peer())


def ask_split_resp():
    return sched.AskSplitResponse(new_region_id=8, new_peer_ids=[9, 10, 11])


FIXTURES = {f.__name__: f for f in [
    raw_get_resp_stale, done, error_full, not_leader_unknown, raw_put_big, raw_scan_resp,
    prewrite_req, prewrite_resp, commit_req, check_txn_resp, eraft_message, unknown_enum,
    conf_state_packed, raft_cmd_req, raft_cmd_resp, raft_message, snapshot_chunk, raft_states,
    cop_request, cop_response, members_resp, store_heartbeat, scan_regions_req, tso_resp,
    heartbeat_resp, ask_split_resp]}


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def raw_fixtures():
    """Hand-built encodings Python's serializer never emits."""
    out = {}
    # ConfState.nodes unpacked (tag 1 varint each), then a packed run, then unpacked.
    out['conf_state_unpacked'] = (b'\x08\x01' + b'\x08' + varint(300) +
                                  b'\x0a' + varint(len(varint(5) + varint(1 << 40))) +
                                  varint(5) + varint(1 << 40) + b'\x08\x07')
    # Empty packed run: no element.
    out['conf_state_empty_packed'] = b'\x0a\x00'
    # RawPutRequest with unknown fields of every wire type, at top level and
    # inside the nested Context, around the known ones.
    unknown = (varint(50 << 3 | 0) + varint(1 << 63) +            # varint
               varint(51 << 3 | 1) + b'\x01' * 8 +                # fixed64
               varint(52 << 3 | 2) + varint(5) + b'hello' +       # length-delimited
               varint(53 << 3 | 5) + b'\x02' * 4 +                # fixed32
               varint(54 << 3 | 2) + varint(0))                   # empty length-delimited
    context = kv.Context(region_id=2).SerializeToString() + unknown
    msg = (unknown + b'\x0a' + varint(len(context)) + context +
           kv.RawPutRequest(key=b'k', value=b'v', cf='lock').SerializeToString() + unknown)
    out['raw_put_unknown'] = msg
    # Python must agree that this parses to the same message.
    parsed = kv.RawPutRequest.FromString(msg)
    assert parsed.key == b'k' and parsed.context.region_id == 2
    # A singular sub-message split in two occurrences merges (proto rule).
    out['context_merged'] = (b'\x0a\x02\x08\x05' + b'\x0a\x02\x28\x09')
    return out


# TINYKV-API.md 1.2 and 1.3: method -> (request, response, kind).
U, CS, BIDI = 'unary', 'client-streaming', 'bidi'
SERVICES = {
    ('tinykvpb', 'TinyKv'): [
        ('KvGet', 'kvrpcpb.GetRequest', 'kvrpcpb.GetResponse', U),
        ('KvScan', 'kvrpcpb.ScanRequest', 'kvrpcpb.ScanResponse', U),
        ('KvPrewrite', 'kvrpcpb.PrewriteRequest', 'kvrpcpb.PrewriteResponse', U),
        ('KvCommit', 'kvrpcpb.CommitRequest', 'kvrpcpb.CommitResponse', U),
        ('KvCheckTxnStatus', 'kvrpcpb.CheckTxnStatusRequest', 'kvrpcpb.CheckTxnStatusResponse', U),
        ('KvBatchRollback', 'kvrpcpb.BatchRollbackRequest', 'kvrpcpb.BatchRollbackResponse', U),
        ('KvResolveLock', 'kvrpcpb.ResolveLockRequest', 'kvrpcpb.ResolveLockResponse', U),
        ('RawGet', 'kvrpcpb.RawGetRequest', 'kvrpcpb.RawGetResponse', U),
        ('RawPut', 'kvrpcpb.RawPutRequest', 'kvrpcpb.RawPutResponse', U),
        ('RawDelete', 'kvrpcpb.RawDeleteRequest', 'kvrpcpb.RawDeleteResponse', U),
        ('RawScan', 'kvrpcpb.RawScanRequest', 'kvrpcpb.RawScanResponse', U),
        ('Raft', 'raft_serverpb.RaftMessage', 'raft_serverpb.Done', CS),
        ('Snapshot', 'raft_serverpb.SnapshotChunk', 'raft_serverpb.Done', CS),
        ('Coprocessor', 'coprocessor.Request', 'coprocessor.Response', U),
    ],
    ('schedulerpb', 'Scheduler'): [
        ('GetMembers', 'GetMembersRequest', 'GetMembersResponse', U),
        ('Tso', 'TsoRequest', 'TsoResponse', BIDI),
        ('Bootstrap', 'BootstrapRequest', 'BootstrapResponse', U),
        ('IsBootstrapped', 'IsBootstrappedRequest', 'IsBootstrappedResponse', U),
        ('AllocID', 'AllocIDRequest', 'AllocIDResponse', U),
        ('GetStore', 'GetStoreRequest', 'GetStoreResponse', U),
        ('PutStore', 'PutStoreRequest', 'PutStoreResponse', U),
        ('GetAllStores', 'GetAllStoresRequest', 'GetAllStoresResponse', U),
        ('StoreHeartbeat', 'StoreHeartbeatRequest', 'StoreHeartbeatResponse', U),
        ('RegionHeartbeat', 'RegionHeartbeatRequest', 'RegionHeartbeatResponse', BIDI),
        ('GetRegion', 'GetRegionRequest', 'GetRegionResponse', U),
        ('GetPrevRegion', 'GetRegionRequest', 'GetRegionResponse', U),
        ('GetRegionByID', 'GetRegionByIDRequest', 'GetRegionResponse', U),
        ('ScanRegions', 'ScanRegionsRequest', 'ScanRegionsResponse', U),
        ('AskSplit', 'AskSplitRequest', 'AskSplitResponse', U),
        ('GetClusterConfig', 'GetClusterConfigRequest', 'GetClusterConfigResponse', U),
        ('PutClusterConfig', 'PutClusterConfigRequest', 'PutClusterConfigResponse', U),
        ('ScatterRegion', 'ScatterRegionRequest', 'ScatterRegionResponse', U),
        ('GetGCSafePoint', 'GetGCSafePointRequest', 'GetGCSafePointResponse', U),
        ('UpdateGCSafePoint', 'UpdateGCSafePointRequest', 'UpdateGCSafePointResponse', U),
        ('GetOperator', 'GetOperatorRequest', 'GetOperatorResponse', U),
    ],
}


def check_services():
    from google.protobuf import descriptor_pb2
    import grpc
    bad = 0
    for (pkg, svc), want in SERVICES.items():
        mod = {'tinykvpb': __import__('tinykvpb_pb2'), 'schedulerpb': sched}[pkg]
        sd = mod.DESCRIPTOR.services_by_name[svc]
        proto = descriptor_pb2.ServiceDescriptorProto()
        sd.CopyToProto(proto)
        got = []
        for m in proto.method:
            kind = {(False, False): U, (True, False): CS, (True, True): BIDI}.get(
                (m.client_streaming, m.server_streaming), 'server-streaming')
            got.append((m.name, m.input_type.lstrip('.'), m.output_type.lstrip('.'), kind))
        want = [(n, r if '.' in r else pkg + '.' + r, s if '.' in s else pkg + '.' + s, k)
                for n, r, s, k in want]
        if got != want:
            print('%s.%s differs:\n got  %s\n want %s' % (pkg, svc, got, want))
            bad += 1
        # The generated stub must expose each method with the right gRPC
        # call kind and path (what the integration tests will call).
        stubs = {'TinyKv': tinykvpb_pb2_grpc.TinyKvStub,
                 'Scheduler': schedulerpb_pb2_grpc.SchedulerStub}
        calls = []

        class Chan:
            def __getattr__(self, kind):
                return lambda path, **kw: calls.append((kind, path))
        stubs[svc](Chan())
        kinds = {U: 'unary_unary', CS: 'stream_unary', BIDI: 'stream_stream'}
        want_calls = sorted((kinds[k], '/%s.%s/%s' % (pkg, svc, n)) for n, _, _, k in want)
        if sorted(calls) != want_calls:
            print('%s stub differs:\n got  %s\n want %s' % (svc, sorted(calls), want_calls))
            bad += 1
    assert grpc.__version__
    if not bad:
        print('services TinyKv (14 methods) and Scheduler (21 methods) match TINYKV-API.md')
    return 1 if bad else 0


def main():
    mode = sys.argv[2]
    if mode == 'services':
        return check_services()
    if mode == 'write':
        outdir = sys.argv[3]
        os.makedirs(outdir, exist_ok=True)
        for name, fn in FIXTURES.items():
            with open(os.path.join(outdir, name + '.bin'), 'wb') as f:
                f.write(fn().SerializeToString())
        for name, data in raw_fixtures().items():
            with open(os.path.join(outdir, name + '.bin'), 'wb') as f:
                f.write(data)
        return 0
    if mode == 'check':
        d = sys.argv[3]
        bad = 0
        for name in sys.argv[4:] or sorted(FIXTURES):
            want = FIXTURES[name]()
            path = os.path.join(d, name + '.c.bin')
            if not os.path.exists(path):
                print('%s: the C test did not write %s (did test_unit_proto pass?)' % (name, path))
                bad += 1
                continue
            with open(path, 'rb') as f:
                data = f.read()
            got = type(want).FromString(data)
            if got != want:
                print('%s: C encoding parses to a different message:\n--- got\n%s--- want\n%s'
                      % (name, str(got)[:2000], str(want)[:2000]))
                bad += 1
            elif data != want.SerializeToString():
                # Same message, different bytes: legal protobuf, but nanopb
                # and Python both write fields in number order, so flag it.
                print('%s: same message but bytes differ from Python\'s encoding' % name)
                bad += 1
        if not bad:
            print('python3-protobuf parsed %d C encodings: all equal'
                  % len(sys.argv[4:] or FIXTURES))
        return 1 if bad else 0
    print('usage: pyfixtures.py PYDIR write OUTDIR | check DIR NAME...')
    return 2


if __name__ == '__main__':
    sys.exit(main())
