#!/usr/bin/env bash
# Runs the cargo fuzz target `request` (raw request -> verdict -> record) for a bounded time on the
# corpus kept in fuzz/corpus/request. New interesting inputs are added to that corpus; commit them
# after `cargo fuzz cmin request` if they are worth keeping.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# cargo fuzz passes nightly-only compiler flags; this machine has the stable toolchain only, and
# RUSTC_BOOTSTRAP=1 lets it accept them. Without a sanitizer the build is much shorter; the target
# asserts its own invariants.
RUSTC_BOOTSTRAP=1 cargo fuzz run request fuzz/corpus/request --sanitizer none -- \
  -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=1024 -print_final_stats=1
