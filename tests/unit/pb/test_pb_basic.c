/* tkv_pb glue: zero-copy slices, repeated arrays, presence, helpers. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errorpb.pb.h"
#include "kvrpcpb.pb.h"
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

TestSuite(pb_basic, .init = setup, .fini = teardown);

Test(pb_basic, raw_put_request_round_trips_zero_copy)
{
    kvrpcpb_RawPutRequest req = kvrpcpb_RawPutRequest_init_zero;
    req.has_context = true;
    req.context.region_id = 7;
    req.key = TKV_SLICE_STR("k1");
    req.value = TKV_SLICE_STR("value-1");
    req.cf = tkv_pb_str("default");
    uint8_t buf[128];
    size_t len, size;
    cr_assert_eq(tkv_pb_encode(kvrpcpb_RawPutRequest_fields, &req, buf, sizeof(buf), &len), 0);
    cr_assert_eq(tkv_pb_encoded_size(kvrpcpb_RawPutRequest_fields, &req, &size), 0);
    cr_assert_eq(len, size);

    kvrpcpb_RawPutRequest out;
    cr_assert_eq(tkv_pb_decode(kvrpcpb_RawPutRequest_fields, &out, buf, len, &arena), 0);
    cr_assert(out.has_context);
    cr_assert_eq(out.context.region_id, 7);
    cr_assert_eq(out.key.len, 2);
    cr_assert(out.key.ptr >= buf && out.key.ptr + out.key.len <= buf + len, "key not zero-copy");
    cr_assert_eq(memcmp(out.value.ptr, "value-1", 7), 0);
    cr_assert(tkv_pb_eq_str(out.cf, "default"));
}

Test(pb_basic, empty_but_present_submessage_round_trips)
{
    kvrpcpb_RawGetResponse resp = kvrpcpb_RawGetResponse_init_zero;
    resp.has_region_error = true;
    resp.region_error.has_stale_command = true;
    uint8_t buf[64];
    size_t len;
    cr_assert_eq(tkv_pb_encode(kvrpcpb_RawGetResponse_fields, &resp, buf, sizeof(buf), &len), 0);
    /* region_error {stale_command {}}: 0a 02 3a 00 */
    static const uint8_t want[] = {0x0a, 0x02, 0x3a, 0x00};
    cr_assert_eq(len, sizeof(want), "encoded %zu bytes", len);
    cr_assert_eq(memcmp(buf, want, len), 0);

    kvrpcpb_RawGetResponse out;
    cr_assert_eq(tkv_pb_decode(kvrpcpb_RawGetResponse_fields, &out, buf, len, &arena), 0);
    cr_assert(out.has_region_error);
    cr_assert(out.region_error.has_stale_command);
    cr_assert_not(out.region_error.has_not_leader);
    cr_assert_eq(out.value.len, 0);
    cr_assert_not(out.not_found);
}

Test(pb_basic, repeated_messages_push_encode_decode)
{
    kvrpcpb_RawScanResponse resp = kvrpcpb_RawScanResponse_init_zero;
    char keys[100][8];
    for (int i = 0; i < 100; i++) {
        kvrpcpb_KvPair *kv = TKV_PB_PUSH(&arena, &resp.kvs);
        snprintf(keys[i], sizeof(keys[i]), "k%03d", i);
        kv->key = tkv_pb_str(keys[i]);
        kv->value = tkv_pb_printf(&arena, "value-%d", i * 3);
        if (i == 50) {
            kv->has_error = true;
            kv->error.abort = tkv_pb_str("boom");
        }
    }
    cr_assert_eq(resp.kvs.n, 100);
    struct tkv_slice enc;
    cr_assert_eq(tkv_pb_encode_arena(kvrpcpb_RawScanResponse_fields, &resp, &arena, 5, &enc), 0);
    cr_assert_gt(enc.len, 5);

    kvrpcpb_RawScanResponse out;
    cr_assert_eq(tkv_pb_decode(kvrpcpb_RawScanResponse_fields, &out, enc.ptr + 5, enc.len - 5, &arena),
                 0);
    cr_assert_eq(out.kvs.n, 100);
    for (int i = 0; i < 100; i++) {
        char v[32];
        int n = snprintf(v, sizeof(v), "value-%d", i * 3);
        cr_assert(tkv_pb_eq_str(out.kvs.items[i].key, keys[i]), "key %d", i);
        cr_assert_eq(out.kvs.items[i].value.len, (size_t)n);
        cr_assert_eq(memcmp(out.kvs.items[i].value.ptr, v, (size_t)n), 0, "value %d", i);
        cr_assert_eq(out.kvs.items[i].has_error, i == 50, "has_error %d", i);
    }
    cr_assert(tkv_pb_eq_str(out.kvs.items[50].error.abort, "boom"));
}

Test(pb_basic, caller_array_encodes_and_push_copies_it)
{
    kvrpcpb_CommitRequest req = kvrpcpb_CommitRequest_init_zero;
    struct tkv_slice keys[3] = {TKV_SLICE_STR("a"), TKV_SLICE_STR(""), TKV_SLICE_STR("ccc")};
    req.keys.items = keys;
    req.keys.n = 3;
    struct tkv_slice *k4 = TKV_PB_PUSH(&arena, &req.keys);
    *k4 = TKV_SLICE_STR("dd");
    cr_assert_neq(req.keys.items, keys, "push must copy a caller array, not write past it");
    req.start_version = 10;
    req.commit_version = 11;
    struct tkv_slice enc;
    cr_assert_eq(tkv_pb_encode_arena(kvrpcpb_CommitRequest_fields, &req, &arena, 0, &enc), 0);
    kvrpcpb_CommitRequest out;
    cr_assert_eq(tkv_pb_decode(kvrpcpb_CommitRequest_fields, &out, enc.ptr, enc.len, &arena), 0);
    cr_assert_eq(out.keys.n, 4, "an empty repeated bytes element must survive");
    cr_assert(tkv_pb_eq_str(out.keys.items[0], "a"));
    cr_assert_eq(out.keys.items[1].len, 0);
    cr_assert(tkv_pb_eq_str(out.keys.items[2], "ccc"));
    cr_assert(tkv_pb_eq_str(out.keys.items[3], "dd"));
    cr_assert_eq(out.start_version, 10);
    cr_assert_eq(out.commit_version, 11);
}

Test(pb_basic, truncated_and_garbage_input_is_eproto)
{
    kvrpcpb_RawPutRequest req = kvrpcpb_RawPutRequest_init_zero;
    req.key = TKV_SLICE_STR("key");
    req.value = TKV_SLICE_STR("value");
    uint8_t buf[64];
    size_t len;
    cr_assert_eq(tkv_pb_encode(kvrpcpb_RawPutRequest_fields, &req, buf, sizeof(buf), &len), 0);
    kvrpcpb_RawPutRequest out;
    for (size_t cut = 1; cut < len; cut++) {
        int rv = tkv_pb_decode(kvrpcpb_RawPutRequest_fields, &out, buf, cut, &arena);
        if (cut == 5) /* exactly after the key field: a valid shorter message */
            cr_assert_eq(rv, 0);
        else
            cr_assert_eq(rv, TKV_EPROTO, "prefix of %zu bytes decoded (rv %d)", cut, rv);
    }
    static const uint8_t bad_wire[] = {0x17, 0x01}; /* field 2 with wire type 7 */
    const char *why = NULL;
    cr_assert_eq(tkv_pb_decode_ex(kvrpcpb_RawPutRequest_fields, &out, bad_wire, sizeof(bad_wire),
                                  &arena, &why),
                 TKV_EPROTO);
    cr_assert_not_null(why);
    static const uint8_t overflow[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    cr_assert_eq(tkv_pb_decode(kvrpcpb_GetRequest_fields, &out, overflow, sizeof(overflow), &arena),
                 TKV_EPROTO);
}

Test(pb_basic, small_buffer_is_etoobig_and_bad_slice_einval)
{
    kvrpcpb_RawPutRequest req = kvrpcpb_RawPutRequest_init_zero;
    req.value = TKV_SLICE_STR("0123456789");
    uint8_t buf[8];
    size_t len;
    cr_assert_eq(tkv_pb_encode(kvrpcpb_RawPutRequest_fields, &req, buf, sizeof(buf), &len),
                 TKV_ETOOBIG);
    req.value = (struct tkv_slice){.ptr = NULL, .len = 3};
    size_t size;
    cr_assert_eq(tkv_pb_encoded_size(kvrpcpb_RawPutRequest_fields, &req, &size), TKV_EINVAL);
}

Test(pb_basic, registry_knows_names_and_sizes)
{
    const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(kvrpcpb_RawGetRequest_fields);
    cr_assert_not_null(mi);
    cr_assert_eq(mi->size, sizeof(kvrpcpb_RawGetRequest));
    cr_assert_str_eq(mi->name, "kvrpcpb.RawGetRequest");
    cr_assert_str_eq(tkv_pb_msg_name(errorpb_StaleCommand_fields), "errorpb.StaleCommand");
    cr_assert_eq(tkv_pb_registry_len, 139, "one row per message of proto/*.proto");
}

/* Issue 13 item 3: decoding may not amplify a message without bound. A
 * PrewriteRequest of 100,000 empty mutations (2 bytes each on the wire)
 * would become 100,000 kvrpcpb_Mutation structs; the decode refuses past
 * 4x the message size + 64 KiB of repeated elements, while a real one
 * (keys and values in the mutations) still decodes. */
Test(pb_basic, decode_amplification_is_bounded)
{
    enum { N = 100000 };
    uint8_t *bomb = malloc(2 * N);
    for (size_t i = 0; i < N; i++) {
        bomb[2 * i] = 0x12; /* field 2 (mutations), length-delimited */
        bomb[2 * i + 1] = 0x00;
    }
    kvrpcpb_PrewriteRequest req;
    const char *why = NULL;
    int rv = tkv_pb_decode_ex(kvrpcpb_PrewriteRequest_fields, &req, bomb, 2 * N, &arena, &why);
    cr_assert_eq(rv, TKV_EPROTO, "a %d-byte message of empty mutations decoded (%zu mutations, "
                 "%zu arena bytes)", 2 * N, rv == 0 ? req.mutations.n : 0, tkv_arena_used(&arena));
    cr_assert(why && strstr(why, "repeated elements"), "why: %s", why ? why : "(null)");
    cr_assert_leq(tkv_arena_used(&arena), (size_t)(16 * 2 * N + (1 << 20)),
                  "the refused decode still took %zu bytes", tkv_arena_used(&arena));
    free(bomb);

    /* 200 mutations with 100-byte values: about 1 element byte per wire byte */
    kvrpcpb_PrewriteRequest ok = kvrpcpb_PrewriteRequest_init_zero;
    static uint8_t value[100];
    for (int i = 0; i < 200; i++) {
        kvrpcpb_Mutation *m = TKV_PB_PUSH(&arena, &ok.mutations);
        m->key = TKV_SLICE_STR("some-key");
        m->value = TKV_SLICE(value, sizeof(value));
    }
    uint8_t *buf = malloc(1 << 16);
    size_t len;
    cr_assert_eq(tkv_pb_encode(kvrpcpb_PrewriteRequest_fields, &ok, buf, 1 << 16, &len), 0);
    cr_assert_eq(tkv_pb_decode(kvrpcpb_PrewriteRequest_fields, &req, buf, len, &arena), 0);
    cr_assert_eq(req.mutations.n, 200);
    free(buf);
}

/* Issue 13 item 5: a field with the wrong wire type is named, never "(none)". */
Test(pb_basic, wrong_wire_type_names_the_field)
{
    static const uint8_t key_as_varint[] = {0x10, 0x01}; /* RawGetRequest.key = field 2 */
    kvrpcpb_RawGetRequest req;
    const char *why = NULL;
    cr_assert_eq(tkv_pb_decode_ex(kvrpcpb_RawGetRequest_fields, &req, key_as_varint,
                                  sizeof(key_as_varint), &arena, &why),
                 TKV_EPROTO);
    cr_assert(why && strstr(why, "field 2") && strstr(why, "wire type"), "why: %s",
              why ? why : "(null)");
}
