#!/usr/bin/env bash
# A bounded cargo-fuzz run of every target in fuzz/ on its kept corpus
# (fuzz/corpus/<target>). cargo-fuzz passes nightly -Z flags: on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it. New inputs found go to a scratch
# directory, so CI does not grow the corpus; crashes land in fuzz/artifacts/.
#
#   FUZZ_RUNS        runs per target [default: 100000, about 40 s in all]
#   FUZZ_TARGET_DIR  build directory [default: fuzz/target]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
RUNS="${FUZZ_RUNS:-100000}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t" "$SCRATCH/$t"
  echo "--- $t: $RUNS runs"
  # Optimised (-O); add -a for overflow checks in a longer run by hand.
  if ! cargo fuzz run -O --target-dir "$TARGET_DIR" "$t" "$SCRATCH/$t" "corpus/$t" -- \
    -runs="$RUNS" -max_len=20000 -rss_limit_mb=2048 -print_final_stats=1 >"$SCRATCH/$t.log" 2>&1; then
    tail -60 "$SCRATCH/$t.log"
    echo "fuzz target $t failed (reproducer under fuzz/artifacts/$t/)"
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$SCRATCH/$t.log" || true
done
