#!/usr/bin/env bash
# gen-logs.sh DIR SIZE TEMPLATES: (re)creates DIR with 20 logs of the SIZE
# template ("small" ~4 KB or "large" ~300 KB) to rotate and 20 tiny logs to
# keep. hyperfine runs it before every timed run (--prepare).
set -euo pipefail
dir=$1 size=$2 templates=$3
rm -rf "$dir"
mkdir -p "$dir"
for i in $(seq -w 1 20); do
    cp "$templates/$size.log" "$dir/app$i.log"
    cp "$templates/tiny.log" "$dir/keep$i.log"
done
