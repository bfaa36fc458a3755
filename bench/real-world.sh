#!/usr/bin/env bash
# Real-world builds (apt installs, a compiler, multi-stage) timed for cairn against docker build
# (BuildKit), peers interleaved run by run, with every apt download served by one local caching
# proxy (Debian's apt-cacher-ng) so that the network is out of the ratio. Each Dockerfile gets
# `ARG http_proxy=...` after its FROM lines: both builders give it to RUN as the environment.
# Usage (root): bench/real-world.sh [-r RUNS] [-p PEERS] [-w WORKLOADS] [-s SCENARIOS] [CAIRN]
#   PEERS: ../shared/bench/peers.d names (default docker,cairn,cairn-rootless)
#   WORKLOADS: aptheavy,compile from ../shared/bench, buildessential from bench/workloads
#   SCENARIOS: cold (empty store, base pulled), warm (same again), touch (one file changed)
# Needs ../shared/bench set up once (setup-host.sh, make-base.sh debian busybox). Writes
# bench/results/DATE-real-world.tsv (one line a build) and prints medians per peer.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 peers=docker,cairn,cairn-rootless workloads=aptheavy,compile,buildessential
scenarios=cold,warm,touch
while getopts "r:p:w:s:" o; do
  case $o in
    r) runs=$OPTARG ;; p) peers=$OPTARG ;; w) workloads=$OPTARG ;; s) scenarios=$OPTARG ;;
    *) sed -n 2,11p "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
export CAIRN=${1:-$PWD/target/release/cairn}
bench=$(cd ../shared/bench && pwd)
export BENCH_FS=${BENCH_FS:-/tmp/bench-fs}
out=bench/results/$(date +%F)-real-world.tsv

install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
install apt-cacher-ng hyperfine
# The rootless peer builds as "tester", with the subordinate ids setup-host.sh gives it.
id "${TESTER:-tester}" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "${TESTER:-tester}"
"$bench/setup-host.sh" >/dev/null

# The proxy listens on the host's first non-loopback address: a cairn step's network reaches
# the host there (never on loopback), docker's --network host steps reach it anywhere.
addr=$(ip -4 -o addr show scope global | awk '{sub(/\/.*/, "", $4); print $4; exit}')
[ -n "$addr" ] || { echo "no non-loopback IPv4 address for the proxy" >&2; exit 1; }
acng=$BENCH_FS/apt-cacher-ng
if ! curl -fsS -o /dev/null "http://$addr:3142/acng-report.html"; then
  mkdir -p "$acng/cache" "$acng/log" "$acng/run"
  chown -R apt-cacher-ng: "$acng" 2>/dev/null || true
  # The host's own apt proxy, if it has one, is the cache's way out.
  up=$(apt-config dump 2>/dev/null | awk -F'"' '/^Acquire::http::Proxy /{print $2; exit}')
  # Debian requests go to the host's own mirror (the one the base was bootstrapped from), not
  # the package's default backend, which this network may not reach.
  mirror=$({ cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } |
    awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}
         /^deb / && $0 ~ / bookworm / {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}')
  /usr/sbin/apt-cacher-ng -c /etc/apt-cacher-ng ForeGround=0 BindAddress="$addr" Port=3142 \
    CacheDir="$acng/cache" LogDir="$acng/log" SocketPath="$acng/run/socket" \
    PidFile="$acng/run/pid" ${up:+Proxy=$up} \
    ${mirror:+"Remap-debrep=file:deb_mirror*.gz /debian ; ${mirror%/}/"}
  for _ in $(seq 50); do curl -fsS -o /dev/null "http://$addr:3142/acng-report.html" && break; sleep 0.1; done
fi
proxy=http://$addr:3142

# Contexts: the shared generators, then the proxy ARG after every FROM.
ctxroot=$BENCH_FS/real-world
mkdir -p "$ctxroot"
IFS=, read -r -a WL <<<"$workloads"
wdir() { if [ -d "bench/workloads/$1" ]; then echo "bench/workloads/$1"; else echo "$bench/workloads/$1"; fi; }
for w in "${WL[@]}"; do
  "$(wdir "$w")/gen.sh" "$ctxroot/$w" >/dev/null
  sed -i -E "/^FROM /a ARG http_proxy=$proxy" "$ctxroot/$w/Dockerfile"
  chmod -R a+rX "$ctxroot/$w"
done

"$bench/registry.sh" start --push-bases >/dev/null
IFS=, read -r -a PS <<<"$peers"
for p in "${PS[@]}"; do "$bench/peer.sh" "$p" setup >/dev/null; done
has() { [[ ",$1," == *",$2,"* ]]; }
[ -f "$out" ] || printf 'workload\tscenario\tpeer\trun\tseconds\tstatus\n' >"$out"
build() { # peer workload scenario run
  local log t0 t1 st=ok
  log=$(mktemp)
  t0=$(date +%s.%N)
  "$bench/peer.sh" "$1" build "$ctxroot/$2" "bench-$2:latest" >"$log" 2>&1 || st=failed
  t1=$(date +%s.%N)
  [ $st = ok ] || { echo "$1 $2 $3 failed:" >&2; tail -5 "$log" >&2; }
  rm -f "$log"
  printf '%s\t%s\t%s\t%s\t%.3f\t%s\n' "$2" "$3" "$1" "$4" "$(echo "$t1 - $t0" | bc)" $st | tee -a "$out"
}
# Warm the proxy once (untimed), so that no peer pays the first download.
for w in "${WL[@]}"; do
  "$bench/peer.sh" "${PS[0]}" reset >/dev/null
  "$bench/peer.sh" "${PS[0]}" build "$ctxroot/$w" "bench-$w:latest" >/dev/null 2>&1 || true
done
for r in $(seq "$runs"); do
  for w in "${WL[@]}"; do
    for p in "${PS[@]}"; do
      "$bench/peer.sh" "$p" reset >/dev/null
      has "$scenarios" cold && build "$p" "$w" cold "$r"
      has "$scenarios" cold || "$bench/peer.sh" "$p" build "$ctxroot/$w" "bench-$w:latest" >/dev/null 2>&1
      has "$scenarios" warm && build "$p" "$w" warm "$r"
      if has "$scenarios" touch; then
        echo "# touched $r $p" >>"$ctxroot/$w/$(cat "$(wdir "$w")/touch")"
        build "$p" "$w" touch "$r"
      fi
    done
  done
done
for p in "${PS[@]}"; do "$bench/peer.sh" "$p" teardown >/dev/null || true; done
# Medians of this run's lines (the file may hold earlier runs of the day).
tail -n "$(( ${#WL[@]} * ${#PS[@]} * runs * $(tr , '\n' <<<"$scenarios" | wc -l) ))" "$out" |
  python3 -c '
import sys, statistics, collections
v = collections.defaultdict(list)
for line in sys.stdin:
    w, s, p, r, sec, st = line.rstrip("\n").split("\t")
    if st == "ok":
        v[(w, s, p)].append(float(sec))
for k in sorted(v):
    print(*k, "%.2f" % statistics.median(v[k]))
'
