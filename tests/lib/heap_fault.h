/* A failing allocator behind the tkv_malloc hook (include/tkv/mem.h):
 * canonical/raft test/lib/heap.c, nghttp2 failmalloc. Counts calls too. */
#ifndef TKV_TEST_HEAP_FAULT_H
#define TKV_TEST_HEAP_FAULT_H

#include <stdbool.h>
#include <stdint.h>

#include "fault.h"

/* Install the hook; allocations fail as tkv_heap_fault's countdown says. */
void tkv_heap_fault_install(void);
void tkv_heap_fault_uninstall(void);
/* Arm: fail after `delay` allocations, `repeat` times (-1 forever). */
void tkv_heap_fault_config(int delay, int repeat);
void tkv_heap_fault_pause(void);
void tkv_heap_fault_resume(void);
/* Allocation calls (malloc/calloc/realloc) seen since install, and how
 * many were failed. */
uint64_t tkv_heap_fault_calls(void);
uint64_t tkv_heap_fault_failures(void);

#endif
