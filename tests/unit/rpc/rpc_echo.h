/* A test gRPC service (test.Echo) with unary, client-, server- and bidi-
 * streaming methods, shared by the rpc unit tests and tkv-rpc-echo. Runs on
 * one core at a time (held calls live in a plain list). */
#ifndef TKV_TEST_RPC_ECHO_H
#define TKV_TEST_RPC_ECHO_H

#include <stdatomic.h>

#include "tkv/rpc.h"

/* Methods:
 *   /test.Echo/Unary        echo; "fail" -> INVALID_ARGUMENT with a message
 *                           that needs percent-encoding; "hold" -> never
 *                           answered (until released / deadline / cancel);
 *                           "async:<x>" -> answered "<x>" on echo_release();
 *                           "size:<n>" -> n bytes of 'x'.
 *   /test.Echo/ClientStream concatenation of every message, at half-close.
 *   /test.Echo/ServerStream request "<n>" -> n messages "msg-<i>", then OK.
 *   /test.Echo/Bidi         echoes each message; "end" finishes at once. */
extern const struct tkv_rpc_method echo_methods[];
extern const size_t echo_n_methods;

extern const char echo_fail_message[];

/* Caps on what one request may ask for ("size:<n>" bytes, ServerStream
 * messages), so hostile input (tests/fuzz) cannot make the test service
 * itself exhaust memory. Defaults: 16 MiB + 1 (the TOOBIG path) and 1e6. */
extern size_t echo_max_stream_msgs;
extern size_t echo_max_size;

struct echo_stats {
    atomic_uint_fast64_t cancels; /* on_cancel calls */
    atomic_uint_fast64_t cancel_why[TKV_GRPC_STATUS_COUNT];
    atomic_uint_fast64_t messages; /* messages seen by handlers */
    atomic_uint_fast64_t held;     /* currently held calls */
};
extern struct echo_stats echo_stats;

/* Answer every held "async:" call now (and "hold" calls with status st).
 * Call on the core that serves them. Returns how many were answered. */
int echo_release(enum tkv_grpc_status st);
void echo_reset(void);

#endif
