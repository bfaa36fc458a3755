#!/usr/bin/env bash
# Fuzzes the Dockerfile parser (target `parse`) for a number of seconds, 600 by default:
#
#     fuzz/run.sh [SECONDS]
#
# Installs cargo-fuzz if it is missing, seeds fuzz/corpus/parse/ with the conformance
# Dockerfiles, and runs one libFuzzer job with fuzz/dict/dockerfile.dict, printing libFuzzer's
# final stats. Crashes land in fuzz/artifacts/parse/; minimise one with
#
#     cd fuzz && cargo +nightly fuzz tmin -a parse artifacts/parse/crash-...
#
# and add it to parser/tests/fuzz_regressions.rs once fixed.
#
# cargo-fuzz passes nightly-only flags to rustc, so this uses the nightly toolchain when rustup
# has one, and otherwise stable with RUSTC_BOOTSTRAP=1.
#
# The target is built with AddressSanitizer (cargo-fuzz's default) even though the parser has no
# unsafe code: the fuzz binary's `main` is libFuzzer's, so Rust's stack-overflow handler and its
# per-thread alternate signal stacks are never set up, and without ASan a stack overflow kills the
# process without a report or a saved input. CAIRN_FUZZ_SANITIZER=none is about twice as fast
# and still catches panics. Debug assertions are on, so arithmetic overflow panics.
set -euo pipefail

seconds="${1:-600}"
sanitizer="${CAIRN_FUZZ_SANITIZER:-address}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

cd "$here"
mkdir -p corpus/parse artifacts/parse
for dockerfile in "$root"/fixtures/conformance/dockerfile-parser/*/Dockerfile; do
    cp "$dockerfile" "corpus/parse/seed-$(basename "$(dirname "$dockerfile")")"
done

# One job: the machine is small and shared. -timeout catches hangs well before libFuzzer's
# default of 20 minutes.
"${fuzz[@]}" run --debug-assertions --sanitizer "$sanitizer" --jobs 1 parse corpus/parse -- \
    -max_total_time="$seconds" \
    -dict="$here/dict/dockerfile.dict" \
    -max_len=4096 \
    -timeout=10 \
    -print_final_stats=1
