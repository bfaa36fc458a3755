#!/usr/bin/env bash
# The cost of each isolation rung: the small and runheavy workloads, cold and warm (a no-op
# rebuild), built by cairn under --isolation userns, rootful and chroot, each run against
# BuildKit in the same run of ../shared/bench/run-peers.sh (through bench/peers.sh).
# Usage (root): bench/isolation.sh [run-peers.sh options]; results under
# bench/results/<date>-isolation-<rung>/, and a summary table on standard output.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CAIRN:-}" ]; then
  cargo build --release --locked -p cairn
  CAIRN=${CARGO_TARGET_DIR:-$PWD/target}/release/cairn
fi
export CAIRN
day=$(date +%F)
dirs=()
for rung in userns rootful chroot; do
  out=bench/results/$day-isolation-$rung
  CAIRN_ISOLATION=$rung bench/peers.sh -p docker,cairn -w small,runheavy -s cold,warm \
    -o "$out" "$@"
  dirs+=("$out")
done
../shared/bench/summarize.sh "${dirs[@]}"
