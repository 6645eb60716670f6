#!/usr/bin/env bash
# The control plane end to end: an AIOps agent submits a signed job to
# rotate logs on web-3 in prod; the policy says production changes by an
# execution-class playbook need two approvals outside the change window;
# the worker plans the job with a read-only grant; two approvers (neither
# of them the agent) review the plan and sign approvals bound to it; the
# worker decides again, re-plans, applies and verifies; the audit log
# verifies; the job's evidence bundle is exported, verified offline and
# rendered as a page. No services: SQLite and files in one data directory.
#
# Usage: examples/walkthrough.sh   (builds what it needs; installs the
# wasm32-wasip2 target if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_wasm_target

cargo build --release --quiet
cargo build --release --quiet --target wasm32-wasip2 --manifest-path playbooks/Cargo.toml -p rotate-logs
salve=target/release/salve
component=playbooks/target/wasm32-wasip2/release/rotate_logs.wasm

demo=$(mktemp -d /tmp/salve-walkthrough.XXXXXX)
data="$demo/data"
keys="$demo/keys"
mkdir -p "$demo/logs"
for i in $(seq 1 3000); do echo "2026-11-23T12:00:00Z INFO web request $i latency_ms=$((i % 97))"; done > "$demo/logs/access.log"
echo "started" > "$demo/logs/small.log"

opens=$(date -u -d '+2 hour' +%H:00)
closes=$(date -u -d '+3 hour' +%H:00)
echo "==> a data directory; the change window for prod is closed now (it opens at $opens UTC)"
$salve init --data-dir "$data" > /dev/null
cat > "$data/salve.toml" <<TOML
[windows]
prod = [{ from = "$opens", to = "$closes" }]

[budgets]
jobs_per_playbook_per_hour = 20
mutations_per_job = 10000
TOML

echo "==> keys: a platform author (trusted for prod), an agent, two SREs"
$salve keygen --role author --id platform-author --out "$keys" > /dev/null
$salve keygen --role agent --id aiops-agent --out "$keys" > /dev/null
$salve keygen --role approver --id alice --out "$keys" > /dev/null
$salve keygen --role approver --id bob --out "$keys" > /dev/null
$salve trust add "$keys/platform-author.pub" --environment prod --environment dev --data-dir "$data"
$salve trust add "$keys/aiops-agent.pub" --environment prod --data-dir "$data"
$salve trust add "$keys/alice.pub" --environment prod --group sre --data-dir "$data"
$salve trust add "$keys/bob.pub" --environment prod --group sre --data-dir "$data"

echo
echo "==> the platform team signs rotate-logs and installs it"
artifact="$demo/rotate-logs-1.0.0.wasm"
$salve sign --key "$keys/platform-author.key" --manifest playbooks/rotate-logs/playbook.toml "$component" -o "$artifact" > /dev/null
$salve install "$artifact" --environment prod --data-dir "$data"

echo
echo "==> the agent submits a job (signed with its key)"
expires=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
telemetry=$(printf 'p99 latency 2.3s for 10m' | sha256sum | cut -d' ' -f1)
cat > "$demo/job.json" <<JSON
{
  "id": "rotate-web-3-8812",
  "playbook": { "name": "rotate-logs", "version": "1.0.0" },
  "target": { "environment": "prod", "system": "web-3" },
  "parameters": { "dir": "logs", "max_bytes": "10000", "keep": "3" },
  "grant": { "fs": [{ "name": "logs", "path": "$demo/logs", "access": "rw" }] },
  "evidence": {
    "detector": "disk-usage",
    "alert_id": "8812",
    "severity": "high",
    "confidence": 0.92,
    "summary": "/var/log on web-3 at 91% and growing",
    "telemetry_sha256": "$telemetry"
  },
  "nonce": "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')",
  "expires_at": "$expires"
}
JSON
$salve submit "$demo/job.json" --key "$keys/aiops-agent.key" --data-dir "$data"

echo
echo "==> the worker plans it (read-only) and waits for approvals"
$salve worker --until-idle --data-dir "$data"


echo
echo "==> what the approvers review"
$salve jobs show rotate-web-3-8812 --data-dir "$data"
plan=$($salve jobs show rotate-web-3-8812 --json --data-dir "$data" | sed -n 's/.*"plan_hash": "\([0-9a-f]*\)".*/\1/p' | head -n 1)
echo
echo "==> the agent cannot approve its own job"
if $salve approve rotate-web-3-8812 --key "$keys/aiops-agent.key" --plan "$plan" --data-dir "$data"; then
    echo "the agent approved its own job" >&2
    exit 1
fi

echo
echo "==> two approvals, bound to job and plan $plan"
$salve approve rotate-web-3-8812 --key "$keys/alice.key" --plan "$plan" --reason "disk at 91%" --data-dir "$data"
$salve approve rotate-web-3-8812 --key "$keys/bob.key" --plan "$plan" --data-dir "$data"

echo
echo "==> the worker decides again, re-plans, applies and verifies"
$salve worker --until-idle --data-dir "$data"
$salve jobs list --data-dir "$data"
ls -l "$demo/logs"
state=$($salve jobs list --state succeeded --data-dir "$data")
case "$state" in
    *rotate-web-3-8812*) ;;
    *) echo "the job did not succeed" >&2; exit 1 ;;
esac

echo
echo "==> the audit log: the submission, every decision, both approvals, every host call, sealed"
$salve audit verify --data-dir "$data"

echo
echo "==> the job's evidence: one file an auditor verifies offline, and one page for people"
bundle="$demo/rotate-web-3-8812.evidence.tar"
$salve evidence export rotate-web-3-8812 -o "$bundle" --with-artifact --data-dir "$data"
$salve evidence verify "$bundle" --runner-key "$data/keys/runner.pub"
$salve evidence report "$bundle" -o "$demo/rotate-web-3-8812.html" --runner-key "$data/keys/runner.pub"
