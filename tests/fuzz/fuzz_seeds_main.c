/* tkv-fuzz-seeds <dir>: write the generated seeds of every target into
 * <dir>/<target>/seed-<i> (the starting corpus for libFuzzer). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_harness.h"

static int write_all(const char *dir, const char *name, void (*gen)(struct fuzz_seeds *, uint64_t))
{
    char path[4096];
    struct fuzz_seeds s = {0};
    gen(&s, 1);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        return 1;
    }
    for (size_t i = 0; i < s.n; i++) {
        snprintf(path, sizeof(path), "%s/%s/seed-%03zu", dir, name, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(s.v[i].p, 1, s.v[i].n, f) != s.v[i].n) {
            perror(path);
            return 1;
        }
        fclose(f);
    }
    printf("%s: %zu seeds\n", name, s.n);
    fuzz_seeds_free(&s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
        return 2;
    }
    mkdir(argv[1], 0755);
    return write_all(argv[1], "pb", fuzz_pb_seeds) | write_all(argv[1], "h2", fuzz_h2_seeds) |
           write_all(argv[1], "toml", fuzz_toml_seeds) |
           write_all(argv[1], "codec", fuzz_codec_seeds) |
           write_all(argv[1], "transport", fuzz_transport_seeds);
}
