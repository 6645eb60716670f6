#!/usr/bin/env bash
# Property tests of the HTTP API from its OpenAPI document: schemathesis
# (PyPI, pinned in tests/api/requirements.txt, in a venv under target/)
# sends generated requests, signed by an agent, an approver and an auditor
# key, to a real `salve serve` on a free loopback port, and fails on any
# 5xx or any answer that does not conform to schemas/openapi.json.
# A job that ran is there too (rotate-logs in `dev`, submitted over HTTP),
# so that the reads of a job are checked with what they answer for one.
# Builds on what `cargo test` built: both builds below are then no-ops.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_wasm_target
cargo build --quiet --bin salve
CARGO_TARGET_DIR=playbooks/target cargo build --release --quiet --target wasm32-wasip2 --manifest-path playbooks/Cargo.toml -p rotate-logs
target_dir=${CARGO_TARGET_DIR:-target}
salve="$target_dir/debug/salve"
component=playbooks/target/wasm32-wasip2/release/rotate_logs.wasm

# The venv is made again when the pins or the Python change.
venv="$target_dir/api-venv"
stamp="$(python3 -VV | tr -d '\n')
$(cat tests/api/requirements.txt)"
if [ "$(cat "$venv/stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "==> installing schemathesis in $venv (tests/api/requirements.txt)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r tests/api/requirements.txt
    "$venv/bin/pip" check --disable-pip-version-check >/dev/null
    printf '%s' "$stamp" > "$venv/stamp"
fi

work=$(mktemp -d /tmp/salve-api.XXXXXX)
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
data="$work/data"
"$salve" init --data-dir "$data" >/dev/null
keys=
for role in agent approver auditor; do
    "$salve" keygen --role "$role" --id "api-$role" --out "$work/keys" >/dev/null
    "$salve" trust add "$work/keys/api-$role.pub" --environment dev --data-dir "$data" >/dev/null
    keys="$keys${keys:+:}$work/keys/api-$role.key"
done

"$salve" sign --key "$data/keys/dev-author.key" --manifest playbooks/rotate-logs/playbook.toml "$component" \
    -o "$work/rotate-logs.wasm" >/dev/null
"$salve" install "$work/rotate-logs.wasm" --environment dev --data-dir "$data" >/dev/null
mkdir -p "$work/logs"
for i in $(seq 1 200); do echo "line $i"; done > "$work/logs/app.log"
job=api-properties-1
cat > "$work/job.json" <<JSON
{
  "id": "$job",
  "playbook": { "name": "rotate-logs", "version": "$(sed -n 's/^version = "\(.*\)"/\1/p' playbooks/rotate-logs/playbook.toml | head -n 1)" },
  "target": { "environment": "dev", "system": "api-host" },
  "parameters": { "dir": "logs", "max_bytes": "100", "keep": "2" },
  "grant": { "fs": [{ "name": "logs", "path": "$work/logs", "access": "rw" }] },
  "evidence": { "detector": "disk-usage", "alert_id": "1", "severity": "low", "confidence": 0.9,
                "summary": "a log to rotate", "telemetry_sha256": "$(printf x | sha256sum | cut -d' ' -f1)" },
  "nonce": "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')",
  "expires_at": "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
}
JSON

mkfifo "$work/out"
"$salve" serve --data-dir "$data" --listen 127.0.0.1:0 > "$work/out" &
server=$!
exec 3< "$work/out"
read -r -t 60 line <&3 || { echo "salve serve did not start" >&2; exit 1; }
url=${line#salve serve: listening on }
# Keep draining its output so that it never blocks on a full pipe.
cat <&3 >/dev/null &
"$salve" submit "$work/job.json" --key "$work/keys/api-agent.key" --server "$url" >/dev/null

echo "==> schemathesis against $url (schemas/openapi.json)"
SALVE_URL="$url" SALVE_OPENAPI=schemas/openapi.json SALVE_KEYS="$keys" SALVE_JOB="$job" \
    HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/api/test_openapi.py

kill -TERM "$server"
status=0
wait "$server" || status=$?
server=
if [ "$status" -ne 0 ]; then
    echo "salve serve exited $status on SIGTERM after the property tests" >&2
    exit 1
fi
