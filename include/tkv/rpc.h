/* gRPC over HTTP/2 (h2c, prior knowledge) with nghttp2: a server with a
 * method table and a client, both moving message BYTES (handlers decode and
 * encode protobuf themselves), driven by the per-core reactor.
 *
 * Threading: every object here belongs to one core (the one that created
 * it) and every function must be called on that core, from a reactor
 * callback, unless it says otherwise. Callbacks run on that core.
 *
 * Ownership words as in STYLE.md 4.6: "borrows X until cb fires",
 * "valid until the callback returns", "copies X".
 */
#ifndef TKV_RPC_H
#define TKV_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tkv/common.h"

struct tkv_reactor;
struct tkv_arena;

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum tkv_grpc_status {
    TKV_GRPC_OK = 0,
    TKV_GRPC_CANCELLED = 1,
    TKV_GRPC_UNKNOWN = 2,
    TKV_GRPC_INVALID_ARGUMENT = 3,
    TKV_GRPC_DEADLINE_EXCEEDED = 4,
    TKV_GRPC_NOT_FOUND = 5,
    TKV_GRPC_ALREADY_EXISTS = 6,
    TKV_GRPC_PERMISSION_DENIED = 7,
    TKV_GRPC_RESOURCE_EXHAUSTED = 8,
    TKV_GRPC_FAILED_PRECONDITION = 9,
    TKV_GRPC_ABORTED = 10,
    TKV_GRPC_OUT_OF_RANGE = 11,
    TKV_GRPC_UNIMPLEMENTED = 12,
    TKV_GRPC_INTERNAL = 13,
    TKV_GRPC_UNAVAILABLE = 14,
    TKV_GRPC_DATA_LOSS = 15,
    TKV_GRPC_UNAUTHENTICATED = 16,
};
#define TKV_GRPC_STATUS_COUNT 17

/* "OK", "CANCELLED", ...; "UNKNOWN_STATUS" for values out of range. Static.
 * Any thread. */
const char *tkv_grpc_status_name(int status);

enum tkv_rpc_kind {
    TKV_RPC_UNARY,         /* one request, one response */
    TKV_RPC_CLIENT_STREAM, /* many requests, one response (Raft, Snapshot) */
    TKV_RPC_SERVER_STREAM, /* one request, many responses */
    TKV_RPC_BIDI,          /* many both ways */
};

#define TKV_RPC_DEFAULT_MAX_MSG (16u * 1024 * 1024)
#define TKV_RPC_DEFAULT_MAX_STREAMS 1024u
#define TKV_RPC_DEFAULT_WINDOW (1u << 30) /* as TinyKV's Go peers */
#define TKV_RPC_DEFAULT_IDLE_NS (60ull * 1000000000ull)

/* ======================================================================
 * Server
 * ====================================================================== */

struct tkv_rpc_server; /* one per core: method table, listener, connections */
struct tkv_rpc_call;   /* one server-side call (HTTP/2 stream) */

/* A method's handler. Message bytes passed to on_message are valid until
 * the callback returns (copy what you keep). The handler owns the call from
 * the first callback until it calls tkv_rpc_call_finish() OR on_cancel
 * fires, whichever comes first; afterwards it must not touch the call.
 *
 * Delivery per kind:
 *   UNARY, SERVER_STREAM: on_message exactly once, after the client
 *     half-closed (a request with zero or several messages is answered
 *     INTERNAL by the library and the handler never sees it); on_half_close
 *     is not called.
 *   CLIENT_STREAM, BIDI: on_message once per message as it completes, then
 *     on_half_close once when the client half-closes.
 * on_cancel(why): the call ended without the handler finishing it: client
 *   RST_STREAM (CANCELLED), deadline (DEADLINE_EXCEEDED; the library has
 *   already answered the client), connection lost or server shutdown grace
 *   over (UNAVAILABLE), or the client sent a bad message (INTERNAL /
 *   RESOURCE_EXHAUSTED / UNIMPLEMENTED; already answered). Free per-call
 *   state here. May be NULL when the handler always finishes synchronously
 *   inside on_message.
 * A handler may call tkv_rpc_call_send/finish synchronously inside its
 * callbacks or later from any callback on the same core (e.g. after a raft
 * commit). */
struct tkv_rpc_method {
    const char *path; /* "/tinykvpb.TinyKv/RawGet"; borrowed for the server's life */
    enum tkv_rpc_kind kind;
    void (*on_message)(struct tkv_rpc_call *call, struct tkv_slice msg);
    void (*on_half_close)(struct tkv_rpc_call *call);
    void (*on_cancel)(struct tkv_rpc_call *call, enum tkv_grpc_status why);
    void *data; /* method user data: tkv_rpc_call_method_data() */
};

struct tkv_rpc_server_config {
    size_t max_recv_msg;           /* 0 = TKV_RPC_DEFAULT_MAX_MSG; larger -> RESOURCE_EXHAUSTED */
    size_t max_send_msg;           /* 0 = TKV_RPC_DEFAULT_MAX_MSG; tkv_rpc_call_send refuses more */
    uint32_t max_streams;          /* SETTINGS_MAX_CONCURRENT_STREAMS; 0 = 1024 */
    uint32_t window;               /* stream and connection receive window; 0 = 1 GiB */
    size_t max_conn_buffered;      /* bytes of partial messages buffered per connection
                                      before the stream that crosses it gets
                                      RESOURCE_EXHAUSTED; 0 = 4 * max_recv_msg */
    uint64_t handshake_timeout_ns; /* close if no client preface by then; 0 = 10 s */
    uint64_t idle_timeout_ns;      /* idle = no byte received (streams or not).
                                      After idle/2 a keepalive PING goes out
                                      (live peers answer it, so quiet long-lived
                                      streams such as Raft's survive); after
                                      idle a connection without calls gets
                                      GOAWAY and one with calls (a peer stalled,
                                      e.g. mid-frame) is closed; after 1.5 x
                                      idle it is closed in any case.
                                      0 = 60 s; UINT64_MAX = never */
    size_t out_high_water;         /* stop reading a connection whose queued output
                                      exceeds this while a send to it is still in
                                      flight (a slow reader); output held only by
                                      the peer's flow-control window never stops
                                      reading; 0 = 4 MiB */
    uint32_t turn_max_requests;    /* unary requests handed to handlers per
                                      connection per loop turn; the rest wait
                                      (the connection is not read meanwhile) so
                                      one pipelining client cannot monopolise
                                      the core; 0 = 64 */
    size_t conn_mem_quota;         /* bytes one connection may hold in partial
                                      received messages plus unsent responses;
                                      a stream that would cross it gets
                                      RESOURCE_EXHAUSTED; 0 = 64 MiB (at least
                                      max_recv_msg + max_send_msg) */
    size_t mem_quota;              /* the same over ALL connections of this
                                      server (a core's share of the node's
                                      server.grpc-memory-pool-quota): the hard
                                      cap; over half of it in partial messages,
                                      the connections holding the most are not
                                      read until it fell under a quarter;
                                      0 = 256 MiB */
    size_t turn_max_big_bytes;     /* bytes of BIG requests (over 64 KiB) handed
                                      to handlers per turn over ALL connections
                                      of this server: 64 clients each putting
                                      8 MiB are spread over turns, and small
                                      requests (never held by this) are served
                                      between them; 0 = 8 MiB */
    size_t turn_max_bytes;         /* request message bytes handed to handlers
                                      per connection per turn (the first
                                      request of a turn always goes); 0 = 4 MiB */
    uint32_t max_connections;      /* open connections on this server (one core);
                                      one more is accepted and closed at once
                                      (a fast, clear failure for the client
                                      instead of a wait in the backlog), counted
                                      in a rate-limited log line; 0 = no limit */
};

/* Create a server (the method table only; no socket yet). methods is copied
 * (the path strings are borrowed for the server's life). Duplicate paths, a
 * path not starting with '/', a NULL on_message, or a CLIENT_STREAM/BIDI
 * method without on_half_close -> TKV_EINVAL. cfg may be NULL (defaults). Returns 0 or TKV_EINVAL.
 * Any thread; afterwards the server belongs to the core that listens with it. */
int tkv_rpc_server_new(const struct tkv_rpc_server_config *cfg,
                       const struct tkv_rpc_method *methods, size_t n_methods,
                       struct tkv_rpc_server **out);

/* Listen on host:port (SO_REUSEPORT, so every core can listen on the same
 * port and the kernel spreads connections) and accept on reactor r (the
 * current core). port 0 picks a free port, reported in *port_out. Also
 * registers a stop hook: on orderly stop the listener closes, every
 * connection gets GOAWAY, in-flight calls may finish, then connections
 * close. Returns 0 or -errno. Core of r only; at most once per server. */
int tkv_rpc_server_listen(struct tkv_rpc_server *srv, struct tkv_reactor *r, const char *host,
                          uint16_t port, uint16_t *port_out);

/* Accept on an already listening non-blocking socket instead. Returns 0 (the
 * server now owns listen_fd and closes it on stop) or TKV_EINVAL (already
 * listening, or fd < 0; the caller keeps the fd). Several cores may each
 * pass their own dup() of ONE listening socket: the kernel hands every
 * connection to one of the cores' pending accepts. That is how a process
 * listens exclusively (no SO_REUSEPORT, which another process of the same
 * user could join) on every core. Same stop hook as above. Core of r only. */
int tkv_rpc_server_listen_fd(struct tkv_rpc_server *srv, struct tkv_reactor *r, int listen_fd);

/* Begin the graceful shutdown described above now (idempotent). */
void tkv_rpc_server_shutdown(struct tkv_rpc_server *srv);

/* Free the server. Call from the core's fini callback (after the loop
 * stopped) or when it never listened. Remaining connections are dropped. */
void tkv_rpc_server_free(struct tkv_rpc_server *srv);

/* Calls finished per status code since creation (index = status), and the
 * number of currently open connections. */
uint64_t tkv_rpc_server_calls(const struct tkv_rpc_server *srv, enum tkv_grpc_status status);
uint32_t tkv_rpc_server_connections(const struct tkv_rpc_server *srv);

/* ---- server calls ---- */

/* Queue one response message: copies msg (frames it, sends response headers
 * first if not sent yet). Returns 0; TKV_ETOOBIG over max_send_msg;
 * TKV_ENOMEM when the connection or the server would exceed its memory
 * quota (conn_mem_quota / mem_quota: the client does not read);
 * TKV_EINVAL for a second message on a UNARY/CLIENT_STREAM call;
 * TKV_ECLOSED if the stream is gone (no on_cancel yet because it is
 * delivered later in this turn) -- the handler still owns the call until
 * finish or on_cancel. */
int tkv_rpc_call_send(struct tkv_rpc_call *call, const void *msg, size_t len);

/* End the call with status and an optional message (UTF-8, percent-encoded
 * on the wire; NULL = none). Sends what is queued, then trailers. The
 * handler's ownership ends: the call pointer is invalid on return, and
 * on_cancel will not fire. */
void tkv_rpc_call_finish(struct tkv_rpc_call *call, enum tkv_grpc_status status, const char *msg);

/* Convenience: send(msg) then finish(OK); if send fails, finish INTERNAL. */
void tkv_rpc_call_reply(struct tkv_rpc_call *call, const void *msg, size_t len);

/* The call's request arena (STYLE.md 4.6 rule 6): decode requests and build
 * responses in it. Allocates nothing until first used; freed with the call,
 * i.e. after the handler finished (or heard on_cancel) and the response was
 * copied out. Handler's core only. */
struct tkv_arena *tkv_rpc_call_arena(struct tkv_rpc_call *call);

void tkv_rpc_call_set_data(struct tkv_rpc_call *call, void *data);
void *tkv_rpc_call_data(const struct tkv_rpc_call *call);
void *tkv_rpc_call_method_data(const struct tkv_rpc_call *call);
const char *tkv_rpc_call_path(const struct tkv_rpc_call *call);
/* Absolute deadline on the reactor clock (tkv_now_ns), 0 = none. */
uint64_t tkv_rpc_call_deadline_ns(const struct tkv_rpc_call *call);
/* Bytes the call's connection holds (partial requests + unsent responses)
 * and its quota: a producer (a long scan) can give up early instead of
 * building a response that tkv_rpc_call_send would refuse. */
size_t tkv_rpc_call_conn_mem(const struct tkv_rpc_call *call);
size_t tkv_rpc_call_conn_mem_quota(const struct tkv_rpc_call *call);

/* Response bytes queued but not yet handed to the socket (flow control of
 * server streams: stop producing above a few MiB). */
size_t tkv_rpc_call_out_bytes(const struct tkv_rpc_call *call);

/* ======================================================================
 * Client
 * ====================================================================== */

struct tkv_rpc_client; /* one HTTP/2 connection to one server, many calls */
struct tkv_rpc_ccall;  /* one client-side call */

struct tkv_rpc_client_config {
    size_t max_recv_msg;   /* 0 = TKV_RPC_DEFAULT_MAX_MSG */
    uint32_t window;       /* 0 = 1 GiB */
    const char *authority; /* :authority; NULL = "host:port" */
};

/* Completion of a unary (or client-streaming via tkv_rpc_client_start)
 * call: status, grpc-message (decoded, "" if none), the response (empty
 * unless status is OK). Pointers valid until the callback returns. */
typedef void (*tkv_rpc_unary_cb)(void *user, enum tkv_grpc_status status, const char *message,
                                 struct tkv_slice resp);

/* Streaming callbacks. on_message per received message (bytes valid until
 * it returns); on_done exactly once at the end (trailers, RST_STREAM,
 * deadline, connection loss), after which the ccall is invalid. */
struct tkv_rpc_stream_cbs {
    void (*on_message)(struct tkv_rpc_ccall *c, void *user, struct tkv_slice msg);
    void (*on_done)(struct tkv_rpc_ccall *c, void *user, enum tkv_grpc_status status,
                    const char *message);
};

/* Connect to host:port (numeric IPv4/IPv6 or "localhost") on reactor r (the
 * current core). No name resolution beyond "localhost" (it would block).
 * Clients are not closed by the reactor's orderly stop: close them from your
 * own tkv_reactor_on_stop hook (or at the latest from the core's fini). Calls may be started right
 * away; they are sent once the connection is up, and fail with UNAVAILABLE if it never comes up.
 * cfg may be NULL. Returns 0 or -errno (bad address: TKV_EINVAL). The client lives until
 * tkv_rpc_client_close(). */
int tkv_rpc_client_connect(struct tkv_reactor *r, const char *host, uint16_t port,
                           const struct tkv_rpc_client_config *cfg, struct tkv_rpc_client **out);

/* False once the connection failed, was closed, or received GOAWAY: start
 * a new client for new calls (in-flight calls still complete). */
bool tkv_rpc_client_usable(const struct tkv_rpc_client *cl);

/* Close: every unfinished call gets on_done(CANCELLED) (synchronously, from
 * inside this function), then the connection is closed and the client freed
 * once the reactor is done with its socket. cl is invalid on return. */
void tkv_rpc_client_close(struct tkv_rpc_client *cl);

/* Unary call: copies req; cb fires exactly once, never from inside this
 * function. timeout_ns 0 = no deadline (sent as grpc-timeout otherwise).
 * Returns 0, or TKV_ETOOBIG / TKV_ECLOSED (cb will not fire). */
int tkv_rpc_client_unary(struct tkv_rpc_client *cl, const char *path, const void *req, size_t len,
                         uint64_t timeout_ns, tkv_rpc_unary_cb cb, void *user);

/* How far a finished unary call got: what a caller that must not repeat a
 * request the server may have acted on (a non-idempotent write) needs. */
enum tkv_rpc_reach {
    /* The server cannot have acted on the request: its last byte (END_STREAM)
     * was never handed to the socket (connect failed, connection lost or
     * deadline before it was sent), or the server refused the stream
     * (RST_STREAM REFUSED_STREAM, or GOAWAY naming an older last stream:
     * HTTP/2 guarantees such a stream was not processed). */
    TKV_RPC_NOT_SENT,
    /* The whole request was handed to the connection, then the call ended
     * without the server's status (connection lost, our deadline, a stream
     * reset): the server may or may not have acted on it. */
    TKV_RPC_SENT,
    /* The status came from the server (trailers, or a response it sent):
     * what it means is the server's statement. */
    TKV_RPC_ANSWERED,
};

/* tkv_rpc_client_unary, plus *reach (borrowed until cb fires) written just
 * before cb fires. Same returns (on an error return *reach is not touched:
 * nothing was sent). */
int tkv_rpc_client_unary_reach(struct tkv_rpc_client *cl, const char *path, const void *req,
                               size_t len, uint64_t timeout_ns, tkv_rpc_unary_cb cb, void *user,
                               enum tkv_rpc_reach *reach);

/* Start a streaming call (any kind); send with tkv_rpc_ccall_send, half-close
 * with tkv_rpc_ccall_close_send. cbs borrowed until on_done fires. Returns
 * 0 and *out, or TKV_ECLOSED / TKV_ENOMEM-like negative codes. on_done never
 * fires from inside this function. */
int tkv_rpc_client_start(struct tkv_rpc_client *cl, const char *path, uint64_t timeout_ns,
                         const struct tkv_rpc_stream_cbs *cbs, void *user,
                         struct tkv_rpc_ccall **out);

/* Queue a request message (copied). Returns 0, TKV_ETOOBIG, or TKV_ECLOSED
 * after close_send or when the stream is already gone (on_done pending). */
int tkv_rpc_ccall_send(struct tkv_rpc_ccall *c, const void *msg, size_t len);
/* Half-close the request side (END_STREAM after what is queued). */
void tkv_rpc_ccall_close_send(struct tkv_rpc_ccall *c);
/* Cancel: RST_STREAM(CANCEL) to the server. on_done does NOT fire
 * afterwards; c is invalid on return. */
void tkv_rpc_ccall_cancel(struct tkv_rpc_ccall *c);
/* Request bytes queued but not yet handed to the socket. */
size_t tkv_rpc_ccall_out_bytes(const struct tkv_rpc_ccall *c);

#endif
