/* Protocol-buffer glue over nanopb: arena-backed, zero-copy decode of every
 * tinykv message, encode/size helpers, and helpers to fill responses.
 * Included by every generated proto-gen/<file>.pb.h (see the .options files in proto/). */
#ifndef TKV_PB_H
#define TKV_PB_H

#include <pb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tkv/arena.h"
#include "tkv/common.h"

/* Field representation (uniform for every message of every .proto file):
 *
 *  - scalar and enum fields: plain C members, zero = absent (proto3);
 *  - singular sub-message `x`: an embedded struct plus `bool has_x`. has_x is
 *    what the wire calls presence: an empty-but-present sub-message
 *    (errorpb.Error{stale_command:{}}) decodes with has_x = true and encodes
 *    as tag + length 0 whenever has_x is true;
 *  - bytes and string fields: `struct tkv_slice` {ptr, len}. After decode it
 *    points INTO the input buffer (zero copy), so the message borrows that
 *    buffer. Strings are NOT NUL-terminated: print with "%.*s". len 0 means
 *    absent/empty and is not encoded;
 *  - repeated fields: TKV_PB_REP(T) {T *items; size_t n; size_t cap}. After
 *    decode items lives in the decode arena. T is struct tkv_slice for
 *    repeated bytes/string, uint64_t for repeated uint64 (encoded packed,
 *    decoded packed or unpacked), the element struct for repeated messages.
 *    To encode, point items at any array of n elements (cap is the decoder's
 *    bookkeeping; leave it 0) or grow it with TKV_PB_PUSH.
 *
 * Unknown fields are skipped on decode; unknown enum values are kept as
 * their integer value. The generated <type>_init_zero initialisers work
 * (proto/gen_post.py fixes them for our field types), as does `= {0}`. */

/* A repeated field of element type T (see above). */
#define TKV_PB_REP(T)   \
    struct {            \
        T *items;       \
        size_t n;       \
        size_t cap;     \
    }

/* The type-erased layout every TKV_PB_REP(T) shares. */
struct tkv_pb_rep {
    void *items;
    size_t n;
    size_t cap;
};

/* Per-message facts the generated descriptors lack (written at build time
 * into proto-gen/tkv_pb_registry.c by proto/gen_post.py). */
struct tkv_pb_msginfo {
    const pb_msgdesc_t *desc; /* e.g. &kvrpcpb_RawGetRequest_msg */
    size_t size;              /* sizeof the C struct */
    const char *name;         /* full proto name, e.g. "kvrpcpb.RawGetRequest" */
};

extern const struct tkv_pb_msginfo tkv_pb_registry[];
extern const size_t tkv_pb_registry_len;

/* The registry entry for desc, or NULL if desc is not a tinykv message.
 * Any thread. */
const struct tkv_pb_msginfo *tkv_pb_msginfo(const pb_msgdesc_t *desc);

/* Full proto name of desc ("kvrpcpb.RawGetRequest"), or "?" if unknown. */
const char *tkv_pb_msg_name(const pb_msgdesc_t *desc);

/* Decode buf[0..len) as a message of type `fields` (use the generated
 * `<type>_fields` macro, e.g. kvrpcpb_RawPutRequest_fields) into *msg.
 *
 * @param msg    caller storage of the matching C type; fully overwritten
 *               (zeroed first), also on error.
 * @param buf    encoded bytes (no gRPC 5-byte prefix). The decoded message
 *               BORROWS buf: bytes/string slices point into it, so buf must
 *               outlive every use of *msg.
 * @param arena  receives repeated-field arrays; *msg is valid until the
 *               arena is reset or closed.
 * Returns 0, or TKV_EPROTO when buf is not a valid encoding of the type
 * (truncated, bad wire type, varint overflow, ...), TKV_EINVAL when fields
 * is not a registered tinykv message. Any thread; the arena's owner core. */
int tkv_pb_decode(const pb_msgdesc_t *fields, void *msg, const uint8_t *buf, size_t len,
                  struct tkv_arena *arena);

/* As tkv_pb_decode; on failure *why_out (if not NULL) gets nanopb's static
 * description of the problem, suitable for a grpc-message. */
int tkv_pb_decode_ex(const pb_msgdesc_t *fields, void *msg, const uint8_t *buf, size_t len,
                     struct tkv_arena *arena, const char **why_out);

/* As tkv_pb_decode, with the message struct itself allocated in the arena.
 * *msg_out is written only on success. */
int tkv_pb_decode_new(const pb_msgdesc_t *fields, const uint8_t *buf, size_t len,
                      struct tkv_arena *arena, void **msg_out);

/* Exact encoded size of msg (without gRPC framing) into *size_out.
 * Returns 0 or TKV_EINVAL (msg is not encodable: a slice with ptr NULL and
 * len > 0, a repeated field with items NULL and n > 0). Any thread. */
int tkv_pb_encoded_size(const pb_msgdesc_t *fields, const void *msg, size_t *size_out);

/* Encode msg into buf[0..cap); *len_out gets the bytes written.
 * Returns 0, TKV_ETOOBIG when cap is too small (buf contents are then
 * unspecified), or TKV_EINVAL as for tkv_pb_encoded_size. Any thread. */
int tkv_pb_encode(const pb_msgdesc_t *fields, const void *msg, uint8_t *buf, size_t cap,
                  size_t *len_out);

/* Size, allocate from the arena and encode in one go, leaving `headroom`
 * bytes in front (e.g. 5 for the gRPC length prefix, which the caller
 * writes). On success *out covers headroom + message; it is owned by the
 * arena. Returns 0 or TKV_EINVAL. */
int tkv_pb_encode_arena(const pb_msgdesc_t *fields, const void *msg, struct tkv_arena *arena,
                        size_t headroom, struct tkv_slice *out);

/* Append one zeroed element of elem_size bytes to a repeated field and
 * return it (arena-owned; the array may move, so earlier element pointers
 * are invalidated). Never fails (the arena aborts on OOM). rep must be a
 * TKV_PB_REP whose items is NULL or was grown by this arena. */
void *tkv_pb_rep_push(struct tkv_arena *arena, void *rep, size_t elem_size);

/* Typed form: kvrpcpb_KvPair *kv = TKV_PB_PUSH(arena, &resp.kvs); */
#define TKV_PB_PUSH(arena, rep) \
    ((__typeof__((rep)->items))tkv_pb_rep_push((arena), (rep), sizeof(*(rep)->items)))

/* Make room for at least n elements in total (zeroed beyond the current n,
 * which is unchanged), so a loop of pushes does not reallocate. */
void tkv_pb_rep_reserve(struct tkv_arena *arena, void *rep, size_t elem_size, size_t n);

#define TKV_PB_RESERVE(arena, rep, count) \
    tkv_pb_rep_reserve((arena), (rep), sizeof(*(rep)->items), (count))

/* A slice over a NUL-terminated string (not copied; the string must outlive
 * the encode). */
static inline struct tkv_slice tkv_pb_str(const char *s)
{
    return TKV_SLICE(s, s ? strlen(s) : 0);
}

/* Copy p[0..n) into the arena and return the slice over the copy. Use it
 * when the source dies before the message is encoded (e.g. an engine value
 * whose cursor moves on). */
struct tkv_slice tkv_pb_dup(struct tkv_arena *arena, const void *p, size_t n);

/* printf into the arena (e.g. a response's error string). */
struct tkv_slice tkv_pb_printf(struct tkv_arena *arena, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* True if slice s holds exactly the bytes of NUL-terminated str
 * (e.g. tkv_pb_eq_str(req.cf, "default")). */
static inline bool tkv_pb_eq_str(struct tkv_slice s, const char *str)
{
    size_t n = strlen(str);
    return s.len == n && (n == 0 || memcmp(s.ptr, str, n) == 0);
}

/* The nanopb field callback named in every .options file (callback_function);
 * nanopb calls it for every bytes/string/repeated field. Not for direct use. */
bool tkv_pb_field_cb(pb_istream_t *istream, pb_ostream_t *ostream, const pb_field_t *field);

#endif
