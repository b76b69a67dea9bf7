/* Randomised latch schedule: many requests over a few keys, released in a
 * random order; at no time may two running requests share a key, and every
 * request must eventually run (no deadlock, no lost wake-up). TKV_SEED
 * replays a run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "txn_fixture.h"

#define N_REQ 400
#define N_KEYS 6

struct rreq {
    struct tkv_txn_latch_req latch;
    bool running, done;
};

static struct rreq reqs[N_REQ];
static int running_of_key[N_KEYS]; /* index+1 of the request running on the key */
static size_t n_running_list;
static int running_list[N_REQ];

static int key_index(struct tkv_slice k)
{
    return k.ptr[0];
}

static void start_running(struct rreq *r)
{
    int id = (int)(r - reqs);
    cr_assert(!r->running && !r->done, "request %d started twice", id);
    for (size_t i = 0; i < r->latch.n_keys; i++) {
        int k = key_index(r->latch.keys[i]);
        cr_assert_eq(running_of_key[k], 0, "key %d: request %d runs while %d holds it", k, id,
                     running_of_key[k] - 1);
        running_of_key[k] = id + 1;
    }
    r->running = true;
    running_list[n_running_list++] = id;
}

static void on_ready(struct tkv_txn_latch_req *l)
{
    start_running(l->data);
}

Test(txn_latch, random_schedules_never_share_a_key_and_always_finish)
{
    unsigned seed = getenv("TKV_SEED") ? (unsigned)atoi(getenv("TKV_SEED")) : 12345u;
    struct tkv_arena arena;
    tkv_arena_init(&arena, 0);
    static uint8_t key_bytes[N_KEYS];
    for (int k = 0; k < N_KEYS; k++)
        key_bytes[k] = (uint8_t)k;

    for (int round = 0; round < 20; round++) {
        srand(seed + (unsigned)round);
        struct tkv_txn_latches *l = tkv_txn_latches_new();
        memset(reqs, 0, sizeof(reqs));
        memset(running_of_key, 0, sizeof(running_of_key));
        n_running_list = 0;
        int next = 0, n_done = 0;
        while (n_done < N_REQ) {
            /* either submit the next request or finish a running one */
            if (next < N_REQ && (n_running_list == 0 || rand() % 2)) {
                struct rreq *r = &reqs[next++];
                struct tkv_slice keys[4];
                int n = 1 + rand() % 4;
                for (int i = 0; i < n; i++)
                    keys[i] = TKV_SLICE(&key_bytes[rand() % N_KEYS], 1);
                tkv_txn_latch_req_init(&r->latch, &arena, keys, (size_t)n);
                r->latch.on_ready = on_ready;
                r->latch.data = r;
                if (tkv_txn_latches_acquire(l, &r->latch))
                    start_running(r);
                continue;
            }
            cr_assert_gt(n_running_list, 0,
                         "seed %u round %d: %d requests wait and none runs: deadlock", seed, round,
                         N_REQ - n_done);
            size_t pick = (size_t)rand() % n_running_list;
            int id = running_list[pick];
            running_list[pick] = running_list[--n_running_list];
            struct rreq *r = &reqs[id];
            for (size_t i = 0; i < r->latch.n_keys; i++)
                running_of_key[key_index(r->latch.keys[i])] = 0;
            r->running = false;
            r->done = true;
            n_done++;
            tkv_txn_latches_release(l, &r->latch);
        }
        cr_assert_eq(tkv_txn_latches_held(l), 0, "seed %u round %d: latches left held", seed,
                     round);
        tkv_txn_latches_free(l);
        tkv_arena_reset(&arena);
    }
    tkv_arena_close(&arena);
}
