/* The region cache on its own: lookups by key, replacement of overlapping
 * regions (a split learned from EpochNotMatch), drops, leader carried over
 * for the same conf version. */
#include <criterion/criterion.h>
#include <string.h>

#include "client_int.h"

static metapb_Region region(uint64_t id, const char *start, const char *end, uint64_t version)
{
    static metapb_Peer peer = {.id = 5, .store_id = 1};
    return (metapb_Region){.id = id,
                           .start_key = TKV_SLICE(start, strlen(start)),
                           .end_key = TKV_SLICE(end, strlen(end)),
                           .has_region_epoch = true,
                           .region_epoch = {.conf_ver = 1, .version = version},
                           .peers = {.items = &peer, .n = 1}};
}

static uint64_t find(struct client_region_cache *c, const char *key)
{
    struct client_region *r = client_cache_find(c, TKV_SLICE(key, strlen(key)));
    return r ? r->id : 0;
}

Test(client_cache, lookup_split_and_drop)
{
    struct client_region_cache c;
    client_cache_init(&c);
    metapb_Region all = region(1, "", "", 1);
    metapb_Peer leader = {.id = 5, .store_id = 1};
    client_cache_insert(&c, &all, &leader);
    cr_assert_eq(find(&c, ""), 1);
    cr_assert_eq(find(&c, "zzz"), 1, "an empty end key is +infinity");

    /* Split into [, m) [m, t) [t, ): the wide region must disappear. */
    metapb_Region a = region(1, "", "m", 2), b = region(2, "m", "t", 2), d = region(3, "t", "", 2);
    client_cache_insert(&c, &b, NULL);
    cr_assert_eq(c.n, 1, "region 1 overlapped region 2 and must be dropped, n=%zu", c.n);
    client_cache_insert(&c, &a, NULL);
    client_cache_insert(&c, &d, NULL);
    cr_assert_eq(c.n, 3);
    cr_assert_eq(find(&c, "a"), 1);
    cr_assert_eq(find(&c, "l\xff"), 1);
    cr_assert_eq(find(&c, "m"), 2, "start keys are inclusive");
    cr_assert_eq(find(&c, "s"), 2);
    cr_assert_eq(find(&c, "t"), 3, "end keys are exclusive");
    cr_assert_eq(find(&c, "zz"), 3);
    cr_assert_eq(client_cache_find_id(&c, 2)->version, 2);

    /* Same region, same conf version, no leader given: keep the known one. */
    client_cache_find_id(&c, 2)->leader = leader;
    metapb_Region b2 = region(2, "m", "t", 3);
    client_cache_insert(&c, &b2, NULL);
    cr_assert_eq(client_cache_find_id(&c, 2)->leader.id, 5);
    cr_assert_eq(client_cache_find_id(&c, 2)->version, 3);

    client_cache_drop(&c, 2);
    cr_assert_eq(find(&c, "n"), 0, "a dropped region is a miss");
    cr_assert_eq(find(&c, "a"), 1);
    cr_assert_eq(find(&c, "u"), 3);
    client_cache_free(&c);
}
