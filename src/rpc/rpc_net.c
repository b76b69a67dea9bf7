/* Binds the gRPC engine to the reactor: per-core listener with SO_REUSEPORT,
 * accept, a recv loop, one send in flight per connection from an owned
 * buffer, a per-connection timer, graceful GOAWAY on stop, client connect. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc_int.h"
#include "tkv/err.h"
#include "tkv/log.h"
#include "tkv/mem.h"
#include "tkv/reactor.h"

#define RPC_RBUF (64u * 1024)
#define RPC_CLIENT_HIGH_WATER (4u << 20)

/* One TCP connection. Freed only from a reactor callback (the fd close
 * completion or a deferred task), never synchronously from user code, so
 * user callbacks may close clients from anywhere. */
struct rpc_sock {
    struct tkv_reactor *r;
    int fd;
    struct rpc_conn *conn;
    struct tkv_rpc_server *srv; /* server side */
    struct tkv_rpc_client *cl;  /* client side */
    struct rpc_sock *prev, *next;
    struct tkv_io rio, wio, xio; /* recv, send, connect/close */
    struct tkv_timer timer;
    uint8_t *rbuf;
    int tasks; /* deferred tasks holding a pointer to us */
    bool flush_queued;
    bool connected;
    bool closing;
    bool fd_closed;   /* close(fd) submitted or fd < 0 */
    bool finished;    /* every operation done; waiting only for the user (client) */
    bool user_closed; /* client: tkv_rpc_client_close called */
    bool recv_paused;
    bool ready_wait; /* requests wait for the next turn's budget: not read */
    bool mem_paused; /* the server is over its partial-message budget and this
                        connection holds the most: not read */
    uint64_t hs_deadline;
    uint64_t last_rx;
    bool ping_sent; /* keepalive PING sent since last_rx */
    size_t high_water;
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

static void sock_flush(struct rpc_sock *s);
static void sock_close(struct rpc_sock *s);
static void sock_rearm(struct rpc_sock *s);
static void post_recv(struct rpc_sock *s);

static void mem_check(struct tkv_rpc_server *srv);

static void sock_destroy(struct rpc_sock *s)
{
    struct tkv_rpc_server *srv = s->srv;
    if (s->cl)
        rpc_client_destroy(s->cl); /* frees the conn too */
    else
        rpc_conn_free(s->conn);
    tkv_free(s->rbuf);
    tkv_free(s);
    mem_check(srv); /* its partial messages were released: maybe resume others */
}

/* Called from reactor callbacks only. */
static void sock_maybe_finish(struct rpc_sock *s)
{
    if (!s->closing || tkv_io_pending(&s->rio) || tkv_io_pending(&s->wio) ||
        tkv_io_pending(&s->xio))
        return;
    if (!s->fd_closed) {
        s->fd_closed = true;
        tkv_reactor_close(s->r, &s->xio, s->fd);
        return;
    }
    if (s->tasks > 0)
        return;
    s->finished = true;
    if (s->cl && !s->user_closed)
        return; /* the client object stays until tkv_rpc_client_close */
    sock_destroy(s);
}

static void deferred_task(void *arg)
{
    struct rpc_sock *s = arg;
    s->tasks--;
    s->flush_queued = false;
    if (s->closing) {
        sock_maybe_finish(s);
        return;
    }
    sock_flush(s);
    sock_rearm(s);
}

static void sock_defer(struct rpc_sock *s)
{
    s->tasks++;
    tkv_reactor_defer(s->r, deferred_task, s);
}

/* Next turn for a connection whose requests exceeded its per-turn budget:
 * hand over the next share, read again only once all were handed over. */
static void ready_task(void *arg)
{
    struct rpc_sock *s = arg;
    s->tasks--;
    if (s->closing) {
        s->ready_wait = false;
        sock_maybe_finish(s);
        return;
    }
    rpc_conn_new_turn(s->conn);
    bool more = rpc_conn_run_ready(s->conn);
    sock_flush(s);
    if (s->closing) {
        sock_maybe_finish(s);
        return;
    }
    if (more) {
        s->tasks++;
        tkv_reactor_defer(s->r, ready_task, s);
    } else {
        s->ready_wait = false;
        if (!s->recv_paused)
            post_recv(s);
    }
    mem_check(s->srv);
    sock_rearm(s);
}

/* Node memory (issue 13 item 3): partial messages of all connections may
 * take half of the server's quota; over it, the connections holding the
 * most stop being read (their bytes stay in the kernel) until the total
 * fell under a quarter. A connection that never completes its message is
 * closed by the idle rule (no request completed). The hard cap (the whole
 * quota, partial + unsent) is enforced by the engine (rpc_conn_mem_ok). */
static void mem_check(struct tkv_rpc_server *srv)
{
    if (!srv)
        return;
    size_t half = srv->mem_quota / 2, quarter = srv->mem_quota / 4;
    if (srv->mem_buffered > half) {
        size_t unpaused = srv->mem_buffered;
        for (struct rpc_sock *s = srv->socks; s; s = s->next)
            if (s->mem_paused)
                unpaused -= s->conn->buffered;
        while (unpaused > quarter) {
            struct rpc_sock *big = NULL;
            for (struct rpc_sock *s = srv->socks; s; s = s->next)
                if (!s->mem_paused && !s->closing && s->conn->buffered > 0 &&
                    (!big || s->conn->buffered > big->conn->buffered))
                    big = s;
            if (!big)
                break;
            big->mem_paused = true;
            srv->n_mem_paused++;
            unpaused -= big->conn->buffered;
            TKV_LOG_WARN("rpc: gRPC receive memory over budget, not reading the largest holder",
                         TKV_LF_U64("holds", big->conn->buffered),
                         TKV_LF_U64("server_buffered", srv->mem_buffered),
                         TKV_LF_U64("quota", srv->mem_quota));
        }
    } else if (srv->n_mem_paused > 0 && srv->mem_buffered <= quarter) {
        for (struct rpc_sock *s = srv->socks; s; s = s->next) {
            if (!s->mem_paused)
                continue;
            s->mem_paused = false;
            if (!s->recv_paused)
                post_recv(s);
        }
        srv->n_mem_paused = 0;
    }
}

/* ---- transport ops for the engine ---- */

static void tp_want_write(void *arg)
{
    struct rpc_sock *s = arg;
    if (s->flush_queued || s->closing)
        return;
    s->flush_queued = true;
    sock_defer(s);
}

static uint64_t tp_now(void *arg)
{
    struct rpc_sock *s = arg;
    return tkv_now_ns(s->r);
}

static void tp_close(void *arg)
{
    struct rpc_sock *s = arg;
    s->user_closed = true;
    if (s->finished) {
        /* Socket long gone (connection lost, or the loop already stopped,
         * e.g. closing from a fini callback): nothing refers to s. */
        sock_destroy(s);
        return;
    }
    if (!s->closing)
        sock_close(s);
    sock_defer(s); /* finish from a reactor turn, not from inside user code */
}

static const struct rpc_transport net_tp = {tp_want_write, tp_now, tp_close};

/* ---- I/O ---- */

static void post_recv(struct rpc_sock *s)
{
    if (!s->closing && !s->ready_wait && !s->mem_paused && !tkv_io_pending(&s->rio))
        tkv_reactor_recv(s->r, &s->rio, s->fd, s->rbuf, RPC_RBUF);
}

static void on_send(struct tkv_io *io, int res)
{
    struct rpc_sock *s = io->data;
    rpc_conn_sent(s->conn);
    if (s->closing) {
        sock_maybe_finish(s);
        return;
    }
    if (res < 0) {
        sock_close(s);
        sock_maybe_finish(s);
        return;
    }
    sock_flush(s);
    /* Resume reading once the output fell under the mark, or as soon as
     * nothing is on its way to the socket: then whatever is still queued is
     * held by the peer's flow-control window, and only reading (its
     * WINDOW_UPDATE) can release it -- staying paused would deadlock any
     * response larger than the mark to a peer with a small window. So the
     * pause only ever lasts while the socket itself is the bottleneck. */
    if (s->recv_paused &&
        (!tkv_io_pending(&s->wio) || rpc_conn_pending_out(s->conn) < s->high_water)) {
        s->recv_paused = false;
        post_recv(s);
    }
    /* callbacks run inside the pull may have started calls with deadlines */
    sock_rearm(s);
}

static void sock_flush(struct rpc_sock *s)
{
    const uint8_t *p;
    size_t n;
    if (s->closing || !s->connected || tkv_io_pending(&s->wio))
        return;
    if (rpc_conn_pull(s->conn, &p, &n) != 0) {
        sock_close(s);
        return;
    }
    if (n > 0) {
        /* p is the conn's owned buffer, untouched until rpc_conn_sent. */
        tkv_reactor_send(s->r, &s->wio, s->fd, p, n);
        return;
    }
    if (rpc_conn_done(s->conn))
        sock_close(s);
}

static void on_recv(struct tkv_io *io, int res)
{
    struct rpc_sock *s = io->data;
    if (s->closing) {
        sock_maybe_finish(s);
        return;
    }
    if (res <= 0) {
        sock_close(s);
        sock_maybe_finish(s);
        return;
    }
    /* Idle = no PROGRESS (a request or message completed, or an ACK of our
     * keepalive PING), not "no byte": a peer trickling a byte every few
     * seconds without ever completing anything is closed like a silent one. */
    uint64_t progress = s->conn->progress;
    rpc_conn_new_turn(s->conn);
    if (rpc_conn_recv(s->conn, s->rbuf, (size_t)res) != 0) {
        sock_close(s);
        sock_maybe_finish(s);
        return;
    }
    if (s->conn->progress != progress || !s->srv) {
        s->last_rx = tkv_now_ns(s->r);
        s->ping_sent = false;
    }
    sock_flush(s);
    if (s->closing) {
        sock_maybe_finish(s);
        return;
    }
    /* Fairness: requests over this turn's budget wait for the next turns,
     * and the connection is not read until they were all handed over. */
    if (rpc_conn_has_ready(s->conn)) {
        s->ready_wait = true;
        s->tasks++;
        tkv_reactor_defer(s->r, ready_task, s);
    }
    /* Backpressure: a peer that does not read its responses stops being read
     * (only while a send is in flight, see on_send). */
    if (tkv_io_pending(&s->wio) && rpc_conn_pending_out(s->conn) >= s->high_water)
        s->recv_paused = true;
    else
        post_recv(s);
    mem_check(s->srv);
    sock_rearm(s);
}

/* Server idle handling (idle = no byte received, whatever the streams):
 * at idle/2 a keepalive PING (a live peer's ACK is received bytes, so quiet
 * long-lived streams such as Raft's stay up); at idle a connection without
 * calls gets a graceful GOAWAY and one with calls is closed (its peer is
 * stalled, e.g. mid-frame); at 1.5 x idle it is closed whatever happened
 * (a GOAWAY the peer never read). */
static uint64_t idle_ns(const struct rpc_sock *s)
{
    return s->srv ? s->srv->cfg.idle_timeout_ns : 0;
}

static void on_timer(struct tkv_timer *t)
{
    struct rpc_sock *s = t->data;
    uint64_t now = tkv_now_ns(s->r);
    uint64_t idle = idle_ns(s);
    if (s->closing)
        return;
    if (s->hs_deadline && !s->conn->got_frame && now >= s->hs_deadline) {
        TKV_LOG_INFO("rpc: closing connection without HTTP/2 preface (handshake timeout)");
        sock_close(s);
        sock_maybe_finish(s);
        return;
    }
    if (idle) {
        uint64_t quiet = now - s->last_rx;
        if (quiet >= idle + idle / 2 || (quiet >= idle && s->conn->n_calls > 0)) {
            TKV_LOG_INFO("rpc: closing connection silent past the idle timeout",
                         TKV_LF_U64("quiet_ms", quiet / 1000000),
                         TKV_LF_U64("calls", s->conn->n_calls));
            sock_close(s);
            sock_maybe_finish(s);
            return;
        }
        if (quiet >= idle)
            rpc_conn_shutdown(s->conn);
        else if (quiet >= idle / 2 && !s->ping_sent) {
            s->ping_sent = true;
            rpc_conn_ping(s->conn);
        }
    }
    rpc_conn_expire(s->conn, now);
    sock_flush(s);
    if (s->closing) {
        sock_maybe_finish(s);
        return;
    }
    sock_rearm(s);
}

static void sock_rearm(struct rpc_sock *s)
{
    uint64_t next = rpc_conn_next_deadline(s->conn);
    uint64_t now = tkv_now_ns(s->r);
    uint64_t idle = idle_ns(s);
    if (s->closing)
        return;
    if (s->hs_deadline && !s->conn->got_frame && (!next || s->hs_deadline < next))
        next = s->hs_deadline;
    if (idle) {
        uint64_t at;
        if (!s->ping_sent)
            at = s->last_rx + idle / 2;
        else if (!s->conn->goaway || s->conn->n_calls > 0)
            at = s->last_rx + idle;
        else
            at = s->last_rx + idle + idle / 2;
        if (at < s->last_rx) /* idle near UINT64_MAX: never */
            at = 0;
        if (at && (!next || at < next))
            next = at;
    }
    if (!next) {
        tkv_timer_stop(s->r, &s->timer);
        return;
    }
    /* An armed timer that fires no later than needed stays: firing early
     * only re-evaluates and re-arms, which is cheaper than moving the
     * timer on every received chunk (last_rx moves the idle deadline). */
    if (tkv_timer_armed(&s->timer) && s->timer.deadline_ns <= (next > now ? next : now + 1))
        return;
    tkv_timer_start(s->r, &s->timer, next > now ? next - now : 0);
}

static void on_xio_done(struct tkv_io *io, int res)
{
    (void)res;
    sock_maybe_finish(io->data);
}

/* Start tearing down: owners of calls hear about it now; memory goes once
 * the reactor returned every buffer (STYLE.md 4.6 rule 4). */
static void sock_close(struct rpc_sock *s)
{
    if (s->closing)
        return;
    s->closing = true;
    tkv_timer_stop(s->r, &s->timer);
    if (s->srv) {
        if (s->mem_paused) {
            s->mem_paused = false;
            s->srv->n_mem_paused--;
        }
        if (s->prev)
            s->prev->next = s->next;
        else
            s->srv->socks = s->next;
        if (s->next)
            s->next->prev = s->prev;
        s->prev = s->next = NULL;
        s->srv->n_conns--;
        rpc_server_conn_metric(s->srv, -1);
    }
    if (s->cl)
        rpc_client_set_unusable(s->cl);
    rpc_conn_abort(s->conn, TKV_GRPC_UNAVAILABLE, "connection closed");
    if (tkv_io_pending(&s->rio))
        tkv_reactor_cancel(s->r, &s->rio);
    if (tkv_io_pending(&s->wio))
        tkv_reactor_cancel(s->r, &s->wio);
    if (tkv_io_pending(&s->xio))
        tkv_reactor_cancel(s->r, &s->xio);
    /* Nothing pending: make sure some callback finishes the job. */
    if (!tkv_io_pending(&s->rio) && !tkv_io_pending(&s->wio) && !tkv_io_pending(&s->xio))
        sock_defer(s);
}

static struct rpc_sock *sock_new(struct tkv_reactor *r, int fd)
{
    struct rpc_sock *s = tkv_xcalloc(1, sizeof(*s));
    s->r = r;
    s->fd = fd;
    s->rbuf = tkv_xmalloc(RPC_RBUF);
    tkv_io_init(&s->rio, on_recv, s);
    tkv_io_init(&s->wio, on_send, s);
    tkv_io_init(&s->xio, on_xio_done, s);
    tkv_timer_init(&s->timer, on_timer, s);
    s->last_rx = tkv_now_ns(r);
    if (fd >= 0) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    } else {
        s->fd_closed = true;
    }
    return s;
}

/* ---- server ---- */

static void on_accept(struct tkv_io *io, int res);

static void listener_close(struct tkv_rpc_server *srv)
{
    if (srv->listen_fd >= 0 && !tkv_io_pending(&srv->accept_io) &&
        !tkv_io_pending(&srv->lclose_io)) {
        tkv_reactor_close(srv->r, &srv->lclose_io, srv->listen_fd);
        srv->listen_fd = -1;
    }
}

static void on_listener_closed(struct tkv_io *io, int res)
{
    (void)io;
    (void)res;
}

static void server_accepted(struct tkv_rpc_server *srv, int fd)
{
    struct rpc_sock *s = sock_new(srv->r, fd);
    s->srv = srv;
    s->high_water = srv->cfg.out_high_water;
    s->conn = rpc_conn_new_server(srv, &net_tp, s);
    s->conn->budgeted = true;
    s->connected = true;
    s->hs_deadline = tkv_now_ns(srv->r) + srv->cfg.handshake_timeout_ns;
    s->next = srv->socks;
    if (srv->socks)
        srv->socks->prev = s;
    srv->socks = s;
    srv->n_conns++;
    rpc_server_conn_metric(srv, +1);
    post_recv(s);
    sock_flush(s); /* our SETTINGS */
    sock_rearm(s);
}

/* Accept-loop trouble is logged at most once per interval per core, with
 * counts since the previous line: a flood must not become a log flood. */
#define ACCEPT_LOG_INTERVAL_NS (5ull * 1000000000ull)
#define ACCEPT_PAUSE_MIN_MS 10u
#define ACCEPT_PAUSE_MAX_MS 1000u

static void accept_log(struct tkv_rpc_server *srv, bool force)
{
    uint64_t now = tkv_now_ns(srv->r);
    uint64_t d_fd = srv->n_fd_exhausted - srv->n_logged[0];
    uint64_t d_shed = srv->n_shed - srv->n_logged[1];
    uint64_t d_over = srv->n_over_limit - srv->n_logged[2];
    if (!d_fd && !d_shed && !d_over)
        return;
    if (!force && srv->last_log_ns && now - srv->last_log_ns < ACCEPT_LOG_INTERVAL_NS)
        return;
    if (d_fd)
        TKV_LOG_WARN("rpc: out of file descriptors; accepting paused with backoff, waiting "
                     "connections shed",
                     TKV_LF_U64("failed_accepts", d_fd), TKV_LF_U64("shed", d_shed),
                     TKV_LF_U64("pause_ms", srv->accept_pause_ms),
                     TKV_LF_U64("connections", srv->n_conns));
    if (d_over)
        TKV_LOG_WARN("rpc: connection limit reached; new connections closed at once",
                     TKV_LF_U64("refused", d_over),
                     TKV_LF_U64("max_connections", srv->cfg.max_connections),
                     TKV_LF_U64("connections", srv->n_conns));
    srv->n_logged[0] = srv->n_fd_exhausted;
    srv->n_logged[1] = srv->n_shed;
    srv->n_logged[2] = srv->n_over_limit;
    srv->last_log_ns = now;
}

/* The classic trick: with no descriptor left, free the spare one, accept
 * the waiting connection into it and close it at once (the peer sees the
 * connection closed instead of hanging in the backlog), then take the
 * spare back. accept4 on the non-blocking listener never blocks. */
static void accept_shed_one(struct tkv_rpc_server *srv)
{
    if (srv->spare_fd >= 0) {
        close(srv->spare_fd);
        srv->spare_fd = -1;
    }
    int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        srv->n_shed++;
    }
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_accept_timer(struct tkv_timer *t)
{
    struct tkv_rpc_server *srv = t->data;
    if (srv->shutting || srv->listen_fd < 0 || tkv_io_pending(&srv->accept_io))
        return;
    tkv_reactor_accept(srv->r, &srv->accept_io, srv->listen_fd);
}

static void on_accept(struct tkv_io *io, int res)
{
    struct tkv_rpc_server *srv = io->data;
    if (res >= 0) {
        if (srv->shutting) {
            close(res);
        } else if (srv->cfg.max_connections && srv->n_conns >= srv->cfg.max_connections) {
            close(res);
            srv->n_over_limit++;
            accept_log(srv, false);
        } else {
            server_accepted(srv, res);
        }
        srv->accept_pause_ms = 0;
    } else if (!srv->shutting && (res == -EMFILE || res == -ENFILE || res == -ENOBUFS ||
                                  res == -ENOMEM)) {
        /* Out of descriptors (or kernel memory): the connection stays in
         * the backlog and the next accept fails at once again, a busy loop
         * that starves every other connection. Shed it, pause, retry. */
        srv->n_fd_exhausted++;
        accept_shed_one(srv);
        srv->accept_pause_ms = srv->accept_pause_ms ? srv->accept_pause_ms * 2 : ACCEPT_PAUSE_MIN_MS;
        if (srv->accept_pause_ms > ACCEPT_PAUSE_MAX_MS)
            srv->accept_pause_ms = ACCEPT_PAUSE_MAX_MS;
        accept_log(srv, false);
        tkv_timer_start(srv->r, &srv->accept_timer, (uint64_t)srv->accept_pause_ms * 1000000ull);
        return;
    } else if (res != -ECANCELED && !srv->shutting) {
        /* e.g. ECONNABORTED: that connection is gone, the next one is not */
        TKV_LOG_WARN("rpc: accept failed", TKV_LF_ERR(res));
    }
    if (srv->shutting) {
        listener_close(srv);
        return;
    }
    tkv_reactor_accept(srv->r, &srv->accept_io, srv->listen_fd);
}

static void server_net_drop(struct tkv_rpc_server *srv)
{
    /* After the loop stopped every operation completed; whatever is left is
     * freed synchronously here. */
    while (srv->socks) {
        struct rpc_sock *s = srv->socks;
        srv->socks = s->next;
        srv->n_conns--;
        rpc_server_conn_metric(srv, -1);
        rpc_conn_free(s->conn);
        if (!s->fd_closed)
            close(s->fd);
        tkv_free(s->rbuf);
        tkv_free(s);
    }
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    srv->listen_fd = -1;
    tkv_timer_stop(srv->r, &srv->accept_timer);
    accept_log(srv, true); /* what the last interval did not report yet */
    if (srv->spare_fd >= 0)
        close(srv->spare_fd);
    srv->spare_fd = -1;
}

static void server_on_stop(void *arg)
{
    tkv_rpc_server_shutdown(arg);
}

int tkv_rpc_server_listen_fd(struct tkv_rpc_server *srv, struct tkv_reactor *r, int listen_fd)
{
    if (srv->listening || listen_fd < 0)
        return TKV_EINVAL;
    srv->r = r;
    srv->listen_fd = listen_fd;
    srv->listening = true;
    srv->net_drop = server_net_drop;
    tkv_io_init(&srv->accept_io, on_accept, srv);
    tkv_io_init(&srv->lclose_io, on_listener_closed, srv);
    tkv_timer_init(&srv->accept_timer, on_accept_timer, srv);
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1: no shedding, still no spin */
    tkv_reactor_accept(r, &srv->accept_io, listen_fd);
    tkv_reactor_on_stop(r, server_on_stop, srv);
    return 0;
}

int tkv_rpc_server_listen(struct tkv_rpc_server *srv, struct tkv_reactor *r, const char *host,
                          uint16_t port, uint16_t *port_out)
{
    if (srv->listening)
        return TKV_EINVAL;
    int fd = tkv_reactor_listen_tcp(host, port, true, 1024, port_out);
    if (fd < 0)
        return fd;
    return tkv_rpc_server_listen_fd(srv, r, fd);
}

void tkv_rpc_server_shutdown(struct tkv_rpc_server *srv)
{
    if (srv->shutting)
        return;
    srv->shutting = true;
    if (!srv->listening)
        return;
    tkv_timer_stop(srv->r, &srv->accept_timer); /* a paused accept stays paused */
    if (tkv_io_pending(&srv->accept_io))
        tkv_reactor_cancel(srv->r, &srv->accept_io);
    else
        listener_close(srv);
    for (struct rpc_sock *s = srv->socks, *next; s; s = next) {
        next = s->next;
        rpc_conn_shutdown(s->conn);
        sock_flush(s);
        if (s->closing)
            sock_maybe_finish(s);
    }
}

/* ---- client ---- */

static void on_connect(struct tkv_io *io, int res)
{
    struct rpc_sock *s = io->data;
    if (s->closing) {
        sock_maybe_finish(s);
        return;
    }
    if (res < 0) {
        TKV_LOG_INFO("rpc: connect failed", TKV_LF_STR("authority", s->conn->authority),
                     TKV_LF_ERR(res));
        char msg[128];
        snprintf(msg, sizeof(msg), "connect to %s failed: %s", s->conn->authority,
                 tkv_strerror(res));
        rpc_conn_abort(s->conn, TKV_GRPC_UNAVAILABLE, msg);
        sock_close(s);
        sock_maybe_finish(s);
        return;
    }
    s->connected = true;
    tkv_io_init(&s->xio, on_xio_done, s);
    post_recv(s);
    sock_flush(s);
    sock_rearm(s);
}

int tkv_rpc_client_connect(struct tkv_reactor *r, const char *host, uint16_t port,
                           const struct tkv_rpc_client_config *cfg, struct tkv_rpc_client **out)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char authority[96];
    /* On a core: literals and "localhost" only, a DNS lookup would block. */
    TKV_RET(tkv_reactor_resolve(host, port, TKV_RESOLVE_NUMERIC, &ss, &len));
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct rpc_sock *s = sock_new(r, fd);
    s->addr = ss;
    s->addrlen = len;
    s->high_water = RPC_CLIENT_HIGH_WATER;
    if (cfg && cfg->authority)
        snprintf(authority, sizeof(authority), "%s", cfg->authority);
    else
        snprintf(authority, sizeof(authority), "%s:%u", host, (unsigned)port);
    s->cl = rpc_client_new(cfg, authority, &net_tp, s);
    s->conn = rpc_client_conn(s->cl);
    tkv_io_init(&s->xio, on_connect, s);
    tkv_reactor_connect(r, &s->xio, fd, (const struct sockaddr *)&s->addr, (uint32_t)s->addrlen);
    *out = s->cl;
    return 0;
}

void rpc_server_out_stats(const struct tkv_rpc_server *srv, struct rpc_out_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (const struct rpc_sock *s = srv->socks; s; s = s->next) {
        st->pending += rpc_conn_pending_out(s->conn);
        st->out_cap += s->conn->out.cap;
        st->paused += s->recv_paused;
        st->conns++;
    }
}
