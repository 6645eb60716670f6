#!/usr/bin/env bash
# The same remediation (rotate-logs: compress 20 logs, keep 20 small ones)
# done three ways, timed with hyperfine, printed as one table:
#   salve    `salve run` of the signed rotate-logs artifact: whole process,
#            verified, sandboxed, journaled, audited and sealed
#   bash     bench/rotate-logs.sh: stat, mv, gzip
#   ansible  ansible-playbook bench/rotate-logs.yml, local connection
# on a small directory (20 x ~4 KB: overhead-dominated) and a large one
# (20 x ~300 KB: compression-dominated). Installs hyperfine (Debian) and
# ansible-core (PyPI, into bench/.venv) if missing; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_wasm_target

if ! command -v hyperfine >/dev/null 2>&1; then
    echo "==> installing hyperfine"
    sudo_if_needed apt-get install -y -qq hyperfine >/dev/null
fi
venv=bench/.venv
if [ ! -x "$venv/bin/ansible-playbook" ]; then
    echo "==> installing ansible-core into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet ansible-core
fi

echo "==> building salve and rotate-logs (release)"
cargo build --release --quiet
cargo build --release --quiet --target wasm32-wasip2 --manifest-path playbooks/Cargo.toml -p rotate-logs

work=$(mktemp -d /tmp/salve-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT
salve=$PWD/target/release/salve
data=$work/data
"$salve" init --data-dir "$data" >/dev/null
artifact=$work/rotate-logs.wasm
"$salve" sign --key "$data/keys/dev-author.key" --manifest playbooks/rotate-logs/playbook.toml \
    playbooks/target/wasm32-wasip2/release/rotate_logs.wasm -o "$artifact" >/dev/null
logs=$work/logs
mkdir -p "$logs"
printf '[[fs]]\nname = "logs"\npath = "%s"\naccess = "rw"\n' "$logs" > "$work/grant.toml"

# Templates: log-like lines (timestamps, ids, latencies), generated once.
templates=$work/templates
mkdir -p "$templates"
python3 - "$templates" <<'PY'
import random, sys
random.seed(8812)
def log(path, size):
    lines, total = [], 0
    while total < size:
        line = f"2026-11-23T12:{random.randrange(60):02d}:{random.randrange(60):02d}Z INFO http request_id={random.getrandbits(64):016x} path=/api/v1/items/{random.randrange(10000)} status={random.choice([200,200,200,201,304,404,500])} latency_ms={random.randrange(900)}\n"
        lines.append(line)
        total += len(line)
    open(path, "w").write("".join(lines))
log(f"{sys.argv[1]}/small.log", 4 * 1024)
log(f"{sys.argv[1]}/large.log", 300 * 1024)
log(f"{sys.argv[1]}/tiny.log", 200)
PY

for size in small large; do
    echo "==> $size directory"
    hyperfine --style basic --warmup 1 --min-runs 3 --max-runs 10 \
        --prepare "bench/gen-logs.sh $logs $size $templates" \
        --export-json "$work/$size.json" \
        -n salve "$salve run $artifact --grant $work/grant.toml --data-dir $data --param max_bytes=1024 --param keep=5" \
        -n bash "bench/rotate-logs.sh $logs 1024 5" \
        -n ansible "$venv/bin/ansible-playbook -i localhost, -e dir=$logs -e ansible_python_interpreter=$PWD/$venv/bin/python bench/rotate-logs.yml" \
        >/dev/null
done

python3 - "$work" bench/compare-results.json <<'PY'
import json, sys, platform, os
work, out = sys.argv[1], sys.argv[2]
runs = {size: {r["command"]: r for r in json.load(open(f"{work}/{size}.json"))["results"]} for size in ("small", "large")}
rows = []
print(f"{'tool':<10} {'small (20 x 4 KB)':>22} {'large (20 x 300 KB)':>22}")
for tool in ("salve", "bash", "ansible"):
    cells = []
    for size in ("small", "large"):
        r = runs[size][tool]
        cells.append(f"{r['mean'] * 1000:8.1f} ms ± {r['stddev'] * 1000:5.1f}")
    print(f"{tool:<10} {cells[0]:>22} {cells[1]:>22}")
print()
for size in ("small", "large"):
    s = runs[size]["salve"]["mean"]
    print(f"{size}: salve is {runs[size]['bash']['mean'] / s:.2f}x bash's speed and {runs[size]['ansible']['mean'] / s:.0f}x ansible-playbook's")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
json.dump({"machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()},
           "results": {size: {tool: {k: r[k] for k in ("mean", "stddev", "median", "min", "max")} | {"runs": len(r["times"])}
                              for tool, r in runs[size].items()} for size in runs}},
          open(out, "w"), indent=2)
print(f"\nwrote {out}")
PY
