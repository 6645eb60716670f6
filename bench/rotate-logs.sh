#!/usr/bin/env bash
# rotate-logs.sh DIR MAX_BYTES KEEP: what rotate-logs does, as a plain
# script with stat, mv and gzip (no journal, no rollback, no audit).
set -euo pipefail
dir=$1 max=$2 keep=$3
for log in "$dir"/*.log; do
    size=$(stat -c %s "$log")
    [ "$size" -gt "$max" ] || continue
    rm -f "$log.$keep.gz"
    for ((n = keep - 1; n >= 1; n--)); do
        if [ -e "$log.$n.gz" ]; then mv "$log.$n.gz" "$log.$((n + 1)).gz"; fi
    done
    gzip -c "$log" > "$log.1.gz"
    : > "$log"
done
