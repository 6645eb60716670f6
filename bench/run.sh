#!/usr/bin/env bash
# Every benchmark, as published in the README's Performance section:
# salve-bench (release build, writes bench/results.json), then the
# side-by-side with bash and ansible-playbook (bench/compare.sh, writes
# bench/compare-results.json). Installs what it needs; stops by itself.
#
# Usage: bench/run.sh [--quick]   (--quick: fewer samples, a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_wasm_target

echo "==> building salve and the playbooks (release)"
cargo build --release --quiet
cargo build --release --quiet --target wasm32-wasip2 --manifest-path playbooks/Cargo.toml --workspace

echo "==> salve-bench"
target/release/salve-bench --out bench/results.json "$@"

echo
echo "==> bench/compare.sh"
bench/compare.sh
