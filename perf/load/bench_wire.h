/* The few protobuf messages tinykv-bench needs for etcd v3 (KV.Put, KV.Range),
 * encoded and decoded by hand, plus a minimal proto3 field reader and the
 * gRPC 5-byte message prefix. Pure code, no allocation: any thread. */
#ifndef BENCH_WIRE_H
#define BENCH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"

/* Field numbers (etcd api/etcdserverpb/rpc.proto, mvccpb/kv.proto):
 *   PutRequest{key=1, value=2}
 *   RangeRequest{key=1, range_end=2, limit=3, serializable=7}
 *   RangeResponse{header=1, kvs=2, more=3, count=4}
 *   KeyValue{key=1, value=5} */

/* Each encoder writes into buf[0..cap) and returns the length, or 0 when
 * cap is too small. Empty bytes fields and zero scalars are omitted. */
size_t bench_etcd_put_encode(uint8_t *buf, size_t cap, struct tkv_slice key,
                             struct tkv_slice value);
size_t bench_etcd_range_encode(uint8_t *buf, size_t cap, struct tkv_slice key,
                               struct tkv_slice range_end, int64_t limit, bool serializable);

/* A decoded RangeResponse: how many kvs, the first one's key and value
 * (borrowing the input), and the count field. */
struct bench_etcd_range {
    size_t n_kvs;
    struct tkv_slice first_key, first_value;
    int64_t count;
    bool more;
};

/* Returns 0, or -1 when msg is not a well-formed RangeResponse. */
int bench_etcd_range_decode(struct tkv_slice msg, struct bench_etcd_range *out);
/* PutResponse{header=1, prev_kv=2}: 0 when msg parses, -1 otherwise. */
int bench_etcd_put_decode(struct tkv_slice msg);

/* proto3 field reader. *pos starts at 0. Returns 1 with the field number,
 * wire type and value (varint in *v for wire type 0; bytes in *b for wire
 * type 2; fixed32/64 in *v), 0 at the end, -1 on malformed input (groups,
 * truncation, field number 0, varint over 10 bytes). */
int bench_pb_next(struct tkv_slice msg, size_t *pos, uint32_t *field, uint32_t *wt, uint64_t *v,
                  struct tkv_slice *b);

/* Write a gRPC length prefix (uncompressed) for a message of len bytes into
 * out[0..5). */
void bench_grpc_prefix(uint8_t out[5], size_t len);

#endif
