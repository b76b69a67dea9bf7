/* Test harness for raftlog (see raftlog_harness.h). */
#include "raftlog_harness.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tkv/err.h"
#include "tkv/mem.h"

uint64_t h_rand(uint64_t *s)
{
    uint64_t x = *s += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Directories of this process, removed at exit even when an assertion ends
 * a test early (TKV_KEEP_DIRS=1 keeps them for inspection). */
static char made[64][128];
static int n_made;

static void remove_made(void)
{
    if (getenv("TKV_KEEP_DIRS"))
        return;
    for (int i = 0; i < n_made; i++) {
        char cmd[256];
        int n = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", made[i]);
        if (n < 0 || (size_t)n >= sizeof(cmd) || system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", made[i]);
    }
    n_made = 0;
}

void h_init(struct h *h, bool mem, const char *base, uint64_t seg_size, uint32_t max_batch)
{
    memset(h, 0, sizeof(*h));
    h->mem = mem;
    h->cfg.segment_size = seg_size;
    h->cfg.max_batch_bytes = max_batch;
    if (mem) {
        h->disk = tkv_raftlog_memdisk_new();
    } else {
        /* Unit tests default to tmpfs (fsync-bound otherwise); the crash,
         * io_uring and ENOSPC tests pass their own base. */
        if (base == NULL)
            base = getenv("TKV_TEST_DIR");
        if (base == NULL)
            base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(h->dir, sizeof(h->dir), "%s/tkv-raftlog-XXXXXX", base);
        cr_assert(mkdtemp(h->dir) != NULL, "mkdtemp %s", h->dir);
        if (n_made == 0)
            atexit(remove_made);
        if (n_made < 64)
            memcpy(made[n_made++], h->dir, sizeof(h->dir));
        h->cfg.dir = h->dir;
    }
}

int h_open(struct h *h)
{
    cr_assert(h->log == NULL);
    memset(&h->where, 0, sizeof(h->where));
    if (h->mem)
        return tkv_raftlog_open_mem(&h->cfg, h->disk, &h->log, &h->where);
    return tkv_raftlog_open(&h->cfg, &h->log, &h->where);
}

void h_close(struct h *h)
{
    tkv_raftlog_close(h->log);
    h->log = NULL;
}

void h_fini(struct h *h)
{
    h_close(h);
    if (h->mem) {
        tkv_raftlog_memdisk_free(h->disk);
    } else if (h->dir[0]) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", h->dir);
    }
}

static int seg_names(struct h *h, char names[][400], size_t cap)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep '\\.rlog$' | sort", h->dir);
    FILE *f = popen(cmd, "r");
    cr_assert(f != NULL);
    size_t n = 0;
    char line[200];
    while (n < cap && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        snprintf(names[n++], 400, "%s/%s", h->dir, line);
    }
    pclose(f);
    return (int)n;
}

size_t h_nsegs(struct h *h)
{
    if (h->mem)
        return tkv_raftlog_memdisk_segments(h->disk);
    static char names[256][400];
    return (size_t)seg_names(h, names, 256);
}

uint8_t *h_seg_load(struct h *h, size_t i, size_t *len_out)
{
    if (h->mem) {
        size_t len;
        uint8_t *p = tkv_raftlog_memdisk_segment(h->disk, i, &len);
        cr_assert(p != NULL);
        uint8_t *c = malloc(len);
        memcpy(c, p, len);
        *len_out = len;
        return c;
    }
    static char names[256][400];
    size_t n = (size_t)seg_names(h, names, 256);
    cr_assert(i < n, "segment %zu of %zu", i, n);
    int fd = open(names[i], O_RDONLY);
    cr_assert(fd >= 0);
    struct stat st;
    fstat(fd, &st);
    uint8_t *c = malloc((size_t)st.st_size);
    cr_assert(pread(fd, c, (size_t)st.st_size, 0) == st.st_size);
    close(fd);
    *len_out = (size_t)st.st_size;
    return c;
}

void h_seg_store(struct h *h, size_t i, const uint8_t *buf, size_t len)
{
    if (h->mem) {
        size_t l;
        uint8_t *p = tkv_raftlog_memdisk_segment(h->disk, i, &l);
        cr_assert(p != NULL && l == len);
        memcpy(p, buf, len);
        return;
    }
    static char names[256][400];
    size_t n = (size_t)seg_names(h, names, 256);
    cr_assert(i < n);
    int fd = open(names[i], O_WRONLY);
    cr_assert(fd >= 0);
    cr_assert(pwrite(fd, buf, len, 0) == (ssize_t)len);
    close(fd);
}

size_t h_seg_data_end(struct h *h, size_t i)
{
    size_t len;
    uint8_t *p = h_seg_load(h, i, &len);
    while (len > 0 && p[len - 1] == 0)
        len--;
    free(p);
    return len;
}

size_t h_data(uint64_t region, uint64_t index, uint64_t term, uint8_t *buf, size_t max)
{
    uint64_t s = region * 1000003u + index * 7919u + term;
    size_t len = (size_t)(h_rand(&s) % max);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(h_rand(&s) >> 56);
    return len;
}

static void m_reserve(struct m_region *m, uint64_t n)
{
    if (n > m->cap) {
        m->cap = (size_t)(n * 2 + 8);
        m->terms = realloc(m->terms, m->cap * sizeof(*m->terms));
    }
}

void m_append(struct m_region *m, uint64_t start, uint64_t n, uint64_t term)
{
    if (n == 0)
        return;
    if (m->first == 0)
        m->first = 1;
    if (m->n == 0) {
        m->first = start;
    } else {
        cr_assert(start >= m->first && start <= m->first + m->n);
        m->n = start - m->first;
    }
    m_reserve(m, m->n + n);
    for (uint64_t i = 0; i < n; i++)
        m->terms[m->n++] = term;
}

void m_truncate(struct m_region *m, uint64_t from)
{
    if (m->first == 0)
        m->first = 1;
    if (from < m->first + m->n)
        m->n = from > m->first ? from - m->first : 0;
}

uint64_t m_term(const struct m_region *m, uint64_t i)
{
    uint64_t first = m->first ? m->first : 1;
    if (i >= first && i < first + m->n)
        return m->terms[i - first];
    if (i + 1 == first && m->snap_index == i)
        return m->snap_term;
    return 0;
}

void m_compact(struct m_region *m, uint64_t upto, uint64_t term)
{
    if (m->first == 0)
        m->first = 1;
    if (upto >= m->snap_index) {
        m->snap_term = term ? term : m_term(m, upto);
        m->snap_index = upto;
    }
    if (upto < m->first)
        return;
    uint64_t drop = upto + 1 - m->first;
    if (drop >= m->n) {
        m->n = 0;
    } else {
        memmove(m->terms, m->terms + drop, (m->n - drop) * sizeof(*m->terms));
        m->n -= drop;
    }
    m->first = upto + 1;
}

void m_remove(struct m_region *m)
{
    m->first = 1;
    m->n = 0;
    m->has_hs = false;
    m->snap_term = 0;
    m->snap_index = 0;
}

const char *m_check(struct tkv_raftlog *log, const struct m_region *m, char *buf, size_t cap)
{
    uint64_t first = m->first ? m->first : 1;
    if (tkv_raftlog_first_index(log, m->id) != first) {
        snprintf(buf, cap, "region %" PRIu64 ": first %" PRIu64 " want %" PRIu64, m->id,
                 tkv_raftlog_first_index(log, m->id), first);
        return buf;
    }
    if (tkv_raftlog_last_index(log, m->id) != first + m->n - 1) {
        snprintf(buf, cap, "region %" PRIu64 ": last %" PRIu64 " want %" PRIu64, m->id,
                 tkv_raftlog_last_index(log, m->id), first + m->n - 1);
        return buf;
    }
    struct tkv_raftlog_hardstate hs;
    int rv = tkv_raftlog_hardstate(log, m->id, &hs);
    if (m->has_hs != (rv == 0) ||
        (rv == 0 && (hs.term != m->hs.term || hs.vote != m->hs.vote ||
                     hs.commit != m->hs.commit))) {
        snprintf(buf, cap, "region %" PRIu64 ": hard state mismatch (rv %d)", m->id, rv);
        return buf;
    }
    tkv_term st = 99;
    rv = tkv_raftlog_term(log, m->id, first - 1, &st);
    uint64_t want = first == 1 ? 0 : m_term(m, first - 1);
    if (want == 0 && first > 1 ? rv != TKV_ECOMPACTED : (rv != 0 || st != want)) {
        snprintf(buf, cap, "region %" PRIu64 ": term(first-1 = %" PRIu64 ") rv %d term %" PRIu64
                 " want %" PRIu64, m->id, first - 1, rv, st, want);
        return buf;
    }
    if (m->n == 0)
        return NULL;
    struct tkv_raftlog_entry *e = NULL;
    size_t n = 0;
    rv = tkv_raftlog_read(log, m->id, first, first + m->n, 0, &e, &n);
    if (rv != 0 || n != m->n) {
        snprintf(buf, cap, "region %" PRIu64 ": read rv %d n %zu want %" PRIu64, m->id, rv, n,
                 m->n);
        tkv_free(e);
        return buf;
    }
    uint8_t data[512];
    for (size_t i = 0; i < n; i++) {
        tkv_term t = 0;
        size_t dl = h_data(m->id, first + i, m->terms[i], data, 300);
        if (e[i].index != first + i || e[i].term != m->terms[i] || e[i].type != (uint32_t)(e[i].index % 3) ||
            e[i].data.len != dl || memcmp(e[i].data.ptr, data, dl) != 0 ||
            tkv_raftlog_term(log, m->id, first + i, &t) != 0 || t != m->terms[i]) {
            snprintf(buf, cap, "region %" PRIu64 ": entry %" PRIu64 " differs (term %" PRIu64
                     " want %" PRIu64 ")", m->id, first + i, e[i].term, m->terms[i]);
            tkv_free(e);
            return buf;
        }
    }
    tkv_free(e);
    return NULL;
}

int h_append(struct tkv_raftlog *log, struct m_region *m, uint64_t start, uint64_t n,
             uint64_t term, const struct tkv_raftlog_hardstate *hs, tkv_raftlog_done_fn cb,
             void *arg)
{
    struct tkv_raftlog_entry ents[64];
    static uint8_t data[64][300];
    cr_assert(n <= 64);
    for (uint64_t i = 0; i < n; i++) {
        size_t dl = h_data(m->id, start + i, term, data[i], 300);
        ents[i] = (struct tkv_raftlog_entry){.index = start + i, .term = term,
                                             .type = (uint32_t)((start + i) % 3),
                                             .data = TKV_SLICE(data[i], dl)};
    }
    int rv = tkv_raftlog_append(log, m->id, ents, (size_t)n, hs, cb, arg);
    if (rv == 0) {
        m_append(m, start, n, term);
        if (hs) {
            m->has_hs = true;
            m->hs = *hs;
        }
    }
    return rv;
}
