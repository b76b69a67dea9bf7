/* Which LOCK CF keys a region's snapshot, snapshot install and peer
 * destruction take (README "The LOCK CF and region bounds").
 *
 * The LOCK CF is keyed by the raw user key, but a transactional lock belongs
 * to the region holding EncodeBytes(user key) (ARCHITECTURE.md "Keys"),
 * while a raw write to the LOCK CF belongs to the region holding the key as
 * it is. The two forms cannot be told apart in the engine, so a region takes
 * the LOCK CF keys it holds in EITHER form. EncodeBytes preserves order and
 * k < EncodeBytes(k), so each form selects a contiguous raw range; one
 * bounded scan over their hull, filtered per key, finds both (for a region
 * ["", "") that is every key, as before).
 *
 * On a store, the key is managed by the initialized region holding its
 * EncodeBytes form if there is one (a lock of that region), else by the one
 * holding it raw: installing a snapshot or destroying a peer never writes or
 * deletes a key that another initialized region of the store holds in
 * EncodeBytes form (initialized regions never overlap, so their EncodeBytes
 * ranges do not either). A copy of another region's lock carried into a
 * store where that region is absent is never served (transactional
 * commands look keys up in EncodeBytes form) and is replaced or removed
 * when that region's snapshot arrives. */
#include <string.h>

#include "rs_private.h"
#include "tkv/codec.h"
#include "tkv/err.h"
#include "tkv/mem.h"

bool rs_lock_key_in_region(const struct tkv_rs_region *rg, struct tkv_slice k)
{
    return rs_key_in_region(rg, k) || tkv_rs_region_contains_txn_key(rg, k);
}

/* The data bytes of b's leading complete groups (marker 0xFF: an 8-byte
 * chunk followed by more): a raw key no larger than any k with
 * EncodeBytes(k) >= b (a smaller k differs from it inside those groups,
 * where its encoding is smaller too). */
static uint32_t decoded_prefix(const uint8_t *b, uint32_t len, uint8_t *out)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i + 9 <= len && b[i + 8] == 0xFF; i += 9) {
        memcpy(out + n, b + i, 8);
        n += 8;
    }
    return n;
}

/* k < EncodeBytes(k) for every k (the encoding inserts 0xFF markers and
 * appends padding), so a key held in either form is below the region's end
 * as it is; only the lower bound moves: min(start, decoded start). */
void rs_lock_scan_bounds(const struct tkv_rs_region *rg, struct rs_lock_bounds *out)
{
    uint8_t tmp[TKV_RS_BOUND_MAX];
    out->lo_len = rg->start_len;
    memcpy(out->lo, rg->start, rg->start_len);
    uint32_t n = decoded_prefix(rg->start, rg->start_len, tmp);
    if (rs_bytes_cmp(tmp, n, out->lo, out->lo_len) < 0) {
        memcpy(out->lo, tmp, n);
        out->lo_len = n;
    }
    out->hi_len = rg->end_len; /* 0: +infinity */
    memcpy(out->hi, rg->end, rg->end_len);
}

bool rs_lock_managed_elsewhere(const struct tkv_raftstore *s, uint64_t region_id,
                               struct tkv_slice k)
{
    for (size_t i = 0; i < s->n_peers; i++) {
        const struct rs_peer *o = s->peers[i];
        if (o->initialized && o->region.id != region_id &&
            tkv_rs_region_contains_txn_key(&o->region, k))
            return true;
    }
    return false;
}

int rs_delete_region_locks(struct tkv_raftstore *s, const struct tkv_rs_region *rg,
                           struct tkv_engine_batch *b)
{
    if (RS_BUG("lock_cf_raw_bounds")) /* the old rule: the raw range only */
        return tkv_engine_batch_delete_range(b, TKV_CF_LOCK, TKV_SLICE(rg->start, rg->start_len),
                                             TKV_SLICE(rg->end, rg->end_len));
    struct rs_lock_bounds bd;
    rs_lock_scan_bounds(rg, &bd);
    struct tkv_engine_snap *snap = NULL;
    struct tkv_engine_iter *it = NULL;
    int rv = tkv_engine_snap_open(s->sess, &snap);
    if (rv == 0)
        rv = tkv_engine_iter_open(snap, TKV_CF_LOCK, TKV_SLICE(bd.lo, bd.lo_len),
                                  TKV_SLICE(bd.hi, bd.hi_len), &it);
    if (rv == 0) {
        for (rv = tkv_engine_iter_seek_first(it); rv == 0 && tkv_engine_iter_valid(it);
             rv = tkv_engine_iter_next(it)) {
            struct tkv_slice k = tkv_engine_iter_key(it);
            if (rs_lock_key_in_region(rg, k) && !rs_lock_managed_elsewhere(s, rg->id, k)) {
                rv = tkv_engine_batch_delete(b, TKV_CF_LOCK, k);
                if (rv < 0)
                    break;
            }
        }
    }
    tkv_engine_iter_close(it);
    tkv_engine_snap_close(snap);
    return rv;
}

int rs_snapshot_iter_open(struct tkv_engine_snap *snap, enum tkv_cf cf,
                          const struct tkv_rs_region *rg, struct tkv_engine_iter **it, bool *filter)
{
    *filter = cf == TKV_CF_LOCK && !RS_BUG("lock_cf_raw_bounds");
    if (!*filter)
        return tkv_engine_iter_open(snap, cf, TKV_SLICE(rg->start, rg->start_len),
                                    TKV_SLICE(rg->end, rg->end_len), it);
    struct rs_lock_bounds bd;
    rs_lock_scan_bounds(rg, &bd);
    return tkv_engine_iter_open(snap, cf, TKV_SLICE(bd.lo, bd.lo_len), TKV_SLICE(bd.hi, bd.hi_len),
                                it);
}
