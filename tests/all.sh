#!/usr/bin/env bash
# Runs every check mailhook has, from a fresh clone: cfn-lint, a checkov scan of the template,
# the samples in events/ against SAM's generated events, cargo test, the template and README SQL
# checks, promtool on a scrape of /metrics, the end-to-end run through cargo lambda with
# moto_server and DuckDB, the bounded load run, the crash run, a bounded fuzz run, a smoke run of
# the benchmarks, cargo deny, sam build, and sam local invoke of every sample event on the arm64
# build, in Docker (tests/sam/).
# The Python checks are in tests/py/. The first run installs the Python-packaged tools
# (tests/requirements.txt) into .venv, checkov into .venv-checkov, and cargo-fuzz and cargo-deny
# with cargo install.
set -euo pipefail
cd "$(dirname "$0")/.."

# Said before anything is installed or built.
echo "== mailhook's checks: a full run needs about 10 GB of disk (target/, fuzz/target/, .venv/)" \
  "and installs cargo-fuzz and cargo-deny into ${CARGO_HOME:-~/.cargo}/bin if they are missing"

if ! cmp -s tests/requirements.txt .venv/.installed 2>/dev/null; then
  echo "== installing test tools into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/.installed
fi
if ! cmp -s tests/requirements-checkov.txt .venv-checkov/.installed 2>/dev/null; then
  echo "== installing checkov into .venv-checkov (its boto3 pin conflicts with .venv's)"
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install --quiet --disable-pip-version-check -r tests/requirements-checkov.txt
  cp tests/requirements-checkov.txt .venv-checkov/.installed
fi
export PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"

# wrk and php-cli for the benchmark smoke run (bench/run skips those stages, saying so, without them).
if ! { command -v wrk && command -v php; } >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing wrk and php-cli"
  apt-get install -y -qq wrk php-cli >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk php-cli >/dev/null 2>&1; } ||
    echo "could not install wrk and php-cli; the benchmark smoke run will skip the load stages"
fi
# promtool, from Debian's prometheus package, for the /metrics check (without its recommends:
# node-exporter is not needed).
if ! command -v promtool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing promtool (Debian's prometheus package)"
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; } ||
    echo "could not install Debian's prometheus package: the promtool step will fail"
fi
export SAM_CLI_TELEMETRY=0

steps=0
began=$SECONDS
last=$SECONDS
# Each step's heading says how long the one before it took.
step() {
  ((steps)) && printf '(%d s)\n' $((SECONDS - last))
  steps=$((steps + 1)) last=$SECONDS
  printf '\n== %s\n' "$*"
}

step "cfn-lint template.yaml"
cfn-lint template.yaml && echo "cfn-lint: no errors, no warnings"

step "template security scan: checkov, every finding fixed or skipped with its reason (tests/py/scan_template.py)"
python tests/py/scan_template.py

step "events/ against AWS's shapes: sam local generate-event and the schedule's input (tests/py/check_events.py)"
python tests/py/check_events.py

step "cargo test"
MAILHOOK_REQUIRE_MOTO=1 cargo test --locked --all-targets

step "cargo test as a non-root user: the same test binaries, run as nobody"
if [ "$(id -u)" != 0 ]; then
  echo "already running as $(id -un): the cargo test step above was the non-root run"
elif ! setpriv --reuid=65534 --regid=65534 --clear-groups test -r events/new.json; then
  echo "skipped: nobody cannot read $PWD, so the test binaries cannot run as nobody here"
else
  cargo test --locked --all-targets --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and m["target"]["kind"][0] in ("lib", "bin", "test"):
        print(m["executable"])' >target/test-binaries
  moto_skipped=
  while read -r bin; do
    log="target/as-nobody-$(basename "$bin").log"
    if (cd /tmp && setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp TMPDIR=/tmp "$bin" -q --show-output) >"$log" 2>&1; then
      echo "$(basename "$bin"): $(grep -E "^test result" "$log")"
      grep -h SKIPPED "$log" || true
      if grep -q "SKIPPED: .*moto_server" "$log"; then moto_skipped=1; fi
    else
      cat "$log"
      echo "FAILED as nobody: $bin"
      exit 1
    fi
  done <target/test-binaries
  if [ -n "$moto_skipped" ]; then
    # .venv's python may live under root's home, which nobody cannot enter.
    echo "The moto-backed S3 compaction tests (tests/it/compact.rs) run only in the root pass: as nobody," \
      "moto_server from .venv cannot be started here, so they skipped above; the cargo test step ran them against moto_server."
  fi
fi

step "template and README SQL (tests/py/check_template.py)"
python tests/py/check_template.py

step "promtool check metrics on a scrape of /metrics after each outcome (tests/py/check_metrics.py)"
if command -v promtool >/dev/null || [ "$(id -u)" = 0 ]; then
  python tests/py/check_metrics.py
else
  echo "skipped: promtool is not installed (Debian: apt-get install prometheus; run tests/all.sh as root to have it installed)"
fi

step "SSE-KMS: the archive on a customer managed key, stored and compacted (tests/py/sse_kms.py)"
python tests/py/sse_kms.py

step "end to end through cargo lambda, moto_server and DuckDB (tests/py/e2e.py)"
python tests/py/e2e.py

step "scripts/verify against a local stack: moto_server and cargo lambda watch (tests/py/verify.py)"
python tests/py/verify.py

step "scripts/cleanup against moto_server: a versioned bucket of 2,800 versions and delete markers, and its stack (tests/py/cleanup.py)"
python tests/py/cleanup.py

step "query engines: chdb and polars over moto_server in place, DuckDB on a copy, docs/querying.md as written (tests/py/query_engines.py)"
python tests/py/query_engines.py

step "load: 10,000 events x 64 clients, then resends, into moto_server and a directory (tests/py/load.py)"
python tests/py/load.py --json target/load-results.json

step "crash: SIGKILL twice during a load, restart, resend; DuckDB reading all along (tests/py/crash.py)"
python tests/py/crash.py

step "fuzz for ${FUZZ_SECONDS:-60} s (tests/fuzz.sh)"
tests/fuzz.sh

step "benchmarks, smoke run: every stage briefly on debug builds (bench/run --smoke)"
bench/run --smoke
sed -n '/^## 2/,/^## 3/p' target/bench-smoke/BENCHMARKS.md

step "cargo deny: licences, bans, sources"
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --version 0.20.2
cargo deny check licenses bans sources

if [ "${SKIP_SAM_BUILD:-}" != 1 ]; then
  step "sam build"
  sam build --build-dir target/sam --cache-dir target/sam-cache

  # The function as built (arm64), under AWS's own Runtime Interface Emulator in Docker. As root
  # (CI) this installs and starts what it needs, and is required; elsewhere it needs a Docker
  # engine and qemu's arm64 emulation already there, and says so if they are not.
  step "sam local invoke: every sample event, arm64, under AWS's emulator (tests/py/sam_local.py)"
  if tests/sam/engine.sh start; then
    trap 'tests/sam/engine.sh stop' EXIT
    python tests/py/sam_local.py --build-dir target/sam
    tests/sam/engine.sh stop
    trap - EXIT
  elif [ "$(id -u)" = 0 ]; then
    echo "sam local invoke: the Docker engine could not be started (above)"
    exit 1
  else
    echo "skipped: sam local invoke needs a Docker engine and arm64 emulation (run tests/all.sh as root to set them up)"
  fi
fi

# set -e stopped at the first failing step; reaching here means every step passed.
printf '(%d s)\n\nall checks took %d s\n' $((SECONDS - last)) $((SECONDS - began))
printf 'checks: %d passed, 0 failed\n' "$steps"
