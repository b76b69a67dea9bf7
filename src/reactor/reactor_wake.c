/* Waking a core that sleeps in io_uring_wait: an eventfd whose read is kept
 * armed in the core's ring, and the sleeping-flag protocol (Seastar's
 * try_enter_interrupt_mode) so a cross-core post is never slept through. */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "reactor_private.h"
#include "tkv/err.h"

int reactor_wake_init(struct tkv_reactor *r)
{
    r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->wake_fd < 0)
        return -errno;
    atomic_init(&r->sleeping, 0);
    return 0;
}

void reactor_wake_close(struct tkv_reactor *r)
{
    if (r->wake_fd >= 0)
        close(r->wake_fd);
    r->wake_fd = -1;
}

void reactor_wake_arm(struct tkv_reactor *r)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);
    io_uring_prep_read(sqe, r->wake_fd, &r->wake_buf, sizeof(r->wake_buf), 0);
    io_uring_sqe_set_data64(sqe, UD_WAKE);
    r->intern_inflight++;
    r->wake_armed = true;
}

void reactor_wake_complete(struct tkv_reactor *r, int res)
{
    r->intern_inflight--;
    r->wake_armed = false;
    /* -ECANCELED comes from the grace-period cancel: re-arm anyway, the core
     * still needs wake-ups until it leaves its loop. */
    if (res < 0 && res != -ECANCELED && res != -EAGAIN && res != -EINTR)
        TKV_PANIC("wake eventfd read: %s", strerror(-res));
    if (!r->exiting)
        reactor_wake_arm(r);
}

void reactor_wake_kick(struct tkv_reactor *r)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(r->wake_fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    /* EAGAIN: the counter is saturated, so a wake-up is pending anyway */
}

bool reactor_wake_if_sleeping(struct tkv_reactor *r)
{
    /* Pairs with the fence in reactor_wake_prepare_sleep: either the
     * consumer sees our published slot, or we see its sleeping flag. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&r->sleeping, 0, memory_order_acq_rel)) {
        reactor_wake_kick(r);
        return true;
    }
    return false;
}

bool reactor_wake_prepare_sleep(struct tkv_reactor *r)
{
    atomic_store_explicit(&r->sleeping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (reactor_rings_nonempty(r) ||
        (atomic_load_explicit(&r->g->stop, memory_order_relaxed) != 0) != r->stopping) {
        atomic_store_explicit(&r->sleeping, 0, memory_order_relaxed);
        return false;
    }
    return true;
}

void reactor_wake_end_sleep(struct tkv_reactor *r)
{
    atomic_store_explicit(&r->sleeping, 0, memory_order_relaxed);
}
