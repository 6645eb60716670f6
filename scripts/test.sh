#!/usr/bin/env bash
# Runs the whole test suite. The integration tests build the playbooks for
# wasm32-wasip2 themselves; this installs the target first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_wasm_target
ensure_nginx
ensure_chromium

echo "==> cargo test (the runner, with every playbook built for wasm32-wasip2)"
cargo test --all-targets
echo "==> cargo test in playbooks/ (host-side unit tests of the playbooks)"
cargo test --quiet --manifest-path playbooks/Cargo.toml -p rotate-logs
echo "==> property tests of the HTTP API from its OpenAPI document (schemathesis, a live salve serve)"
scripts/api-properties.sh
