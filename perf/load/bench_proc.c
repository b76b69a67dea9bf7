/* Client and server CPU accounting (bench_proc.h). */
#include "bench_proc.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

double bench_self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int bench_parse_proc_stat(const char *text, unsigned long long *ticks_out)
{
    const char *p = strrchr(text, ')');
    if (p == NULL)
        return -1;
    p++;
    /* After ')' come field 3 (state) onwards; utime is field 14, stime 15. */
    unsigned long long ut = 0, st = 0;
    for (int field = 3; field <= 15; field++) {
        while (*p == ' ')
            p++;
        if (*p == '\0' || *p == '\n')
            return -1;
        char *end;
        if (field == 14 || field == 15) {
            unsigned long long v = strtoull(p, &end, 10);
            if (end == p)
                return -1;
            if (field == 14)
                ut = v;
            else
                st = v;
            p = end;
        } else {
            while (*p != ' ' && *p != '\0' && *p != '\n')
                p++;
        }
    }
    *ticks_out = ut + st;
    return 0;
}

double bench_pid_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    unsigned long long ticks;
    if (bench_parse_proc_stat(buf, &ticks) != 0)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)ticks / (double)(hz > 0 ? hz : 100);
}
