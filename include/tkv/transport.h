/* Store-to-store transport of the raftstore: RaftMessages over the
 * tinykvpb.TinyKv/Raft client stream, snapshots over the Snapshot client
 * stream in 1 MiB chunks with size and checksum (TINYKV-API.md 1.2, 2.10),
 * both ways: the sending side (one long-lived stream per destination store,
 * bounded queues, backoff) and the receiving side (the two server-side
 * handlers, which validate everything they get). See src/transport/README.md.
 *
 * CONTRACT
 * --------
 * A struct tkv_transport belongs to ONE core (reactor) and every call below
 * happens on that core; nothing blocks. It sits between the raftstore and
 * the network: the host wires
 *   - env.send of the raftstore to tkv_transport_send (same shape: pass the
 *     transport as env.ctx's send target, or call it from the host's send),
 *   - the two methods of tkv_transport_methods() into the core's rpc server,
 *   - host.deliver to tkv_raftstore_receive, host.report_* to
 *     tkv_raftstore_report_unreachable / _report_snapshot,
 *   - host.resolve to its store-address lookup (the scheduler's GetStore).
 *
 * Sending never fails and never blocks: tkv_transport_send encodes the
 * message into the destination's queue (or drops it and counts it, as a
 * lossy network would: raft retransmits); the queues of a loop turn are
 * flushed ONCE, from a task deferred to the end of the turn, so every
 * message of a turn leaves in one batch per destination. A destination that
 * is slow or dead costs at most its bounded queue (count and bytes) plus
 * stream_max_out_bytes held by the rpc layer; nothing waits for it.
 *
 * Callbacks into the host (deliver, report_*, resolve) never run from
 * inside tkv_transport_send: reports are queued and made from the flush
 * task, so a raftstore may be called back safely (it is never re-entered
 * from its own env.send).
 *
 * Lifetime: create on the core, free from the core's fini (before or
 * after the rpc server that holds its methods: a server call that outlives
 * the transport sees a closing store and frees its own state). An orderly
 * reactor stop closes every outgoing stream (on-stop hook).
 */
#ifndef TKV_TRANSPORT_H
#define TKV_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/arena.h"
#include "tkv/common.h"
#include "tkv/raftstore.h"
#include "tkv/rpc.h"

struct tkv_reactor;

/* Snapshot payload bytes per SnapshotChunk (TinyKV's SnapChunkLen). */
#define TKV_TRANSPORT_SNAP_CHUNK (1u << 20)
/* Entries one received RaftMessage may carry (more: TOO_BIG). The
 * raftstore caps an append at 1 MiB of payload and every command carries a
 * header of over 32 bytes, so a correct peer stays below; nanopb's 16-bit
 * counts refuse more than 65535 anyway. */
#define TKV_TRANSPORT_MAX_ENTRIES 32768u

/* Why an incoming RaftMessage or SnapshotChunk was refused. */
enum tkv_transport_reject {
    TKV_TRANSPORT_OK = 0,
    TKV_TRANSPORT_REJECT_MALFORMED,   /* not a valid protobuf, bad enum/context/entry */
    TKV_TRANSPORT_REJECT_MISSING,     /* region id, a peer, the epoch or the message absent */
    TKV_TRANSPORT_REJECT_WRONG_STORE, /* to_peer.store_id is not this store */
    TKV_TRANSPORT_REJECT_MISMATCH,    /* message.to/from disagree with to_peer/from_peer */
    TKV_TRANSPORT_REJECT_BAD_TYPE,    /* unknown or local-only raft message type */
    TKV_TRANSPORT_REJECT_TOO_BIG,     /* keys, entries, voters or a snapshot beyond bounds */
    TKV_TRANSPORT_REJECT_SNAP_ON_RAFT, /* a MsgSnapshot on the Raft stream */
    TKV_TRANSPORT_REJECT_SNAP_CHUNK,  /* Snapshot stream out of order: first chunk without
                                         the message, data chunk empty or with a message,
                                         more data than announced, bad meta */
    TKV_TRANSPORT_REJECT_SNAP_CHECKSUM, /* fewer bytes than announced, or checksum mismatch */
    TKV_TRANSPORT_REJECT_SNAP_BUSY,   /* too many concurrent snapshots / their memory */
    TKV_TRANSPORT_REJECT_COUNT
};
/* "malformed", "missing", ... (metric label values). Static. */
const char *tkv_transport_reject_name(int reason);

/* ---- wire codec (any thread) ----
 *
 * tkv_rs_msg <-> raft_serverpb.RaftMessage, lossless for every message the
 * raft library sends: reject_hint and the 64-bit context travel in eraftpb
 * fields 11 and 12 (TiKV's numbers; context as 8 bytes big-endian), PreVote
 * and ReadIndex with TiKV's message type numbers (17/18, 15/16). */

/* Encode m (its snapshot data included, if any) into arena memory.
 * Returns 0, or TKV_EINVAL when m cannot be encoded (unknown type). */
int tkv_transport_encode(const struct tkv_rs_msg *m, struct tkv_arena *a, struct tkv_slice *out);

/* Decode and validate one RaftMessage. my_store != 0 refuses messages
 * addressed to another store. scratch is reset by the caller afterwards
 * (it holds nothing *out needs). On TKV_TRANSPORT_OK *out OWNS copies of
 * every payload (tkv_rs_msg_release frees them); on a reject *out is
 * zeroed. Returns an enum tkv_transport_reject. */
int tkv_transport_decode(struct tkv_slice bytes, uint64_t my_store, struct tkv_arena *scratch,
                         struct tkv_rs_msg *out);

/* ---- the transport ---- */

struct tkv_transport_host {
    void *ctx;
    /* Address ("host:port", numeric or localhost) of store_id into
     * addr[0..cap). Returns 0; TKV_EUNAVAILABLE "not yet" (asked again
     * after the backoff; the host may start a lookup meanwhile); any other
     * negative: unknown store (its queued messages are dropped). */
    int (*resolve)(void *ctx, uint64_t store_id, char *addr, size_t cap);
    /* A validated message for this store (borrowed for the call). */
    void (*deliver)(void *ctx, const struct tkv_rs_msg *m);
    /* Feedback for the sender's raft (may be NULL). */
    void (*report_unreachable)(void *ctx, uint64_t region_id, uint64_t to_peer_id);
    void (*report_snapshot)(void *ctx, uint64_t region_id, uint64_t to_peer_id, bool failed);
};

struct tkv_transport_config {
    uint64_t store_id;            /* this store, nonzero */
    uint32_t queue_max_msgs;      /* per destination; 0 = 4096 */
    size_t queue_max_bytes;       /* per destination; 0 = 16 MiB */
    size_t stream_max_out_bytes;  /* per stream, held by rpc unsent; 0 = 4 MiB */
    uint64_t backoff_min_ns;      /* reconnect backoff; 0 = 50 ms */
    uint64_t backoff_max_ns;      /* 0 = 5 s */
    uint32_t max_send_snapshots;  /* per destination at once; 0 = 2 */
    uint32_t max_recv_snapshots;  /* being received at once; 0 = 4 */
    size_t max_snapshot_bytes;    /* one received snapshot; 0 = 1 GiB */
    size_t max_recv_snapshot_mem; /* all snapshots being received; 0 = 2 GiB */
    uint64_t snapshot_timeout_ns; /* one outgoing snapshot stream; 0 = 10 min */
};

struct tkv_transport_stats {
    uint64_t msgs_queued;            /* accepted by tkv_transport_send */
    uint64_t msgs_sent;              /* handed to a Raft stream */
    uint64_t msgs_dropped_full;      /* destination queue full */
    uint64_t msgs_dropped_unreachable; /* queued when the stream failed / store unknown */
    uint64_t batches;                /* (destination, turn) pairs that sent messages */
    uint64_t streams_started, stream_failures;
    uint64_t msgs_received, msgs_delivered;
    uint64_t rejects[TKV_TRANSPORT_REJECT_COUNT];
    uint64_t snaps_sent, snaps_send_failed, snaps_received;
    uint64_t reports_unreachable, reports_snapshot;
    size_t queued_bytes;    /* now, all destinations */
    size_t rpc_out_bytes;   /* now, held unsent by our Raft streams */
    size_t recv_snap_bytes; /* now, reserved by snapshots being received */
};

struct tkv_transport;

/* Create on reactor r (the current core). cfg and host are copied.
 * Returns 0 or TKV_EINVAL (store_id 0, resolve or deliver NULL). */
int tkv_transport_new(struct tkv_reactor *r, const struct tkv_transport_config *cfg,
                      const struct tkv_transport_host *host, struct tkv_transport **out);

/* Close every stream and free (NULL is a no-op). Core's fini, or before
 * the loop runs. Snapshots still being sent are reported failed. */
void tkv_transport_free(struct tkv_transport *t);

/* Send m to store to_store (m borrowed for the call): env.send. A
 * MsgSnapshot goes over its own Snapshot stream (at most
 * max_send_snapshots per destination; beyond, dropped and reported
 * failed). */
void tkv_transport_send(struct tkv_transport *t, uint64_t to_store, const struct tkv_rs_msg *m);

/* The same with the env seam's signature (ctx = the transport). */
void tkv_transport_env_send(void *ctx, uint64_t to_store, const struct tkv_rs_msg *m);

/* The server side: "/tinykvpb.TinyKv/Raft" and "/tinykvpb.TinyKv/Snapshot"
 * (client streams answered raft_serverpb.Done) into out[0..2), data = t.
 * Register them in the rpc server of t's core. */
#define TKV_TRANSPORT_N_METHODS 2
void tkv_transport_methods(struct tkv_transport *t, struct tkv_rpc_method out[TKV_TRANSPORT_N_METHODS]);

void tkv_transport_stats(const struct tkv_transport *t, struct tkv_transport_stats *out);

#endif
