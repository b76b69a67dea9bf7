/* processRegionHeartbeat (TinyKV 3C cluster_test.go, TINYKV-API.md 3.4):
 * 3 stores, 3 regions x 3 peers fed as heartbeats, then mutated copies. */
#include "sched_fixture.h"

static const uint64_t ALL3[] = {1, 2, 3};
static struct tkv_sched_cluster *c;
static struct hb regions[3];

static void setup(void)
{
    static const char *bounds[] = {"", "b", "d", ""};
    c = mem_cluster(3);
    for (uint64_t s = 1; s <= 3; s++)
        add_store(c, s, NULL);
    for (int i = 0; i < 3; i++) {
        hb_make(&regions[i], (uint64_t)i + 1, bounds[i], bounds[i + 1], ALL3, 3,
                (uint64_t)i % 3 + 1, 1, 1, 10);
        cr_assert_eq(hb_send(c, &regions[i], NULL), 0);
    }
    check_counters(c);
}

static void teardown(void)
{
    tkv_sched_cluster_close(c);
}

/* The cached copy of regions[i] equals the heartbeat h. */
static void assert_cached(const struct hb *h)
{
    const struct tkv_sched_region *r = tkv_sched_region_by_id(c, h->req.region.id);
    cr_assert_not_null(r, "region %llu not cached", (unsigned long long)h->req.region.id);
    cr_assert_eq(r->version, h->req.region.region_epoch.version, "version not stored");
    cr_assert_eq(r->conf_ver, h->req.region.region_epoch.conf_ver, "conf_ver not stored");
    cr_assert_eq(r->n_peers, h->req.region.peers.n, "peer count not stored");
    cr_assert_eq(r->leader.id, h->req.leader.id, "leader not stored");
    cr_assert_eq(r->n_pending, h->req.pending_peers.n, "pending peers not stored");
    cr_assert_eq(r->approximate_size, h->req.approximate_size >> 20, "size not stored");
}

TestSuite(cluster, .init = setup, .fini = teardown);

Test(cluster, TestRegionNotUpdate3C)
{
    for (int i = 0; i < 3; i++) {
        bool updated = true;
        cr_assert_eq(hb_send(c, &regions[i], &updated), 0);
        cr_assert_not(updated, "an identical heartbeat changed the cache");
        assert_cached(&regions[i]);
    }
}

Test(cluster, TestRegionUpdateVersion3C)
{
    for (int i = 0; i < 3; i++) {
        bool updated = false;
        regions[i].req.region.region_epoch.version++;
        cr_assert_eq(hb_send(c, &regions[i], &updated), 0);
        cr_assert(updated);
        assert_cached(&regions[i]);
    }
    check_counters(c);
}

Test(cluster, TestRegionWithStaleVersion3C)
{
    for (int i = 0; i < 3; i++) {
        struct hb newer = regions[i];
        newer.req.region.region_epoch.version++;
        cr_assert_eq(hb_send(c, &newer, NULL), 0);
        struct hb stale = regions[i];
        stale.req.region.region_epoch.conf_ver++;
        cr_assert_eq(hb_send(c, &stale, NULL), TKV_ESTALE,
                     "older version with a higher conf_ver must be stale");
        hb_fix(&newer);
        assert_cached(&newer);
    }
}

Test(cluster, TestRegionUpdateVersionAndConfver3C)
{
    for (int i = 0; i < 3; i++) {
        regions[i].req.region.region_epoch.version++;
        regions[i].req.region.region_epoch.conf_ver++;
        cr_assert_eq(hb_send(c, &regions[i], NULL), 0);
        assert_cached(&regions[i]);
    }
}

Test(cluster, TestRegionWithStaleConfVer3C)
{
    for (int i = 0; i < 3; i++) {
        struct hb newer = regions[i];
        newer.req.region.region_epoch.conf_ver++;
        cr_assert_eq(hb_send(c, &newer, NULL), 0);
        cr_assert_eq(hb_send(c, &regions[i], NULL), TKV_ESTALE, "older conf_ver must be stale");
        hb_fix(&newer);
        assert_cached(&newer);
    }
}

Test(cluster, TestRegionAddPendingPeer3C)
{
    for (int i = 0; i < 3; i++) {
        uint64_t store = (uint64_t)(i + 1) % 3 + 1; /* a follower's store */
        hb_set_pending(&regions[i], store);
        cr_assert_eq(hb_send(c, &regions[i], NULL), 0);
        assert_cached(&regions[i]);
    }
    for (uint64_t s = 1; s <= 3; s++)
        cr_assert_eq(tkv_sched_get_store(c, s)->pending_peer_count, 1,
                     "store %llu should have one pending peer", (unsigned long long)s);
    check_counters(c);
}

Test(cluster, TestRegionRemovePendingPeer3C)
{
    for (int i = 0; i < 3; i++) {
        hb_set_pending(&regions[i], (uint64_t)(i + 1) % 3 + 1);
        cr_assert_eq(hb_send(c, &regions[i], NULL), 0);
    }
    for (int i = 0; i < 3; i++) {
        regions[i].req.pending_peers.n = 0;
        cr_assert_eq(hb_send(c, &regions[i], NULL), 0);
        assert_cached(&regions[i]);
    }
    for (uint64_t s = 1; s <= 3; s++)
        cr_assert_eq(tkv_sched_get_store(c, s)->pending_peer_count, 0);
    check_counters(c);
}

Test(cluster, TestRegionRemovePeers3C)
{
    for (int i = 0; i < 3; i++) {
        /* Keep only the leader's peer (same epoch: the reference accepts it). */
        struct hb *h = &regions[i];
        uint64_t leader_store = h->req.leader.store_id;
        metapb_Peer keep = h->req.leader;
        (void)leader_store;
        h->peers[0] = keep;
        h->req.region.peers.n = 1;
        cr_assert_eq(hb_send(c, h, NULL), 0);
        assert_cached(h);
    }
    for (uint64_t s = 1; s <= 3; s++)
        cr_assert_eq(tkv_sched_get_store(c, s)->region_count, 1,
                     "each store keeps exactly the region it leads");
    check_counters(c);
}

Test(cluster, TestRegionAddBackPeers3C)
{
    struct hb orig[3];
    memcpy(orig, regions, sizeof(orig));
    for (int i = 0; i < 3; i++) {
        regions[i].peers[0] = regions[i].req.leader;
        regions[i].req.region.peers.n = 1;
        cr_assert_eq(hb_send(c, &regions[i], NULL), 0);
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(hb_send(c, &orig[i], NULL), 0);
        assert_cached(&orig[i]);
    }
    for (uint64_t s = 1; s <= 3; s++)
        cr_assert_eq(tkv_sched_get_store(c, s)->region_count, 3);
    check_counters(c);
}

Test(cluster, TestRegionChangeLeader3C)
{
    for (int i = 0; i < 3; i++) {
        struct hb *h = &regions[i];
        h->req.leader = h->peers[(i + 1) % 3];
        cr_assert_eq(hb_send(c, h, NULL), 0);
        assert_cached(h);
    }
    check_counters(c);
}

Test(cluster, TestRegionChangeApproximateSize3C)
{
    for (int i = 0; i < 3; i++) {
        regions[i].req.approximate_size = (uint64_t)(i + 1) * 100 << 20;
        cr_assert_eq(hb_send(c, &regions[i], NULL), 0);
        assert_cached(&regions[i]);
    }
    for (uint64_t s = 1; s <= 3; s++)
        cr_assert_eq(tkv_sched_get_store(c, s)->region_size, 600);
    check_counters(c);
}

Test(cluster, TestRegionCounts3C)
{
    for (uint64_t s = 1; s <= 3; s++) {
        const struct tkv_sched_store *st = tkv_sched_get_store(c, s);
        cr_assert_eq(st->region_count, 3);
        cr_assert_eq(st->leader_count, 1);
        cr_assert_eq(st->region_size, 30);
        cr_assert_eq(st->leader_size, 10);
    }
}

Test(cluster, TestRegionGetRegions3C)
{
    cr_assert_eq(tkv_sched_n_regions(c), 3);
    for (size_t i = 0; i < 3; i++) {
        const struct tkv_sched_region *r = tkv_sched_region_at(c, i);
        cr_assert_eq(r->id, i + 1, "regions must come back in key order");
        assert_cached(&regions[i]);
    }
    check_tree(c);
}

Test(cluster, TestRegionGetStores3C)
{
    for (int i = 0; i < 3; i++) {
        const struct tkv_sched_region *r = tkv_sched_region_by_id(c, (uint64_t)i + 1);
        size_t followers = 0;
        for (uint32_t k = 0; k < r->n_peers; k++) {
            cr_assert_not_null(tkv_sched_get_store(c, r->peers[k].store_id));
            if (r->peers[k].id != r->leader.id)
                followers++;
        }
        cr_assert_eq(followers, 2);
        cr_assert_eq(r->leader.store_id, (uint64_t)i % 3 + 1);
    }
}

Test(cluster, TestRegionGetStoresInfo3C)
{
    /* Mix every kind of change, then the counters must equal the tree. */
    hb_set_pending(&regions[0], 2);
    regions[1].req.leader = regions[1].peers[2];
    regions[2].req.approximate_size = 77ull << 20;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(hb_send(c, &regions[i], NULL), 0);
    check_counters(c);
    cr_assert_eq(tkv_sched_get_store(c, 2)->pending_peer_count, 1);
    cr_assert_eq(tkv_sched_get_store(c, 3)->leader_count, 2);
}

Test(cluster, TestHeartbeatSplit3C)
{
    /* Region 3 ["d", +inf) splits into 3 ["d","m") and 4 ["m", +inf). */
    struct hb left, right;
    hb_make(&left, 3, "d", "m", ALL3, 3, 3, 1, 2, 10);
    hb_make(&right, 4, "m", "", ALL3, 3, 3, 1, 2, 10);
    /* Right half first: it overlaps the old region 3, which goes away. */
    cr_assert_eq(hb_send(c, &right, NULL), 0);
    cr_assert_null(tkv_sched_region_by_id(c, 3), "the overlapped old region must go");
    cr_assert_null(tkv_sched_region_by_key(c, TKV_SLICE_STR("e")), "a gap until the left reports");
    cr_assert_eq(tkv_sched_region_by_key(c, TKV_SLICE_STR("z"))->id, 4);
    cr_assert_eq(hb_send(c, &left, NULL), 0);
    cr_assert_eq(tkv_sched_region_by_key(c, TKV_SLICE_STR("e"))->id, 3);
    check_tree(c);
    check_counters(c);

    /* Other order: region 1 ["", "b") splits into 1 ["", "a") and 5 ["a", "b"). */
    struct hb l2, r2;
    hb_make(&l2, 1, "", "a", ALL3, 3, 1, 1, 2, 10);
    hb_make(&r2, 5, "a", "b", ALL3, 3, 1, 1, 2, 10);
    cr_assert_eq(hb_send(c, &l2, NULL), 0);
    cr_assert_null(tkv_sched_region_by_key(c, TKV_SLICE_STR("a")), "a gap until the right reports");
    cr_assert_eq(hb_send(c, &r2, NULL), 0);
    cr_assert_eq(tkv_sched_region_by_key(c, TKV_SLICE_STR("a"))->id, 5);
    /* The old, unsplit copy is stale now. */
    cr_assert_eq(hb_send(c, &regions[0], NULL), TKV_ESTALE);
    check_tree(c);
    check_counters(c);
}

/* 7 rounds of splits, 7 of merges, then mixed: lookups by key always agree
 * with a linear scan of what we expect. */
Test(cluster, TestRegionSplitAndMerge3C)
{
    tkv_sched_cluster_close(c);
    c = mem_cluster(3);
    for (uint64_t s = 1; s <= 3; s++)
        add_store(c, s, NULL);
    /* Boundaries are 2-byte big-endian numbers in [0, 65536). */
    enum { MAXR = 256 };
    uint32_t starts[MAXR];
    uint64_t ids[MAXR], versions[MAXR];
    size_t n = 1;
    uint64_t next_id = 1;
    starts[0] = 0;
    ids[0] = next_id++;
    versions[0] = 1;
    struct hb h;
    char s[3], e[3];

#define KEY(buf, v)                                                                                \
    ((v) == 0 ? (buf[0] = 0, buf)                                                                  \
              : (buf[0] = (char)((v) >> 8), buf[1] = (char)((v)&0xff), buf[2] = 0, buf))
    /* Keys with a 0 byte would end the C string: use values whose bytes are
     * non-zero (multiples of 257 are 0x0101..). */
    for (int round = 0; round < 21; round++) {
        bool split = round < 7 || (round >= 14 && round % 2 == 0);
        size_t new_n = 0;
        uint32_t ns[MAXR];
        uint64_t nid[MAXR], nver[MAXR];
        for (size_t i = 0; i < n; i++) {
            uint32_t st = starts[i], en = i + 1 < n ? starts[i + 1] : 65536;
            if (split && en - st >= 2 * 257) {
                uint32_t mid = st + ((en - st) / 257 / 2) * 257;
                ns[new_n] = st, nid[new_n] = ids[i], nver[new_n++] = versions[i] + 1;
                ns[new_n] = mid, nid[new_n] = next_id++, nver[new_n++] = versions[i] + 1;
            } else if (!split && i + 1 < n) {
                uint64_t v = versions[i] > versions[i + 1] ? versions[i] : versions[i + 1];
                ns[new_n] = st, nid[new_n] = ids[i], nver[new_n++] = v + 1;
                i++;
            } else {
                ns[new_n] = st, nid[new_n] = ids[i], nver[new_n++] = versions[i];
            }
        }
        n = new_n;
        memcpy(starts, ns, n * sizeof(*ns));
        memcpy(ids, nid, n * sizeof(*nid));
        memcpy(versions, nver, n * sizeof(*nver));
        /* Report every region, in reverse order for odd rounds. */
        for (size_t k = 0; k < n; k++) {
            size_t i = round % 2 ? n - 1 - k : k;
            uint32_t en = i + 1 < n ? starts[i + 1] : 65536;
            KEY(s, starts[i]);
            if (en == 65536)
                e[0] = 0;
            else
                KEY(e, en);
            hb_make(&h, ids[i], s, e, ALL3, 3, 1 + ids[i] % 3, 1, versions[i], 1);
            int rv = hb_send(c, &h, NULL);
            cr_assert_eq(rv, 0, "round %d region %llu rejected: %d", round,
                         (unsigned long long)ids[i], rv);
        }
        cr_assert_eq(tkv_sched_n_regions(c), n, "round %d: %zu regions cached, want %zu", round,
                     tkv_sched_n_regions(c), n);
        for (size_t i = 0; i < n; i++) {
            KEY(s, starts[i]);
            const struct tkv_sched_region *r = tkv_sched_region_by_key(c, TKV_SLICE(s, strlen(s)));
            cr_assert_not_null(r);
            cr_assert_eq(r->id, ids[i], "round %d: key lookup found the wrong region", round);
        }
        check_tree(c);
        check_counters(c);
    }
#undef KEY
}

Test(cluster, lookups_prev_and_seek)
{
    cr_assert_eq(tkv_sched_region_by_key(c, TKV_SLICE_STR(""))->id, 1);
    cr_assert_eq(tkv_sched_region_by_key(c, TKV_SLICE_STR("b"))->id, 2);
    cr_assert_eq(tkv_sched_region_by_key(c, TKV_SLICE_STR("czzz"))->id, 2);
    cr_assert_eq(tkv_sched_region_by_key(c, TKV_SLICE_STR("zzzz"))->id, 3);
    cr_assert_null(tkv_sched_prev_region(c, TKV_SLICE_STR("a")));
    cr_assert_eq(tkv_sched_prev_region(c, TKV_SLICE_STR("c"))->id, 1);
    cr_assert_eq(tkv_sched_prev_region(c, TKV_SLICE_STR("x"))->id, 2);
    cr_assert_eq(tkv_sched_region_seek(c, TKV_SLICE_STR("c")), 1);
}

/* Item 8: malformed heartbeats are refused with a reason and change nothing. */
Test(cluster, bad_heartbeats_are_refused)
{
    struct hb h;
    const char *why = NULL;
    size_t n = tkv_sched_n_regions(c);

    hb_make(&h, 9, "x", "y", ALL3, 3, 1, 5, 5, 1);
    h.req.region.id = 0;
    cr_assert_eq(hb_send(c, &h, NULL), TKV_EINVAL, "region id 0");
    hb_make(&h, 9, "x", "y", ALL3, 0, 1, 5, 5, 1);
    cr_assert_eq(hb_send(c, &h, NULL), TKV_EINVAL, "no peers");
    hb_make(&h, 9, "y", "x", ALL3, 3, 1, 5, 5, 1);
    cr_assert_eq(hb_send(c, &h, NULL), TKV_EINVAL, "inverted range");
    hb_make(&h, 9, "x", "x", ALL3, 3, 1, 5, 5, 1);
    cr_assert_eq(hb_send(c, &h, NULL), TKV_EINVAL, "empty range");
    hb_make(&h, 9, "x", "y", ALL3, 3, 1, 5, 5, 1);
    h.peers[1].store_id = 1;
    cr_assert_eq(hb_send(c, &h, NULL), TKV_EINVAL, "two peers on one store");
    hb_make(&h, 9, "x", "y", ALL3, 3, 1, 5, 5, 1);
    h.peers[2].id = 0;
    cr_assert_eq(hb_send(c, &h, NULL), TKV_EINVAL, "peer id 0");
    hb_make(&h, 9, "x", "y", ALL3, 3, 1, 5, 5, 1);
    h.req.leader.id = 12345;
    cr_assert_eq(hb_send(c, &h, NULL), TKV_EINVAL, "leader not a peer");
    hb_make(&h, 9, "x", "y", ALL3, 3, 1, 5, 5, 1);
    h.req.has_leader = false;
    h.req.leader.id = 0;
    cr_assert_eq(hb_send(c, &h, NULL), TKV_EINVAL, "no leader");
    hb_make(&h, 9, "x", "y", ALL3, 3, 1, 5, 5, 1);
    h.req.has_region = false;
    hb_fix(&h);
    cr_assert_eq(tkv_sched_region_heartbeat(c, &h.req, NULL, &why), TKV_EINVAL);
    cr_assert_not_null(why);
    cr_assert_eq(tkv_sched_n_regions(c), n, "a refused heartbeat changed the tree");
    check_counters(c);
    /* A new region overlapping a newer cached one is stale. */
    hb_make(&h, 9, "a", "c", ALL3, 3, 1, 1, 0, 1);
    cr_assert_eq(hb_send(c, &h, NULL), TKV_ESTALE);
    cr_assert_eq(tkv_sched_n_regions(c), n);
}
