/* tkv-ceilings: the machine's physical limits that bound any store here:
 * fdatasync rate of a directory's disk and loopback TCP round trip. Used by
 * perf/README.md ("The machine's ceilings"). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Append 4 KiB + fdatasync, n times, in a fresh file under dir: the rate a
 * write-ahead log without group commit can reach. */
static int fsync_rate(const char *dir, int n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tkv-ceilings.%d", dir, (int)getpid());
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "tkv-ceilings: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    unlink(path);
    static char block[4096];
    memset(block, 'w', sizeof block);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        if (write(fd, block, sizeof block) != (ssize_t)sizeof block || fdatasync(fd) != 0) {
            fprintf(stderr, "tkv-ceilings: write/fdatasync: %s\n", strerror(errno));
            close(fd);
            return 1;
        }
    }
    double dt = now_s() - t0;
    close(fd);
    printf("fdatasync (4 KiB appends) in %s: %.0f/s, %.0f us each (%d syncs)\n", dir, n / dt,
           dt / n * 1e6, n);
    return 0;
}

/* One byte back and forth between two processes over 127.0.0.1. */
static int loopback_rtt(int n)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, al) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) != 0) {
        fprintf(stderr, "tkv-ceilings: listen: %s\n", strerror(errno));
        return 1;
    }
    int one = 1;
    char b[64];
    pid_t child = fork();
    if (child < 0)
        return 1;
    if (child == 0) {
        int c = accept(l, NULL, NULL);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        while (read(c, b, sizeof b) > 0)
            if (write(c, b, 1) != 1)
                break;
        _exit(0);
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, al) != 0) {
        fprintf(stderr, "tkv-ceilings: connect: %s\n", strerror(errno));
        return 1;
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        if (write(s, "x", 1) != 1 || read(s, b, sizeof b) <= 0) {
            fprintf(stderr, "tkv-ceilings: ping-pong broke at %d\n", i);
            close(s);
            waitpid(child, NULL, 0);
            return 1;
        }
    double dt = now_s() - t0;
    close(s);
    waitpid(child, NULL, 0);
    printf("loopback TCP round trip (1 byte, 2 processes, TCP_NODELAY): %.1f us (%d trips)\n",
           dt / n * 1e6, n);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "Usage: tkv-ceilings [dir-on-the-data-disk]\n");
        return 2;
    }
    int rv = fsync_rate(dir, 300);
    rv |= loopback_rtt(20000);
    return rv;
}
