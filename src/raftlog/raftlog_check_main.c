/* tkv-raftlog-check: open (and so recover) a raft log directory and print a
 * summary. Exit 0 when it opens, TKV_RAFTLOG_EXIT_CORRUPT (65) on corruption
 * (naming file and offset), 1 on other errors. Recovery cuts a torn tail. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tkv/err.h"
#include "tkv/raftlog.h"

struct sum {
    struct tkv_raftlog *log;
    bool verbose;
    uint64_t n, entries;
};

static void region(void *arg, tkv_region_id id)
{
    struct sum *s = arg;
    tkv_index first = tkv_raftlog_first_index(s->log, id);
    tkv_index last = tkv_raftlog_last_index(s->log, id);
    struct tkv_raftlog_hardstate hs = {0};
    int has_hs = tkv_raftlog_hardstate(s->log, id, &hs) == 0;
    s->n++;
    s->entries += last + 1 - first;
    if (s->verbose)
        printf("region %" PRIu64 ": entries [%" PRIu64 ", %" PRIu64 "]%s term %" PRIu64
               " vote %" PRIu64 " commit %" PRIu64 "\n",
               id, first, last, has_hs ? "" : " (no hard state)", hs.term, hs.vote, hs.commit);
}

int main(int argc, char **argv)
{
    bool verbose = argc > 2 && strcmp(argv[1], "-v") == 0;
    if (argc != 2 + (verbose ? 1 : 0)) {
        fprintf(stderr, "usage: %s [-v] <raft log directory>\n", argv[0]);
        return 2;
    }
    struct tkv_raftlog_config cfg = {.dir = argv[argc - 1]};
    struct tkv_raftlog_corruption where = {0};
    struct tkv_raftlog *log;
    int rv = tkv_raftlog_open(&cfg, &log, &where);
    if (rv == TKV_ECORRUPT) {
        fprintf(stderr, "corrupt: %s at offset %" PRIu64 ": %s\n", where.path, where.offset,
                where.reason);
        return TKV_RAFTLOG_EXIT_CORRUPT;
    }
    if (rv != 0) {
        fprintf(stderr, "cannot open %s: %s\n", cfg.dir, tkv_strerror(rv));
        return 1;
    }
    struct sum s = {.log = log, .verbose = verbose};
    tkv_raftlog_foreach_region(log, region, &s);
    struct tkv_raftlog_stats st;
    tkv_raftlog_stats(log, &st);
    printf("ok: %" PRIu64 " regions, %" PRIu64 " entries, %" PRIu64 " segments (active %" PRIu64
           ")\n",
           s.n, s.entries, st.n_segments, st.active_segment);
    tkv_raftlog_close(log);
    return 0;
}
