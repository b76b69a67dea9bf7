/* The shared host:port parser: forms accepted, forms refused, the ":port"
 * shorthand only when the caller names a default host. */
#include <criterion/criterion.h>

#include "tkv/err.h"
#include "tkv/hostport.h"

Test(hostport, accepted_forms)
{
    char h[64];
    uint16_t p = 0;
    cr_assert_eq(tkv_hostport_split("127.0.0.1:20160", NULL, h, sizeof(h), &p), 0);
    cr_assert_str_eq(h, "127.0.0.1");
    cr_assert_eq(p, 20160);
    cr_assert_eq(tkv_hostport_split("[fe80::1]:0", NULL, h, sizeof(h), &p), 0);
    cr_assert_str_eq(h, "fe80::1");
    cr_assert_eq(p, 0);
    cr_assert_eq(tkv_hostport_split("localhost:65535", NULL, h, sizeof(h), &p), 0);
    cr_assert_eq(p, 65535);
}

Test(hostport, empty_host_only_with_a_default)
{
    char h[64] = "untouched";
    uint16_t p = 0;
    cr_assert_eq(tkv_hostport_split(":7", NULL, h, sizeof(h), &p), TKV_EINVAL);
    cr_assert_str_eq(h, "untouched", "output written on error");
    cr_assert_eq(tkv_hostport_split(":7", "0.0.0.0", h, sizeof(h), &p), 0);
    cr_assert_str_eq(h, "0.0.0.0");
    cr_assert_eq(p, 7);
}

Test(hostport, refused_forms)
{
    char h[8];
    uint16_t p;
    const char *bad[] = {"host", "h:", "h:65536", "h:1x", "h:-1", "::1:80", "[::1]80", "[]:80",
                         "a b:1", "a,b:1", "a/b:1", "", "h:99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(tkv_hostport_split(bad[i], "0.0.0.0", h, sizeof(h), &p), TKV_EINVAL,
                     "\"%s\" was accepted", bad[i]);
    cr_assert_eq(tkv_hostport_split("abcdefgh:1", NULL, h, sizeof(h), &p), TKV_EINVAL,
                 "host longer than the buffer was accepted");
}
