#!/usr/bin/env bash
# Runs every check mailhook has, from a fresh clone: cargo test, cfn-lint, the template and README
# SQL checks, the end-to-end run through cargo lambda with moto_server and DuckDB, and sam build.
# The first run installs the Python-packaged tools (tests/requirements.txt) into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cmp -s tests/requirements.txt .venv/.installed 2>/dev/null; then
  echo "== installing test tools into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "cfn-lint template.yaml"
cfn-lint template.yaml && echo "cfn-lint: no errors, no warnings"

step "cargo test"
cargo test --locked

step "template and README SQL (tests/check_template.py)"
python tests/check_template.py

step "end to end through cargo lambda, moto_server and DuckDB (tests/e2e.py)"
python tests/e2e.py

if [ "${SKIP_SAM_BUILD:-}" != 1 ]; then
  step "sam build"
  sam build --build-dir target/sam --cache-dir target/sam-cache
fi
