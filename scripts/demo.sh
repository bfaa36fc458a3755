#!/usr/bin/env bash
# The main job, end to end: build cairn, make and load the busybox base image, build the example
# site image, and show what it holds. The images stay in cairn's store (CAIRN_ROOT, else the
# default under XDG_DATA_HOME or ~/.local/share) for the cairn binary this builds, which stays in
# target/release: both are there to go on with.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p cairn
cairn=$PWD/target/release/cairn
work=$(mktemp -d /tmp/cairn-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
store=${CAIRN_ROOT:-${XDG_DATA_HOME:-$HOME/.local/share}/cairn}

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
echo
echo "cairn is $cairn; its store, with busybox, site:1 and hello:1, is $store."
echo "Go on with, for example:"
echo "  $cairn images"
echo "  $cairn run --rm -it busybox sh"
echo "  $cairn build -t app:1 ."
