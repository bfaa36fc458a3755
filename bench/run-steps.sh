#!/usr/bin/env bash
# Per-step overhead of RUN: a Dockerfile of 20 `RUN true` steps built by cairn (cold store with
# the busybox base loaded, each run), against the floor of 20 × (unshare --user --map-root-user
# --mount --pid --fork + an overlay mount + chroot + true) over the same unpacked base.
# Usage: bench/run-steps.sh [CAIRN_BINARY]   (needs hyperfine; prints hyperfine's table)
set -euo pipefail
cd "$(dirname "$0")/.."
cairn=${1:-$PWD/target/release/cairn}
work=$(mktemp -d /tmp/cairn-bench-steps.XXXXXX)
trap 'rm -rf "$work"' EXIT
fixtures/busybox/make.sh "$work/busybox" "$cairn" >/dev/null
mkdir "$work/ctx"
{ echo "FROM busybox"; for i in $(seq 20); do echo "RUN true # $i"; done; } >"$work/ctx/Dockerfile"
# The floor's lower: the busybox rootfs, unpacked once.
mkdir -p "$work/lower" && tar -xf "$work/busybox"/blobs/sha256/"$(
  jq -r '.manifests[0].digest' "$work/busybox/index.json" | cut -d: -f2 |
    xargs -I{} jq -r '.layers[0].digest' "$work/busybox/blobs/sha256/{}" | cut -d: -f2)" -C "$work/lower" 2>/dev/null || true
cat >"$work/floor.sh" <<FLOOR
#!/bin/sh
for i in \$(seq 20); do
  d=\$(mktemp -d $work/f.XXXXXX); mkdir \$d/u \$d/w \$d/m
  unshare --user --map-root-user --mount --pid --fork sh -c \
    "mount -t overlay overlay -o lowerdir=$work/lower,upperdir=\$d/u,workdir=\$d/w,userxattr \$d/m && chroot \$d/m /bin/true"
  rm -rf \$d
done
FLOOR
chmod +x "$work/floor.sh"
hyperfine -w 1 -r 5 \
  -p "rm -rf $work/store; CAIRN_ROOT=$work/store $cairn load -i $work/busybox -t busybox >/dev/null" \
  -n cairn "CAIRN_ROOT=$work/store $cairn build -q --progress quiet $work/ctx" \
  -n floor "$work/floor.sh"
