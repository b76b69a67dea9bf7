#!/bin/sh
# Run every libFuzzer target of a TKV_FUZZ=ON build one after the other
# (never in parallel: shared machines), each for SECONDS, corpus kept in
# <build>/fuzz-corpus/<target>, crashes in <build>/fuzz-art/<target>.
# Usage: tests/fuzz/run-all.sh build/fuzz-clang [SECONDS=300]
set -eu
b=${1:?usage: run-all.sh <build-dir> [seconds]}
secs=${2:-300}
here=$(cd "$(dirname "$0")" && pwd)
"$b/bin/tkv-fuzz-seeds" "$b/fuzz-corpus" >/dev/null
rc=0
for t in pb h2 toml codec transport; do
    mkdir -p "$b/fuzz-art/$t"
    extra=""
    [ "$t" = h2 ] && extra="-dict=$here/h2.dict -max_len=8192"
    # shellcheck disable=SC2086
    if "$b/bin/fuzz-$t" "$b/fuzz-corpus/$t" $extra -max_total_time="$secs" -timeout=10 \
        -artifact_prefix="$b/fuzz-art/$t/" -print_final_stats=1 >"$b/fuzz-$t.log" 2>&1; then
        echo "fuzz-$t: $(grep -a 'number_of_executed_units' "$b/fuzz-$t.log" | awk '{print $2}') runs, clean"
    else
        echo "fuzz-$t: FAILED, see $b/fuzz-$t.log and $b/fuzz-art/$t/"
        rc=1
    fi
done
exit $rc
