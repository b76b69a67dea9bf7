/* The hand-written kvrpcpb Raw* codec: decoding bytes produced by Debian's
 * python3-protobuf (an independent encoder), round trips, and malformed
 * input rejected with a reason. */
#include <criterion/criterion.h>
#include <string.h>

#include "server_codec.h"
#include "tkv/err.h"

#define S(lit) TKV_SLICE(lit, sizeof(lit) - 1)

static bool slice_eq(struct tkv_slice s, const char *lit, size_t n)
{
    return s.len == n && (n == 0 || memcmp(s.ptr, lit, n) == 0);
}
#define SEQ(s, lit) slice_eq((s), (lit), sizeof(lit) - 1)

/* python3: RawGetRequest(context=Context(region_id=7, region_epoch=RegionEpoch(
 * conf_ver=1, version=2), peer=Peer(id=3, store_id=4), term=9), key=b'k1', cf='lock') */
static const char py_get[] =
    "\x0a\x10\x08\x07\x12\x04\x08\x01\x10\x02\x1a\x04\x08\x03\x10\x04\x28\x09"
    "\x12\x02\x6b\x31\x1a\x04\x6c\x6f\x63\x6b";
/* RawPutRequest(key=b'\x00\xff', value=b'vvv', cf='write') */
static const char py_put[] = "\x12\x02\x00\xff\x1a\x03\x76\x76\x76\x22\x05\x77\x72\x69\x74\x65";
/* RawScanRequest(start_key=b'a', limit=300, cf='') */
static const char py_scan[] = "\x12\x01\x61\x18\xac\x02";
/* RawDeleteRequest(context=Context(), key=b'd'): empty but present context */
static const char py_del[] = "\x0a\x00\x12\x01\x64";
/* RawScanResponse(kvs=[KvPair(key=b'a', value=b'1'), KvPair(key=b'b')]) */
static const char py_scan_resp[] = "\x1a\x06\x12\x01\x61\x1a\x01\x31\x1a\x03\x12\x01\x62";
/* RawGetResponse(region_error=Error(message='nl', not_leader=NotLeader(region_id=1))) */
static const char py_region_err[] = "\x0a\x08\x0a\x02\x6e\x6c\x12\x02\x08\x01";

Test(codec, decodes_python_get_with_full_context)
{
    struct tkv_server_raw_req r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_GET, S(py_get), &r, &why), 0, "%s", why);
    cr_assert(r.has_context);
    cr_assert_eq(r.region_id, 7);
    cr_assert(SEQ(r.key, "k1"));
    cr_assert(SEQ(r.cf, "lock"));
}

Test(codec, decodes_python_put_scan_delete)
{
    struct tkv_server_raw_req r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_PUT, S(py_put), &r, &why), 0);
    cr_assert(!r.has_context);
    cr_assert(SEQ(r.key, "\x00\xff"));
    cr_assert(SEQ(r.value, "vvv"));
    cr_assert(SEQ(r.cf, "write"));

    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_SCAN, S(py_scan), &r, &why), 0);
    cr_assert(SEQ(r.key, "a"));
    cr_assert_eq(r.limit, 300);
    cr_assert_eq(r.cf.len, 0, "absent cf decodes as empty (= default)");

    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_DELETE, S(py_del), &r, &why), 0);
    cr_assert(r.has_context, "an empty Context is still present");
    cr_assert(SEQ(r.key, "d"));
}

Test(codec, skips_unknown_fields_of_every_wire_type)
{
    /* key=b'k', then field 15 varint, field 16 fixed64, field 17 bytes,
     * field 18 fixed32, then cf='lock'. */
    static const char msg[] = "\x12\x01k"
                              "\x78\x96\x01"
                              "\x81\x01\x01\x02\x03\x04\x05\x06\x07\x08"
                              "\x8a\x01\x02zz"
                              "\x95\x01\x01\x02\x03\x04"
                              "\x1a\x04lock";
    struct tkv_server_raw_req r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_GET, S(msg), &r, &why), 0, "%s", why);
    cr_assert(SEQ(r.key, "k"));
    cr_assert(SEQ(r.cf, "lock"));
}

Test(codec, last_occurrence_wins)
{
    static const char msg[] = "\x12\x01"
                              "a"
                              "\x12\x01"
                              "b";
    struct tkv_server_raw_req r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_GET, S(msg), &r, &why), 0);
    cr_assert(SEQ(r.key, "b"));
}

Test(codec, rejects_malformed_input)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *what;
    } bad[] = {
        {"\x12\xff\xff\xff\xff\x0f", 6, "length past the end"},
        {"\x12\x05"
         "ab",
         4, "truncated bytes"},
        {"\x0a\x03\x08", 3, "truncated context"},
        {"\x0a\x02\x12\x05", 4, "context.region_epoch runs past the end"},
        {"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11, "over-long tag varint"},
        {"\x13", 1, "start group"},
        {"\x14", 1, "end group"},
        {"\x10\x01", 2, "key with varint wire type"},
        {"\x00\x01", 2, "field number 0"},
        {"\x0a\x02\x08", 3, "truncated"},
        {"\x0d\x01\x02", 3, "truncated fixed32"},
        {"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02", 11, "varint over 64 bits"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tkv_server_raw_req r;
        const char *why = NULL;
        int rv = tkv_server_raw_req_decode(TKV_SERVER_RAW_GET, TKV_SLICE(bad[i].bytes, bad[i].len),
                                           &r, &why);
        cr_assert_eq(rv, TKV_EPROTO, "%s: accepted", bad[i].what);
        cr_assert(why && *why, "%s: no reason given", bad[i].what);
    }
    /* limit with a length-delimited wire type */
    struct tkv_server_raw_req r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_SCAN, S("\x1a\x01x"), &r, &why),
                 TKV_EPROTO);
}

Test(codec, empty_message_is_all_defaults)
{
    struct tkv_server_raw_req r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_SCAN, TKV_SLICE("", 0), &r, &why), 0);
    cr_assert_eq(r.key.len + r.cf.len + r.limit, 0);
    cr_assert(!r.has_context);
}

Test(codec, request_round_trip_matches_python_bytes)
{
    struct tkv_server_raw_req in = {.key = S("\x00\xff"), .value = S("vvv"), .cf = S("write")};
    struct tkv_server_pbuf b = {0};
    tkv_server_raw_req_encode(TKV_SERVER_RAW_PUT, &in, &b);
    cr_assert_eq(b.len, sizeof(py_put) - 1);
    cr_assert_eq(memcmp(b.ptr, py_put, b.len), 0, "encoding differs from python3-protobuf");
    tkv_server_pbuf_free(&b);

    in = (struct tkv_server_raw_req){.key = S("a"), .limit = 300};
    tkv_server_raw_req_encode(TKV_SERVER_RAW_SCAN, &in, &b);
    cr_assert_eq(b.len, sizeof(py_scan) - 1);
    cr_assert_eq(memcmp(b.ptr, py_scan, b.len), 0);
    tkv_server_pbuf_free(&b);

    in = (struct tkv_server_raw_req){.has_context = true, .key = S("d")};
    tkv_server_raw_req_encode(TKV_SERVER_RAW_DELETE, &in, &b);
    cr_assert_eq(b.len, sizeof(py_del) - 1);
    cr_assert_eq(memcmp(b.ptr, py_del, b.len), 0, "empty context must be emitted as present");
    tkv_server_pbuf_free(&b);
}

Test(codec, scan_response_matches_python_and_decodes)
{
    struct tkv_server_pbuf b = {0};
    tkv_server_raw_scan_resp_error(&b, TKV_SLICE(NULL, 0));
    cr_assert_eq(tkv_server_raw_scan_pair_size(1, 1), 8);
    tkv_server_raw_scan_resp_add(&b, S("a"), S("1"));
    tkv_server_raw_scan_resp_add(&b, S("b"), TKV_SLICE(NULL, 0));
    cr_assert_eq(b.len, sizeof(py_scan_resp) - 1);
    cr_assert_eq(memcmp(b.ptr, py_scan_resp, b.len), 0);

    struct tkv_server_raw_resp r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_resp_decode(TKV_SERVER_RAW_SCAN, TKV_SLICE(b.ptr, b.len), &r, &why),
                 0);
    cr_assert_eq(r.n_kvs, 2);
    size_t pos = 0;
    struct tkv_slice k, v;
    cr_assert_eq(tkv_server_raw_scan_next(&r, &pos, &k, &v), 1);
    cr_assert(SEQ(k, "a") && SEQ(v, "1"));
    cr_assert_eq(tkv_server_raw_scan_next(&r, &pos, &k, &v), 1);
    cr_assert(SEQ(k, "b") && v.len == 0);
    cr_assert_eq(tkv_server_raw_scan_next(&r, &pos, &k, &v), 0);
    tkv_server_pbuf_free(&b);
}

Test(codec, get_response_encode_decode)
{
    struct tkv_server_pbuf b = {0};
    tkv_server_raw_get_resp_encode(&b, TKV_SLICE(NULL, 0), TKV_SLICE(NULL, 0), true);
    cr_assert_eq(b.len, 2);
    cr_assert_eq(memcmp(b.ptr, "\x20\x01", 2), 0);
    tkv_server_pbuf_free(&b);

    tkv_server_raw_get_resp_encode(&b, S("unknown column family"), S("val"), false);
    struct tkv_server_raw_resp r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_resp_decode(TKV_SERVER_RAW_GET, TKV_SLICE(b.ptr, b.len), &r, &why),
                 0);
    cr_assert(SEQ(r.error, "unknown column family"));
    cr_assert(SEQ(r.value, "val"));
    cr_assert(!r.not_found && !r.has_region_error);
    tkv_server_pbuf_free(&b);
}

Test(codec, decodes_python_region_error)
{
    struct tkv_server_raw_resp r;
    const char *why = NULL;
    cr_assert_eq(tkv_server_raw_resp_decode(TKV_SERVER_RAW_GET, S(py_region_err), &r, &why), 0);
    cr_assert(r.has_region_error);
    cr_assert(SEQ(r.region_error_message, "nl"));
}

Test(codec, large_fields_use_multibyte_lengths)
{
    static uint8_t big[70000];
    memset(big, 'x', sizeof(big));
    struct tkv_server_raw_req in = {.key = S("k"), .value = TKV_SLICE(big, sizeof(big))}, out;
    struct tkv_server_pbuf b = {0};
    const char *why = NULL;
    tkv_server_raw_req_encode(TKV_SERVER_RAW_PUT, &in, &b);
    cr_assert_eq(tkv_server_raw_req_decode(TKV_SERVER_RAW_PUT, TKV_SLICE(b.ptr, b.len), &out, &why),
                 0);
    cr_assert_eq(out.value.len, sizeof(big));
    cr_assert_eq(memcmp(out.value.ptr, big, sizeof(big)), 0);
    tkv_server_pbuf_free(&b);
}
