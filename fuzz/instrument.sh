#!/usr/bin/env bash
# A RUSTC_WORKSPACE_WRAPPER (scripts/fuzz.sh sets it): adds libFuzzer's
# coverage instrumentation to the workspace's own crates (salve and the fuzz
# targets), the code under test, and leaves every dependency as the release
# build compiled it, so that the fuzz build reuses it instead of building
# wasmtime again. Build scripts run on the host and are not instrumented.
set -euo pipefail
rustc=$1
shift
for arg in "$@"; do
    if [ "$arg" = build_script_build ]; then exec "$rustc" "$@"; fi
done
exec "$rustc" "$@" \
    -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions \
    -Coverflow-checks \
    --cfg fuzzing
