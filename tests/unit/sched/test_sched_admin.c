/* Operators an administrator asks for (tkv_sched_admin_operator, PD's POST
 * /pd/api/v1/operators): every refusal with its reason, the operators built,
 * a scheduler's operator replaced, and the commands they send through
 * tkv_sched_dispatch until they finish. */
#include "sched_fixture.h"

#define WHY_CAP 256

/* Stores 1, 2 on node "a", 3 on "b", 4 on "c"; region 7 ["", "") on store 1
 * (and on 3 with two_peers), led by store 1. */
static struct tkv_sched_cluster *setup(bool two_peers)
{
    struct tkv_sched_cluster *c = mem_cluster(3);
    add_store(c, 1, "a");
    add_store(c, 2, "a");
    add_store(c, 3, "b");
    add_store(c, 4, "c");
    struct hb h;
    uint64_t stores[] = {1, 3};
    hb_make(&h, 7, "", "", stores, two_peers ? 2 : 1, 1, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    return c;
}

static int admin(struct tkv_sched_cluster *c, enum tkv_sched_admin_kind k, uint64_t region,
                 uint64_t store, char *why, struct tkv_sched_operator *op)
{
    why[0] = '\0';
    return tkv_sched_admin_operator(c, k, region, store, T0, op, why, WHY_CAP);
}

#define REFUSED(c, k, region, store, code, needle)                                                \
    do {                                                                                          \
        char why_[WHY_CAP];                                                                       \
        struct tkv_sched_operator op_;                                                            \
        int rv_ = admin(c, k, region, store, why_, &op_);                                         \
        cr_assert_eq(rv_, code, "kind %d region %d store %d: rv %d (%s)", (int)(k), (int)(region), \
                     (int)(store), rv_, why_);                                                    \
        cr_assert(strstr(why_, needle), "reason %s lacks %s", why_, needle);                      \
    } while (0)

Test(sched_admin, refusals)
{
    struct tkv_sched_cluster *c = setup(false);
    REFUSED(c, TKV_SCHED_ADMIN_ADD_PEER, 99, 3, TKV_ENOTFOUND, "region 99 not found");
    REFUSED(c, TKV_SCHED_ADMIN_ADD_PEER, 7, 99, TKV_ENOTFOUND, "store 99 not found");
    REFUSED(c, TKV_SCHED_ADMIN_ADD_PEER, 7, 1, TKV_EINVAL, "already has a peer on store 1");
    REFUSED(c, TKV_SCHED_ADMIN_ADD_PEER, 7, 2, TKV_EINVAL, "two replicas on one node");
    REFUSED(c, TKV_SCHED_ADMIN_REMOVE_PEER, 7, 1, TKV_EINVAL, "only peer");
    REFUSED(c, TKV_SCHED_ADMIN_REMOVE_PEER, 7, 3, TKV_EINVAL, "has no peer on store 3");
    REFUSED(c, TKV_SCHED_ADMIN_TRANSFER_LEADER, 7, 3, TKV_EINVAL, "has no peer on store 3");
    REFUSED(c, TKV_SCHED_ADMIN_TRANSFER_LEADER, 7, 1, TKV_EINVAL, "already on store 1");
    /* a store silent for longer than max-store-down-time takes nothing */
    tkv_sched_get_store(c, 4)->last_heartbeat_ns = T0 - 3600 * SEC;
    REFUSED(c, TKV_SCHED_ADMIN_ADD_PEER, 7, 4, TKV_EINVAL, "store 4 is not up");
    cr_assert_eq(tkv_sched_running_operators(c, ~0u), 0);
    tkv_sched_cluster_close(c);
}

Test(sched_admin, add_peer_replaces_the_checker_and_finishes)
{
    struct tkv_sched_cluster *c = setup(false);
    /* the replica checker wants a second peer: its operator runs */
    struct tkv_sched_operator chk;
    cr_assert(tkv_sched_check_replicas(c, tkv_sched_region_by_id(c, 7), T0, &chk));
    cr_assert_eq(tkv_sched_add_operator(c, &chk, T0), 0);
    char why[WHY_CAP];
    struct tkv_sched_operator op;
    cr_assert_eq(admin(c, TKV_SCHED_ADMIN_ADD_PEER, 7, 4, why, &op), 0, "%s", why);
    cr_assert(op.admin);
    cr_assert_eq(op.n_steps, 1);
    cr_assert_eq(op.steps[0].kind, TKV_SCHED_STEP_ADD_PEER);
    cr_assert_eq(op.steps[0].store_id, 4);
    cr_assert_neq(op.steps[0].peer_id, 0);
    struct tkv_sched_stats st0, st1;
    tkv_sched_get_stats(c, &st0);
    cr_assert_eq(tkv_sched_add_admin_operator(c, &op, T0), 0);
    tkv_sched_get_stats(c, &st1);
    cr_assert_eq(st1.ops_cancelled, st0.ops_cancelled + 1, "the checker's operator is cancelled");
    const struct tkv_sched_operator *cur = tkv_sched_get_operator(c, 7);
    cr_assert_str_eq(cur->desc, "admin-add-peer");
    cr_assert_eq(tkv_sched_running_operators(c, ~0u), 1);
    /* a second administrator's operator waits for the first */
    REFUSED(c, TKV_SCHED_ADMIN_ADD_PEER, 7, 3, TKV_EBUSY, "already has a running operator");
    cr_assert_eq(tkv_sched_add_admin_operator(c, &op, T0), TKV_EBUSY);

    /* the heartbeat response carries the AddNode for store 4 */
    schedulerpb_RegionHeartbeatResponse resp;
    cr_assert(tkv_sched_dispatch(c, 7, T0 + SEC, &resp));
    cr_assert(resp.has_change_peer);
    cr_assert_eq(resp.change_peer.change_type, eraftpb_ConfChangeType_AddNode);
    cr_assert_eq(resp.change_peer.peer.store_id, 4);
    cr_assert_eq(resp.change_peer.peer.id, op.steps[0].peer_id);
    /* the peer shows up caught up: done */
    struct hb h;
    uint64_t stores[] = {1, 4};
    hb_make(&h, 7, "", "", stores, 2, 1, 2, 1, 1);
    h.peers[1].id = op.steps[0].peer_id;
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    cr_assert_not(tkv_sched_dispatch(c, 7, T0 + 2 * SEC, &resp));
    cr_assert_eq(tkv_sched_get_operator(c, 7)->status, schedulerpb_OperatorStatus_SUCCESS);
    tkv_sched_cluster_close(c);
}

Test(sched_admin, transfer_leader_and_remove_peer)
{
    struct tkv_sched_cluster *c = setup(true);
    char why[WHY_CAP];
    struct tkv_sched_operator op;
    cr_assert_eq(admin(c, TKV_SCHED_ADMIN_TRANSFER_LEADER, 7, 3, why, &op), 0, "%s", why);
    cr_assert_eq(op.kind, TKV_SCHED_OP_LEADER);
    cr_assert_eq(tkv_sched_add_admin_operator(c, &op, T0), 0);
    schedulerpb_RegionHeartbeatResponse resp;
    cr_assert(tkv_sched_dispatch(c, 7, T0 + SEC, &resp));
    cr_assert(resp.has_transfer_leader);
    cr_assert_eq(resp.transfer_leader.peer.store_id, 3);
    cr_assert_eq(resp.transfer_leader.peer.id, 703);
    struct hb h;
    uint64_t stores[] = {1, 3};
    hb_make(&h, 7, "", "", stores, 2, 3, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    cr_assert_not(tkv_sched_dispatch(c, 7, T0 + 2 * SEC, &resp));
    cr_assert_eq(tkv_sched_get_operator(c, 7)->status, schedulerpb_OperatorStatus_SUCCESS);

    /* a peer still catching up does not take the leadership */
    hb_set_pending(&h, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    REFUSED(c, TKV_SCHED_ADMIN_TRANSFER_LEADER, 7, 1, TKV_EINVAL, "catching up");

    /* remove the follower on store 1: RemoveNode to the leader on store 3 */
    cr_assert_eq(admin(c, TKV_SCHED_ADMIN_REMOVE_PEER, 7, 1, why, &op), 0, "%s", why);
    cr_assert_eq(tkv_sched_add_admin_operator(c, &op, T0), 0);
    cr_assert(tkv_sched_dispatch(c, 7, T0 + 3 * SEC, &resp));
    cr_assert(resp.has_change_peer);
    cr_assert_eq(resp.change_peer.change_type, eraftpb_ConfChangeType_RemoveNode);
    cr_assert_eq(resp.change_peer.peer.id, 701);
    cr_assert_eq(resp.target_peer.store_id, 3);
    tkv_sched_cluster_close(c);
}
