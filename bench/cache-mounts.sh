#!/usr/bin/env bash
# Cache mounts that travel (issue 21, item 5): a Debian `apt-get install` with /var/cache/apt and
# /var/lib/apt/lists as cache mounts, on a fresh CI runner whose RUN step misses (a build arg
# changed), timed and with its downloads counted, for:
#   cairn-mounts   a fresh store, --cache-from a registry cache exported with mounts=true
#   cairn-plain    a fresh store, no cache
#   buildkit       a fresh dockerd builder (Debian's docker.io, BuildKit built in), --cache-from
#                  the image pushed with its inline cache: the best this BuildKit (no buildx, so
#                  no type=registry,mode=max) has, and no BuildKit can restore a cache mount
# All apt traffic goes through bench/count-proxy.py on the host's first non-loopback address (a
# cairn step's network reaches the host there, never on loopback), which logs every request and
# its bytes. The seed builds (BUST=0) run once; then RUNS rounds, peers interleaved, each with a
# new BUST.
# Usage (root): bench/cache-mounts.sh [-r RUNS] [-p PACKAGES] [CAIRN]
# Needs ../shared/bench (dockerd.sh, registry.sh) and a Debian bookworm docker-archive
# (fixtures/debian/make.sh makes one). Writes bench/results/DATE-cache-mounts.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 packages="curl jq xz-utils git"
while getopts "r:p:" o; do
  case $o in
    r) runs=$OPTARG ;; p) packages=$OPTARG ;;
    *) sed -n 2,17p "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
cairn=${1:-$PWD/target/debug/cairn}
bench=$(cd ../shared/bench && pwd)
export BENCH_FS=${BENCH_FS:-/tmp/bench-fs} BENCH_TMP=${BENCH_TMP:-/tmp/bench}
out=bench/results/$(date +%F)-cache-mounts.tsv
archive=$(fixtures/debian/make.sh "$cairn")
work=$(mktemp -d /tmp/cairn-cachemounts.XXXXXX)
registry=127.0.0.1:5000
export DOCKER_HOST=unix://$BENCH_TMP/docker.sock DOCKER_BUILDKIT=1
docker=/usr/bin/docker

proxy_pid="" started_registry="" started_dockerd=""
cleanup() {
  [ -z "$proxy_pid" ] || kill "$proxy_pid" 2>/dev/null || true
  [ -z "$started_dockerd" ] || "$bench/dockerd.sh" stop >/dev/null || true
  [ -z "$started_registry" ] || "$bench/registry.sh" stop >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

addr=$(ip -4 -o addr show scope global | awk '{sub(/\/.*/, "", $4); print $4; exit}')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
log=$work/proxy.log
python3 bench/count-proxy.py "$addr" "$port" "$log" &
proxy_pid=$!
proxy=http://$addr:$port
for _ in $(seq 50); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$proxy/")" = 400 ] && break; sleep 0.1; done

"$bench/registry.sh" status | grep -q running || { "$bench/registry.sh" start >/dev/null; started_registry=1; }
$docker version >/dev/null 2>&1 || { "$bench/dockerd.sh" start overlay2 >/dev/null; started_dockerd=1; }
cat >"$work/cairn.toml" <<EOF
[[registry]]
prefix = "$registry"
location = "$registry"
insecure = true
EOF
export CAIRN_CONFIG=$work/cairn.toml

mkdir -p "$work/ctx"
cat >"$work/ctx/Dockerfile" <<EOF
FROM debian:bench
ARG BUST=0
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\
    echo "round \$BUST"; rm -f /etc/apt/apt.conf.d/docker-clean; \\
    apt-get update && apt-get install -y --no-install-recommends $packages
EOF
cache_ref=$registry/bench/cache-mounts:cache
image_ref=$registry/bench/cache-mounts:buildkit

# A fresh runner: an empty store (or builder) with only the base image, loaded untimed.
fresh_cairn() { rm -rf "$work/store"; "$cairn" --root "$work/store" load -i "$archive" -t debian:bench >/dev/null; }
fresh_docker() {
  $docker builder prune -a -f >/dev/null
  ids=$($docker images -aq); [ -z "$ids" ] || $docker rmi -f $ids >/dev/null
  $docker load -i "$archive" >/dev/null
  $docker tag "$($docker images -q | head -1)" debian:bench
}

# Runs one timed build; prints "seconds bytes debs" from the proxy's log of it.
measure() {
  : >"$log"
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; return 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" -F'\t' '
    { bytes += $3; if ($4 ~ /\.deb$/ && $2 == 200) debs++ }
    END { printf "%.2f\t%d\t%d\n", e - s, bytes, debs }' "$log"
}

cairn_build() { "$cairn" --root "$work/store" build --progress plain --build-arg "http_proxy=$proxy" "$@" "$work/ctx"; }
docker_build() { $docker build --network host --progress plain --build-arg "http_proxy=$proxy" "$@" "$work/ctx"; }

echo "seeding (BUST=0): cairn exports its cache with mounts, BuildKit pushes an inline cache" >&2
fresh_cairn
seed=$(measure cairn_build --build-arg BUST=0 --cache-to "type=registry,ref=$cache_ref,mode=max,mounts=true")
fresh_docker
dseed=$(measure docker_build --build-arg BUST=0 --build-arg BUILDKIT_INLINE_CACHE=1 -t "$image_ref")
$docker push "$image_ref" >/dev/null
# The bytes a runner pulls from the registry for the mounts (instead of from the mirror).
mount_bytes=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$registry/v2/bench/cache-mounts/manifests/cache" |
  python3 -c 'import json, sys, urllib.request
m = json.load(sys.stdin)
c = json.load(urllib.request.urlopen("http://'"$registry"'/v2/bench/cache-mounts/blobs/" + m["config"]["digest"]))
print(sum(x["layer"]["size"] for x in c.get("mounts", [])))')

mkdir -p bench/results
{
  printf '# %s cairn %s; docker %s; packages: %s\n' "$(date -u +%FT%TZ)" \
    "$("$cairn" --version)" "$($docker version -f '{{.Server.Version}}')" "$packages"
  printf 'peer\tround\tseconds\tbytes\tdebs\n'
  printf 'seed-cairn\t0\t%s\nseed-buildkit\t0\t%s\n' "$seed" "$dseed"
} >"$out"
for r in $(seq 1 "$runs"); do
  fresh_cairn
  printf 'cairn-mounts\t%s\t%s\n' "$r" "$(measure cairn_build --build-arg "BUST=$r" --cache-from "type=registry,ref=$cache_ref")" >>"$out"
  fresh_cairn
  printf 'cairn-plain\t%s\t%s\n' "$r" "$(measure cairn_build --build-arg "BUST=$r")" >>"$out"
  fresh_docker
  printf 'buildkit\t%s\t%s\n' "$r" "$(measure docker_build --build-arg "BUST=$r" --cache-from "$image_ref")" >>"$out"
done
rm -rf "$work/store"
echo "mount blobs in the registry cache: $mount_bytes bytes" | tee -a "$out"
awk -F'\t' 'NR > 2 && $1 !~ /^seed|^mount/ { n[$1]++; s[$1] += $3; b[$1] += $4; d[$1] += $5 }
  END { printf "%-14s %8s %12s %6s\n", "peer", "mean s", "bytes", "debs"
        for (p in n) printf "%-14s %8.2f %12d %6.1f\n", p, s[p] / n[p], b[p] / n[p], d[p] / n[p] }' "$out"
