/* A small protobuf codec for the eight kvrpcpb Raw* messages, shared by the
 * standalone server (decode requests, encode responses) and tinykv-ctl
 * (the other way round). Wire layout from TINYKV-API.md 1.5 (kvrpcpb). */
#ifndef TKV_SERVER_CODEC_H
#define TKV_SERVER_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"

/* Why hand-written: the server needs only these messages, and this codec
 * borrows every bytes field from the input (no copies, no arena) and reports
 * exactly what is malformed. It follows proto3: unknown fields are skipped,
 * the last occurrence of a scalar wins, absent fields are zero. Groups
 * (wire types 3/4), truncation, over-long varints and known fields with the
 * wrong wire type are errors. Pure code: any thread. */

enum tkv_server_raw_kind {
    TKV_SERVER_RAW_GET,
    TKV_SERVER_RAW_PUT,
    TKV_SERVER_RAW_DELETE,
    TKV_SERVER_RAW_SCAN,
};

/* Human name of the request message, e.g. "kvrpcpb.RawGetRequest". */
const char *tkv_server_raw_req_name(enum tkv_server_raw_kind kind);

/* A decoded Raw*Request. key is start_key for RawScan; value only for
 * RawPut; limit only for RawScan. Slices borrow the input message. */
struct tkv_server_raw_req {
    bool has_context;
    uint64_t region_id; /* context.region_id; ignored in standalone mode */
    struct tkv_slice key;
    struct tkv_slice value;
    struct tkv_slice cf;
    uint32_t limit;
};

/* Decode msg as the request of `kind` into *out (zeroed first).
 * @param why_out  on error, a static description of the problem.
 * Returns 0 or TKV_EPROTO. */
int tkv_server_raw_req_decode(enum tkv_server_raw_kind kind, struct tkv_slice msg,
                              struct tkv_server_raw_req *out, const char **why_out);

/* A growable output buffer (tkv_xrealloc: aborts on OOM, server layer).
 * Zero-initialise, then free with tkv_server_pbuf_free. */
struct tkv_server_pbuf {
    uint8_t *ptr;
    size_t len;
    size_t cap;
};

void tkv_server_pbuf_free(struct tkv_server_pbuf *b);
void tkv_server_pbuf_varint_field(struct tkv_server_pbuf *b, uint32_t field, uint64_t v);
/* Emits tag + length + bytes; with omit_empty an empty value is skipped
 * (proto3 default), otherwise it is written as a present empty field. */
void tkv_server_pbuf_bytes_field(struct tkv_server_pbuf *b, uint32_t field, struct tkv_slice v,
                                 bool omit_empty);

/* Encode a Raw*Request (client side). Fields that do not belong to `kind`
 * are ignored. has_context emits an empty-but-present Context. */
void tkv_server_raw_req_encode(enum tkv_server_raw_kind kind, const struct tkv_server_raw_req *req,
                               struct tkv_server_pbuf *out);

/* Response encoders (server side). error: "" for none. */
void tkv_server_raw_get_resp_encode(struct tkv_server_pbuf *out, struct tkv_slice error,
                                    struct tkv_slice value, bool not_found);
/* RawPutResponse and RawDeleteResponse have the same layout. */
void tkv_server_raw_write_resp_encode(struct tkv_server_pbuf *out, struct tkv_slice error);
/* RawScanResponse: append the error (if any), then one KvPair per call. */
void tkv_server_raw_scan_resp_error(struct tkv_server_pbuf *out, struct tkv_slice error);
void tkv_server_raw_scan_resp_add(struct tkv_server_pbuf *out, struct tkv_slice key,
                                  struct tkv_slice value);
/* Bytes one KvPair adds to a RawScanResponse (to respect size limits). */
size_t tkv_server_raw_scan_pair_size(size_t key_len, size_t value_len);

/* A decoded Raw*Response (client side); slices borrow the input. kvs is
 * decoded lazily with tkv_server_raw_scan_next. */
struct tkv_server_raw_resp {
    bool has_region_error;
    struct tkv_slice region_error_message; /* errorpb.Error.message */
    struct tkv_slice error;
    struct tkv_slice value;
    bool not_found;
    size_t n_kvs;
    struct tkv_slice msg; /* the whole response, for tkv_server_raw_scan_next */
};

/* Decode a response of `kind`. Returns 0 or TKV_EPROTO (why_out set). */
int tkv_server_raw_resp_decode(enum tkv_server_raw_kind kind, struct tkv_slice msg,
                               struct tkv_server_raw_resp *out, const char **why_out);

/* Iterate the kvs of a decoded RawScanResponse: *pos starts at 0; returns 1
 * and the next pair, 0 at the end, or TKV_EPROTO. */
int tkv_server_raw_scan_next(const struct tkv_server_raw_resp *resp, size_t *pos,
                             struct tkv_slice *key_out, struct tkv_slice *value_out);

#endif
