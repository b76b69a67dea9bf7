/* tkv-ring-bench: messages per second between two reactor cores through
 * tkv_reactor_post (windowed one-way stream and strict ping-pong), and the
 * raw ck_ring SPSC ceiling between two spinning threads for comparison. */
#include <ck_ring.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tkv/err.h"
#include "tkv/reactor.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct opts {
    uint64_t msgs;
    uint32_t window;
    uint32_t ring;
    uint64_t rounds;
    bool pin;
};
static struct opts O = {
    .msgs = 10000000, .window = 4096, .ring = 1024, .rounds = 200000, .pin = true};

/* ---- stream: core 0 -> core 1, credits flow back every window/2 ---- */

static struct {
    struct tkv_reactor *r0;
    uint64_t sent, received, credits, since_credit;
    bool producer_queued;
    uint64_t t0, t1;
    struct tkv_reactor_stats st[2];
} S;

static void produce(void *arg);

static void credit(void *arg)
{
    S.credits += (uint64_t)(uintptr_t)arg;
    if (!S.producer_queued && S.sent < O.msgs) {
        S.producer_queued = true;
        tkv_reactor_defer(S.r0, produce, NULL);
    }
}

static void consume(void *arg)
{
    (void)arg;
    S.received++;
    /* every message is a real call on core 1; the reply carries credits */
    if (++S.since_credit == O.window / 2 || S.received == O.msgs) {
        tkv_reactor_post(tkv_reactor_self(), 0, credit, (void *)(uintptr_t)S.since_credit);
        S.since_credit = 0;
    }
    if (S.received == O.msgs) {
        S.t1 = mono_ns();
        tkv_reactor_group_stop(tkv_reactor_group_of(tkv_reactor_self()));
    }
}

static void produce(void *arg)
{
    (void)arg;
    S.producer_queued = false;
    struct tkv_reactor *r = S.r0;
    /* a bounded burst per turn so credits and the loop keep flowing */
    uint64_t burst = S.credits < 1024 ? S.credits : 1024;
    for (uint64_t i = 0; i < burst && S.sent < O.msgs; i++) {
        tkv_reactor_post(r, 1, consume, NULL);
        S.sent++;
        S.credits--;
    }
    if (S.credits > 0 && S.sent < O.msgs) {
        S.producer_queued = true;
        tkv_reactor_defer(r, produce, NULL);
    }
}

static int stream_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    if (core == 0) {
        S.r0 = r;
        S.credits = O.window;
        S.t0 = mono_ns();
        S.producer_queued = true;
        tkv_reactor_defer(r, produce, NULL);
    }
    return 0;
}

static void stats_fini(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    tkv_reactor_get_stats(r, &S.st[core]);
}

/* ---- ping-pong: one message in flight, every hop may need a wake-up ---- */

static struct {
    uint64_t done;
    uint64_t t0, t1;
} P;

static void pp_pong(void *arg);

static void pp_ping(void *arg)
{
    tkv_reactor_post(tkv_reactor_self(), 0, pp_pong, arg);
}

static void pp_pong(void *arg)
{
    if (++P.done == O.rounds) {
        P.t1 = mono_ns();
        tkv_reactor_group_stop(tkv_reactor_group_of(tkv_reactor_self()));
        return;
    }
    tkv_reactor_post(tkv_reactor_self(), 1, pp_ping, arg);
}

static int pp_init(struct tkv_reactor *r, uint32_t core, void *arg)
{
    (void)arg;
    if (core == 0) {
        P.t0 = mono_ns();
        tkv_reactor_post(r, 1, pp_ping, NULL);
    }
    return 0;
}

static int run_group(tkv_core_init_fn init)
{
    struct tkv_reactor_config cfg = {.n_cores = 2, .pin = O.pin, .xcore_ring_size = O.ring};
    struct tkv_reactor_group *g;
    int rv = tkv_reactor_group_start(&cfg, init, stats_fini, NULL, &g);
    if (rv < 0) {
        fprintf(stderr, "tkv_reactor_group_start: %s\n", tkv_strerror(rv));
        return rv;
    }
    return tkv_reactor_group_wait(g);
}

/* ---- raw ck_ring between two spinning threads ---- */

struct raw_msg {
    void *fn, *arg;
};
CK_RING_PROTOTYPE(raw_msg, raw_msg)

static struct {
    struct ck_ring ring;
    struct raw_msg *slots;
    uint64_t t0, t1;
} R;

static void pin_to(int k)
{
    cpu_set_t allowed, one;
    if (!O.pin || sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return;
    int n = CPU_COUNT(&allowed), seen = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n > 0; cpu++) {
        if (CPU_ISSET(cpu, &allowed) && seen++ == k % n) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
            return;
        }
    }
}

static void *raw_consumer(void *p)
{
    (void)p;
    pin_to(1);
    struct raw_msg m;
    uint64_t got = 0, sum = 0;
    while (got < O.msgs) {
        if (ck_ring_dequeue_spsc_raw_msg(&R.ring, R.slots, &m)) {
            got++;
            sum += (uint64_t)(uintptr_t)m.arg;
        } else {
            sched_yield(); /* a shared 2-CPU machine: do not starve the producer */
        }
    }
    R.t1 = mono_ns();
    return (void *)(uintptr_t)(sum != O.msgs * (O.msgs - 1) / 2);
}

static int run_raw(void)
{
    ck_ring_init(&R.ring, O.ring);
    R.slots = calloc(O.ring, sizeof(*R.slots));
    pthread_t t;
    pthread_create(&t, NULL, raw_consumer, NULL);
    pin_to(0);
    R.t0 = mono_ns();
    for (uint64_t i = 0; i < O.msgs; i++) {
        struct raw_msg m = {.fn = NULL, .arg = (void *)(uintptr_t)i};
        while (!ck_ring_enqueue_spsc_raw_msg(&R.ring, R.slots, &m))
            sched_yield();
    }
    void *bad;
    pthread_join(t, &bad);
    free(R.slots);
    return bad ? -1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: tkv-ring-bench [-n msgs] [-w window] [-r ring_slots] [-p pingpong_rounds]\n"
            "                      [--no-pin] [--only stream|pingpong|raw]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-pin") == 0)
            O.pin = false;
        else if (i + 1 < argc && strcmp(argv[i], "-n") == 0)
            O.msgs = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "-w") == 0)
            O.window = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "-r") == 0)
            O.ring = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "-p") == 0)
            O.rounds = strtoull(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "--only") == 0)
            only = argv[++i];
        else
            usage();
    }
    if (O.msgs == 0 || O.window < 2 || O.rounds == 0 || O.ring < 2 || (O.ring & (O.ring - 1)))
        usage();
    printf("tkv-ring-bench: msgs=%llu window=%u ring=%u rounds=%llu pin=%d\n",
           (unsigned long long)O.msgs, O.window, O.ring, (unsigned long long)O.rounds, O.pin);

    if (only == NULL || strcmp(only, "stream") == 0) {
        int rv = run_group(stream_init);
        if (rv < 0 || S.received != O.msgs) {
            fprintf(stderr, "stream failed: rv=%d received=%llu\n", rv,
                    (unsigned long long)S.received);
            return 1;
        }
        double s = (double)(S.t1 - S.t0) / 1e9;
        printf("reactor stream   : %12.0f msgs/s  (%llu msgs in %.3f s; core1 turns %llu, "
               "sleeps %llu; overflowed %llu; wake-ups %llu)\n",
               (double)O.msgs / s, (unsigned long long)O.msgs, s, (unsigned long long)S.st[1].turns,
               (unsigned long long)S.st[1].sleeps, (unsigned long long)S.st[0].posts_overflowed,
               (unsigned long long)S.st[0].wakeups_sent);
    }
    if (only == NULL || strcmp(only, "pingpong") == 0) {
        int rv = run_group(pp_init);
        if (rv < 0 || P.done != O.rounds) {
            fprintf(stderr, "pingpong failed: rv=%d done=%llu\n", rv, (unsigned long long)P.done);
            return 1;
        }
        double s = (double)(P.t1 - P.t0) / 1e9;
        printf("reactor pingpong : %12.0f round trips/s (%.2f us per round trip; core0 "
               "sleeps %llu, wake-ups %llu)\n",
               (double)O.rounds / s, s * 1e6 / (double)O.rounds, (unsigned long long)S.st[0].sleeps,
               (unsigned long long)S.st[0].wakeups_sent);
    }
    if (only == NULL || strcmp(only, "raw") == 0) {
        if (run_raw() != 0) {
            fprintf(stderr, "raw ck_ring: lost or corrupted messages\n");
            return 1;
        }
        double s = (double)(R.t1 - R.t0) / 1e9;
        printf("raw ck_ring spsc : %12.0f msgs/s  (%llu msgs in %.3f s)\n", (double)O.msgs / s,
               (unsigned long long)O.msgs, s);
    }
    return 0;
}
