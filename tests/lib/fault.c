/* Fault countdown primitive (see fault.h). */
#include "fault.h"

void tkv_fault_init(struct tkv_fault *f)
{
    f->countdown = -1;
    f->repeat = 0;
    f->paused = false;
}

void tkv_fault_config(struct tkv_fault *f, int delay, int repeat)
{
    f->countdown = delay;
    f->repeat = repeat;
    f->paused = false;
}

void tkv_fault_pause(struct tkv_fault *f)
{
    f->paused = true;
}

void tkv_fault_resume(struct tkv_fault *f)
{
    f->paused = false;
}

bool tkv_fault_tick(struct tkv_fault *f)
{
    if (f->paused || f->countdown < 0)
        return false;
    if (f->countdown > 0) {
        f->countdown--;
        return false;
    }
    if (f->repeat == 0)
        return false;
    if (f->repeat > 0)
        f->repeat--;
    return true;
}
