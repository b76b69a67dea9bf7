/* Invariants over every generated message: the .options files gave each
 * callback field the C type the glue expects, and our build's nanopb
 * configuration matches Debian's prebuilt library. */
#include <criterion/criterion.h>
#include <pb_common.h>
#include <string.h>

#include "kvrpcpb.pb.h"
#include "tkv/pb.h"

Test(pb_registry, every_field_has_the_representation_the_glue_expects)
{
    static uint8_t storage[65536];
    for (size_t i = 0; i < tkv_pb_registry_len; i++) {
        const struct tkv_pb_msginfo *mi = &tkv_pb_registry[i];
        cr_assert_leq(mi->size, sizeof(storage));
        cr_assert_eq(tkv_pb_msginfo(mi->desc), mi, "%s: lookup", mi->name);
        memset(storage, 0, sizeof(storage));
        pb_field_iter_t it;
        if (!pb_field_iter_begin(&it, mi->desc, storage))
            continue; /* no fields (e.g. errorpb.StaleCommand) */
        do {
            pb_type_t at = PB_ATYPE(it.type), ht = PB_HTYPE(it.type), lt = PB_LTYPE(it.type);
            cr_assert_neq(at, PB_ATYPE_POINTER, "%s #%u: malloc'ed field", mi->name, it.tag);
            cr_assert((uint8_t *)it.pData >= storage &&
                          (uint8_t *)it.pData + it.data_size <= storage + mi->size,
                      "%s #%u: field outside the struct (nanopb config mismatch?)", mi->name,
                      it.tag);
            if (PB_LTYPE_IS_SUBMSG(lt))
                cr_assert_not_null(tkv_pb_msginfo(it.submsg_desc), "%s #%u: unregistered type",
                                   mi->name, it.tag);
            if (at == PB_ATYPE_CALLBACK) {
                if (ht == PB_HTYPE_REPEATED) {
                    cr_assert_eq(it.data_size, sizeof(struct tkv_pb_rep),
                                 "%s #%u: repeated field needs TKV_PB_REP in its .options",
                                 mi->name, it.tag);
                    cr_assert(lt == PB_LTYPE_BYTES || lt == PB_LTYPE_STRING ||
                                  PB_LTYPE_IS_SUBMSG(lt) || lt == PB_LTYPE_UVARINT,
                              "%s #%u: repeated type the glue cannot handle", mi->name, it.tag);
                } else {
                    cr_assert(lt == PB_LTYPE_BYTES || lt == PB_LTYPE_STRING,
                              "%s #%u: unexpected singular callback", mi->name, it.tag);
                    cr_assert_eq(it.data_size, sizeof(struct tkv_slice), "%s #%u", mi->name,
                                 it.tag);
                }
            } else if (PB_LTYPE_IS_SUBMSG(lt)) {
                /* proto3 message fields must carry presence. */
                cr_assert_eq(ht, PB_HTYPE_OPTIONAL, "%s #%u: sub-message without has_",
                             mi->name, it.tag);
            } else {
                cr_assert_neq(ht, PB_HTYPE_REPEATED, "%s #%u: static repeated field", mi->name,
                              it.tag);
            }
        } while (pb_field_iter_next(&it));
    }
}

Test(pb_registry, nanopb_configuration_matches_debian_library)
{
    /* 16-bit pb_size_t: the library has no PB_FIELD_32BIT. */
    cr_assert_eq(sizeof(pb_size_t), 2);
    /* The library walks our descriptor with its own pb_field_iter_t layout:
     * tags and data pointers must come out right. */
    kvrpcpb_Context c;
    pb_field_iter_t it;
    cr_assert(pb_field_iter_begin(&it, kvrpcpb_Context_fields, &c));
    cr_assert_eq(it.tag, 1);
    cr_assert_eq(it.pData, &c.region_id);
    cr_assert(pb_field_iter_find(&it, 5));
    cr_assert_eq(it.pData, &c.term);
#ifndef PB_ENABLE_MALLOC
    cr_assert_fail("tkv_proto must export PB_ENABLE_MALLOC like Debian's build");
#endif
#if defined(PB_NO_ERRMSG) || defined(PB_BUFFER_ONLY) || defined(PB_FIELD_32BIT)
    cr_assert_fail("nanopb options differ from Debian's library build");
#endif
}
