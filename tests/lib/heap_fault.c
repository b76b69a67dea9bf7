/* Failing allocator hook for OOM sweeps (see heap_fault.h). */
#include "heap_fault.h"

#include <stdlib.h>

#include "tkv/mem.h"

static struct tkv_fault heap_fault;
static uint64_t n_calls, n_failures;

static bool should_fail(void)
{
    n_calls++;
    if (tkv_fault_tick(&heap_fault)) {
        n_failures++;
        return true;
    }
    return false;
}

static void *hf_malloc(void *ctx, size_t size)
{
    (void)ctx;
    return should_fail() ? NULL : malloc(size);
}

static void *hf_calloc(void *ctx, size_t n, size_t size)
{
    (void)ctx;
    return should_fail() ? NULL : calloc(n, size);
}

static void *hf_realloc(void *ctx, void *p, size_t size)
{
    (void)ctx;
    return should_fail() ? NULL : realloc(p, size);
}

static void hf_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

void tkv_heap_fault_install(void)
{
    static const struct tkv_allocator a = {hf_malloc, hf_calloc, hf_realloc, hf_free, NULL};
    tkv_fault_init(&heap_fault);
    n_calls = n_failures = 0;
    tkv_mem_set_allocator(&a);
}

void tkv_heap_fault_uninstall(void)
{
    tkv_mem_set_allocator(NULL);
}

void tkv_heap_fault_config(int delay, int repeat)
{
    tkv_fault_config(&heap_fault, delay, repeat);
}

void tkv_heap_fault_pause(void)
{
    tkv_fault_pause(&heap_fault);
}

void tkv_heap_fault_resume(void)
{
    tkv_fault_resume(&heap_fault);
}

uint64_t tkv_heap_fault_calls(void)
{
    return n_calls;
}

uint64_t tkv_heap_fault_failures(void)
{
    return n_failures;
}
