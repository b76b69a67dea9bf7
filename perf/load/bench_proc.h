/* CPU time of the benchmark client (getrusage) and of server processes
 * (/proc/<pid>/stat utime + stime), so every result can say CPU per op.
 * Any thread. */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* User + system CPU seconds of this process (all threads). */
double bench_self_cpu_s(void);

/* User + system CPU seconds of process pid (all its threads), or a negative
 * value when it cannot be read (gone, no permission). */
double bench_pid_cpu_s(pid_t pid);

/* Parse the text of a /proc/<pid>/stat file: utime + stime in clock ticks.
 * The command name (field 2) may hold spaces and parentheses, so fields are
 * counted from the LAST ')'. Returns 0, or -1 when malformed. */
int bench_parse_proc_stat(const char *text, unsigned long long *ticks_out);

#endif
