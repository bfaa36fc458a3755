#!/usr/bin/env bash
# A Dockerfile of many ENV lines built through cairn (FROM scratch, nothing else), at a few
# sizes, so the growth of the time with the line count shows: linear now, where a copy of the
# whole environment for every step once made 100,000 lines take hours.
# Usage: bench/env-lines.sh [CAIRN_BINARY] (default target/release/cairn); LINES="1000 100000"
# changes the sizes. The in-process part alone: cargo bench -p cairn-builder --bench env_lines.
set -euo pipefail
cd "$(dirname "$0")/.."
cairn=${1:-$PWD/target/release/cairn}
work=$(mktemp -d /tmp/cairn-bench-env.XXXXXX)
trap 'rm -rf "$work"' EXIT
for n in ${LINES:-10000 50000 100000}; do
  mkdir -p "$work/ctx$n"
  { echo "FROM scratch"; seq 0 $((n - 1)) | sed 's/.*/ENV V&=value&/'; echo "ENV LAST=\$V0"; } \
    >"$work/ctx$n/Dockerfile"
  start=$(date +%s.%N)
  "$cairn" --root "$work/store" build -q "$work/ctx$n" >/dev/null
  end=$(date +%s.%N)
  echo "$n ENV lines: $(echo "$end - $start" | bc) s"
done
