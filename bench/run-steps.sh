#!/usr/bin/env bash
# Per-step overhead of RUN: a Dockerfile of 20 `RUN true` steps built cold (empty store, base
# loaded untimed) by cairn and, in the same hyperfine run, by the peers of ../shared/bench
# (BuildKit through docker, buildah) and the floor: 20 × (unshare --user --map-root-user --mount
# --pid --fork + an overlay mount + chroot + true) over the same unpacked base.
# Usage (root): bench/run-steps.sh [-p docker,buildah] [-r RUNS] [CAIRN_BINARY]
#   -p ''  measures cairn against the floor only (no peer set-up needed).
# The peers need ../shared/bench set up once (see its README: setup-host.sh, useradd tester).
set -euo pipefail
cd "$(dirname "$0")/.."
peers=docker,buildah runs=5
while getopts "p:r:" o; do
  case $o in p) peers=$OPTARG ;; r) runs=$OPTARG ;; *) sed -n 2,8p "$0"; exit 2 ;; esac
done
shift $((OPTIND - 1))
cairn=${1:-$PWD/target/release/cairn}
bench=$(cd ../shared/bench 2>/dev/null && pwd || true)
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

args=(-w 1 -r "$runs"
  -p "rm -rf $work/store; CAIRN_ROOT=$work/store $cairn load -i $work/busybox -t busybox >/dev/null"
  -n cairn "CAIRN_ROOT=$work/store $cairn build -q --progress quiet $work/ctx"
  -p true -n floor "$work/floor.sh")
IFS=, read -r -a list <<<"$peers"
for p in "${list[@]}"; do
  [ -n "$p" ] || continue
  [ -n "$bench" ] || { echo "../shared/bench is missing: cannot measure $p" >&2; exit 1; }
  "$bench/peer.sh" "$p" setup
  # reset empties the peer's store and cache; the base comes from the bench registry (started
  # by ../shared/bench/registry.sh start --push-bases), as in run-peers.sh.
  args+=(-p "$bench/peer.sh $p reset >/dev/null 2>&1; sync"
    -n "$p" "$bench/peer.sh $p build $work/ctx steps-bench:latest >/dev/null 2>&1")
done
hyperfine "${args[@]}" --export-markdown "$work/table.md"
cat "$work/table.md"
for p in "${list[@]}"; do [ -n "$p" ] && "$bench/peer.sh" "$p" teardown; done
true
