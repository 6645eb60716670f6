#!/usr/bin/env bash
# Fuzzing (fuzz/README.md): builds the libFuzzer targets and runs them.
#
#   scripts/fuzz.sh ci [SECONDS]           each target SECONDS (default 20) on
#                                          a copy of its corpus and regressions;
#                                          fails on any crash (CI runs this)
#   scripts/fuzz.sh run SECONDS [TARGET..] a local campaign: new inputs are
#                                          kept in fuzz/corpus/TARGET
#   scripts/fuzz.sh merge [TARGET...]      keeps only the corpus inputs that
#                                          add coverage (after a campaign)
#   scripts/fuzz.sh seeds                  writes the seeds signed by the
#                                          fixture keys into fuzz/corpus
#
# Builds on stable Rust: fuzz/instrument.sh instruments salve and the
# targets only, and every dependency is the release build's.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(manifest grant envelope approval trust artifact audit_log url argv glob evidence)

build() {
    echo "==> building the fuzz targets (instrumented; dependencies from the release build)"
    RUSTC_WORKSPACE_WRAPPER="$PWD/fuzz/instrument.sh" cargo build --release --quiet -p salve-fuzz --bins
}

# Runs one target for $2 seconds over the corpus directories that follow;
# the first is where libFuzzer keeps what it finds. Its output goes to
# fuzz/artifacts/TARGET.log; libFuzzer's exit status says whether it found
# a crash (the input is saved as fuzz/artifacts/TARGET/crash-*).
fuzz_one() {
    local target=$1 seconds=$2
    shift 2
    mkdir -p "fuzz/artifacts/$target"
    local log="fuzz/artifacts/$target.log" status=0
    "target/release/$target" "$@" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    local execs rss
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n1)
    if [ "$status" -ne 0 ]; then
        echo "FAIL $target after ${seconds}s (libFuzzer exit $status); see $log and fuzz/artifacts/$target/" >&2
        grep -m5 -E 'panicked|ERROR|SUMMARY' "$log" >&2 || true
        return 1
    fi
    printf 'ok   %-10s %4ss %10s executions, peak RSS %s MB\n' "$target" "$seconds" "${execs:-?}" "${rss:-?}"
}

case "${1:-}" in
ci)
    seconds=${2:-20}
    build
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    failed=0
    for target in "${targets[@]}"; do
        mkdir -p "$scratch/$target"
        # Every committed input replays first, then the fuzzer mutates them.
        fuzz_one "$target" "$seconds" "$scratch/$target" "fuzz/corpus/$target" \
            $( [ -d "fuzz/regressions/$target" ] && echo "fuzz/regressions/$target" ) || failed=1
    done
    exit "$failed"
    ;;
run)
    seconds=${2:?"usage: scripts/fuzz.sh run SECONDS [TARGET...]"}
    shift 2
    [ $# -gt 0 ] || set -- "${targets[@]}"
    build
    failed=0
    for target in "$@"; do
        mkdir -p "fuzz/corpus/$target"
        fuzz_one "$target" "$seconds" "fuzz/corpus/$target" \
            $( [ -d "fuzz/regressions/$target" ] && echo "fuzz/regressions/$target" ) || failed=1
    done
    exit "$failed"
    ;;
merge)
    shift
    [ $# -gt 0 ] || set -- "${targets[@]}"
    build
    for target in "$@"; do
        kept=$(mktemp -d)
        mkdir -p fuzz/artifacts
        "target/release/$target" -merge=1 "$kept" "fuzz/corpus/$target" >"fuzz/artifacts/$target.merge.log" 2>&1
        before=$(ls "fuzz/corpus/$target" | wc -l)
        rm -rf "fuzz/corpus/$target" && mv "$kept" "fuzz/corpus/$target" && chmod 755 "fuzz/corpus/$target"
        echo "$target: kept $(ls "fuzz/corpus/$target" | wc -l) of $before inputs"
    done
    ;;
seeds)
    build
    target/release/seeds
    ;;
*)
    echo "usage: scripts/fuzz.sh ci [SECONDS] | run SECONDS [TARGET...] | merge [TARGET...] | seeds" >&2
    exit 2
    ;;
esac
