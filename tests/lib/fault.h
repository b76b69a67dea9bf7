/* A fault countdown (canonical/raft test/lib/fault.h): fire after `delay`
 * successful calls, then `repeat` times (-1 = forever), unless paused. */
#ifndef TKV_TEST_FAULT_H
#define TKV_TEST_FAULT_H

#include <stdbool.h>

struct tkv_fault {
    int countdown; /* calls left before the first failure; -1 = disarmed */
    int repeat;    /* failures left; -1 = forever */
    bool paused;
};

void tkv_fault_init(struct tkv_fault *f);
void tkv_fault_config(struct tkv_fault *f, int delay, int repeat);
void tkv_fault_pause(struct tkv_fault *f);
void tkv_fault_resume(struct tkv_fault *f);
/* Count one call; true if this call must fail. */
bool tkv_fault_tick(struct tkv_fault *f);

#endif
