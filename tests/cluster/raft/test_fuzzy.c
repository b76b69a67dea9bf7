/* Randomized 3- and 5-node runs under the cluster fixture: partitions,
 * drops, duplicates, reordering, crashes that lose unpersisted state,
 * proposals, reads, compaction, membership changes and leader transfers.
 * The fixture checks election safety, log matching, leader completeness,
 * state machine safety and read linearizability after every event; at the
 * end the faults heal and the group must make progress.
 * A failure prints the seed; TKV_SEED=<n> replays exactly that run. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft_fixture.h"
#include "tkv/err.h"

/* FZ_DEBUG=1: one line of statistics per seed. */
static void dbg_stats(struct rf_cluster *c)
{
    fprintf(stderr, "seed %llu now=%llu events=%llu delivered=%llu dropped=%llu max_commit=%llu leader=%llu %s\n",
            (unsigned long long)c->seed, (unsigned long long)c->now,
            (unsigned long long)c->n_events, (unsigned long long)c->n_delivered,
            (unsigned long long)c->n_dropped, (unsigned long long)c->max_commit,
            (unsigned long long)rf_leader(c), c->err);
}

#ifdef FUZZ_LONG
#define FUZZ_SEEDS_PER_TEST 2500
#define FUZZ_STEPS 60000
#else
#define FUZZ_SEEDS_PER_TEST 250
#define FUZZ_STEPS 20000
#endif

static uint64_t rnd(struct rf_cluster *c, uint64_t n)
{
    return n ? rf_rand(c) % n : 0;
}

static bool is_voter(const struct tkv_raft_status *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->conf.n_voters; i++)
        if (s->conf.voters[i] == id)
            return true;
    return false;
}

static void random_partition(struct rf_cluster *c)
{
    rf_heal(c);
    uint64_t side = rf_rand(c);
    for (uint64_t a = 1; a <= c->n; a++)
        for (uint64_t b = a + 1; b <= c->n; b++)
            if (((side >> a) & 1) != ((side >> b) & 1))
                rf_cut(c, a, b);
}

static uint64_t random_alive(struct rf_cluster *c)
{
    uint64_t start = 1 + rnd(c, c->n);
    for (uint64_t k = 0; k < c->n; k++) {
        uint64_t id = 1 + (start + k - 1) % c->n;
        if (rf_node(c, id)->alive)
            return id;
    }
    return 0;
}

static void fuzz_action(struct rf_cluster *c, uint64_t *next_id)
{
    uint64_t r = rnd(c, 1000);
    uint64_t leader = rf_leader(c);
    if (r < 300) {
        if (leader) {
            uint64_t payload[2] = {c->next_payload++, c->seed};
            rf_propose(c, leader, payload, sizeof(payload));
        }
    } else if (r < 330) {
        random_partition(c);
    } else if (r < 380) {
        rf_heal(c);
    } else if (r < 395) {
        if (leader)
            rf_isolate(c, leader);
    } else if (r < 415) {
        uint64_t id = random_alive(c);
        if (id)
            rf_crash(c, id);
    } else if (r < 465) {
        for (uint64_t id = 1; id <= c->n; id++) {
            if (rf_node(c, id)->exists && !rf_node(c, id)->alive) {
                rf_restart(c, id);
                break;
            }
        }
    } else if (r < 500) {
        if (!leader)
            return;
        struct tkv_raft_status s;
        tkv_raft_status(rf_raft(c, leader), &s);
        bool add = rnd(c, 2) == 0;
        if (add && *next_id <= RF_MAX_NODES && s.conf.n_voters < 7) {
            rf_propose_conf(c, leader, TKV_RAFT_CONF_ADD_NODE, (*next_id)++);
        } else if (s.conf.n_voters > 2) {
            uint64_t victim = s.conf.voters[rnd(c, s.conf.n_voters)];
            rf_propose_conf(c, leader, TKV_RAFT_CONF_REMOVE_NODE, victim);
        }
    } else if (r < 525) {
        if (!leader)
            return;
        struct tkv_raft_status s;
        tkv_raft_status(rf_raft(c, leader), &s);
        struct tkv_raft_event ev = {.type = TKV_RAFT_EV_TRANSFER_LEADER};
        ev.u.target = s.conf.voters[rnd(c, s.conf.n_voters)];
        rf_node_step(c, leader, &ev);
    } else if (r < 650) {
        uint64_t id = random_alive(c);
        if (id)
            rf_read(c, id, NULL);
    } else if (r < 690) {
        uint64_t id = random_alive(c);
        if (id)
            rf_compact(c, id);
    } else if (r < 710) {
        c->o.drop_pct = (uint32_t)rnd(c, 20);
        c->o.dup_pct = (uint32_t)rnd(c, 10);
    }
}

/* After the faults heal, a fresh proposal must reach every voter. */
static bool heal_and_check_progress(struct rf_cluster *c, bool stop_removed)
{
    rf_heal(c);
    c->o.drop_pct = c->o.dup_pct = 0;
    for (uint64_t id = 1; id <= c->n; id++)
        if (rf_node(c, id)->exists && !rf_node(c, id)->alive)
            rf_restart(c, id);
    tkv_index target = 0;
    uint64_t target_leader = 0;
    tkv_term target_term = 0;
    for (int round = 0; round < 400 && !c->failed; round++) {
        rf_run(c, (uint64_t)c->o.tick_interval * 5);
        uint64_t l = rf_leader(c);
        if (!l)
            continue;
        struct tkv_raft_status s;
        tkv_raft_status(rf_raft(c, l), &s);
        if (stop_removed) {
            /* raftstore destroys removed peers; without pre-vote or
             * check-quorum a removed node that missed its removal would
             * keep bumping terms */
            for (uint64_t id = 1; id <= c->n; id++)
                if (rf_node(c, id)->alive && !is_voter(&s, id))
                    rf_crash(c, id);
        }
        if (!target || l != target_leader || s.hs.term != target_term) {
            uint64_t payload[2] = {c->next_payload++, 0xfeed};
            if (rf_propose(c, l, payload, sizeof(payload)) == 0) {
                tkv_raft_status(rf_raft(c, l), &s);
                target = s.last_index;
                target_leader = l;
                target_term = s.hs.term;
            }
            continue;
        }
        bool all = true;
        for (uint32_t i = 0; i < s.conf.n_voters && all; i++) {
            struct rf_node *nd = rf_node(c, s.conf.voters[i]);
            if (!nd || !nd->exists || !nd->alive || nd->applied < target)
                all = false;
        }
        if (all)
            return true;
    }
    return false;
}

/* FZ_DEBUG=1: every node's state when progress fails. */
static void dump_nodes(struct rf_cluster *c)
{
    for (uint64_t id = 1; id <= c->n; id++) {
        struct rf_node *nd = rf_node(c, id);
        if (!nd->alive) {
            fprintf(stderr, "n%llu down\n", (unsigned long long)id);
            continue;
        }
        struct tkv_raft_status s;
        tkv_raft_status(nd->r, &s);
        fprintf(stderr,
                "n%llu role=%u term=%llu vote=%llu commit=%llu applied=%llu persisted=%llu "
                "first=%llu last=%llu voters=",
                (unsigned long long)id, s.ss.role, (unsigned long long)s.hs.term,
                (unsigned long long)s.hs.vote, (unsigned long long)s.hs.commit,
                (unsigned long long)s.applied, (unsigned long long)s.persisted,
                (unsigned long long)s.first_index, (unsigned long long)s.last_index);
        for (uint32_t k = 0; k < s.conf.n_voters; k++)
            fprintf(stderr, "%llu,", (unsigned long long)s.conf.voters[k]);
        fprintf(stderr, "\n");
    }
}

static void run_seed_digest(uint64_t seed, int steps, char *err, size_t errlen, uint64_t *digest)
{
    struct rf_cluster c;
    struct rf_opts o = rf_default_opts();
    uint64_t z = seed * 0x9e3779b97f4a7c15ULL + 12345;
    z ^= z >> 29;
    z *= 0xbf58476d1ce4e5b9ULL;
    z ^= z >> 32;
    size_t n = (seed % 2) ? 5 : 3;
    o.heartbeat_tick = 1 + (uint32_t)(z % 3);
    o.pre_vote = (z >> 4) & 1;
    o.check_quorum = (z >> 5) & 1;
    o.lease_read = o.check_quorum && ((z >> 6) & 1);
    o.max_msg_bytes = ((z >> 7) & 1) ? 64 : 0;
    o.max_inflight = ((z >> 8) & 1) ? 1 + (uint32_t)((z >> 9) % 4) : 256;
    o.tick_interval = 10;
    o.net_min = 1;
    o.net_max = 1 + (uint32_t)((z >> 12) % 20);
    o.disk_min = 0;
    o.disk_max = (uint32_t)((z >> 17) % 8);
    o.drop_pct = (uint32_t)((z >> 20) % 6);
    o.dup_pct = (uint32_t)((z >> 23) % 4);
    o.bootstrap_snapshot = true;
    o.report_transport = (z >> 26) & 1;
    rf_init(&c, n, &o, seed);
    uint64_t next_id = n + 1;
    for (int i = 0; i < steps && !c.failed; i++) {
        if (rnd(&c, 6) == 0)
            fuzz_action(&c, &next_id);
        rf_step(&c);
    }
    if (!c.failed && !heal_and_check_progress(&c, !o.pre_vote && !o.check_quorum)) {
        if (getenv("FZ_DEBUG"))
            dump_nodes(&c);
        rf_fail(&c, "no progress after the faults healed (leader %llu)",
                (unsigned long long)rf_leader(&c));
    }
    if (getenv("FZ_DEBUG"))
        dbg_stats(&c);
    if (digest)
        *digest = c.n_events * 1000003u ^ c.now * 7919u ^ c.max_commit ^ (c.n_delivered << 20) ^
                  (c.n_dropped << 40);
    if (c.failed)
        snprintf(err, errlen, "%s [n=%zu pre_vote=%d check_quorum=%d lease=%d] replay: TKV_SEED=%llu",
                 c.err, n, o.pre_vote, o.check_quorum, o.lease_read, (unsigned long long)seed);
    rf_close(&c);
}

static void run_seed(uint64_t seed, int steps, char *err, size_t errlen)
{
    run_seed_digest(seed, steps, err, errlen, NULL);
}

static int env_steps(void)
{
    const char *s = getenv("TKV_SIM_STEPS");
    return s ? atoi(s) : FUZZ_STEPS;
}

static void run_range(uint64_t first, uint64_t count)
{
    const char *only = getenv("TKV_SEED");
    int steps = env_steps();
    char err[1024];
    if (only) {
        uint64_t s = strtoull(only, NULL, 10);
        if (s < first || s >= first + count)
            cr_skip_test("TKV_SEED=%llu is not in this range", (unsigned long long)s);
        err[0] = 0;
        run_seed(s, steps, err, sizeof(err));
        cr_assert(err[0] == 0, "%s", err);
        return;
    }
    for (uint64_t s = first; s < first + count; s++) {
        err[0] = 0;
        run_seed(s, steps, err, sizeof(err));
        if (err[0])
            fprintf(stderr, "raft fuzz failure: %s\n", err);
        cr_assert(err[0] == 0, "%s", err);
    }
}

/* TKV_SEED replay is only as good as the determinism of a run. */
Test(raft_fuzz, same_seed_same_run)
{
    char err[1024] = "";
    uint64_t a = 0, b = 0;
    for (uint64_t s = 3; s < 6; s++) {
        run_seed_digest(s, 5000, err, sizeof(err), &a);
        run_seed_digest(s, 5000, err, sizeof(err), &b);
        cr_assert_eq(a, b, "seed %llu ran differently twice", (unsigned long long)s);
        cr_assert(err[0] == 0, "%s", err);
    }
}

#define FUZZ_TEST(k)                                                       \
    Test(raft_fuzz, seeds_##k, .timeout = 3000)                            \
    {                                                                      \
        run_range((uint64_t)(k)*FUZZ_SEEDS_PER_TEST, FUZZ_SEEDS_PER_TEST); \
    }

FUZZ_TEST(0)
FUZZ_TEST(1)
FUZZ_TEST(2)
FUZZ_TEST(3)
FUZZ_TEST(4)
FUZZ_TEST(5)
FUZZ_TEST(6)
FUZZ_TEST(7)
