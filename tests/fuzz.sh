#!/usr/bin/env bash
# Runs the cargo fuzz target `request` (raw request -> verdict -> record) for a bounded time,
# seeded with the corpus kept in fuzz/corpus/request.
#
# libFuzzer writes the new inputs it finds into the first corpus directory it is given, so that
# one is a scratch directory, target/fuzz-corpus/request, kept between runs; the committed corpus
# comes second and is only read. To keep what a run found, merge the inputs that add coverage:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run request fuzz/corpus/request target/fuzz-corpus/request \
#     --sanitizer none -- -merge=1
#
# fuzz/request.dict gives it the shapes a tstamp takes (offsets, leap seconds, the edges of the
# years, huge numbers), so it reaches the time conversions in seconds rather than hours.
#
# libFuzzer prints a line for every new input, thousands a run: its whole output goes to
# target/fuzz.log, and this prints the final figures, or the end of the log when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
scratch=target/fuzz-corpus/request
log=target/fuzz.log
mkdir -p "$scratch"
echo "building the fuzz target, then fuzzing for ${FUZZ_SECONDS:-60} s; the output goes to $log"
# cargo fuzz passes nightly-only compiler flags; this machine has the stable toolchain only, and
# RUSTC_BOOTSTRAP=1 lets it accept them. Without a sanitizer the build is much shorter; the target
# asserts its own invariants.
if ! RUSTC_BOOTSTRAP=1 cargo fuzz run request "$scratch" fuzz/corpus/request --sanitizer none -- \
  -dict=fuzz/request.dict -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=1024 -print_final_stats=1 \
  >"$log" 2>&1; then
  tail -n 60 "$log"
  echo "fuzz: FAILED; the whole output is in $log, a crashing input in fuzz/artifacts/request/"
  exit 1
fi
# libFuzzer's summary: the corpus it started from (INITED), where it ended (DONE), and the
# final stats that -print_final_stats=1 asks for.
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done [0-9]+ runs|^stat::' "$log" || tail -n 5 "$log"
echo "fuzz: passed (the whole output is in $log)"
