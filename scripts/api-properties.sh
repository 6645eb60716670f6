#!/usr/bin/env bash
# Property tests of the HTTP API from its OpenAPI document: schemathesis
# (PyPI, pinned in tests/api/requirements.txt, in a venv under target/)
# sends generated requests, signed by an agent, an approver and an auditor
# key, to a real `salve serve` on a free loopback port, and fails on any
# 5xx or any answer that does not conform to schemas/openapi.json.
# Uses the salve that `cargo test` built (target/debug/salve).
set -euo pipefail
cd "$(dirname "$0")/.."
salve=${SALVE_BIN:-target/debug/salve}
[ -x "$salve" ] || cargo build --quiet --bin salve

venv=target/api-venv
if ! cmp -s tests/api/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
    echo "==> installing schemathesis in $venv (tests/api/requirements.txt)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/api/requirements.txt
    cp tests/api/requirements.txt "$venv/requirements.txt"
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

mkfifo "$work/out"
"$salve" serve --data-dir "$data" --listen 127.0.0.1:0 > "$work/out" &
server=$!
exec 3< "$work/out"
read -r -t 60 line <&3 || { echo "salve serve did not start" >&2; exit 1; }
url=${line#salve serve: listening on }
# Keep draining its output so that it never blocks on a full pipe.
cat <&3 >/dev/null &

echo "==> schemathesis against $url (schemas/openapi.json)"
SALVE_URL="$url" SALVE_OPENAPI=schemas/openapi.json SALVE_KEYS="$keys" HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/api/test_openapi.py

kill -TERM "$server"
status=0
wait "$server" || status=$?
server=
if [ "$status" -ne 0 ]; then
    echo "salve serve exited $status on SIGTERM after the property tests" >&2
    exit 1
fi
