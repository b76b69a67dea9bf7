/* Reference-counted payload buffers shared by the log, the update and the
 * messages, so an entry's bytes are never copied inside raft. */
#include <string.h>

#include "tkv/err.h"
#include "tkv/mem.h"
#include "tkv/raft.h"

int tkv_raft_buf_new(size_t len, struct tkv_raft_buf **buf_out)
{
    struct tkv_raft_buf *b = tkv_malloc(sizeof(*b) + len);
    if (!b)
        return TKV_ENOMEM;
    b->refs = 1;
    b->len = len;
    b->data = b->inline_data;
    b->free_fn = NULL;
    b->free_ctx = NULL;
    *buf_out = b;
    return 0;
}

int tkv_raft_buf_copy(const void *p, size_t len, struct tkv_raft_buf **buf_out)
{
    struct tkv_raft_buf *b;
    TKV_RET(tkv_raft_buf_new(len, &b));
    if (len)
        memcpy(b->data, p, len);
    *buf_out = b;
    return 0;
}

int tkv_raft_buf_wrap(uint8_t *data, size_t len, void (*free_fn)(void *ctx, uint8_t *data),
                      void *free_ctx, struct tkv_raft_buf **buf_out)
{
    struct tkv_raft_buf *b = tkv_malloc(sizeof(*b));
    if (!b)
        return TKV_ENOMEM;
    b->refs = 1;
    b->len = len;
    b->data = data;
    b->free_fn = free_fn;
    b->free_ctx = free_ctx;
    *buf_out = b;
    return 0;
}

struct tkv_raft_buf *tkv_raft_buf_ref(struct tkv_raft_buf *buf)
{
    if (buf) {
        tkv_assert(buf->refs > 0);
        buf->refs++;
    }
    return buf;
}

void tkv_raft_buf_unref(struct tkv_raft_buf *buf)
{
    if (!buf)
        return;
    tkv_assert(buf->refs > 0);
    if (--buf->refs)
        return;
    if (buf->data != buf->inline_data && buf->free_fn)
        buf->free_fn(buf->free_ctx, buf->data);
    tkv_free(buf);
}
