#!/usr/bin/env bash
# Quickstart: builds salve and the rotate-logs playbook, sets up a data
# directory (keys, trust store), signs the playbook, and on a demo directory
# it creates shows a plan, a successful run, a failed run that is rolled back
# to the exact bytes it started from, and the audit log verified.
# Needs nothing but Rust (rustup); installs the wasm32-wasip2 target.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_wasm_target

echo "==> building salve and the rotate-logs playbook"
cargo build --release --quiet
cargo build --release --quiet --target wasm32-wasip2 --manifest-path playbooks/Cargo.toml -p rotate-logs
salve=target/release/salve
component=playbooks/target/wasm32-wasip2/release/rotate_logs.wasm

# Under /tmp: rotate-logs' signed manifest declares /var/log, /srv/*/log
# and /tmp as the directories a grant may give it.
demo=$(mktemp -d /tmp/salve-demo.XXXXXX)
data="$demo/data"
mkdir -p "$demo/logs"
for name in app worker; do
    for i in $(seq 1 4000); do echo "2026-11-23T12:00:00Z INFO $name request $i latency_ms=$((i % 97))"; done > "$demo/logs/$name.log"
done
echo "started" > "$demo/logs/small.log"
cat > "$demo/grant.toml" <<TOML
# rotate-logs may read and write this one directory, nothing else.
[[fs]]
name = "logs"
path = "$demo/logs"
access = "rw"

[limits]
timeout = "30s"
memory = "64MiB"
TOML
echo "==> demo directory: $demo"
ls -l "$demo/logs"

echo
echo "==> salve init: a runner key, a dev author key, a trust store for dev"
$salve init --data-dir "$data"

echo
echo "==> salve sign: component + manifest + signature, one artifact"
playbook="$demo/rotate-logs-1.0.0.wasm"
$salve sign --key "$data/keys/dev-author.key" --manifest playbooks/rotate-logs/playbook.toml "$component" -o "$playbook"
$salve inspect "$playbook" --data-dir "$data"

echo
echo "==> salve plan (read-only: what would change)"
$salve plan "$playbook" --grant "$demo/grant.toml" --data-dir "$data" --param max_bytes=100000

echo
echo "==> salve run (apply, verify)"
$salve run "$playbook" --grant "$demo/grant.toml" --data-dir "$data" --param max_bytes=100000 --param keep=3
ls -l "$demo/logs"

echo
echo "==> a failing run: a corrupt old generation makes verify fail, so salve rolls back"
for i in $(seq 1 4000); do echo "2026-11-23T12:05:00Z INFO app request $i"; done > "$demo/logs/app.log"
echo "not gzip" > "$demo/logs/small.log.1.gz"
before=$(cd "$demo/logs" && find . -type f | sort | xargs sha256sum | sha256sum)
status=0
$salve run "$playbook" --grant "$demo/grant.toml" --data-dir "$data" --param max_bytes=100000 || status=$?
after=$(cd "$demo/logs" && find . -type f | sort | xargs sha256sum | sha256sum)
echo "exit code $status (3 = rolled back)"
if [ "$status" -ne 3 ] || [ "$before" != "$after" ]; then
    echo "salve: the failing run was not rolled back to the exact bytes it started from" >&2
    exit 1
fi
echo "the directory is byte-identical to before the failed run"

echo
echo "==> salve audit verify (every host call, phase and outcome, hash-chained; each job sealed)"
$salve audit verify --data-dir "$data"
echo
echo "last records:"
tail -n 3 "$data/audit.jsonl" | cut -c1-200

echo
echo "==> the control plane: agent → policy → plan → two approvals → apply (examples/walkthrough.sh)"
examples/walkthrough.sh

echo
echo "quickstart done; the demo is in $demo"
