/* Operators (steps, progress, timeouts, the heartbeat response of the
 * current step) and the code that makes them: replica checker,
 * balance-region (TinyKV 3C), balance-leader, the patrol that runs them
 * under the [schedule] limits. Placement rule everywhere: no two replicas of
 * a region on stores with the same node label (TKV_SCHED_NODE_LABEL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched_int.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static unsigned kind_index(enum tkv_sched_op_kind k)
{
    return (unsigned)__builtin_ctz((unsigned)k);
}

/* ---- operator influence ---- */

static void step_influence(struct tkv_sched_cluster *c, const struct tkv_sched_operator *op,
                           uint32_t i, int sign)
{
    const struct tkv_sched_step *st = &op->steps[i];
    struct tkv_sched_store *s = tkv_sched_get_store(c, st->store_id);
    int64_t size = (int64_t)op->region_size * sign;
    switch (st->kind) {
    case TKV_SCHED_STEP_ADD_PEER:
        if (s)
            s->influence_size += size;
        break;
    case TKV_SCHED_STEP_REMOVE_PEER:
        if (s)
            s->influence_size -= size;
        break;
    case TKV_SCHED_STEP_TRANSFER_LEADER: {
        struct tkv_sched_store *from = tkv_sched_get_store(c, op->leader_store);
        if (s)
            s->influence_leaders += sign;
        if (from)
            from->influence_leaders -= sign;
        break;
    }
    }
}

/* Effective size and leader count: counters plus running operators. */
static uint64_t eff_size(const struct tkv_sched_store *s)
{
    int64_t v = (int64_t)s->region_size + s->influence_size;
    return v > 0 ? (uint64_t)v : 0;
}

static uint64_t eff_leaders(const struct tkv_sched_store *s)
{
    int64_t v = (int64_t)s->leader_count + s->influence_leaders;
    return v > 0 ? (uint64_t)v : 0;
}

/* ---- placement helpers ---- */

static const char *node_of(const struct tkv_sched_store *s)
{
    if (!s)
        return NULL;
    for (uint32_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i].key, TKV_SCHED_NODE_LABEL) == 0)
            return s->labels[i].value;
    return NULL;
}

static bool same_node(const struct tkv_sched_store *a, const struct tkv_sched_store *b)
{
    const char *na = node_of(a), *nb = node_of(b);
    return a && b && (a->id == b->id || (na && nb && strcmp(na, nb) == 0));
}

static const struct tkv_sched_peer *peer_on(const struct tkv_sched_region *r, uint64_t store_id)
{
    for (uint32_t i = 0; i < r->n_peers; i++)
        if (r->peers[i].store_id == store_id)
            return &r->peers[i];
    return NULL;
}

static bool is_pending(const struct tkv_sched_region *r, uint64_t peer_id)
{
    for (uint32_t i = 0; i < r->n_pending; i++)
        if (r->pending[i].id == peer_id)
            return true;
    return false;
}

/* Would a replica on store t clash with the region's replicas, ignoring the
 * one on store skip_id (the one being moved away)? */
static bool node_taken(struct tkv_sched_cluster *c, const struct tkv_sched_region *r,
                       const struct tkv_sched_store *t, uint64_t skip_id)
{
    for (uint32_t i = 0; i < r->n_peers; i++) {
        if (r->peers[i].store_id == skip_id)
            continue;
        if (r->peers[i].store_id == t->id)
            return true;
        if (same_node(tkv_sched_get_store(c, r->peers[i].store_id), t))
            return true;
    }
    return false;
}

/* The available store with the least region size that may take a replica
 * of r in place of the one on skip_id (0 = adding). */
static struct tkv_sched_store *best_target(struct tkv_sched_cluster *c,
                                           const struct tkv_sched_region *r, uint64_t skip_id,
                                           uint64_t now_ns)
{
    struct tkv_sched_store *best = NULL;
    for (size_t i = 0; i < c->n_stores; i++) {
        struct tkv_sched_store *s = &c->stores[i];
        if (!tkv_sched_store_available(c, s, now_ns) || s->is_busy)
            continue;
        if (node_taken(c, r, s, skip_id))
            continue;
        if (!best || eff_size(s) < eff_size(best) ||
            (eff_size(s) == eff_size(best) && s->id < best->id))
            best = s;
    }
    return best;
}

/* ---- operators ---- */

const struct tkv_sched_operator *tkv_sched_get_operator(const struct tkv_sched_cluster *c,
                                                        uint64_t region_id)
{
    return sched_map_get(&c->ops, region_id);
}

size_t tkv_sched_running_operators(const struct tkv_sched_cluster *c, unsigned kind_mask)
{
    size_t n = 0;
    for (unsigned i = 0; i < 8; i++)
        if (kind_mask & (1u << i))
            n += c->n_running[i];
    return n;
}

static void op_end(struct tkv_sched_cluster *c, struct tkv_sched_operator *op, int status)
{
    if (op->status != schedulerpb_OperatorStatus_RUNNING)
        return;
    op->status = status;
    for (uint32_t i = op->current; i < op->n_steps; i++)
        step_influence(c, op, i, -1);
    c->n_running[kind_index(op->kind)]--;
    unsigned k = kind_index(op->kind) < 3 ? kind_index(op->kind) : 2;
    if (status == schedulerpb_OperatorStatus_SUCCESS) {
        c->stats.ops_finished++;
        c->stats.ops_finished_by_kind[k]++;
    } else if (status == schedulerpb_OperatorStatus_TIMEOUT) {
        c->stats.ops_timed_out++;
        c->stats.ops_timed_out_by_kind[k]++;
    } else
        c->stats.ops_cancelled++;
    TKV_LOG_DEBUG("operator ended", TKV_LF_U64("region_id", op->region_id),
                  TKV_LF_STR("desc", op->desc), TKV_LF_U64("status", status));
}

/* Pairs of the region's replicas sharing a node among stores[0..n). */
static unsigned node_clashes(struct tkv_sched_cluster *c, const uint64_t *stores, uint32_t n)
{
    unsigned k = 0;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < i; j++)
            k += same_node(tkv_sched_get_store(c, stores[i]), tkv_sched_get_store(c, stores[j]));
    return k;
}

/* The node rule at the one door every operator goes through: an operator
 * may not leave its region with more replicas sharing a node than it has
 * now (a move between two cores of one node passes: add, then remove;
 * repairing a clash passes). Whoever built it -- checker, balancer,
 * administrator -- a bug there cannot place two replicas on one node. */
static bool placement_worsens(struct tkv_sched_cluster *c, const struct tkv_sched_operator *op)
{
    const struct tkv_sched_region *r = tkv_sched_region_by_id(c, op->region_id);
    uint64_t stores[TKV_SCHED_MAX_PEERS + TKV_SCHED_MAX_STEPS];
    uint32_t n = 0;
    if (!r)
        return false;
    for (uint32_t i = 0; i < r->n_peers; i++)
        stores[n++] = r->peers[i].store_id;
    unsigned before = node_clashes(c, stores, n);
    for (uint32_t i = 0; i < op->n_steps && i < TKV_SCHED_MAX_STEPS; i++) {
        const struct tkv_sched_step *st = &op->steps[i];
        uint32_t at = n;
        for (uint32_t j = 0; j < n; j++)
            if (stores[j] == st->store_id)
                at = j;
        if (st->kind == TKV_SCHED_STEP_ADD_PEER && at == n)
            stores[n++] = st->store_id;
        else if (st->kind == TKV_SCHED_STEP_REMOVE_PEER && at < n)
            stores[at] = stores[--n];
    }
    return node_clashes(c, stores, n) > before;
}

int tkv_sched_add_operator(struct tkv_sched_cluster *c, const struct tkv_sched_operator *op,
                           uint64_t now_ns)
{
    struct tkv_sched_operator *cur = sched_map_get(&c->ops, op->region_id);
    if (op->n_steps == 0 || op->n_steps > TKV_SCHED_MAX_STEPS || op->region_id == 0)
        return TKV_EINVAL;
    if (placement_worsens(c, op)) {
        TKV_LOG_WARN("operator refused: two replicas of the region on one node",
                     TKV_LF_U64("region_id", op->region_id), TKV_LF_STR("desc", op->desc));
        return TKV_EINVAL;
    }
    if (cur && cur->status == schedulerpb_OperatorStatus_RUNNING)
        return TKV_EBUSY;
    if (!cur) {
        cur = tkv_xmalloc(sizeof(*cur));
        sched_map_put(&c->ops, op->region_id, cur);
    }
    *cur = *op;
    cur->current = 0;
    cur->created_ns = now_ns;
    if (!cur->timeout_ns)
        cur->timeout_ns = op->kind == TKV_SCHED_OP_LEADER ? TKV_SCHED_LEADER_OP_TIMEOUT_NS
                                                          : TKV_SCHED_REGION_OP_TIMEOUT_NS;
    cur->status = schedulerpb_OperatorStatus_RUNNING;
    if (!cur->region_size) {
        const struct tkv_sched_region *r = tkv_sched_region_by_id(c, op->region_id);
        cur->region_size = r ? r->approximate_size : 1;
        cur->leader_store = r ? r->leader.store_id : 0;
    }
    for (uint32_t i = 0; i < cur->n_steps; i++)
        step_influence(c, cur, i, 1);
    c->n_running[kind_index(op->kind)]++;
    c->stats.ops_created++;
    c->stats.ops_created_by_kind[kind_index(op->kind) < 3 ? kind_index(op->kind) : 2]++;
    TKV_LOG_DEBUG("operator added", TKV_LF_U64("region_id", op->region_id),
                  TKV_LF_STR("desc", op->desc), TKV_LF_U64("steps", op->n_steps));
    return 0;
}

static bool step_done(const struct tkv_sched_region *r, const struct tkv_sched_step *st)
{
    const struct tkv_sched_peer *p = peer_on(r, st->store_id);
    switch (st->kind) {
    case TKV_SCHED_STEP_ADD_PEER:
        return p && !is_pending(r, p->id);
    case TKV_SCHED_STEP_REMOVE_PEER:
        return !p;
    case TKV_SCHED_STEP_TRANSFER_LEADER:
        return r->leader.store_id == st->store_id;
    }
    return false;
}

bool tkv_sched_dispatch(struct tkv_sched_cluster *c, uint64_t region_id, uint64_t now_ns,
                        schedulerpb_RegionHeartbeatResponse *resp)
{
    struct tkv_sched_operator *op = sched_map_get(&c->ops, region_id);
    const struct tkv_sched_region *r = tkv_sched_region_by_id(c, region_id);

    if (!op || op->status != schedulerpb_OperatorStatus_RUNNING)
        return false;
    if (!r) {
        op_end(c, op, schedulerpb_OperatorStatus_CANCEL);
        return false;
    }
    while (op->current < op->n_steps && step_done(r, &op->steps[op->current]))
        step_influence(c, op, op->current++, -1);
    if (op->current == op->n_steps) {
        op_end(c, op, schedulerpb_OperatorStatus_SUCCESS);
        return false;
    }
    if (now_ns - op->created_ns > op->timeout_ns) {
        op_end(c, op, schedulerpb_OperatorStatus_TIMEOUT);
        return false;
    }

    const struct tkv_sched_step *st = &op->steps[op->current];
    const struct tkv_sched_peer *p = peer_on(r, st->store_id);
    memset(resp, 0, sizeof(*resp));
    switch (st->kind) {
    case TKV_SCHED_STEP_ADD_PEER:
        if (p)
            return false; /* added, still catching up: nothing to send */
        resp->has_change_peer = true;
        resp->change_peer.has_peer = true;
        resp->change_peer.peer.id = st->peer_id;
        resp->change_peer.peer.store_id = st->store_id;
        resp->change_peer.change_type = eraftpb_ConfChangeType_AddNode;
        break;
    case TKV_SCHED_STEP_REMOVE_PEER:
        if (p->id == r->leader.id) {
            /* A leader does not remove itself: hand leadership to a caught-up
             * peer first, then remove on a later heartbeat. */
            const struct tkv_sched_peer *to = NULL;
            for (uint32_t i = 0; i < r->n_peers && !to; i++)
                if (r->peers[i].id != p->id && !is_pending(r, r->peers[i].id))
                    to = &r->peers[i];
            if (!to)
                return false;
            resp->has_transfer_leader = true;
            resp->transfer_leader.has_peer = true;
            resp->transfer_leader.peer.id = to->id;
            resp->transfer_leader.peer.store_id = to->store_id;
            break;
        }
        resp->has_change_peer = true;
        resp->change_peer.has_peer = true;
        resp->change_peer.peer.id = p->id;
        resp->change_peer.peer.store_id = p->store_id;
        resp->change_peer.change_type = eraftpb_ConfChangeType_RemoveNode;
        break;
    case TKV_SCHED_STEP_TRANSFER_LEADER:
        if (!p) {
            op_end(c, op, schedulerpb_OperatorStatus_CANCEL);
            return false;
        }
        resp->has_transfer_leader = true;
        resp->transfer_leader.has_peer = true;
        resp->transfer_leader.peer.id = p->id;
        resp->transfer_leader.peer.store_id = p->store_id;
        break;
    }
    resp->has_header = true;
    resp->header.cluster_id = c->cluster_id;
    resp->region_id = r->id;
    resp->has_region_epoch = true;
    resp->region_epoch.conf_ver = r->conf_ver;
    resp->region_epoch.version = r->version;
    resp->has_target_peer = true;
    resp->target_peer.id = r->leader.id;
    resp->target_peer.store_id = r->leader.store_id;
    return true;
}

/* ---- operator builders ---- */

static void op_init(struct tkv_sched_operator *op, const struct tkv_sched_region *r,
                    enum tkv_sched_op_kind kind, const char *desc)
{
    memset(op, 0, sizeof(*op));
    op->region_id = r->id;
    op->kind = kind;
    snprintf(op->desc, sizeof(op->desc), "%s", desc);
    op->epoch_conf_ver = r->conf_ver;
    op->epoch_version = r->version;
    op->region_size = r->approximate_size;
    op->leader_store = r->leader.store_id;
}

static void op_step(struct tkv_sched_operator *op, enum tkv_sched_step_kind kind, uint64_t store_id,
                    uint64_t peer_id)
{
    TKV_DASSERT(op->n_steps < TKV_SCHED_MAX_STEPS);
    op->steps[op->n_steps++] = (struct tkv_sched_step){kind, store_id, peer_id};
}

/* MovePeer: add on `to`, move leadership away if `from` leads, remove `from`. */
static bool make_move(struct tkv_sched_cluster *c, const struct tkv_sched_region *r, uint64_t from,
                      uint64_t to, enum tkv_sched_op_kind kind, const char *desc,
                      struct tkv_sched_operator *op)
{
    uint64_t peer_id;
    if (tkv_sched_alloc_id(c, &peer_id))
        return false;
    op_init(op, r, kind, desc);
    op_step(op, TKV_SCHED_STEP_ADD_PEER, to, peer_id);
    if (r->leader.store_id == from)
        op_step(op, TKV_SCHED_STEP_TRANSFER_LEADER, to, 0);
    op_step(op, TKV_SCHED_STEP_REMOVE_PEER, from, 0);
    return true;
}

/* ---- operators asked for by an administrator (PD's POST /operators) ---- */

int tkv_sched_admin_operator(struct tkv_sched_cluster *c, enum tkv_sched_admin_kind kind,
                             uint64_t region_id, uint64_t store_id, uint64_t now_ns,
                             struct tkv_sched_operator *op, char *why, size_t why_cap)
{
    const struct tkv_sched_region *r = tkv_sched_region_by_id(c, region_id);
    const struct tkv_sched_store *s = tkv_sched_get_store(c, store_id);
    const struct tkv_sched_operator *cur = tkv_sched_get_operator(c, region_id);
    const struct tkv_sched_peer *p;

    if (!r) {
        snprintf(why, why_cap, "region %llu not found", (unsigned long long)region_id);
        return TKV_ENOTFOUND;
    }
    if (!s) {
        snprintf(why, why_cap, "store %llu not found", (unsigned long long)store_id);
        return TKV_ENOTFOUND;
    }
    if (cur && cur->status == schedulerpb_OperatorStatus_RUNNING && cur->admin) {
        snprintf(why, why_cap, "region %llu already has a running operator (%s)",
                 (unsigned long long)region_id, cur->desc);
        return TKV_EBUSY;
    }
    p = peer_on(r, store_id);
    switch (kind) {
    case TKV_SCHED_ADMIN_TRANSFER_LEADER:
        if (!p) {
            snprintf(why, why_cap, "region %llu has no peer on store %llu",
                     (unsigned long long)region_id, (unsigned long long)store_id);
            return TKV_EINVAL;
        }
        if (r->leader.store_id == store_id) {
            snprintf(why, why_cap, "the leader of region %llu is already on store %llu",
                     (unsigned long long)region_id, (unsigned long long)store_id);
            return TKV_EINVAL;
        }
        if (is_pending(r, p->id)) {
            snprintf(why, why_cap, "the peer of region %llu on store %llu is still catching up",
                     (unsigned long long)region_id, (unsigned long long)store_id);
            return TKV_EINVAL;
        }
        if (!tkv_sched_store_available(c, s, now_ns)) {
            snprintf(why, why_cap, "store %llu is not up", (unsigned long long)store_id);
            return TKV_EINVAL;
        }
        op_init(op, r, TKV_SCHED_OP_LEADER, "admin-transfer-leader");
        op->admin = true;
        op_step(op, TKV_SCHED_STEP_TRANSFER_LEADER, store_id, 0);
        return 0;
    case TKV_SCHED_ADMIN_ADD_PEER: {
        if (p) {
            snprintf(why, why_cap, "region %llu already has a peer on store %llu",
                     (unsigned long long)region_id, (unsigned long long)store_id);
            return TKV_EINVAL;
        }
        if (!tkv_sched_store_available(c, s, now_ns)) {
            snprintf(why, why_cap, "store %llu is not up", (unsigned long long)store_id);
            return TKV_EINVAL;
        }
        if (node_taken(c, r, s, 0)) {
            snprintf(why, why_cap,
                     "region %llu already has a replica on node %s (store %llu's node): two "
                     "replicas on one node",
                     (unsigned long long)region_id, node_of(s) ? node_of(s) : "?",
                     (unsigned long long)store_id);
            return TKV_EINVAL;
        }
        if (r->n_peers >= TKV_SCHED_MAX_PEERS - 1) {
            snprintf(why, why_cap, "region %llu has %u peers already",
                     (unsigned long long)region_id, (unsigned)r->n_peers);
            return TKV_EINVAL;
        }
        uint64_t peer_id;
        int rv = tkv_sched_alloc_id(c, &peer_id);
        if (rv) {
            snprintf(why, why_cap, "cannot allocate a peer id: %s", tkv_strerror(rv));
            return rv;
        }
        op_init(op, r, TKV_SCHED_OP_REPLICA, "admin-add-peer");
        op->admin = true;
        op_step(op, TKV_SCHED_STEP_ADD_PEER, store_id, peer_id);
        return 0;
    }
    case TKV_SCHED_ADMIN_REMOVE_PEER:
        if (!p) {
            snprintf(why, why_cap, "region %llu has no peer on store %llu",
                     (unsigned long long)region_id, (unsigned long long)store_id);
            return TKV_EINVAL;
        }
        if (r->n_peers == 1) {
            snprintf(why, why_cap, "store %llu holds the only peer of region %llu",
                     (unsigned long long)store_id, (unsigned long long)region_id);
            return TKV_EINVAL;
        }
        op_init(op, r, TKV_SCHED_OP_REPLICA, "admin-remove-peer");
        op->admin = true;
        op_step(op, TKV_SCHED_STEP_REMOVE_PEER, store_id, 0);
        return 0;
    }
    snprintf(why, why_cap, "unknown operator kind");
    return TKV_EINVAL;
}

int tkv_sched_add_admin_operator(struct tkv_sched_cluster *c, const struct tkv_sched_operator *op,
                                 uint64_t now_ns)
{
    struct tkv_sched_operator *cur = sched_map_get(&c->ops, op->region_id);
    if (placement_worsens(c, op))
        return TKV_EINVAL; /* before cancelling anything */
    if (cur && cur->status == schedulerpb_OperatorStatus_RUNNING) {
        if (cur->admin)
            return TKV_EBUSY;
        TKV_LOG_INFO("operator replaced by an administrator's",
                     TKV_LF_U64("region_id", op->region_id), TKV_LF_STR("old", cur->desc),
                     TKV_LF_STR("new", op->desc));
        op_end(c, cur, schedulerpb_OperatorStatus_CANCEL);
    }
    return tkv_sched_add_operator(c, op, now_ns);
}

/* ---- replica checker ---- */

static bool peer_bad(struct tkv_sched_cluster *c, const struct tkv_sched_peer *p, uint64_t now_ns)
{
    return !tkv_sched_store_available(c, tkv_sched_get_store(c, p->store_id), now_ns);
}

/* A peer sharing a node with an earlier peer of the region (the later one
 * is the one to move), or NULL. */
static const struct tkv_sched_peer *node_clash(struct tkv_sched_cluster *c,
                                               const struct tkv_sched_region *r)
{
    for (uint32_t i = 0; i < r->n_peers; i++)
        for (uint32_t j = 0; j < i; j++)
            if (same_node(tkv_sched_get_store(c, r->peers[i].store_id),
                          tkv_sched_get_store(c, r->peers[j].store_id)))
                return r->peers[i].id == r->leader.id ? &r->peers[j] : &r->peers[i];
    return NULL;
}

bool tkv_sched_check_replicas(struct tkv_sched_cluster *c, const struct tkv_sched_region *r,
                              uint64_t now_ns, struct tkv_sched_operator *op)
{
    uint64_t max = c->opts.max_replicas ? c->opts.max_replicas : 3;
    const struct tkv_sched_peer *bad = NULL;
    struct tkv_sched_store *t;

    for (uint32_t i = 0; i < r->n_peers && !bad; i++)
        if (peer_bad(c, &r->peers[i], now_ns))
            bad = &r->peers[i];
    if (r->n_peers < max) {
        t = best_target(c, r, 0, now_ns);
        uint64_t peer_id;
        if (!t || tkv_sched_alloc_id(c, &peer_id))
            return false;
        op_init(op, r, TKV_SCHED_OP_REPLICA, "make-up-replica");
        op_step(op, TKV_SCHED_STEP_ADD_PEER, t->id, peer_id);
        return true;
    }
    if (!bad)
        bad = node_clash(c, r);
    if (r->n_peers > max) {
        const struct tkv_sched_peer *worst = bad;
        if (!worst) {
            uint64_t worst_size = 0;
            for (uint32_t i = 0; i < r->n_peers; i++) {
                const struct tkv_sched_store *s = tkv_sched_get_store(c, r->peers[i].store_id);
                uint64_t size = s ? s->region_size : UINT64_MAX;
                if (!worst || size > worst_size ||
                    (size == worst_size && r->peers[i].store_id > worst->store_id)) {
                    worst = &r->peers[i];
                    worst_size = size;
                }
            }
        }
        op_init(op, r, TKV_SCHED_OP_REPLICA, "remove-extra-replica");
        op_step(op, TKV_SCHED_STEP_REMOVE_PEER, worst->store_id, 0);
        return true;
    }
    if (bad) {
        t = best_target(c, r, bad->store_id, now_ns);
        if (!t)
            return false;
        return make_move(c, r, bad->store_id, t->id, TKV_SCHED_OP_REPLICA, "replace-replica", op);
    }
    return false;
}

/* ---- balance-region ---- */

struct store_ref {
    struct tkv_sched_store *s;
};

static int by_region_size_desc(const void *a, const void *b)
{
    const struct tkv_sched_store *x = ((const struct store_ref *)a)->s;
    const struct tkv_sched_store *y = ((const struct store_ref *)b)->s;
    if (eff_size(x) != eff_size(y))
        return eff_size(x) > eff_size(y) ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool op_running(const struct tkv_sched_cluster *c, uint64_t region_id)
{
    const struct tkv_sched_operator *op = sched_map_get(&c->ops, region_id);
    return op && op->status == schedulerpb_OperatorStatus_RUNNING;
}

/* The regions with a peer on store_id, grouped: pending there, then where
 * it follows, then where it leads (TinyKV's RandPendingRegion,
 * RandFollowerRegion, RandLeaderRegion). One pass over the tree; scratch
 * holds n_regions entries. Returns the group to pick from (*n_out entries at
 * *out), or n_out 0. */
static void region_groups(struct tkv_sched_cluster *c, uint64_t store_id,
                          const struct tkv_sched_region **scratch,
                          const struct tkv_sched_region ***out, size_t *n_out)
{
    size_t n_pend = 0, n_foll = 0, n_lead = 0, total = c->n_tree;
    /* pending from the front, leaders from the back, followers after pending */
    for (size_t i = 0; i < c->n_tree; i++) {
        const struct tkv_sched_region *r = c->tree[i];
        const struct tkv_sched_peer *p = peer_on(r, store_id);
        if (!p)
            continue;
        if (is_pending(r, p->id))
            n_pend++;
        else if (r->leader.id == p->id)
            scratch[total - ++n_lead] = r;
    }
    if (n_pend) {
        size_t k = 0;
        for (size_t i = 0; i < c->n_tree && k < n_pend; i++) {
            const struct tkv_sched_peer *p = peer_on(c->tree[i], store_id);
            if (p && is_pending(c->tree[i], p->id))
                scratch[k++] = c->tree[i];
        }
        *out = scratch;
        *n_out = n_pend;
        return;
    }
    for (size_t i = 0; i < c->n_tree && n_foll < total - n_lead; i++) {
        const struct tkv_sched_region *r = c->tree[i];
        const struct tkv_sched_peer *p = peer_on(r, store_id);
        if (p && r->leader.id != p->id)
            scratch[n_foll++] = r;
    }
    if (n_foll) {
        *out = scratch;
        *n_out = n_foll;
        return;
    }
    *out = scratch + (total - n_lead);
    *n_out = n_lead;
}

bool tkv_sched_balance_region(struct tkv_sched_cluster *c, uint64_t now_ns, uint64_t *rng,
                              struct tkv_sched_operator *op)
{
    uint64_t max = c->opts.max_replicas ? c->opts.max_replicas : 3;
    struct store_ref *suit = tkv_xcalloc(c->n_stores + 1, sizeof(*suit));
    const struct tkv_sched_region **scratch = tkv_xcalloc(c->n_tree + 1, sizeof(*scratch));
    size_t n = 0;
    bool found = false;

    for (size_t i = 0; i < c->n_stores; i++)
        if (tkv_sched_store_available(c, &c->stores[i], now_ns))
            suit[n++].s = &c->stores[i];
    qsort(suit, n, sizeof(*suit), by_region_size_desc);
    for (size_t si = 0; si < n && !found; si++) {
        struct tkv_sched_store *src = suit[si].s;
        const struct tkv_sched_region **group;
        size_t n_group;
        region_groups(c, src->id, scratch, &group, &n_group);
        for (int attempt = 0; attempt < 10 && !found && n_group; attempt++) {
            const struct tkv_sched_region *r = group[rng_next(rng) % n_group];
            if (r->n_peers != max || op_running(c, r->id))
                continue;
            /* Target: the smallest suitable store that may hold it. */
            struct tkv_sched_store *dst = NULL;
            for (size_t ti = n; ti-- > 0;) {
                struct tkv_sched_store *t = suit[ti].s;
                if (t->is_busy || node_taken(c, r, t, src->id))
                    continue;
                dst = t;
                break;
            }
            if (!dst)
                continue;
            if (eff_size(src) < eff_size(dst) ||
                eff_size(src) - eff_size(dst) < 2 * r->approximate_size)
                continue;
            found = make_move(c, r, src->id, dst->id, TKV_SCHED_OP_REGION, "balance-region", op);
        }
    }
    tkv_free(scratch);
    tkv_free(suit);
    return found;
}

/* ---- balance-leader ---- */

static int by_leader_count_desc(const void *a, const void *b)
{
    const struct tkv_sched_store *x = ((const struct store_ref *)a)->s;
    const struct tkv_sched_store *y = ((const struct store_ref *)b)->s;
    if (eff_leaders(x) != eff_leaders(y))
        return eff_leaders(x) > eff_leaders(y) ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Sources in descending leader count (a few of them); for each, among the
 * regions it leads, the caught-up follower on the available store with the
 * fewest leaders; transfer when that leaves the pair no worse balanced
 * (difference of at least 2). */
bool tkv_sched_balance_leader(struct tkv_sched_cluster *c, uint64_t now_ns, uint64_t *rng,
                              struct tkv_sched_operator *op)
{
    struct store_ref *src = tkv_xcalloc(c->n_stores + 1, sizeof(*src));
    size_t n = 0;
    bool found = false;
    (void)rng;

    for (size_t i = 0; i < c->n_stores; i++)
        if (c->stores[i].state != metapb_StoreState_Tombstone && eff_leaders(&c->stores[i]))
            src[n++].s = &c->stores[i];
    qsort(src, n, sizeof(*src), by_leader_count_desc);
    for (size_t si = 0; si < n && si < 4 && !found; si++) {
        const struct tkv_sched_store *s = src[si].s;
        const struct tkv_sched_region *best_r = NULL;
        const struct tkv_sched_peer *best_p = NULL;
        uint64_t best_count = UINT64_MAX;
        for (size_t i = 0; i < c->n_tree; i++) {
            const struct tkv_sched_region *r = c->tree[i];
            if (r->leader.store_id != s->id || op_running(c, r->id))
                continue;
            for (uint32_t k = 0; k < r->n_peers; k++) {
                const struct tkv_sched_peer *p = &r->peers[k];
                if (p->id == r->leader.id || is_pending(r, p->id))
                    continue;
                struct tkv_sched_store *t = tkv_sched_get_store(c, p->store_id);
                if (!tkv_sched_store_available(c, t, now_ns) || t->is_busy)
                    continue;
                if (eff_leaders(t) < best_count) {
                    best_count = eff_leaders(t);
                    best_r = r;
                    best_p = p;
                }
            }
        }
        if (best_r && eff_leaders(s) >= best_count + 2) {
            op_init(op, best_r, TKV_SCHED_OP_LEADER, "balance-leader");
            op_step(op, TKV_SCHED_STEP_TRANSFER_LEADER, best_p->store_id, 0);
            found = true;
        }
    }
    tkv_free(src);
    return found;
}

/* ---- patrol ---- */

size_t tkv_sched_patrol(struct tkv_sched_cluster *c, uint64_t now_ns, uint64_t *rng, size_t max_new)
{
    struct tkv_sched_operator op;
    size_t added = 0;

    /* Time out operators whose region went quiet. */
    for (size_t i = 0; i < c->ops.cap; i++) {
        struct tkv_sched_operator *o = c->ops.slots[i].val;
        if (c->ops.slots[i].key && o->status == schedulerpb_OperatorStatus_RUNNING &&
            now_ns - o->created_ns > o->timeout_ns)
            op_end(c, o, schedulerpb_OperatorStatus_TIMEOUT);
    }
    for (size_t i = 0; i < c->n_tree && added < max_new; i++) {
        if (c->opts.replica_schedule_limit == 0 ||
            tkv_sched_running_operators(c, TKV_SCHED_OP_REPLICA) >= c->opts.replica_schedule_limit)
            break;
        const struct tkv_sched_region *r = c->tree[i];
        if (op_running(c, r->id))
            continue;
        if (tkv_sched_check_replicas(c, r, now_ns, &op) &&
            tkv_sched_add_operator(c, &op, now_ns) == 0)
            added++;
    }
    while (added < max_new && c->opts.region_schedule_limit &&
           tkv_sched_running_operators(c, TKV_SCHED_OP_REGION) < c->opts.region_schedule_limit &&
           tkv_sched_balance_region(c, now_ns, rng, &op)) {
        if (tkv_sched_add_operator(c, &op, now_ns))
            break;
        added++;
    }
    while (added < max_new && c->opts.leader_schedule_limit &&
           tkv_sched_running_operators(c, TKV_SCHED_OP_LEADER) < c->opts.leader_schedule_limit &&
           tkv_sched_balance_leader(c, now_ns, rng, &op)) {
        if (tkv_sched_add_operator(c, &op, now_ns))
            break;
        added++;
    }
    return added;
}
