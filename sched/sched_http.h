/* tinyscheduler-server's status port and operability (issue 12): the shared
 * status server (include/tkv/status.h: /metrics, /livez, /readyz, /status,
 * /config) on cfg.status_addr, plus PD's HTTP API shapes
 * (/pd/api/v1/stores, /pd/api/v1/store/<id>, /pd/api/v1/regions,
 * /pd/api/v1/region/id/<id>, /pd/api/v1/operators) and /dashboard; the
 * scheduler's metrics; the systemd watchdog.
 *
 * Threading: the scheduler state lives on the one reactor core; the HTTP
 * thread never reads it. A request asks the core for a snapshot (an atomic
 * "wanted" generation); the core's 50 ms tick builds the JSON documents
 * (jansson trees) for that generation and hands them over through a
 * lock-free triple buffer (three snapshot slots, each owned by exactly one
 * side at a time, exchanged with one atomic word), so every answer reflects
 * the state after the request arrived, the core takes no lock, and nobody
 * frees what the other side reads. A core that does not answer within 2 s
 * gets a 503. Metrics are the registry's (published by the core from the
 * cluster's counters on the same tick); the watchdog runs on the main
 * thread. See sched/README.md "Status port". */
#ifndef TKV_SCHED_HTTP_H
#define TKV_SCHED_HTTP_H

#include <stdint.h>

struct sched_server;
struct tkv_reactor_group;

/* Main thread, before the core starts: the metrics registry (one core
 * slot) and, when cfg.status_addr is set, the status server (a port that
 * cannot be opened is logged; the scheduler serves without it). */
void sched_http_start(struct sched_server *srv);

/* Server core, once the gRPC service listens: start the snapshot and
 * metrics tick; /readyz turns 200. */
void sched_http_core_start(struct sched_server *srv);
/* Server core, before the cluster is freed (idempotent). */
void sched_http_core_stop(struct sched_server *srv);

/* One patrol pass took ns (scheduler tick duration histogram). Core. */
void sched_http_patrol_done(struct sched_server *srv, uint64_t ns);

/* Main thread: tkv_reactor_group_run with the systemd watchdog (WATCHDOG=1
 * every half WatchdogSec while the core turns and serves) and SIGHUP
 * reopening the log file. Returns what tkv_reactor_group_run returns. */
int sched_http_run(struct sched_server *srv, struct tkv_reactor_group *group);

/* Main thread, after the group is gone: stop the status server, free. */
void sched_http_stop(struct sched_server *srv);

#endif
