/* Fuzz target (e): a RaftMessage from another store through the
 * transport's decoder and validator (tkv_transport_decode, as the Raft
 * stream handler runs it). Whatever is accepted must re-encode, decode
 * again, and encode to the same bytes (nothing lost or invented). */
#include <string.h>

#include "fuzz_harness.h"
#include "tkv/arena.h"
#include "tkv/transport.h"

static struct tkv_arena arena;

int fuzz_transport_one(const uint8_t *data, size_t size)
{
    struct tkv_rs_msg m;
    int reason = tkv_transport_decode(TKV_SLICE(data, size), 2, &arena, &m);
    tkv_arena_reset(&arena);
    if (reason < 0 || reason >= TKV_TRANSPORT_REJECT_COUNT)
        return fuzz_fail("decode returned %d", reason);
    if (reason != TKV_TRANSPORT_OK)
        return 0;
    int rv = 0;
    struct tkv_slice e1, e2;
    if (tkv_transport_encode(&m, &arena, &e1) < 0) {
        rv = fuzz_fail("an accepted message does not encode");
    } else {
        struct tkv_rs_msg m2;
        reason = tkv_transport_decode(e1, 2, &arena, &m2);
        if (reason != TKV_TRANSPORT_OK) {
            rv = fuzz_fail("re-encoded message refused: %s", tkv_transport_reject_name(reason));
        } else {
            if (tkv_transport_encode(&m2, &arena, &e2) < 0 || e1.len != e2.len ||
                memcmp(e1.ptr, e2.ptr, e1.len) != 0)
                rv = fuzz_fail("decode(encode(m)) encodes differently");
            tkv_rs_msg_release(&m2);
        }
    }
    tkv_rs_msg_release(&m);
    tkv_arena_reset(&arena);
    return rv;
}

void fuzz_transport_seeds(struct fuzz_seeds *s, uint64_t rng)
{
    static const uint32_t types[] = {
        TKV_RAFT_MSG_APPEND,   TKV_RAFT_MSG_APPEND_RESP,     TKV_RAFT_MSG_VOTE,
        TKV_RAFT_MSG_SNAPSHOT, TKV_RAFT_MSG_HEARTBEAT,       TKV_RAFT_MSG_PRE_VOTE,
        TKV_RAFT_MSG_READ_INDEX, TKV_RAFT_MSG_READ_INDEX_RESP, TKV_RAFT_MSG_TIMEOUT_NOW,
    };
    struct tkv_arena a;
    tkv_arena_init(&a, 0);
    for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
        struct tkv_rs_msg m;
        memset(&m, 0, sizeof(m));
        m.region_id = 1 + fuzz_rand(&rng) % 1000;
        m.from = (struct tkv_rs_peer){.id = 11, .store_id = 1};
        m.to = (struct tkv_rs_peer){.id = 12, .store_id = 2};
        m.epoch = (struct tkv_rs_epoch){.conf_ver = 2, .version = 3};
        m.msg.type = types[k];
        m.msg.from = 11;
        m.msg.to = 12;
        m.msg.term = fuzz_rand(&rng) % 100;
        m.msg.index = fuzz_rand(&rng) % 1000;
        m.msg.reject_hint = fuzz_rand(&rng) % 1000;
        m.msg.ctx = fuzz_rand(&rng);
        struct tkv_raft_entry ents[2];
        struct tkv_raft_buf *b = NULL;
        struct tkv_raft_snapshot sn;
        (void)tkv_raft_buf_copy("payload", 7, &b);
        if (types[k] == TKV_RAFT_MSG_APPEND) {
            ents[0] = (struct tkv_raft_entry){.term = 1, .index = m.msg.index + 1, .data = b};
            ents[1] = (struct tkv_raft_entry){
                .term = 1, .index = m.msg.index + 2, .type = TKV_RAFT_ENTRY_CONF_CHANGE};
            m.msg.entries = ents;
            m.msg.n_entries = 2;
        }
        if (types[k] == TKV_RAFT_MSG_SNAPSHOT) {
            memset(&sn, 0, sizeof(sn));
            sn.index = 10;
            sn.term = 2;
            sn.conf_state.n_voters = 2;
            sn.conf_state.voters[0] = 11;
            sn.conf_state.voters[1] = 12;
            sn.data = b;
            m.msg.snapshot = &sn;
        }
        struct tkv_slice enc;
        if (tkv_transport_encode(&m, &a, &enc) == 0)
            fuzz_seeds_add(s, enc.ptr, enc.len);
        tkv_raft_buf_unref(b);
        tkv_arena_reset(&a);
    }
    tkv_arena_close(&a);
}
