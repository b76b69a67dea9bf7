/* tinykv-bench wire and CPU helpers: etcd message bytes against hand-derived
 * encodings, malformed responses, /proc stat parsing. */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "bench_proc.h"
#include "bench_wire.h"

static void assert_bytes(const uint8_t *got, size_t n, const char *want, size_t wn)
{
    cr_assert_eq(n, wn, "length %zu, want %zu", n, wn);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], (uint8_t)want[i], "byte %zu is 0x%02x, want 0x%02x", i, got[i],
                     (uint8_t)want[i]);
}

Test(bench_wire, put_request_bytes)
{
    uint8_t buf[64];
    size_t n = bench_etcd_put_encode(buf, sizeof buf, TKV_SLICE_STR("ab"), TKV_SLICE_STR("xyz"));
    assert_bytes(buf, n,
                 "\x0a\x02"
                 "ab"
                 "\x12\x03"
                 "xyz",
                 9);
    cr_assert_eq(bench_etcd_put_encode(buf, 8, TKV_SLICE_STR("ab"), TKV_SLICE_STR("xyz")), 0,
                 "a buffer one byte short must be refused");
}

Test(bench_wire, range_request_bytes)
{
    uint8_t buf[64];
    /* key, range_end, limit 300 (varint 0xac 0x02), serializable */
    size_t n =
        bench_etcd_range_encode(buf, sizeof buf, TKV_SLICE_STR("k"), TKV_SLICE_STR("l"), 300, true);
    assert_bytes(buf, n, "\x0a\x01k\x12\x01l\x18\xac\x02\x38\x01", 11);
    /* A linearizable point read is just the key. */
    n = bench_etcd_range_encode(buf, sizeof buf, TKV_SLICE_STR("k"), (struct tkv_slice){0}, 0,
                                false);
    assert_bytes(buf, n, "\x0a\x01k", 3);
}

Test(bench_wire, range_response_decode)
{
    /* header{cluster_id=1}, kvs{key="a", create_revision=2, value="vv"},
     * kvs{key="b"}, more=1, count=2 */
    static const char msg[] = "\x0a\x02\x08\x01"
                              "\x12\x09\x0a\x01"
                              "a"
                              "\x10\x02\x2a\x02"
                              "vv"
                              "\x12\x03\x0a\x01"
                              "b"
                              "\x18\x01\x20\x02";
    struct bench_etcd_range r;
    cr_assert_eq(bench_etcd_range_decode(TKV_SLICE(msg, sizeof msg - 1), &r), 0);
    cr_assert_eq(r.n_kvs, 2);
    cr_assert_eq(r.first_key.len, 1);
    cr_assert_eq(r.first_key.ptr[0], 'a');
    cr_assert_eq(r.first_value.len, 2);
    cr_assert_eq(memcmp(r.first_value.ptr, "vv", 2), 0);
    cr_assert_eq(r.count, 2);
    cr_assert(r.more);
    /* Empty response: no kvs (a miss). */
    cr_assert_eq(bench_etcd_range_decode(TKV_SLICE("", 0), &r), 0);
    cr_assert_eq(r.n_kvs, 0);
}

Test(bench_wire, malformed_responses_rejected)
{
    struct bench_etcd_range r;
    /* kvs length runs past the end */
    cr_assert_eq(bench_etcd_range_decode(TKV_SLICE("\x12\x05\x0a\x01", 4), &r), -1);
    /* kvs with the wrong wire type */
    cr_assert_eq(bench_etcd_range_decode(TKV_SLICE("\x10\x01", 2), &r), -1);
    /* a group (wire type 3) */
    cr_assert_eq(bench_etcd_put_decode(TKV_SLICE("\x0b", 1)), -1);
    /* over-long varint */
    cr_assert_eq(
        bench_etcd_put_decode(TKV_SLICE("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12)),
        -1);
    /* a bad header inside an otherwise fine response */
    cr_assert_eq(bench_etcd_range_decode(TKV_SLICE("\x0a\x01\x08", 3), &r), -1);
    cr_assert_eq(bench_etcd_put_decode(TKV_SLICE("\x0a\x02\x08\x01", 4)), 0);
}

Test(bench_wire, grpc_prefix)
{
    uint8_t p[5];
    bench_grpc_prefix(p, 0x01020304);
    assert_bytes(p, 5, "\x00\x01\x02\x03\x04", 5);
}

Test(bench_proc, parse_stat_with_odd_command_name)
{
    /* comm with spaces and ')' inside; utime 1234, stime 56 */
    const char *s = "42 (we ird) (x) S 1 42 42 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 1 0 5 "
                    "1000 10 18446744073709551615\n";
    unsigned long long t = 0;
    cr_assert_eq(bench_parse_proc_stat(s, &t), 0);
    cr_assert_eq(t, 1290, "utime+stime = %llu", t);
    cr_assert_eq(bench_parse_proc_stat("42 (x) S 1 2 3", &t), -1, "truncated line accepted");
    cr_assert_eq(bench_parse_proc_stat("no paren", &t), -1);
}

Test(bench_proc, own_cpu_grows_and_bad_pid_fails)
{
    double a = bench_self_cpu_s();
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < 50000000; i++)
        x += i;
    double b = bench_self_cpu_s();
    cr_assert_gt(b, a, "CPU did not grow: %f -> %f", a, b);
    double p = bench_pid_cpu_s(getpid());
    cr_assert_geq(p, 0, "own /proc stat unreadable");
    cr_assert_lt(bench_pid_cpu_s(-5), 0);
}
