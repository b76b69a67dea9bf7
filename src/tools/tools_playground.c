/* tinykv-playground: a local cluster from one command, in the spirit of
 * TiUP's playground. Starts tinyscheduler-server and N tinykv-server nodes
 * (default 3, cores = 1 each) on 127.0.0.1 with their data under one
 * directory, waits until the cluster is ready (scheduler serving and
 * bootstrapped, every node's store registered and Up), prints where each
 * process listens and ready-to-paste tinykv-ctl commands, and supervises:
 * a child that dies is reported (the others keep running), SIGINT/SIGTERM
 * are forwarded (nodes first, then the scheduler), the children are waited
 * for within a bound (then killed) and their exit statuses reported.
 *
 * Why a C program and not a shell script: it forwards signals to children
 * in their own process groups (so the terminal's Ctrl-C reaches only the
 * playground and the stop order is ours), learns of a child's death at
 * once (signalfd + waitpid, not a polling loop), asks the status ports
 * for readiness without curl, and gives each child PR_SET_PDEATHSIG so
 * nothing outlives a killed playground. See src/tools/README.md.
 *
 * Exit: 0 when every child stopped with status 0 after a requested stop;
 * 1 when a child failed to start, died unexpectedly, exited non-zero or had
 * to be killed; 2 usage. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tools_private.h"

#define MAX_NODES 9
#define HTTP_TIMEOUT_S 2.0

struct child {
    char name[32];      /* "scheduler", "node1", ... */
    char grpc[300];     /* host:port */
    char status[300];   /* host:port of the status port */
    char data_dir[PATH_MAX];
    char log_path[PATH_MAX];
    pid_t pid;          /* 0: not started or reaped */
    bool exited;        /* reaped */
    int wstatus;
    bool stopping;      /* we asked it to stop */
    uint64_t store_id;  /* nodes: from the scheduler */
};

static struct {
    const char *host, *data_dir, *bin_dir, *node_conf, *sched_conf;
    unsigned pd_port, pd_peer_port, pd_status_port;
    unsigned node_ports[MAX_NODES], node_status_ports[MAX_NODES];
    size_t n_nodes;
    double ready_timeout_s, stop_timeout_s;
    char bin[PATH_MAX];
} opt;

static struct child sched_child, nodes[MAX_NODES];
static int sig_fd = -1;
static int stop_signal;     /* SIGINT/SIGTERM received (0: none) */
static int n_stop_signals;
static bool failed;         /* something went wrong: exit 1 */

static const char usage_text[] =
    "usage: tinykv-playground [OPTIONS]\n"
    "\n"
    "Start a local tinykv cluster: tinyscheduler-server and three tinykv-server\n"
    "nodes (cores = 1) on 127.0.0.1, data under ./tinykv-data/<node>, logs under\n"
    "./tinykv-data/logs. Waits until the cluster is ready, prints the addresses and\n"
    "tinykv-ctl commands, and runs until Ctrl-C (SIGINT) or SIGTERM, which stop every\n"
    "process (nodes first) and report how each one exited.\n"
    "\n"
    "  --data-dir DIR            where the data and logs go (default ./tinykv-data)\n"
    "  --host HOST               address every process listens on (default 127.0.0.1)\n"
    "  --pd-port N               scheduler gRPC client port (default 2379)\n"
    "  --pd-peer-port N          scheduler peer port (default 2380)\n"
    "  --pd-status-port N        scheduler HTTP status/API port (default 2381)\n"
    "  --node-ports A,B,C        node gRPC ports, one per node (default 20160,20161,20162;\n"
    "                            1 to 9 nodes)\n"
    "  --node-status-ports A,B,C node status ports (default 20180,20181,20182)\n"
    "  --config FILE             tinykv-server config file for every node (-C)\n"
    "  --sched-config FILE       tinyscheduler-server config file (-C)\n"
    "  --bin-dir DIR             where tinykv-server, tinyscheduler-server and\n"
    "                            tinykv-ctl are (default: next to this program)\n"
    "  --ready-timeout SECS      give up starting after this long (default 120)\n"
    "  --stop-timeout SECS       kill a process that has not stopped after this long\n"
    "                            (default 30)\n"
    "  -V, --version             print the version\n"
    "\n"
    "Every option can also come from the environment: TKV_PLAYGROUND_DATA_DIR,\n"
    "_HOST, _PD_PORT, _PD_PEER_PORT, _PD_STATUS_PORT, _NODE_PORTS, _NODE_STATUS_PORTS,\n"
    "_CONFIG, _SCHED_CONFIG, _BIN_DIR (flags win).\n"
    "\n"
    "Exit status: 0 all processes stopped cleanly; 1 a process failed to start,\n"
    "died, exited non-zero or had to be killed; 2 usage.\n";

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    va_list ap;
    fputs("tinykv-playground: ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- options ---- */

static bool parse_port(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > 65535 || s[0] == '-')
        return false;
    *out = (unsigned)v;
    return true;
}

static bool parse_ports(const char *s, unsigned *out, size_t *n)
{
    char buf[256];
    if (strlen(s) >= sizeof(buf))
        return false;
    strcpy(buf, s);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_NODES || !parse_port(tok, &out[*n]) || out[*n] == 0)
            return false;
        (*n)++;
    }
    return *n > 0;
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("tinykv-playground: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see tinykv-playground --help)\n", stderr);
    return 2;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* ---- children ---- */

static void child_init(struct child *c, const char *name, const char *grpc_host, unsigned grpc_port,
                       unsigned status_port)
{
    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(c->grpc, sizeof(c->grpc), "%s:%u", grpc_host, grpc_port);
    snprintf(c->status, sizeof(c->status), "%s:%u", grpc_host, status_port);
    snprintf(c->data_dir, sizeof(c->data_dir), "%s/%s", opt.data_dir, name);
    snprintf(c->log_path, sizeof(c->log_path), "%s/logs/%s.log", opt.data_dir, name);
}

static bool alive(const struct child *c)
{
    return c->pid > 0 && !c->exited;
}

static void describe_status(int wstatus, char *buf, size_t cap)
{
    if (WIFEXITED(wstatus))
        snprintf(buf, cap, "exited with code %d", WEXITSTATUS(wstatus));
    else if (WIFSIGNALED(wstatus))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(wstatus),
                 strsignal(WTERMSIG(wstatus)));
    else
        snprintf(buf, cap, "ended (status 0x%x)", wstatus);
}

static void log_tail(const struct child *c)
{
    FILE *f = fopen(c->log_path, "r");
    if (!f)
        return;
    char *lines[8] = {0};
    size_t n = 0;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        free(lines[n % 8]);
        lines[n % 8] = strdup(line);
        n++;
    }
    fclose(f);
    printf("  last lines of %s:\n", c->log_path);
    for (size_t i = n > 8 ? n - 8 : 0; i < n; i++) {
        printf("    %s", lines[i % 8] ? lines[i % 8] : "\n");
        free(lines[i % 8]);
        lines[i % 8] = NULL;
    }
    fflush(stdout);
}

/* Reap every child that ended; report the ones we did not stop. */
static void reap(void)
{
    for (;;) {
        int ws;
        pid_t pid = waitpid(-1, &ws, WNOHANG);
        if (pid <= 0)
            return;
        struct child *c = NULL;
        if (sched_child.pid == pid)
            c = &sched_child;
        for (size_t i = 0; i < opt.n_nodes && !c; i++)
            if (nodes[i].pid == pid)
                c = &nodes[i];
        if (!c)
            continue;
        c->exited = true;
        c->wstatus = ws;
        if (!c->stopping) {
            char how[96];
            describe_status(ws, how, sizeof(how));
            say("%s (pid %d, %s) %s unexpectedly; log: %s", c->name, (int)pid, c->grpc, how,
                c->log_path);
            log_tail(c);
            failed = true;
        }
    }
}

/* Wait up to ms for a signal; handle SIGCHLD (reap) and SIGINT/SIGTERM
 * (remember the stop request). */
static void wait_events(int ms)
{
    struct pollfd p = {.fd = sig_fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return;
    struct signalfd_siginfo si;
    while (read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD) {
            reap();
        } else if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
            if (!stop_signal)
                stop_signal = (int)si.ssi_signo;
            n_stop_signals++;
        }
    }
    reap(); /* SIGCHLDs coalesce: reap whatever ended */
}

static int mkdirs(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static bool spawn(struct child *c, char *const argv[])
{
    int log_fd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        say("cannot open %s: %s", c->log_path, strerror(errno));
        return false;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        say("cannot start %s: fork: %s", c->name, strerror(errno));
        close(log_fd);
        return false;
    }
    if (pid == 0) {
        /* Own process group: the terminal's Ctrl-C reaches the playground
         * only, which stops the children in order. Die with the playground. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        execv(argv[0], argv);
        fprintf(stderr, "tinykv-playground: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(log_fd);
    c->pid = pid;
    c->exited = false;
    c->stopping = false;
    return true;
}

/* ---- readiness ---- */

/* GET path on addr; the body as JSON (or NULL), *code the status. */
static json_t *get_json(const char *addr, const char *path, unsigned *code)
{
    struct tools_http_answer a;
    char err[256];
    *code = 0;
    if (tools_http(addr, "GET", path, NULL, HTTP_TIMEOUT_S, &a, err, sizeof(err)) < 0)
        return NULL;
    *code = a.code;
    json_t *j = json_loadb(TOOLS_HTTP_BODY(&a), a.len, JSON_DECODE_ANY, NULL);
    tools_http_free(&a);
    return j;
}

static bool http_ok(const char *addr, const char *path)
{
    struct tools_http_answer a;
    char err[256];
    if (tools_http(addr, "GET", path, NULL, HTTP_TIMEOUT_S, &a, err, sizeof(err)) < 0)
        return false;
    bool ok = a.code == 200;
    tools_http_free(&a);
    return ok;
}

/* Wait until ready(c) or the deadline, a stop request, or c's death. */
static bool wait_until(bool (*ready)(void), const char *what, double deadline)
{
    for (;;) {
        if (stop_signal || failed)
            return false;
        if (ready())
            return true;
        if (now_s() > deadline) {
            say("gave up: %s not reached within %.0f s (--ready-timeout)", what,
                opt.ready_timeout_s);
            failed = true;
            return false;
        }
        wait_events(100);
    }
}

/* Our scheduler answers on its status port: /readyz 200 and /status names
 * our client URL (another scheduler that happens to hold the port, a
 * leftover of an earlier run, must not pass for ours). */
static bool sched_ready(void)
{
    unsigned code;
    if (!http_ok(sched_child.status, "/readyz"))
        return false;
    json_t *j = get_json(sched_child.status, "/status", &code);
    const char *component = json_string_value(json_object_get(j, "component"));
    const char *urls = json_string_value(json_object_get(j, "client_urls"));
    char want[320];
    snprintf(want, sizeof(want), "http://%s", sched_child.grpc);
    bool ok = code == 200 && component && strcmp(component, "tinyscheduler-server") == 0 &&
              urls && strcmp(urls, want) == 0;
    json_decref(j);
    return ok;
}

/* Before starting anything: every port must be free, else say which one
 * (a process that cannot bind would fail, or worse, its status port would
 * be answered by whoever holds it). A check, not a reservation. */
static bool port_free(const char *host, unsigned port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0)
        return true; /* let the server report a bad host */
    bool free_ = true;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno == EADDRINUSE)
            free_ = false;
        close(fd);
    }
    freeaddrinfo(ai);
    return free_;
}

static bool bootstrapped(void)
{
    unsigned code;
    if (!http_ok(nodes[0].status, "/readyz"))
        return false;
    json_t *j = get_json(sched_child.status, "/status", &code);
    bool ok = code == 200 && json_is_true(json_object_get(j, "bootstrapped"));
    json_decref(j);
    return ok;
}

/* Every node serves and its store is registered and Up. */
static bool stores_up(void)
{
    for (size_t i = 0; i < opt.n_nodes; i++)
        if (!http_ok(nodes[i].status, "/readyz"))
            return false;
    unsigned code;
    json_t *j = get_json(sched_child.status, "/pd/api/v1/stores", &code);
    if (code != 200 || !json_is_object(j)) {
        json_decref(j);
        return false;
    }
    size_t up = 0;
    for (size_t i = 0; i < opt.n_nodes; i++) {
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(j, "stores"), k, e)
        {
            json_t *s = json_object_get(e, "store");
            const char *addr = json_string_value(json_object_get(s, "address"));
            const char *state = json_string_value(json_object_get(s, "state_name"));
            if (addr && strcmp(addr, nodes[i].grpc) == 0 && state && strcmp(state, "Up") == 0) {
                nodes[i].store_id = (uint64_t)json_integer_value(json_object_get(s, "id"));
                up++;
                break;
            }
        }
    }
    json_decref(j);
    return up == opt.n_nodes;
}

/* ---- stopping ---- */

static void stop_children(struct child **cs, size_t n, int sig)
{
    for (size_t i = 0; i < n; i++)
        if (alive(cs[i])) {
            cs[i]->stopping = true;
            kill(cs[i]->pid, sig);
        }
    double deadline = now_s() + opt.stop_timeout_s;
    bool escalated = false;
    for (;;) {
        bool any = false;
        for (size_t i = 0; i < n; i++)
            any |= alive(cs[i]);
        if (!any)
            break;
        /* a second Ctrl-C, or the bound: kill what is left */
        if ((n_stop_signals > 1 || now_s() > deadline) && !escalated) {
            escalated = true;
            for (size_t i = 0; i < n; i++)
                if (alive(cs[i])) {
                    say("%s (pid %d) did not stop %s: killing it", cs[i]->name, (int)cs[i]->pid,
                        n_stop_signals > 1 ? "before the second signal"
                                           : "within --stop-timeout");
                    kill(cs[i]->pid, SIGKILL);
                    failed = true;
                }
        }
        wait_events(50);
    }
    for (size_t i = 0; i < n; i++) {
        if (cs[i]->pid <= 0 || !cs[i]->stopping)
            continue;
        char how[96];
        describe_status(cs[i]->wstatus, how, sizeof(how));
        say("%s (pid %d) %s", cs[i]->name, (int)cs[i]->pid, how);
        if (!WIFEXITED(cs[i]->wstatus) || WEXITSTATUS(cs[i]->wstatus) != 0)
            failed = true;
    }
}

static void stop_all(int sig)
{
    struct child *ns[MAX_NODES];
    size_t n = 0;
    for (size_t i = opt.n_nodes; i-- > 0;)
        if (alive(&nodes[i]))
            ns[n++] = &nodes[i];
    if (n || alive(&sched_child))
        say("stopping: %s to the nodes, then to the scheduler", strsignal(sig));
    if (n)
        stop_children(ns, n, sig);
    struct child *s = &sched_child;
    if (alive(s))
        stop_children(&s, 1, sig);
}

/* ---- output ---- */

/* The ctl path as the user would type it: relative to the cwd when the
 * binary lies below it. */
static void ctl_path(char *out, size_t cap)
{
    char cwd[PATH_MAX], real[PATH_MAX], path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/tinykv-ctl", opt.bin_dir) >= sizeof(path))
        path[0] = '\0';
    if (getcwd(cwd, sizeof(cwd)) && realpath(path, real)) {
        size_t n = strlen(cwd);
        if (strncmp(real, cwd, n) == 0 && real[n] == '/') {
            snprintf(out, cap, "%s", real + n + 1);
            return;
        }
        snprintf(out, cap, "%s", real);
        return;
    }
    snprintf(out, cap, "%s", path);
}

static void print_ready(double took)
{
    char ctl[PATH_MAX + 32];
    ctl_path(ctl, sizeof(ctl));
    printf("\n");
    say("cluster ready in %.1f s: 1 scheduler, %zu nodes (data in %s, logs in %s/logs)", took,
        opt.n_nodes, opt.data_dir, opt.data_dir);
    printf("\n  %-22s %-8s %-22s %-22s %s\n", "PROCESS", "PID", "GRPC", "STATUS (HTTP)",
           "DATA");
    printf("  %-22s %-8d %-22s %-22s %s\n", "scheduler", (int)sched_child.pid, sched_child.grpc,
           sched_child.status, sched_child.data_dir);
    for (size_t i = 0; i < opt.n_nodes; i++) {
        char label[64];
        snprintf(label, sizeof(label), "%.20s (store %llu)", nodes[i].name,
                 (unsigned long long)nodes[i].store_id);
        printf("  %-22s %-8d %-22s %-22s %s\n", label, (int)nodes[i].pid, nodes[i].grpc,
               nodes[i].status, nodes[i].data_dir);
    }
    printf("\n  Scheduler dashboard: http://%s/dashboard\n", sched_child.status);
    printf("  Metrics: http://%s/metrics (each process's STATUS address)\n", sched_child.status);
    printf("\n  From another terminal:\n");
    printf("    %s --pd %s raw put hello world\n", ctl, sched_child.grpc);
    printf("    %s --pd %s raw get hello\n", ctl, sched_child.grpc);
    printf("    %s --pd %s raw scan \"\" --limit 10\n", ctl, sched_child.grpc);
    printf("    %s --pd %s txn put k v\n", ctl, sched_child.grpc);
    printf("    %s --pd-http %s store list\n", ctl, sched_child.status);
    printf("    %s --pd-http %s region list\n", ctl, sched_child.status);
    printf("    %s --pd-http %s region hello\n", ctl, sched_child.status);
    printf("    %s --pd-http %s operator show\n", ctl, sched_child.status);
    printf("    curl -s http://%s/status                # a node's status port\n",
           nodes[0].status);
    printf("\n");
    say("press Ctrl-C to stop the cluster");
    fflush(stdout);
}

/* ---- main ---- */

static void self_dir(char *out, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        snprintf(out, cap, ".");
        return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, cap, "%s", exe);
}

static bool check_exe(const char *dir, const char *name)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    if (access(p, X_OK) == 0)
        return true;
    fprintf(stderr, "tinykv-playground: %s not found or not executable (--bin-dir)\n", p);
    return false;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"host", required_argument, NULL, 'h'},
        {"pd-port", required_argument, NULL, 'p'},
        {"pd-peer-port", required_argument, NULL, 'e'},
        {"pd-status-port", required_argument, NULL, 's'},
        {"node-ports", required_argument, NULL, 'n'},
        {"node-status-ports", required_argument, NULL, 'S'},
        {"config", required_argument, NULL, 'C'},
        {"sched-config", required_argument, NULL, 'c'},
        {"bin-dir", required_argument, NULL, 'b'},
        {"ready-timeout", required_argument, NULL, 'r'},
        {"stop-timeout", required_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    const char *pd_port = env_or("TKV_PLAYGROUND_PD_PORT", "2379");
    const char *pd_peer_port = env_or("TKV_PLAYGROUND_PD_PEER_PORT", "2380");
    const char *pd_status_port = env_or("TKV_PLAYGROUND_PD_STATUS_PORT", "2381");
    const char *node_ports = env_or("TKV_PLAYGROUND_NODE_PORTS", "20160,20161,20162");
    const char *node_status_ports = env_or("TKV_PLAYGROUND_NODE_STATUS_PORTS", "20180,20181,20182");
    opt.data_dir = env_or("TKV_PLAYGROUND_DATA_DIR", "./tinykv-data");
    opt.host = env_or("TKV_PLAYGROUND_HOST", "127.0.0.1");
    opt.node_conf = env_or("TKV_PLAYGROUND_CONFIG", NULL);
    opt.sched_conf = env_or("TKV_PLAYGROUND_SCHED_CONFIG", NULL);
    opt.bin_dir = env_or("TKV_PLAYGROUND_BIN_DIR", NULL);
    opt.ready_timeout_s = 120;
    opt.stop_timeout_s = 30;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "V", opts, NULL)) != -1) {
        switch (c) {
        case 'd': opt.data_dir = optarg; break;
        case 'h': opt.host = optarg; break;
        case 'p': pd_port = optarg; break;
        case 'e': pd_peer_port = optarg; break;
        case 's': pd_status_port = optarg; break;
        case 'n': node_ports = optarg; break;
        case 'S': node_status_ports = optarg; break;
        case 'C': opt.node_conf = optarg; break;
        case 'c': opt.sched_conf = optarg; break;
        case 'b': opt.bin_dir = optarg; break;
        case 'r':
        case 't': {
            double v = strtod(optarg, &end);
            if (*end || !(v > 0) || v > 86400)
                return usage_error("--%s takes seconds > 0",
                                   c == 'r' ? "ready-timeout" : "stop-timeout");
            *(c == 'r' ? &opt.ready_timeout_s : &opt.stop_timeout_s) = v;
            break;
        }
        case 'V': printf("tinykv-playground %s\n", TKV_VERSION); return 0;
        case 'H': fputs(usage_text, stdout); return 0;
        default: return usage_error("unknown option");
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument %s", argv[optind]);
    if (!parse_port(pd_port, &opt.pd_port) || !opt.pd_port ||
        !parse_port(pd_peer_port, &opt.pd_peer_port) || !opt.pd_peer_port ||
        !parse_port(pd_status_port, &opt.pd_status_port) || !opt.pd_status_port)
        return usage_error("scheduler ports are numbers 1..65535");
    size_t n_status;
    if (!parse_ports(node_ports, opt.node_ports, &opt.n_nodes) ||
        !parse_ports(node_status_ports, opt.node_status_ports, &n_status))
        return usage_error("--node-ports / --node-status-ports: 1 to %d ports 1..65535, "
                           "comma-separated", MAX_NODES);
    if (n_status != opt.n_nodes)
        return usage_error("--node-ports names %zu nodes but --node-status-ports %zu",
                           opt.n_nodes, n_status);
    /* every port once: a collision would make one process fail to bind */
    unsigned all[3 + 2 * MAX_NODES];
    size_t n_all = 0;
    all[n_all++] = opt.pd_port;
    all[n_all++] = opt.pd_peer_port;
    all[n_all++] = opt.pd_status_port;
    for (size_t i = 0; i < opt.n_nodes; i++) {
        all[n_all++] = opt.node_ports[i];
        all[n_all++] = opt.node_status_ports[i];
    }
    for (size_t i = 0; i < n_all; i++)
        for (size_t j = 0; j < i; j++)
            if (all[i] == all[j])
                return usage_error("port %u is used twice", all[i]);
    if (!opt.bin_dir) {
        self_dir(opt.bin, sizeof(opt.bin));
        opt.bin_dir = opt.bin;
    }
    if (!check_exe(opt.bin_dir, "tinyscheduler-server") ||
        !check_exe(opt.bin_dir, "tinykv-server"))
        return 1;

    /* Signals: handled through a signalfd, children get an empty mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sig_fd < 0) {
        perror("tinykv-playground: signalfd");
        return 1;
    }

    char logs[PATH_MAX];
    snprintf(logs, sizeof(logs), "%s/logs", opt.data_dir);
    if (mkdirs(logs) < 0) {
        fprintf(stderr, "tinykv-playground: cannot create %s: %s\n", logs, strerror(errno));
        return 1;
    }
    child_init(&sched_child, "scheduler", opt.host, opt.pd_port, opt.pd_status_port);
    for (size_t i = 0; i < opt.n_nodes; i++) {
        char name[32];
        snprintf(name, sizeof(name), "node%u", (unsigned)(i + 1));
        child_init(&nodes[i], name, opt.host, opt.node_ports[i], opt.node_status_ports[i]);
    }

    static const char *const port_flag[3] = {"--pd-port", "--pd-peer-port", "--pd-status-port"};
    for (size_t i = 0; i < n_all; i++) {
        if (!port_free(opt.host, all[i])) {
            say("port %s:%u is in use by another process: stop it, or choose another port with "
                "%s",
                opt.host, all[i],
                i < 3 ? port_flag[i] : i % 2 ? "--node-ports" : "--node-status-ports");
            return 1;
        }
    }

    double t0 = now_s(), deadline = t0 + opt.ready_timeout_s;
    char exe[PATH_MAX + 64], client_url[320], peer_url[320], cores[] = "1";
    snprintf(exe, sizeof(exe), "%s/tinyscheduler-server", opt.bin_dir);
    snprintf(client_url, sizeof(client_url), "http://%s", sched_child.grpc);
    snprintf(peer_url, sizeof(peer_url), "http://%s:%u", opt.host, opt.pd_peer_port);
    say("starting the scheduler on %s (status %s), log %s", sched_child.grpc, sched_child.status,
        sched_child.log_path);
    {
        char *args[16];
        size_t k = 0;
        args[k++] = exe;
        args[k++] = "--name";
        args[k++] = "playground-scheduler";
        args[k++] = "--client-urls";
        args[k++] = client_url;
        args[k++] = "--peer-urls";
        args[k++] = peer_url;
        args[k++] = "--status-addr";
        args[k++] = sched_child.status;
        args[k++] = "--data-dir";
        args[k++] = sched_child.data_dir;
        if (opt.sched_conf) {
            args[k++] = "-C";
            args[k++] = (char *)opt.sched_conf;
        }
        args[k] = NULL;
        if (!spawn(&sched_child, args))
            failed = true;
    }
    bool ok = !failed && wait_until(sched_ready, "the scheduler serving", deadline);

    /* The first node bootstraps the cluster; the others start once it
     * has (two nodes bootstrapping at once would both prepare a region). */
    snprintf(exe, sizeof(exe), "%s/tinykv-server", opt.bin_dir);
    for (size_t i = 0; ok && i < opt.n_nodes; i++) {
        struct child *n = &nodes[i];
        if (mkdirs(n->data_dir) < 0) {
            say("cannot create %s: %s", n->data_dir, strerror(errno));
            ok = false;
            failed = true;
            break;
        }
        say("starting %s on %s (status %s), data %s, log %s", n->name, n->grpc, n->status,
            n->data_dir, n->log_path);
        char *args[20];
        size_t k = 0;
        args[k++] = exe;
        args[k++] = "--addr";
        args[k++] = n->grpc;
        args[k++] = "--status-addr";
        args[k++] = n->status;
        args[k++] = "--data-dir";
        args[k++] = n->data_dir;
        args[k++] = "--pd";
        args[k++] = sched_child.grpc;
        args[k++] = "--cores";
        args[k++] = cores;
        if (opt.node_conf) {
            args[k++] = "-C";
            args[k++] = (char *)opt.node_conf;
        }
        args[k] = NULL;
        if (!spawn(n, args)) {
            ok = false;
            failed = true;
        }
        if (ok && i == 0)
            ok = wait_until(bootstrapped, "node1 serving and the cluster bootstrapped", deadline);
    }
    if (ok)
        ok = wait_until(stores_up, "every node's store registered and Up", deadline);
    if (ok)
        print_ready(now_s() - t0);

    /* Supervise until asked to stop (a dead child is reported by reap). */
    while (ok && !stop_signal)
        wait_events(1000);
    if (!ok && !stop_signal)
        say("not starting the cluster; stopping what runs");
    stop_all(stop_signal ? stop_signal : SIGTERM);
    say("stopped%s", failed ? " (with failures: see above)" : "");
    return failed ? 1 : 0;
}
