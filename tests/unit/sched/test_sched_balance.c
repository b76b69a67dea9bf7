/* balance-region (TinyKV 3C balance_test.go: TestReplicas13C, 33C, 53C,
 * TestReplacePendingRegion3C), balance-leader, the replica checker, the
 * node-label placement rule, and operators driven through heartbeats.
 *
 * Like TinyKV's mock cluster, the tests set store region sizes directly
 * (AddRegionStore(id, n) = n regions of 10 MiB) after placing regions. */
#include "sched_fixture.h"

static struct tkv_sched_cluster *c;
static uint64_t rng = 7;
static uint64_t sizes[32]; /* store id -> region size the test wants */

static void setup(void)
{
    memset(sizes, 0, sizeof(sizes));
}

static void teardown(void)
{
    tkv_sched_cluster_close(c);
    c = NULL;
}

TestSuite(balance, .init = setup, .fini = teardown);

static void apply_sizes(void)
{
    for (size_t i = 0; i < tkv_sched_n_stores(c); i++) {
        struct tkv_sched_store *s = tkv_sched_store_at(c, i);
        s->region_size = sizes[s->id];
        s->region_count = sizes[s->id] / 10;
    }
}

/* AddRegionStore(id, count): an Up store heard from now, count x 10 MiB. */
static void add_region_store(uint64_t id, uint64_t count)
{
    if (!tkv_sched_get_store(c, id))
        add_store(c, id, NULL);
    sizes[id] = count * 10;
    apply_sizes();
}

/* AddLeaderRegion(id, leader, followers...). */
static void add_leader_region(uint64_t id, const uint64_t *stores, size_t n)
{
    struct hb h;
    const struct tkv_sched_region *old = tkv_sched_region_by_id(c, id);
    uint64_t conf = old ? old->conf_ver + 1 : 1;
    hb_make(&h, id, "", "", stores, n, stores[0], conf, 1, 10);
    /* Distinct ranges per region id. */
    snprintf(h.start, sizeof(h.start), "r%02llu", (unsigned long long)id);
    snprintf(h.end, sizeof(h.end), "r%02llu", (unsigned long long)id + 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    apply_sizes();
}

static void set_store_down(uint64_t id)
{
    tkv_sched_get_store(c, id)->last_heartbeat_ns = T0 - 3600 * SEC;
}

static bool schedule(struct tkv_sched_operator *op)
{
    return tkv_sched_balance_region(c, T0, &rng, op);
}

/* The operator moves a peer from `from` to `to` (AddPeer to, RemovePeer
 * from, with TransferLeader to `to` in between when with_leader). */
static void check_transfer_peer(const struct tkv_sched_operator *op, uint64_t from, uint64_t to,
                                bool with_leader)
{
    cr_assert_eq(op->kind, TKV_SCHED_OP_REGION);
    cr_assert_eq(op->steps[0].kind, TKV_SCHED_STEP_ADD_PEER);
    cr_assert_eq(op->steps[0].store_id, to, "peer added to store %llu, want %llu",
                 (unsigned long long)op->steps[0].store_id, (unsigned long long)to);
    cr_assert_neq(op->steps[0].peer_id, 0, "new peer needs an allocated id");
    uint32_t last = op->n_steps - 1;
    cr_assert_eq(op->steps[last].kind, TKV_SCHED_STEP_REMOVE_PEER);
    cr_assert_eq(op->steps[last].store_id, from, "peer removed from store %llu, want %llu",
                 (unsigned long long)op->steps[last].store_id, (unsigned long long)from);
    if (with_leader) {
        cr_assert_eq(op->n_steps, 3);
        cr_assert_eq(op->steps[1].kind, TKV_SCHED_STEP_TRANSFER_LEADER);
        cr_assert_eq(op->steps[1].store_id, to);
    } else {
        cr_assert_eq(op->n_steps, 2);
    }
}

Test(balance, TestReplicas13C)
{
    struct tkv_sched_operator op;
    c = mem_cluster(1);
    add_region_store(1, 6);
    add_region_store(2, 8);
    add_region_store(3, 8);
    add_region_store(4, 16);
    add_leader_region(1, (uint64_t[]){4}, 1);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 4, 1, true);

    /* stateFilter: an offline store is no target; store 2 is now smallest. */
    tkv_sched_get_store(c, 1)->state = metapb_StoreState_Offline;
    sizes[2] = 60;
    apply_sizes();
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 4, 2, true);

    tkv_sched_options(c)->max_replicas = 3;
    cr_assert_not(schedule(&op), "a region whose peer count differs from max-replicas moves");
    tkv_sched_options(c)->max_replicas = 1;
    cr_assert(schedule(&op));
}

Test(balance, TestReplicas33C)
{
    struct tkv_sched_operator op;
    c = mem_cluster(3);
    add_region_store(1, 16);
    add_region_store(2, 15);
    add_region_store(3, 14);
    add_leader_region(1, (uint64_t[]){1, 2, 3}, 3);
    cr_assert_not(schedule(&op), "no other store to move to");

    add_region_store(4, 2);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 1, 4, true);
    add_region_store(5, 1);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 1, 5, true);
    add_region_store(6, 0);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 1, 6, true);

    set_store_down(6);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 1, 5, true);

    set_store_down(4);
    set_store_down(5);
    set_store_down(6);
    add_region_store(7, 20);
    cr_assert_not(schedule(&op), "only a larger store is left as target");
}

Test(balance, TestReplicas53C)
{
    struct tkv_sched_operator op;
    c = mem_cluster(5);
    add_region_store(1, 4);
    add_region_store(2, 5);
    add_region_store(3, 6);
    add_region_store(4, 7);
    add_region_store(5, 28);
    add_leader_region(1, (uint64_t[]){1, 2, 3, 4, 5}, 5);

    add_region_store(6, 1);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 5, 6, false);

    add_region_store(7, 5);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 5, 6, false);

    add_leader_region(1, (uint64_t[]){2, 3, 4, 5, 6}, 5);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 5, 1, false);

    add_region_store(11, 29);
    add_region_store(12, 8);
    add_region_store(13, 7);
    add_leader_region(1, (uint64_t[]){2, 3, 11, 12, 13}, 5);
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 11, 6, false);
}

Test(balance, TestReplacePendingRegion3C)
{
    struct tkv_sched_operator op;
    struct hb h;
    c = mem_cluster(3);
    add_region_store(1, 16);
    add_region_store(2, 7);
    add_region_store(3, 15);
    add_region_store(4, 10);
    add_leader_region(1, (uint64_t[]){1, 2, 3}, 3);
    add_leader_region(2, (uint64_t[]){1, 2, 3}, 3);
    add_leader_region(3, (uint64_t[]){2, 1, 3}, 3);
    /* Region 3's peer on store 1 is pending. */
    hb_make(&h, 3, "r03", "r04", (uint64_t[]){2, 1, 3}, 3, 2, 2, 1, 10);
    hb_set_pending(&h, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    apply_sizes();
    for (int i = 0; i < 5; i++) {
        cr_assert(schedule(&op));
        cr_assert_eq(op.region_id, 3, "the pending region must be moved first");
        check_transfer_peer(&op, 1, 4, false);
    }
}

Test(balance, no_move_when_difference_is_small)
{
    struct tkv_sched_operator op;
    c = mem_cluster(1);
    add_region_store(1, 10);
    add_region_store(2, 9); /* 100 - 90 < 2 x 10 */
    add_leader_region(1, (uint64_t[]){1}, 1);
    cr_assert_not(schedule(&op));
    sizes[2] = 80; /* 100 - 80 == 2 x 10: moves (reference: rejects only smaller) */
    apply_sizes();
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 1, 2, true);
}

Test(balance, node_label_never_two_replicas_on_one_node)
{
    struct tkv_sched_operator op;
    c = mem_cluster(3);
    /* Nodes A (stores 1, 4), B (2), C (3), D (5). */
    add_store(c, 1, "A");
    add_store(c, 2, "B");
    add_store(c, 3, "C");
    add_store(c, 4, "A");
    add_store(c, 5, "D");
    sizes[1] = 300, sizes[2] = 200, sizes[3] = 200, sizes[4] = 0, sizes[5] = 100;
    add_leader_region(1, (uint64_t[]){1, 2, 3}, 3);
    /* Store 4 is the emptiest but on node A with store 1... moving 1's peer
     * to 4 keeps one replica per node, which is allowed. */
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 1, 4, true);
    /* From store 2, store 4 (node A, holding store 1's replica) is not a
     * target: the only one is D. */
    sizes[1] = 0, sizes[2] = 400, sizes[4] = 0, sizes[5] = 100;
    apply_sizes();
    cr_assert(schedule(&op));
    check_transfer_peer(&op, 2, 5, false);

    /* Replica checker: a region with two replicas on node A gets one moved. */
    struct hb h;
    hb_make(&h, 7, "x", "y", (uint64_t[]){1, 4, 2}, 3, 1, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    const struct tkv_sched_region *r = tkv_sched_region_by_id(c, 7);
    cr_assert(tkv_sched_check_replicas(c, r, T0, &op), "two replicas on node A not repaired");
    cr_assert_eq(op.steps[op.n_steps - 1].kind, TKV_SCHED_STEP_REMOVE_PEER);
    cr_assert_eq(op.steps[op.n_steps - 1].store_id, 4);
    cr_assert(op.steps[0].store_id == 3 || op.steps[0].store_id == 5);

    /* Growing a region never picks a second store of a node it is on. */
    hb_make(&h, 8, "y", "z", (uint64_t[]){1}, 1, 1, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    r = tkv_sched_region_by_id(c, 8);
    sizes[4] = 0, sizes[1] = 0, sizes[2] = 500, sizes[3] = 500, sizes[5] = 500;
    apply_sizes();
    cr_assert(tkv_sched_check_replicas(c, r, T0, &op));
    cr_assert_neq(op.steps[0].store_id, 4, "store 4 shares node A with store 1");
}

/* The node rule holds at tkv_sched_add_operator itself, whoever built the
 * operator: adding a replica on a node that holds one is refused (alone or
 * inside a move to the wrong place), a move between two cores of one node
 * (add then remove) and the repair of a clash are accepted. */
Test(balance, add_operator_refuses_two_replicas_on_one_node)
{
    struct tkv_sched_operator op;
    struct hb h;
    c = mem_cluster(3);
    add_store(c, 1, "A");
    add_store(c, 2, "B");
    add_store(c, 3, "C");
    add_store(c, 4, "A");
    add_store(c, 5, "D");
    hb_make(&h, 7, "a", "b", (uint64_t[]){1, 2, 3}, 3, 1, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);

    memset(&op, 0, sizeof(op));
    op.region_id = 7;
    op.kind = TKV_SCHED_OP_REGION;
    op.n_steps = 1;
    op.steps[0] = (struct tkv_sched_step){TKV_SCHED_STEP_ADD_PEER, 4, 100};
    cr_assert_eq(tkv_sched_add_operator(c, &op, T0), TKV_EINVAL,
                 "a second replica on node A (stores 1 and 4) was accepted");
    cr_assert_eq(tkv_sched_add_admin_operator(c, &op, T0), TKV_EINVAL);
    /* a move from store 2 (node B) to store 4 (node A, holding store 1's) */
    op.n_steps = 2;
    op.steps[1] = (struct tkv_sched_step){TKV_SCHED_STEP_REMOVE_PEER, 2, 0};
    cr_assert_eq(tkv_sched_add_operator(c, &op, T0), TKV_EINVAL);
    cr_assert_null(tkv_sched_get_operator(c, 7), "a refused operator was kept");
    /* a move between the two cores of node A: allowed */
    op.steps[1] = (struct tkv_sched_step){TKV_SCHED_STEP_REMOVE_PEER, 1, 0};
    cr_assert_eq(tkv_sched_add_operator(c, &op, T0), 0);

    /* repairing a clash (region 8 on stores 1 and 4 of node A) is allowed */
    hb_make(&h, 8, "x", "y", (uint64_t[]){1, 4, 2}, 3, 1, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    memset(&op, 0, sizeof(op));
    op.region_id = 8;
    op.kind = TKV_SCHED_OP_REPLICA;
    op.n_steps = 2;
    op.steps[0] = (struct tkv_sched_step){TKV_SCHED_STEP_ADD_PEER, 5, 101};
    op.steps[1] = (struct tkv_sched_step){TKV_SCHED_STEP_REMOVE_PEER, 4, 0};
    cr_assert_eq(tkv_sched_add_operator(c, &op, T0), 0);
}

Test(balance, replica_checker_basic)
{
    struct tkv_sched_operator op;
    struct hb h;
    c = mem_cluster(3);
    add_region_store(1, 4);
    add_region_store(2, 3);
    add_region_store(3, 2);
    add_region_store(4, 1);
    hb_make(&h, 1, "a", "b", (uint64_t[]){1, 2}, 2, 1, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    apply_sizes();
    const struct tkv_sched_region *r = tkv_sched_region_by_id(c, 1);
    cr_assert(tkv_sched_check_replicas(c, r, T0, &op));
    cr_assert_eq(op.n_steps, 1);
    cr_assert_eq(op.steps[0].kind, TKV_SCHED_STEP_ADD_PEER);
    cr_assert_eq(op.steps[0].store_id, 4);
    set_store_down(4);
    cr_assert(tkv_sched_check_replicas(c, r, T0, &op));
    cr_assert_eq(op.steps[0].store_id, 3, "a down store gets no replica");
    tkv_sched_get_store(c, 4)->last_heartbeat_ns = T0;

    /* Enough replicas: nothing. Too many: remove the one on the fullest store. */
    hb_make(&h, 1, "a", "b", (uint64_t[]){1, 2, 4}, 3, 1, 2, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    apply_sizes();
    r = tkv_sched_region_by_id(c, 1);
    cr_assert_not(tkv_sched_check_replicas(c, r, T0, &op));
    hb_make(&h, 1, "a", "b", (uint64_t[]){1, 2, 4, 3}, 4, 1, 3, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    apply_sizes();
    r = tkv_sched_region_by_id(c, 1);
    cr_assert(tkv_sched_check_replicas(c, r, T0, &op));
    cr_assert_eq(op.steps[0].kind, TKV_SCHED_STEP_REMOVE_PEER);
    cr_assert_eq(op.steps[0].store_id, 1);

    /* Offline store with exactly max replicas: replace it. */
    hb_make(&h, 1, "a", "b", (uint64_t[]){1, 2, 3}, 3, 1, 4, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    apply_sizes();
    r = tkv_sched_region_by_id(c, 1);
    tkv_sched_get_store(c, 3)->state = metapb_StoreState_Offline;
    cr_assert(tkv_sched_check_replicas(c, r, T0, &op));
    cr_assert_eq(op.steps[0].kind, TKV_SCHED_STEP_ADD_PEER);
    cr_assert_eq(op.steps[0].store_id, 4);
    cr_assert_eq(op.steps[op.n_steps - 1].store_id, 3);

    /* TestLostStore: peers on a store nobody registered; no target: no op. */
    tkv_sched_cluster_close(c);
    c = mem_cluster(3);
    add_region_store(1, 1);
    add_region_store(2, 1);
    hb_make(&h, 1, "a", "b", (uint64_t[]){1, 2, 3}, 3, 1, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    cr_assert_not(tkv_sched_check_replicas(c, tkv_sched_region_by_id(c, 1), T0, &op));
}

Test(balance, balance_leader)
{
    struct tkv_sched_operator op;
    c = mem_cluster(3);
    for (uint64_t s = 1; s <= 4; s++)
        add_store(c, s, NULL);
    struct hb h;
    hb_make(&h, 1, "a", "b", (uint64_t[]){4, 1, 2, 3}, 4, 4, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    tkv_sched_get_store(c, 1)->leader_count = 1;
    tkv_sched_get_store(c, 2)->leader_count = 2;
    tkv_sched_get_store(c, 3)->leader_count = 3;
    tkv_sched_get_store(c, 4)->leader_count = 16;
    cr_assert(tkv_sched_balance_leader(c, T0, &rng, &op));
    cr_assert_eq(op.kind, TKV_SCHED_OP_LEADER);
    cr_assert_eq(op.steps[0].kind, TKV_SCHED_STEP_TRANSFER_LEADER);
    cr_assert_eq(op.steps[0].store_id, 1);
    set_store_down(1);
    cr_assert(tkv_sched_balance_leader(c, T0, &rng, &op));
    cr_assert_eq(op.steps[0].store_id, 2, "a down store gets no leader");
    tkv_sched_get_store(c, 2)->is_busy = true;
    cr_assert(tkv_sched_balance_leader(c, T0, &rng, &op));
    cr_assert_eq(op.steps[0].store_id, 3, "a busy store gets no leader");
    /* Balanced: nothing. */
    for (uint64_t s = 1; s <= 4; s++) {
        tkv_sched_get_store(c, s)->leader_count = 10;
        tkv_sched_get_store(c, s)->is_busy = false;
        tkv_sched_get_store(c, s)->last_heartbeat_ns = T0;
    }
    tkv_sched_get_store(c, 4)->leader_count = 11;
    cr_assert_not(tkv_sched_balance_leader(c, T0, &rng, &op));
}

/* Send heartbeat h and return whether a command came back (in *resp). */
static bool beat(struct hb *h, uint64_t now, schedulerpb_RegionHeartbeatResponse *resp)
{
    cr_assert_eq(hb_send(c, h, NULL), 0);
    return tkv_sched_dispatch(c, h->req.region.id, now, resp);
}

Test(balance, move_peer_operator_runs_through_heartbeats)
{
    struct tkv_sched_operator op;
    schedulerpb_RegionHeartbeatResponse resp;
    struct hb h;
    c = mem_cluster(3);
    for (uint64_t s = 1; s <= 4; s++)
        add_store(c, s, NULL);
    hb_make(&h, 1, "a", "b", (uint64_t[]){1, 2, 3}, 3, 1, 1, 1, 1);
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    const struct tkv_sched_region *r = tkv_sched_region_by_id(c, 1);
    cr_assert(tkv_sched_check_replicas(c, r, T0, &op) == false);
    /* Move store 1 (the leader) to store 4. */
    memset(&op, 0, sizeof(op));
    op.region_id = 1;
    op.kind = TKV_SCHED_OP_REGION;
    snprintf(op.desc, sizeof(op.desc), "test-move");
    op.steps[0] = (struct tkv_sched_step){TKV_SCHED_STEP_ADD_PEER, 4, 999};
    op.steps[1] = (struct tkv_sched_step){TKV_SCHED_STEP_TRANSFER_LEADER, 4, 0};
    op.steps[2] = (struct tkv_sched_step){TKV_SCHED_STEP_REMOVE_PEER, 1, 0};
    op.n_steps = 3;
    cr_assert_eq(tkv_sched_add_operator(c, &op, T0), 0);
    cr_assert_eq(tkv_sched_add_operator(c, &op, T0), TKV_EBUSY, "one operator per region");

    cr_assert(beat(&h, T0, &resp));
    cr_assert(resp.has_change_peer);
    cr_assert_eq(resp.change_peer.change_type, eraftpb_ConfChangeType_AddNode);
    cr_assert_eq(resp.change_peer.peer.id, 999);
    cr_assert_eq(resp.change_peer.peer.store_id, 4);
    cr_assert_eq(resp.region_id, 1);
    cr_assert_eq(resp.target_peer.store_id, 1);
    cr_assert_eq(resp.header.cluster_id, tkv_sched_cluster_id(c));

    /* Peer added but pending: nothing to send. */
    h.peers[3] = (metapb_Peer){999, 4};
    h.req.region.peers.n = 4;
    h.req.region.region_epoch.conf_ver = 2;
    hb_set_pending(&h, 4);
    cr_assert_not(beat(&h, T0, &resp), "AddPeer must not be re-sent once the peer exists");
    /* Caught up: transfer leader to it. */
    h.req.pending_peers.n = 0;
    cr_assert(beat(&h, T0, &resp));
    cr_assert(resp.has_transfer_leader);
    cr_assert_eq(resp.transfer_leader.peer.store_id, 4);
    /* Leader moved: remove store 1's peer. */
    h.req.leader = h.peers[3];
    cr_assert(beat(&h, T0, &resp));
    cr_assert(resp.has_change_peer);
    cr_assert_eq(resp.change_peer.change_type, eraftpb_ConfChangeType_RemoveNode);
    cr_assert_eq(resp.change_peer.peer.store_id, 1);
    cr_assert_eq(resp.target_peer.store_id, 4, "commands go to the current leader");
    /* Gone: finished. */
    h.peers[0] = h.peers[3];
    h.req.region.peers.n = 3;
    h.req.region.region_epoch.conf_ver = 3;
    h.req.leader = h.peers[0];
    cr_assert_not(beat(&h, T0, &resp));
    const struct tkv_sched_operator *done = tkv_sched_get_operator(c, 1);
    cr_assert_eq(done->status, schedulerpb_OperatorStatus_SUCCESS);
    cr_assert_eq(tkv_sched_running_operators(c, 7), 0);
}

Test(balance, operators_time_out)
{
    struct tkv_sched_operator op = {.region_id = 1, .kind = TKV_SCHED_OP_LEADER, .n_steps = 1};
    schedulerpb_RegionHeartbeatResponse resp;
    struct hb h;
    c = mem_cluster(3);
    for (uint64_t s = 1; s <= 3; s++)
        add_store(c, s, NULL);
    hb_make(&h, 1, "a", "b", (uint64_t[]){1, 2, 3}, 3, 1, 1, 1, 1);
    op.steps[0] = (struct tkv_sched_step){TKV_SCHED_STEP_TRANSFER_LEADER, 2, 0};
    cr_assert_eq(hb_send(c, &h, NULL), 0);
    cr_assert_eq(tkv_sched_add_operator(c, &op, T0), 0);
    cr_assert(beat(&h, T0 + 9 * SEC, &resp));
    cr_assert_not(beat(&h, T0 + 11 * SEC, &resp), "a leader operator lives 10 s");
    cr_assert_eq(tkv_sched_get_operator(c, 1)->status, schedulerpb_OperatorStatus_TIMEOUT);
    /* The patrol times out quiet ones too. */
    op.kind = TKV_SCHED_OP_REGION;
    cr_assert_eq(tkv_sched_add_operator(c, &op, T0), 0);
    tkv_sched_options(c)->region_schedule_limit = 0;
    tkv_sched_options(c)->leader_schedule_limit = 0;
    tkv_sched_patrol(c, T0 + 601 * SEC, &rng, 0);
    cr_assert_eq(tkv_sched_get_operator(c, 1)->status, schedulerpb_OperatorStatus_TIMEOUT);
}

Test(balance, patrol_respects_limits)
{
    c = mem_cluster(3);
    for (uint64_t s = 1; s <= 3; s++)
        add_store(c, s, NULL);
    for (uint64_t i = 1; i <= 20; i++) {
        struct hb h;
        char a[8], b[8];
        snprintf(a, sizeof(a), "k%03llu", (unsigned long long)i);
        snprintf(b, sizeof(b), "k%03llu", (unsigned long long)i + 1);
        hb_make(&h, i, a, b, (uint64_t[]){1}, 1, 1, 1, 1, 1);
        cr_assert_eq(hb_send(c, &h, NULL), 0);
    }
    tkv_sched_options(c)->replica_schedule_limit = 5;
    size_t added = tkv_sched_patrol(c, T0, &rng, 100);
    cr_assert_eq(tkv_sched_running_operators(c, TKV_SCHED_OP_REPLICA), 5,
                 "replica-schedule-limit not honoured (%zu added)", added);
    tkv_sched_options(c)->replica_schedule_limit = 0;
    size_t before = tkv_sched_running_operators(c, 7);
    tkv_sched_patrol(c, T0, &rng, 100);
    cr_assert_eq(tkv_sched_running_operators(c, 7), before, "limit 0 disables the checker");
}
