/* raft private header: what the files of src/raft share, never included
 * outside this module (the layering test refuses it).
 *
 * The Raft state machine of tkv_raft_step is one struct tkv_raft that every
 * file reads and writes (raft is single-threaded and deterministic, see
 * include/tkv/raft.h), so its layout, the progress and pending-read records
 * and the constants they use are here; so are the functions one concern
 * calls in another (prefixed raft_). Everything else stays static in its
 * file. Files: raft_log.c, raft_replicate.c, raft_snapshot.c,
 * raft_election.c, raft_read.c, raft_membership.c, raft_step.c, raft_core.c
 * (README.md has the map). */
#ifndef TKV_RAFT_PRIVATE_H
#define TKV_RAFT_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/raft.h"

enum { PR_PROBE = 0, PR_REPLICATE = 1, PR_SNAPSHOT = 2 };
enum { VOTE_NONE = 0, VOTE_GRANTED = 1, VOTE_REJECTED = 2 };

/* Entries per MSG_APPEND when max_msg_bytes does not stop us earlier. */
#define RAFT_MAX_MSG_ENTRIES 4096
/* Committed entries per update; the rest follow in the next updates. */
#define RAFT_MAX_COMMITTED_ENTRIES 4096
/* Heartbeat contexts are (tick << CTX_SHIFT) | n-th context in that tick:
 * monotonic within a term, and the send tick is recoverable for leases. */
#define CTX_SHIFT 20
#define CTX_SUB_MAX ((1u << CTX_SHIFT) - 1)

struct raft_progress {
    uint64_t id;
    tkv_index match, next;
    uint32_t state;
    bool probe_sent;
    bool recent_active;
    uint8_t vote;
    tkv_index pending_snapshot;
    uint32_t snapshot_ticks;
    uint64_t acked_ctx;
    tkv_index sent_commit; /* commit index last sent in an append */
    /* Replicate-state window: last index of each unacknowledged append. */
    uint64_t *infl;
    uint32_t infl_start, infl_count;
};

struct raft_read {
    uint64_t seq;
    tkv_index index;
    uint64_t from;
    uint64_t ctx;
};

struct tkv_raft {
    struct tkv_raft_config cfg;
    struct tkv_raft_storage st;
    uint64_t id;
    tkv_term term;
    uint64_t vote;
    uint64_t lead;
    uint32_t role;

    /* Log. Indexes < u_offset are durable (in storage or the unstable
     * snapshot); ue holds [u_offset, u_offset + ue_len). */
    tkv_index committed, applied, emitted;
    struct tkv_raft_entry *ue;
    size_t ue_start, ue_len, ue_cap;
    tkv_index u_offset;
    tkv_index u_reported; /* first unstable index not yet in an update */
    struct tkv_raft_snapshot usnap;
    bool has_usnap, usnap_reported;

    struct raft_progress prs[TKV_RAFT_MAX_VOTERS];
    uint32_t n_prs;

    uint32_t election_elapsed, heartbeat_elapsed, randomized_timeout;
    /* Ticks since we last heard from a leader (or since a restart): unlike
     * election_elapsed it is not reset by term changes or votes, so a voter
     * that acknowledged a leader honours the lease (see raft_in_lease). */
    uint32_t lease_elapsed;
    uint64_t rng;
    uint64_t lead_transferee;
    tkv_index pending_conf_index;
    bool lease_broken;
    uint64_t now;
    uint64_t last_ctx;

    struct raft_read *reads;
    size_t n_reads, cap_reads;

    /* Output produced since the last update was built (pending). */
    struct tkv_raft_msg *msgs;
    size_t n_msgs, cap_msgs;
    struct tkv_raft_read_state *rs;
    size_t n_rs, cap_rs;
    /* The update handed out and not yet advanced: it owns its arrays and
     * one reference per payload, so events stepped while the caller works
     * through it (APPLIED, APPLY_CONF_CHANGE, LOG_PERSISTED, ...) cannot
     * free or move anything it points to. Arrays are swapped, not copied. */
    bool outstanding;
    struct tkv_raft_msg *out_msgs;
    size_t n_out_msgs, cap_out_msgs;
    struct tkv_raft_read_state *out_rs;
    size_t n_out_rs, cap_out_rs;
    struct tkv_raft_entry *out_ents;
    size_t n_out_ents, cap_out_ents;
    struct tkv_raft_snapshot out_snap;
    struct tkv_raft_entry *committed_out; /* reused across updates */
    size_t n_committed_out, cap_committed_out;
    struct tkv_raft_hard_state prev_hs;
    struct tkv_raft_soft_state prev_ss;
    bool conf_changed;
    struct tkv_raft_stats stats;
};

/* raft_log.c: log view (durable storage + unstable tail) */
tkv_index raft_log_last(const struct tkv_raft *r);
tkv_index raft_log_first(const struct tkv_raft *r);
struct tkv_raft_entry *raft_ue_at(struct tkv_raft *r, tkv_index i);
int raft_log_term(struct tkv_raft *r, tkv_index i, tkv_term *t);
tkv_term raft_term_or0(struct tkv_raft *r, tkv_index i);
tkv_term raft_last_term(struct tkv_raft *r);
bool raft_match_term(struct tkv_raft *r, tkv_index i, tkv_term t);
bool raft_is_up_to_date(struct tkv_raft *r, tkv_index li, tkv_term lt);
void raft_entries_unref(struct tkv_raft_entry *e, size_t n);
int raft_log_fill(struct tkv_raft *r, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                  struct tkv_raft_entry *e, size_t *n_out);
int raft_log_slice(struct tkv_raft *r, tkv_index lo, tkv_index hi, uint64_t max_bytes,
                   struct tkv_raft_entry **out, size_t *n_out);
int raft_ue_reserve(struct tkv_raft *r, size_t extra);
int raft_log_append(struct tkv_raft *r, const struct tkv_raft_entry *ents, size_t n);
void raft_commit_to(struct tkv_raft *r, tkv_index c);
tkv_index raft_persisted_last(const struct tkv_raft *r);
tkv_index raft_find_conflict_by_term(struct tkv_raft *r, tkv_index index, tkv_term t);
void raft_on_persisted(struct tkv_raft *r, tkv_index index, tkv_term term);

/* raft_replicate.c: progress and replication */
struct raft_progress *raft_pr_get(struct tkv_raft *r, uint64_t id);
bool raft_promotable(struct tkv_raft *r);
uint32_t raft_quorum(const struct tkv_raft *r);
void raft_infl_free_all(struct raft_progress *pr);
bool raft_infl_full(const struct tkv_raft *r, const struct raft_progress *pr);
void raft_infl_free_first(struct tkv_raft *r, struct raft_progress *pr);
void raft_pr_become_probe(struct raft_progress *pr);
bool raft_pr_maybe_update(struct raft_progress *pr, tkv_index n);
uint64_t raft_new_ctx(struct tkv_raft *r);
void raft_bcast_heartbeat(struct tkv_raft *r, uint64_t ctx);
bool raft_send_append(struct tkv_raft *r, struct raft_progress *pr, bool send_if_empty);
void raft_bcast_append(struct tkv_raft *r);
bool raft_maybe_commit(struct tkv_raft *r);
int raft_leader_propose(struct tkv_raft *r, const struct tkv_raft_entry *tmpl, size_t n);
void raft_handle_append_resp(struct tkv_raft *r, const struct tkv_raft_msg *m,
                             struct raft_progress *pr);
int raft_handle_append(struct tkv_raft *r, const struct tkv_raft_msg *m);
void raft_handle_heartbeat(struct tkv_raft *r, const struct tkv_raft_msg *m);
void raft_report(struct tkv_raft *r, uint32_t type, uint64_t node, bool failed);

/* raft_snapshot.c: snapshots */
bool raft_send_snapshot(struct tkv_raft *r, struct raft_progress *pr);
void raft_handle_snapshot(struct tkv_raft *r, const struct tkv_raft_msg *m);

/* raft_election.c: roles and elections */
void raft_become_follower(struct tkv_raft *r, tkv_term term, uint64_t lead);
int raft_hup(struct tkv_raft *r, bool transfer);
bool raft_quorum_active(struct tkv_raft *r);
int raft_step_candidate(struct tkv_raft *r, const struct tkv_raft_msg *m);
bool raft_in_lease(const struct tkv_raft *r);

/* raft_read.c: reads (ReadIndex and lease) */
void raft_drop_reads(struct tkv_raft *r);
int raft_push_read_state(struct tkv_raft *r, tkv_index index, uint64_t ctx);
void raft_advance_reads(struct tkv_raft *r);
int raft_leader_read_index(struct tkv_raft *r, uint64_t from, uint64_t ctx);

/* raft_membership.c: membership changes and leader transfer */
void raft_prs_set(struct tkv_raft *r, const struct tkv_raft_conf_state *cs);
void raft_send_timeout_now(struct tkv_raft *r, uint64_t to);
void raft_abort_transfer(struct tkv_raft *r);
int raft_apply_conf_change(struct tkv_raft *r, uint32_t type, uint64_t node);

/* raft_core.c: outgoing messages and updates */
bool raft_send(struct tkv_raft *r, struct tkv_raft_msg m);
void raft_release_update(struct tkv_raft *r);
void raft_build_update(struct tkv_raft *r, struct tkv_raft_update *up);

#endif
