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
struct sched_server {
    struct tkv_sched_config cfg;
    char host[TKV_CONFIG_ADDR_MAX];
    uint16_t port;
    uint64_t member_id;

    struct tkv_engine *engine;
    struct tkv_engine_session *sess;
    struct tkv_sched_cluster *cluster;
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

/* Wall clock in ms (CLOCK_REALTIME: what faketime moves). */
uint64_t sched_wall_ms(void);

#endif
