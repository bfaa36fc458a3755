#!/usr/bin/env bash
# Push and pull of the bigfiles image (1.25 GiB in two layers) to and from a local registry: cairn
# against `skopeo copy` of the same image, in one hyperfine run. Every push goes to a registry
# wiped and restarted just before (untimed), so no blob is already there; every pull goes into an
# empty store (cairn) or an empty OCI layout directory (skopeo), so every blob is fetched.
# Usage (root): bench/registry.sh [-r RUNS] [-w WORKLOAD] [CAIRN_BINARY]
# Needs ../shared/bench set up once (setup-host.sh, make-base.sh busybox, the workload generated
# under $BENCH_FS/ctx by run-peers.sh or gen.sh) and hyperfine, skopeo and docker-registry.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 workload=bigfiles
while getopts "r:w:" o; do
  case $o in r) runs=$OPTARG ;; w) workload=$OPTARG ;; *) sed -n 2,8p "$0"; exit 2 ;; esac
done
shift $((OPTIND - 1))
cairn=${1:-$PWD/target/release/cairn}
bench=$(cd ../shared/bench && pwd)
BENCH_FS=${BENCH_FS:-/tmp/bench-fs}
ctx=$BENCH_FS/ctx/$workload
[ -f "$ctx/Dockerfile" ] || { echo "no $ctx: generate the workload first" >&2; exit 1; }
work=$(mktemp -d "$BENCH_FS/cairn-bench-registry.XXXXXX")
# A registry of our own on another port, so the shared one's bases are never wiped. Started
# with no REGISTRY_* variables: distribution reads every one of them as configuration.
addr=127.0.0.1:5055
cat >"$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/reg
http:
  addr: $addr
  secret: cairn-bench
YML
cat >"$work/fresh.sh" <<FRESH
#!/bin/sh
# Stops the bench registry, empties its storage and starts it again.
[ -f $work/reg.pid ] && kill \$(cat $work/reg.pid) 2>/dev/null && sleep 0.5
rm -rf $work/reg
# Flushed now, so one run's writes are not paid for in the next one's time.
sync
env \$(env | grep -o '^REGISTRY_[^=]*' | sed 's/^/-u /') setsid /usr/bin/docker-registry serve $work/registry.yml >$work/reg.log 2>&1 </dev/null &
echo \$! >$work/reg.pid
for _ in \$(seq 100); do curl -fsS http://$addr/v2/ >/dev/null 2>&1 && exit 0; sleep 0.1; done
cat $work/reg.log >&2; exit 1
FRESH
chmod +x "$work/fresh.sh"
trap '[ -f "$work/reg.pid" ] && kill "$(cat "$work/reg.pid")" 2>/dev/null; rm -rf "$work"' EXIT
"$bench/make-base.sh" busybox >/dev/null
base=${BASE_DIR:-/tmp/bench/base}/busybox

# The image, built once (untimed), in a store and as an OCI layout for skopeo.
store=$work/store
"$cairn" --root "$store" load -i "$base" -t busybox:latest >/dev/null
"$cairn" --root "$store" build -q -t "bench/$workload:1" "$ctx" >/dev/null
"$cairn" --root "$store" save "bench/$workload:1" -o "$work/layout" --format oci-dir
layout_ref="oci:$work/layout:$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$work/layout/index.json")"
dest=$addr/bench/$workload:1
fresh=$work/fresh.sh
seed="$fresh; skopeo copy -q --dest-tls-verify=false $layout_ref docker://$dest"

hyperfine -w 0 -r "$runs" --export-markdown "$work/push.md" \
  -p "$fresh" -n "cairn push" "$cairn --root $store push -q bench/$workload:1 $dest" \
  -p "$fresh" -n "skopeo copy (push)" "skopeo copy -q --dest-tls-verify=false $layout_ref docker://$dest"
hyperfine -w 0 -r "$runs" --export-markdown "$work/pull.md" \
  -p "$seed; rm -rf $work/pulled" -n "cairn pull" "$cairn --root $work/pulled pull -q $dest" \
  -p "$seed; rm -rf $work/pulled-oci" -n "skopeo copy (pull)" \
  "skopeo copy -q --src-tls-verify=false docker://$dest oci:$work/pulled-oci:1"
cat "$work/push.md" "$work/pull.md"
echo "cairn: $("$cairn" --version); $(skopeo --version)"
