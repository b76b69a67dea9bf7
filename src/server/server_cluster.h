/* Cluster mode of tinykv-server (pd.endpoints set): every core k is a store
 * with its own store id, port, raft log, engine and raftstore; Raw* go
 * through the raftstore. Internal to src/server (see README.md "Cluster
 * mode"). server_node.c calls these at its few mode branch points. */
#ifndef TKV_SERVER_CLUSTER_H
#define TKV_SERVER_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tkv/raftstore.h"
#include "tkv/rpc.h"

struct server_node;
struct server_core;
struct tkv_reactor;

/* Main thread, before the cores start: per store, the data dir, the store
 * ident (store id persisted), the listener (port + k, or a free port),
 * the engine (WiredTiger log off); then the TinyKV start-up sequence with
 * the scheduler (GetMembers, AllocID, IsBootstrapped, Bootstrap, PutStore)
 * and a recovery pass over every store's raft log. Allocates node->cores
 * with each core's listen_fd. Returns 0 or a negative error (logged). */
int server_cluster_prepare(struct server_node *node);

/* Core k's share (core thread, from core_init): raft log in reactor mode,
 * raftstore, tick / heartbeat / checkpoint timers, scheduler client, the
 * store transport (tkv/transport.h). Returns 0 or a negative error
 * (logged; server_cluster_core_fini undoes). */
int server_cluster_core_init(struct tkv_reactor *r, struct server_core *c,
                             struct server_node *node);
/* Core thread, from the core's fini (also after a failed init). */
void server_cluster_core_fini(struct server_core *c);

/* Main thread after the cores stopped: stop the checkpoint thread, close
 * the engines (a final checkpoint each). Safe after a failed prepare. */
void server_cluster_close(struct server_node *node);

/* The port core k listens on (resolved) and its store id. */
uint16_t server_cluster_port(const struct server_node *node, uint32_t k);
uint64_t server_cluster_store_id(const struct server_node *node, uint32_t k);

/* /status: the stores array (address, port, store id, data dir). */
void server_cluster_status_fill(struct server_node *node, json_t *stores);

/* Replace the Raw* handlers of the method table with the raftstore ones,
 * Raft and Snapshot with the store transport's, and the Kv* ones with
 * txn's cluster driver (tkv/txn_cluster.h). */
void server_cluster_methods(struct server_core *c, struct tkv_rpc_method *methods, size_t n);

#endif
