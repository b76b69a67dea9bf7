/* tinyscheduler-server internals: the one-core server that serves the
 * schedulerpb.Scheduler service over the scheduler core (tkv/sched.h). */
#ifndef TKV_SCHED_SERVER_H
#define TKV_SCHED_SERVER_H

#include <stdint.h>

#include "tkv/config.h"
#include "tkv/engine.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"
#include "tkv/sched.h"

/* One RegionHeartbeat stream (a store's). Lives from the first message to
 * finish/cancel; on the server core. */
struct sched_hb_stream {
    struct tkv_rpc_call *call;
    uint64_t store_id; /* the store it is bound to (0 = none yet) */
    struct sched_hb_stream *prev, *next;
};

/* The server. Everything but cfg and the listen address is created and used
 * on the one reactor core. */
struct sched_raft;

struct sched_server {
    struct tkv_sched_config cfg;
    struct tkv_sched_options opts; /* the cluster core's options from cfg */
    struct sched_raft *raft;       /* several members: the replication (sched_raft.c) */
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port;
    uint64_t member_id;

    struct tkv_engine *engine;
    struct tkv_engine_session *sess;
    struct tkv_sched_cluster *cluster; /* NULL on a member that does not lead */
    struct tkv_rpc_server *rpc;
    struct tkv_reactor *reactor;

    struct sched_hb_stream *streams; /* every open heartbeat stream */
    struct tkv_timer patrol_timer, flush_timer;
    uint64_t rng;
    uint64_t start_ns;
    uint64_t prepare_ns; /* balance only this long after start (stores report first) */
    struct sched_http *http; /* status port, metrics, watchdog (sched_http.h) */
};

#define SCHED_N_METHODS 21
/* Fill the schedulerpb.Scheduler method table (data = srv). */
void sched_methods(struct sched_server *srv, struct tkv_rpc_method *methods, size_t *n_out);
/* Patrol and flush timers; drop heartbeat streams. Server core. */
void sched_service_start(struct sched_server *srv);
void sched_service_stop(struct sched_server *srv);

/* End every region-heartbeat stream with st (leadership lost). */
void sched_service_drop_streams(struct sched_server *srv, enum tkv_grpc_status st,
                                const char *text);

/* ---- replication (sched_raft.c); every function is a no-op or the
 * one-member answer when srv->raft is NULL ---- */

/* Members named by --initial-cluster (1 when it is empty). */
int sched_raft_members(const struct tkv_sched_config *cfg);
/* Join the group: raft log in <data-dir>/raft, peer listener on the first
 * peer URL, ticks. Serving starts when this member leads and has applied
 * an entry of its term. Server core. Errors: config, raft log, listen. */
int sched_raft_start(struct sched_server *srv);
/* Drop the cluster core, close peers, raft and raft log (core fini). */
void sched_raft_stop(struct sched_server *srv);
/* True when this member serves (one member: always). */
bool sched_raft_serving(const struct sched_server *srv);
/* Raft index a reply must wait for (0: it may go now). */
uint64_t sched_raft_wait_index(const struct sched_server *srv);
/* The reply barrier: reply / stream send / stream end now, or once every
 * write proposed before is committed and applied. Held ones are answered
 * UNAVAILABLE "not leader" if leadership is lost first. */
void sched_out_reply(struct sched_server *srv, struct tkv_rpc_call *call, const void *msg,
                     size_t len);
int sched_out_send(struct sched_server *srv, struct tkv_rpc_call *call, const void *msg,
                   size_t len);
void sched_out_finish_ok(struct sched_server *srv, struct tkv_rpc_call *call);
/* The call ends otherwise (cancel, error finish): drop what it holds. */
void sched_out_forget(struct sched_server *srv, struct tkv_rpc_call *call);

struct sched_member_info {
    const char *name, *peer_url, *client_url; /* client_url "" until learned */
    uint64_t id;
};
size_t sched_raft_n_members(const struct sched_server *srv); /* 0 = one member */
void sched_raft_member(const struct sched_server *srv, size_t i, struct sched_member_info *out);
uint64_t sched_raft_leader(const struct sched_server *srv); /* member id, 0 = unknown */
/* The cluster core to show (status port): srv->cluster, or an empty one on
 * a member that does not lead. */
struct tkv_sched_cluster *sched_raft_view(struct sched_server *srv);
/* The cluster id (from the core, or the replicated record; 0 = none yet). */
uint64_t sched_raft_cluster_id(const struct sched_server *srv);

/* Wall clock in ms (CLOCK_REALTIME: what faketime moves). */
uint64_t sched_wall_ms(void);

#endif
