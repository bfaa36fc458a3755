#!/usr/bin/env bash
# cairn against its peers with ../shared/bench/run-peers.sh, after installing what the peers
# need that the shared setup does not (buildah, runc, hyperfine), so a fresh machine runs it.
# Usage (root): bench/peers.sh [run-peers.sh options]   e.g.
#   bench/peers.sh -p docker,buildah,cairn,cairn-rootless -w aptheavy,compile,bigfiles \
#     -s cold,warm,touch -o bench/results/$(date +%F)-peers
# CAIRN defaults to the release build of this checkout, brought up to date here first (a stale
# binary from an earlier build would be measured otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for p in buildah runc hyperfine; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
id "${TESTER:-tester}" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "${TESTER:-tester}"
if [ -z "${CAIRN:-}" ]; then
  cargo build --release --locked -p cairn
  CAIRN=${CARGO_TARGET_DIR:-$PWD/target}/release/cairn
fi
export CAIRN
exec ../shared/bench/run-peers.sh "$@"
