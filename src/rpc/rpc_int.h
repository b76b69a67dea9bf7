/* Private to src/rpc: the transport-independent per-connection protocol
 * engine (nghttp2 session + gRPC framing) shared by server and client, and
 * the seam the reactor glue (rpc_net.c) and the in-memory tests drive. */
#ifndef TKV_RPC_INT_H
#define TKV_RPC_INT_H

#include <nghttp2/nghttp2.h>

#include "tkv/arena.h"
#include "tkv/reactor.h"
#include "tkv/rpc.h"

/* A growable owned byte buffer with a read offset. */
struct rpc_buf {
    uint8_t *p;
    size_t len, off, cap;
};

void rpc_buf_append(struct rpc_buf *b, const void *p, size_t n);
void rpc_buf_free(struct rpc_buf *b);
static inline size_t rpc_buf_avail(const struct rpc_buf *b)
{
    return b->len - b->off;
}

/* What the engine needs from whoever moves its bytes. */
struct rpc_transport {
    /* New output was produced outside rpc_conn_recv (an asynchronous reply,
     * a new client call): schedule a flush. */
    void (*want_write)(void *arg);
    /* The clock for deadlines (tkv_now_ns on a reactor). */
    uint64_t (*now)(void *arg);
    /* Client only: the user closed the client; the conn is already aborted.
     * Tear the transport down and eventually call rpc_client_destroy(). */
    void (*close)(void *arg);
};

struct rpc_limits {
    size_t max_recv_msg, max_send_msg, max_buffered;
    uint32_t window, max_streams;
    size_t conn_quota;          /* partial received + unsent, per connection */
    uint32_t turn_max_requests; /* server, budgeted connections only */
    size_t turn_max_big_bytes;  /* server-wide, requests over RPC_BIG_REQUEST */
    size_t turn_max_bytes;
};

struct rpc_conn;

/* One stream. Server side it is the tkv_rpc_call the handler sees; client
 * side it is embedded in tkv_rpc_ccall. Freed only at nghttp2 stream close
 * or connection teardown, never inside a user callback, so handlers may
 * call finish/cancel from anywhere. */
struct tkv_rpc_call {
    struct rpc_conn *conn;
    int32_t id;
    struct tkv_rpc_call *prev, *next;       /* conn->calls */
    struct tkv_rpc_call *dl_prev, *dl_next; /* conn deadline list, sorted */
    bool in_dl;
    uint64_t deadline;

    /* receive side: 5-byte prefix, then the message */
    uint8_t hdr[5];
    uint8_t hdr_got;
    size_t hdr_list_bytes; /* header + trailer fields seen (RFC 7541 sizes) */
    uint32_t msg_len;
    uint8_t *msg;
    size_t msg_got, msg_cap;
    uint32_t n_msgs;
    uint8_t *held; /* the single message of a unary side, delivered at the end */
    size_t held_len;
    bool have_held;
    bool discard;       /* drop further received DATA */
    bool remote_closed; /* peer sent END_STREAM */
    bool local_closed;  /* we sent END_STREAM */
    bool encoding_ok;   /* peer negotiated a non-identity grpc-encoding (never, today) */

    /* send side */
    struct rpc_buf q;
    bool submitted; /* HEADERS submitted (response or request) */
    bool eof;       /* finish / close_send requested */
    bool deferred;  /* data provider returned DEFERRED */

    /* request/response metadata seen in headers */
    char *path;
    bool bad_method, bad_ctype, bad_timeout, bad_encoding;
    uint64_t timeout_ns;
    bool has_timeout;
    int http_status;
    int grpc_status; /* -1 until trailers */
    char *grpc_msg;

    /* server */
    uint64_t start_ns;      /* CLOCK_MONOTONIC at creation (latency metric) */
    struct tkv_arena arena; /* zeroed = empty; closed in rpc_call_free */
    const struct tkv_rpc_method *method;
    void *data;
    bool handler_owns;
    bool finished;
    int status;
    char *status_msg;

    uint32_t n_sent;
    /* server: complete unary request waiting for the next turn's budget */
    struct tkv_rpc_call *ready_prev, *ready_next;
    bool in_ready;

    /* client */
    bool unary;
    bool req_sent;  /* our END_STREAM frame was handed to the socket */
    bool answered;  /* the status came from the server (trailers) */
    bool refused;   /* REFUSED_STREAM: the server did not process it */
    enum tkv_rpc_reach *reach; /* unary_reach: written before ucb */
    tkv_rpc_unary_cb ucb;
    const struct tkv_rpc_stream_cbs *cbs;
    void *user;
    bool done; /* completion delivered or user cancelled */
};

struct tkv_rpc_ccall {
    struct tkv_rpc_call s;
};

struct rpc_conn {
    nghttp2_session *ng;
    bool is_server;
    struct tkv_rpc_server *srv;
    struct tkv_rpc_client *client;
    struct rpc_limits lim;
    const struct rpc_transport *tp;
    void *tp_arg;
    char *authority;

    struct rpc_buf out; /* owned send buffer (STYLE.md 4.6 rule 8) */
    bool out_busy;      /* out handed to the transport */
    size_t buffered;    /* partial received messages held */
    size_t queued;      /* message bytes queued on streams, not yet in out */
    struct tkv_rpc_call *calls;
    struct tkv_rpc_call *dl_head, *dl_tail;
    uint32_t n_calls;
    int in_engine; /* depth of nghttp2 calls (recv/send) on the stack */
    bool aborted;
    bool failed;    /* protocol error: close the connection */
    bool goaway;    /* GOAWAY sent or received */
    bool goaway_due;    /* graceful GOAWAY wanted, submitted by the next pull */
    bool goaway_unsent; /* submitted, not yet serialized (on_frame_send clears) */
    bool got_frame; /* a valid frame arrived (preface done) */
    uint64_t rx_bytes;
    /* Token bucket for control frames that make us answer (SETTINGS, PING):
     * a peer over the rate gets GOAWAY(ENHANCE_YOUR_CALM). Refilled whenever
     * we send HEADERS or DATA, so only pings without traffic from us between
     * them count (gRPC A8 "strikes"; grpc-go's BDP pings follow our DATA). */
    uint32_t ctrl_tokens;
    uint64_t ctrl_refill_ns;
    /* Received RST_STREAM (server): our own bucket, so the rapid-reset
     * limit answers GOAWAY(ENHANCE_YOUR_CALM) (nghttp2's own limit, kept
     * as a backstop at twice ours, says INTERNAL_ERROR). */
    uint32_t rst_tokens;
    uint64_t rst_refill_ns;
    /* Requests (server) or messages completed, and ACKs of our PINGs:
     * the transport's idle rule counts progress, not bytes. */
    uint64_t progress;
    /* Per-turn budget (server, when the transport sets budgeted): unary
     * requests beyond it wait in the ready list, oldest first, and the
     * transport stops reading until rpc_conn_run_ready() emptied it. */
    bool budgeted;
    uint32_t turn_requests;
    size_t turn_bytes;
    struct tkv_rpc_call *ready_head, *ready_tail;
};

struct rpc_sock; /* rpc_net.c */

struct tkv_rpc_server {
    struct tkv_rpc_server_config cfg;
    struct rpc_limits lim;
    struct tkv_rpc_method *methods;
    size_t n_methods;
    uint64_t calls[TKV_GRPC_STATUS_COUNT];
    uint32_t n_conns;
    /* Memory of all connections (sums of their buffered and queued). */
    size_t mem_buffered, mem_queued, mem_quota;
    uint32_t n_mem_paused;
    /* Big requests handed over in the current turn (identified by its
     * cached clock value, tp->now), over all connections. */
    uint64_t big_turn_ns;
    size_t turn_big_bytes;
    uint64_t n_quota_refused;
    /* metrics (rpc_server.c): one entry per method + one for unknown paths */
    struct rpc_method_metrics *mm;
    struct tkv_gauge *m_conns;
    struct tkv_counter *m_accepted;
    /* reactor side (rpc_net.c) */
    struct tkv_reactor *r;
    int listen_fd;
    struct tkv_io accept_io, lclose_io;
    bool listening, shutting;
    struct rpc_sock *socks;
    void (*net_drop)(struct tkv_rpc_server *srv); /* set by listen: drop sockets */
    /* Accept throttling (rpc_net.c). Out of descriptors, accept fails at
     * once for as long as a connection waits in the backlog: the listener
     * then pauses (backoff timer) after shedding that connection with the
     * spare descriptor, instead of spinning. */
    int spare_fd;                 /* /dev/null, closed to make room for accept-and-close */
    struct tkv_timer accept_timer; /* resumes accepting after a pause */
    uint32_t accept_pause_ms;     /* current backoff; 0 = not backing off */
    uint64_t n_fd_exhausted;      /* accepts that failed EMFILE/ENFILE/ENOBUFS/ENOMEM */
    uint64_t n_shed;              /* connections accepted and closed: no descriptors */
    uint64_t n_over_limit;        /* connections accepted and closed: max_connections */
    uint64_t n_logged[3];         /* the counters above at the last log line */
    uint64_t last_log_ns;
};

struct tkv_rpc_client {
    struct rpc_conn *conn;
    struct rpc_limits lim;
    bool usable;
    bool closing;
};

/* Create a server-side engine for one accepted connection. Queues our
 * SETTINGS. Aborts on allocation failure (server layer). */
struct rpc_conn *rpc_conn_new_server(struct tkv_rpc_server *srv, const struct rpc_transport *tp,
                                     void *tp_arg);
/* Create a client with an engine (no transport yet bound to a socket). */
struct tkv_rpc_client *rpc_client_new(const struct tkv_rpc_client_config *cfg,
                                      const char *authority, const struct rpc_transport *tp,
                                      void *tp_arg);
struct rpc_conn *rpc_conn_new_client_engine(const struct rpc_limits *lim, const char *authority,
                                            const struct rpc_transport *tp, void *tp_arg);
struct rpc_conn *rpc_client_conn(struct tkv_rpc_client *cl);
/* Free client + its conn (after the transport is done with out). */
void rpc_client_destroy(struct tkv_rpc_client *cl);
/* Mark the client unusable (connection failed or lost). */
void rpc_client_set_unusable(struct tkv_rpc_client *cl);

/* Feed received bytes. Returns 0, or a negative code: close the connection. */
int rpc_conn_recv(struct rpc_conn *c, const uint8_t *p, size_t n);
/* Serialize pending frames into the owned send buffer and return it
 * (*p, *n; n = 0 if nothing). The pointer is valid until rpc_conn_sent().
 * While out is busy, returns n = 0. Returns 0 or negative (close). */
int rpc_conn_pull(struct rpc_conn *c, const uint8_t **p, size_t *n);
/* The bytes returned by the last rpc_conn_pull were written. */
void rpc_conn_sent(struct rpc_conn *c);
/* True when the session neither wants to read nor write: close. */
bool rpc_conn_done(const struct rpc_conn *c);
/* Expire calls whose deadline is <= now. */
void rpc_conn_expire(struct rpc_conn *c, uint64_t now);
/* Earliest call deadline, 0 if none. */
uint64_t rpc_conn_next_deadline(const struct rpc_conn *c);
/* Graceful: GOAWAY(last processed stream), in-flight calls may finish.
 * The frame is submitted by the next rpc_conn_pull, which names the last
 * stream processed at that moment and serializes it at once. */
void rpc_conn_shutdown(struct rpc_conn *c);
/* The connection is going away: every call's owner hears about it now
 * (server on_cancel(why), client on_done(why)); no callback afterwards. */
void rpc_conn_abort(struct rpc_conn *c, enum tkv_grpc_status why, const char *msg);
/* Free the engine and all calls (after rpc_conn_abort, or it aborts). */
void rpc_conn_free(struct rpc_conn *c);
/* Bytes waiting in stream queues and out. */
size_t rpc_conn_pending_out(const struct rpc_conn *c);
/* A new loop turn for this connection: reset its request budget. */
void rpc_conn_new_turn(struct rpc_conn *c);
/* Hand waiting requests to their handlers within the budget. Returns true
 * while some still wait (call again next turn, do not read meanwhile). */
bool rpc_conn_run_ready(struct rpc_conn *c);
static inline bool rpc_conn_has_ready(const struct rpc_conn *c)
{
    return c->ready_head != NULL;
}

/* Queue a PING (keepalive: a live peer's ACK counts as received bytes). */
void rpc_conn_ping(struct rpc_conn *c);

/* Output memory of a server's open connections, summed (tests; core of srv). */
struct rpc_out_stats {
    size_t pending;  /* rpc_conn_pending_out: stream queues + owned send buffer */
    size_t out_cap;  /* allocated owned send buffers */
    uint32_t paused; /* connections not being read (backpressure) */
    uint32_t conns;
};
void rpc_server_out_stats(const struct tkv_rpc_server *srv, struct rpc_out_stats *st);

/* Per-connection protocol bounds (rpc_h2.c and rpc_conn.c; tests check each). */
#define RPC_MAX_HEADER_LIST (64u * 1024) /* header block of one stream, RFC 7541 sizes */
#define RPC_MAX_CONTINUATIONS 8u         /* CONTINUATION frames after one HEADERS */
#define RPC_MAX_SETTINGS_ENTRIES 32u     /* entries in one SETTINGS frame */
#define RPC_MAX_OUTBOUND_ACK 1000u       /* unsent SETTINGS/PING ACKs before closing */
#define RPC_RST_BURST 1000u              /* received RST_STREAM: burst ... */
#define RPC_RST_RATE 33u                 /* ... and refill per second (server) */
#define RPC_CTRL_BURST 256u              /* received SETTINGS + PING: burst ... */
#define RPC_CTRL_RATE 64u                /* ... and refill per second */
#define RPC_BIG_REQUEST (64u * 1024)     /* a request this large counts as big */

/* Memory accounting: a connection's partial/held request bytes and its
 * queued response bytes, mirrored in its server's totals. */
void rpc_conn_buffered_add(struct rpc_conn *c, size_t n);
void rpc_conn_buffered_sub(struct rpc_conn *c, size_t n);
/* May c hold n more bytes (its quota, and its server's)? If not, *why says
 * which quota. */
bool rpc_conn_mem_ok(const struct rpc_conn *c, size_t n, const char **why);

/* Server internals used by the engine. */
const struct tkv_rpc_method *rpc_server_lookup(const struct tkv_rpc_server *srv, const char *path);
const struct rpc_limits *rpc_server_limits(const struct tkv_rpc_server *srv);
/* CLOCK_MONOTONIC in ns (call latency). */
uint64_t rpc_clock_ns(void);
/* A server call ended with status: counters and the latency histogram. */
void rpc_server_count(struct tkv_rpc_server *srv, const struct tkv_rpc_call *call, int status);
/* A connection was accepted (delta +1) or closed (-1). */
void rpc_server_conn_metric(struct tkv_rpc_server *srv, int delta);

/* Engine helpers shared by server/client API files. */
ssize_t rpc_call_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                      nghttp2_data_source *src, void *ud);
struct tkv_rpc_call *rpc_call_new(struct rpc_conn *c);
void rpc_call_free(struct tkv_rpc_call *call);
void rpc_call_cancel_stream(struct tkv_rpc_call *call);
void rpc_call_notify(struct tkv_rpc_call *call); /* data queued: resume + want_write */
void rpc_call_queue_msg(struct tkv_rpc_call *call, const void *msg, size_t len);
int rpc_client_submit(struct rpc_conn *c, struct tkv_rpc_call *call, const char *path,
                      uint64_t timeout_ns);
void rpc_server_finish(struct tkv_rpc_call *call, int status, const char *msg);
void rpc_conn_kick(struct rpc_conn *c);

/* Utilities (rpc_util.c). */
/* Parse a grpc-timeout value ("100m", "5S"...). Returns 0 and *ns, or TKV_EINVAL. */
int rpc_parse_timeout(const char *v, size_t n, uint64_t *ns);
/* Format ns as a grpc-timeout value into buf (>= 16 bytes); rounds up. */
void rpc_format_timeout(uint64_t ns, char *buf);
/* Percent-encode for grpc-message; returns a tkv_xmalloc'ed string. */
char *rpc_percent_encode(const char *s);
/* Percent-decode n bytes; returns a tkv_xmalloc'ed NUL-terminated string. */
char *rpc_percent_decode(const char *s, size_t n);
/* gRPC status for a non-200 HTTP status (grpc/doc/http-grpc-status-mapping.md). */
int rpc_http_to_grpc(int http_status);

/* Shared by the files of the connection engine (rpc_conn.c, rpc_server_call.c,
 * rpc_client_call.c, rpc_h2.c): the call lists and the data provider are
 * the connection core's, the server and client files finish and fail calls
 * that the framing code delivers to, and the core creates sessions with the
 * callbacks of rpc_h2.c. */

/* Stop serializing once the owned send buffer holds this much: one socket
 * send per pull, bounded memory. */
#define RPC_OUT_CHUNK (256u * 1024)
/* Initial allocation for a message that arrives in pieces; it grows as the
 * bytes arrive so a huge announced length costs nothing until sent. */
#define RPC_MSG_INITIAL (64u * 1024)

/* rpc_conn.c: connection core: accounting, call records, data provider */
void rpc_dl_remove(struct tkv_rpc_call *call);
void rpc_dl_insert(struct tkv_rpc_call *call);
void rpc_held_free(struct tkv_rpc_call *call);
void rpc_call_drop_partial(struct tkv_rpc_call *call);
void rpc_ready_remove(struct tkv_rpc_call *call);
void rpc_ready_push(struct tkv_rpc_call *call);
void rpc_nv_set(nghttp2_nv *nv, const char *name, const char *value);
size_t rpc_trailer_nv(struct tkv_rpc_call *call, nghttp2_nv *nv, char *st);

/* rpc_server_call.c: server calls */
void rpc_server_fail(struct tkv_rpc_call *call, int status, const char *msg);
void rpc_server_dispatch(struct tkv_rpc_call *call);
bool rpc_kind_single_request(enum tkv_rpc_kind k);
void rpc_server_remote_end(struct tkv_rpc_call *call);

/* rpc_client_call.c: client calls */
void rpc_client_complete(struct tkv_rpc_call *call, int status, const char *msg);
void rpc_client_fail(struct tkv_rpc_call *call, int status, const char *msg);
void rpc_client_trailers(struct tkv_rpc_call *call);

/* rpc_h2.c: framing and nghttp2 callbacks */
nghttp2_session_callbacks *rpc_make_callbacks(void);

#endif
