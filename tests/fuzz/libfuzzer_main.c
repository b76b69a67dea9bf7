/* libFuzzer entry point: FUZZ_TARGET names the harness (fuzz_pb, fuzz_h2,
 * fuzz_toml, fuzz_codec); a broken invariant aborts with its description. */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_harness.h"

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (CAT(FUZZ_TARGET, _one)(data, size) != 0) {
        fprintf(stderr, "tinykv fuzz invariant broken: %s\n", fuzz_why());
        abort();
    }
    return 0;
}
