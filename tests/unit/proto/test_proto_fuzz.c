/* Mutated Python-encoded messages must decode to 0 or TKV_EPROTO, never
 * crash or read out of bounds (run under ASan/UBSan), and whatever decodes
 * must re-encode. Seeded; TKV_SEED=<n> reproduces a failure. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coprocessor.pb.h"
#include "eraftpb.pb.h"
#include "errorpb.pb.h"
#include "kvrpcpb.pb.h"
#include "raft_cmdpb.pb.h"
#include "raft_serverpb.pb.h"
#include "schedulerpb.pb.h"
#include "tkv/err.h"
#include "tkv/pb.h"

static const struct {
    const char *name;
    const pb_msgdesc_t *desc;
} cases[] = {
    {"error_full", errorpb_Error_fields},
    {"raw_scan_resp", kvrpcpb_RawScanResponse_fields},
    {"prewrite_req", kvrpcpb_PrewriteRequest_fields},
    {"commit_req", kvrpcpb_CommitRequest_fields},
    {"eraft_message", eraftpb_Message_fields},
    {"conf_state_unpacked", eraftpb_ConfState_fields},
    {"raw_put_unknown", kvrpcpb_RawPutRequest_fields},
    {"raft_cmd_req", raft_cmdpb_RaftCmdRequest_fields},
    {"raft_cmd_resp", raft_cmdpb_RaftCmdResponse_fields},
    {"snapshot_chunk", raft_serverpb_SnapshotChunk_fields},
    {"cop_request", coprocessor_Request_fields},
    {"members_resp", schedulerpb_GetMembersResponse_fields},
    {"store_heartbeat", schedulerpb_StoreHeartbeatRequest_fields},
};

static uint64_t rng;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static uint8_t *load(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.bin", TKV_FIXTURE_DIR, name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "missing fixture %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

Test(proto_fuzz, mutated_inputs_fail_cleanly_or_reencode)
{
    const char *env = getenv("TKV_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : 20261123;
    static uint8_t msg[65536];
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);
    size_t n_ok = 0, n_bad = 0;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t len;
        uint8_t *orig = load(cases[c].name, &len);
        const struct tkv_pb_msginfo *mi = tkv_pb_msginfo(cases[c].desc);
        cr_assert_leq(mi->size, sizeof(msg));
        for (int iter = 0; iter < 400; iter++) {
            rng = seed * 1000003u + c * 7919u + (uint64_t)iter + 1;
            /* Exact-size heap copy: ASan catches any read past the end. */
            size_t mlen = len;
            if (next() % 4 == 0 && mlen > 0)
                mlen = next() % mlen; /* truncate */
            uint8_t *m = malloc(mlen ? mlen : 1);
            memcpy(m, orig, mlen);
            int flips = 1 + (int)(next() % 4);
            for (int k = 0; k < flips && mlen; k++) {
                size_t at = next() % mlen;
                switch (next() % 3) {
                case 0: m[at] ^= (uint8_t)(1u << (next() % 8)); break;
                case 1: m[at] = (uint8_t)next(); break;
                default: m[at] = 0xff; break;
                }
            }
            int rv = tkv_pb_decode(cases[c].desc, msg, m, mlen, &arena);
            cr_assert(rv == 0 || rv == TKV_EPROTO,
                      "%s iter %d (TKV_SEED=%llu): rv %d", cases[c].name, iter,
                      (unsigned long long)seed, rv);
            if (rv == 0) {
                n_ok++;
                struct tkv_slice enc;
                cr_assert_eq(tkv_pb_encode_arena(cases[c].desc, msg, &arena, 0, &enc), 0,
                             "%s iter %d (TKV_SEED=%llu): decoded but does not re-encode",
                             cases[c].name, iter, (unsigned long long)seed);
            } else {
                n_bad++;
            }
            free(m);
            tkv_arena_reset(&arena);
        }
        free(orig);
    }
    tkv_arena_close(&arena);
    /* Both outcomes must actually occur, or the mutations are too weak/strong. */
    cr_assert_gt(n_ok, 100);
    cr_assert_gt(n_bad, 100);
}
