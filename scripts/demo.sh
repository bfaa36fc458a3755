#!/usr/bin/env bash
# The main job, end to end: build cairn, make and load the busybox base image, build the example
# site image, and show what it holds. Uses a throwaway store unless CAIRN_ROOT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p cairn
cairn=$PWD/target/release/cairn
work=$(mktemp -d /tmp/cairn-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CAIRN_ROOT=${CAIRN_ROOT:-$work/store}

fixtures/busybox/make.sh "$work/busybox" "$cairn"
"$cairn" load -i "$work/busybox" -t busybox
"$cairn" build -t site:1 -o "type=local,dest=$work/rootfs" fixtures/examples/site
echo
"$cairn" images
echo
echo "The image's config:"
"$cairn" inspect site:1 | jq '.[0] | {Id, RepoTags, Config: .Config | {User, WorkingDir, Env, Cmd, ExposedPorts, Labels}}'
echo
echo "Its files under /srv:"
(cd "$work/rootfs" && find srv -printf '%M %u:%g %6s %p\n' | sort -k4)
echo
echo "A build with RUN steps (each in a rootless sandbox), then the image run with cairn run:"
"$cairn" build --progress plain -t hello:1 fixtures/examples/hello
"$cairn" run --rm hello:1
