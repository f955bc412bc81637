#!/usr/bin/env bash
# A short fuzzing run of every cargo-fuzz target, as CI does it (.ci/run calls this).
#
#   fuzz/smoke.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, all targets)
#
# Installs cargo-fuzz when it is missing, writes the seed corpora (fuzz/corpus/<target>/,
# not committed), builds the targets on the stable toolchain (`--sanitizer none` needs no
# nightly), runs each for the given time from its corpus plus the committed regression
# inputs (fuzz/regressions/<target>/), and prints executions and coverage per target.
# Exits non-zero if a target crashes, hangs or panics; the input is then in
# fuzz/artifacts/<target>/ and the line printed says how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decode recover_dir sim_model)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

# A toolchain named "stable" if rustup has one, else whatever `cargo` runs.
toolchain=()
if command -v rustup >/dev/null 2>&1 && rustup toolchain list 2>/dev/null | grep -q '^stable'; then
    toolchain=(+stable)
fi

cargo run --quiet --all-features --example fuzz_corpus -- fuzz/corpus
cargo "${toolchain[@]}" fuzz build --sanitizer none

logs="$(mktemp -d)"
status=0
for target in "${targets[@]}"; do
    dirs=("fuzz/corpus/$target")
    if [ -d "fuzz/regressions/$target" ]; then
        dirs+=("fuzz/regressions/$target")
    fi
    log="$logs/$target.log"
    set +e
    cargo "${toolchain[@]}" fuzz run --sanitizer none "$target" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=60 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    cov="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)"
    corp="$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1)"
    echo "fuzz $target: ${execs:-?} executions in ${secs} s, ${cov:-cov: ?}, ${corp:-corp: ?}"
    if [ $rc -ne 0 ]; then
        status=1
        echo "fuzz $target FAILED (exit $rc); the end of its log:"
        tail -n 40 "$log"
        artifact="$(grep -o 'Test unit written to [^ ]*' "$log" | awk '{print $5}' | tail -1)"
        if [ -n "$artifact" ]; then
            echo "reproduce: cargo ${toolchain[*]} fuzz run --sanitizer none $target $artifact"
        fi
    fi
done
rm -rf "$logs"
exit $status
