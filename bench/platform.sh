#!/usr/bin/env bash
# Multi-platform builds under emulation, cairn against docker build (BuildKit), in one run:
#  1. a workload built for linux/arm64 through binfmt_misc + qemu-user-static, and for
#     linux/amd64, cold (empty store, base pulled from the local registry; BuildKit: builder prune
#     + rmi, as peers.d/docker.sh resets), and for arm64 warm (a no-op rebuild), by cairn and by
#     BuildKit;
#  2. cairn's two-platform build (--platform linux/amd64,linux/arm64, cold) against its two
#     single-platform cold builds, whose sum is what two separate builds would cost.
# The workload (-w): runheavy (default; ../shared/bench/workloads/runheavy: 10 RUN steps on
# busybox, all emulated for arm64), or crossbuild (bench/workloads/crossbuild: the same 10 steps
# in a stage pinned to $BUILDPLATFORM, so they run natively for either target, and in a
# two-platform build once; each target stage only copies the result and runs one small RUN).
# crossbuild also times its "perarch" variant's two-platform build (ARG TARGETARCH declared
# before the heavy steps: they run once per target, natively both times).
# busybox:latest in the local registry is made a two-platform index (amd64 + arm64, from
# fixtures/busybox) for the run; whatever it was before is put back at the end.
# Usage (root): bench/platform.sh [-w runheavy|crossbuild] [-r RUNS] [-Q SECONDS] [-o RESULTS.md] [CAIRN]
#   RUNS: rounds, each timing every command once (default 5); -Q: before each round, wait up to
#   SECONDS (default 120) for the machine to be quiet (< 20% CPU busy over 2 s); RESULTS.md: default
#   bench/results/DATE-platform.md (-w crossbuild: DATE-platform-crossbuild.md); CAIRN: default
#   the release build of this checkout, brought up to date here first. Idempotent set-up: a fresh
#   Debian 12 machine runs it as it is.
# The registry and dockerd of ../shared/bench are reused when running, else started and stopped.
set -euo pipefail
trap 'echo "platform.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
runs=5 quiet=120 out= workload=runheavy
while getopts "w:r:Q:o:" o; do
  case $o in
    w) workload=$OPTARG ;; r) runs=$OPTARG ;; Q) quiet=$OPTARG ;; o) out=$OPTARG ;;
    *) sed -n 2,24p "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
case $workload in
  runheavy) suffix= ;;
  crossbuild) suffix=-crossbuild ;;
  *) echo "platform.sh: no workload $workload (runheavy|crossbuild)" >&2; exit 2 ;;
esac
out=${out:-bench/results/$(date +%F)-platform$suffix.md}
[ "$(id -u)" = 0 ] || { echo "platform.sh: run as root" >&2; exit 1; }
bench=$(cd ../shared/bench && pwd)
. "$bench/lib/env.sh" # BENCH_TMP, BENCH_FS, TESTER
reg=127.0.0.1:5000

# --- set-up (idempotent) -------------------------------------------------------------------
missing=()
for p in hyperfine jq skopeo bc; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
id "$TESTER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$TESTER"
"$bench/setup-host.sh" >/dev/null   # docker.io, the journaled BENCH_FS
scripts/binfmt.sh                   # cairn's test packages (qemu-user-static...), qemu-aarch64 with F
fixtures/busybox/fetch-arm64.sh >/dev/null
if [ -n "${1:-}" ]; then
  CAIRN=$(realpath "$1")
else
  cargo build --release --locked -p cairn
  CAIRN=${CARGO_TARGET_DIR:-$PWD/target}/release/cairn
fi
export CAIRN_CONFIG=$bench/config/cairn.toml # docker.io -> the local registry, as dockerd's mirror

work=$BENCH_FS/platform$suffix
rm -rf "$work"
mkdir -p "$work"
cleanup=()
finish() {
  local i
  for ((i = ${#cleanup[@]} - 1; i >= 0; i--)); do eval "${cleanup[i]}" || true; done
}
trap finish EXIT

# The registry: reused when running (its busybox put back afterwards), else started and stopped.
if "$bench/registry.sh" status >/dev/null 2>&1; then
  echo "registry already running, reusing it"
else
  "$bench/registry.sh" start
  cleanup+=("'$bench/registry.sh' stop")
fi
for repo in busybox library/busybox; do
  if skopeo inspect --raw --tls-verify=false "docker://$reg/$repo:latest" >/dev/null 2>&1; then
    skopeo copy -q --all --src-tls-verify=false "docker://$reg/$repo:latest" \
      "oci:$work/previous-${repo//\//-}:latest"
    cleanup+=("skopeo copy -q --all --dest-tls-verify=false 'oci:$work/previous-${repo//\//-}:latest' 'docker://$reg/$repo:latest'")
  fi
done
# dockerd: reused when running, else started and stopped (peers.d/docker.sh's mark).
"$bench/peer.sh" docker setup
cleanup+=("'$bench/peer.sh' docker teardown")

# busybox:latest as a two-platform index, under both names the peers may ask for (cairn's
# config maps docker.io/library/busybox to library/busybox; dockerd's mirror asks for the same).
fixtures/busybox/make.sh "$work/bb-amd64" "$CAIRN"
fixtures/busybox/make.sh "$work/bb-arm64" "$CAIRN" arm64
fixtures/busybox/make-index.sh "$work/bb-index" "$work/bb-amd64" "$work/bb-arm64"
for repo in busybox library/busybox; do
  skopeo copy -q --all --dest-tls-verify=false "oci:$work/bb-index:latest" "docker://$reg/$repo:latest"
done
[ "$(skopeo inspect --raw --tls-verify=false "docker://$reg/library/busybox:latest" |
  jq -r '[.manifests[].platform.architecture] | join(",")')" = amd64,arm64 ] ||
  { echo "platform.sh: $reg/library/busybox:latest is not the amd64+arm64 index" >&2; exit 1; }

# Contexts: the workload as it is (timed), and a copy that says where its RUN steps ran (the check).
if [ "$workload" = runheavy ]; then
  "$bench/workloads/runheavy/gen.sh" "$work/ctx" >/dev/null
  "$bench/workloads/runheavy/gen.sh" "$work/check" >/dev/null
  sed -i '/^CMD /i RUN echo "arch-check: $(uname -m)"' "$work/check/Dockerfile"
else
  # ctx: the shared variant (timed), ctx-perarch: the perarch one; their check copies print,
  # first thing in the build stage, the machine its heavy steps run on.
  bench/workloads/crossbuild/gen.sh "$work/ctx" shared >/dev/null
  bench/workloads/crossbuild/gen.sh "$work/ctx-perarch" perarch >/dev/null
  bench/workloads/crossbuild/gen.sh "$work/check" shared >/dev/null
  bench/workloads/crossbuild/gen.sh "$work/check-perarch" perarch >/dev/null
  sed -i '/^COPY seed.txt /a RUN echo "heavy-ran: $(uname -m)"' "$work/check/Dockerfile" \
    "$work/check-perarch/Dockerfile"
fi
chmod -R a+rX "$work"/ctx* "$work"/check*

export DOCKER_HOST=unix://$BENCH_TMP/docker.sock DOCKER_BUILDKIT=1
D=/usr/bin/docker
S=$work/store      # cold cairn builds
P=$work/perarch    # cold cairn builds of crossbuild's perarch variant
W=$work/warm       # warm cairn builds
cai() { "$CAIRN" --root "$1" build --progress plain "${@:2}"; }
dkr() { $D build --progress plain --network host "$@"; }
fail() { echo "platform.sh: $*" >&2; exit 1; }
# The tag names an index of an amd64 and an arm64 image, each config saying its architecture
# (read from the store: `cairn inspect` takes single images only).
ref_digest() { # STORE NAME -> the digest the tag names in the store's index.json
  jq -r --arg n "docker.io/library/$2:latest" '.manifests[]
    | select((.annotations // {})["org.opencontainers.image.ref.name"] == $n) | .digest' \
    "$1/index.json" | head -1
}
two_arches() { # STORE NAME -> "amd64=amd64,arm64=arm64" (index platform=config architecture)
  local b=$1/blobs/sha256 idx
  idx=$(ref_digest "$1" "$2")
  [ -n "$idx" ] || return 0
  jq -r '.manifests[] | "\(.platform.architecture) \(.digest)"' "$b/${idx#sha256:}" |
    while read -r arch m; do
      c=$(jq -r .config.digest "$b/${m#sha256:}")
      echo "$arch=$(jq -r .architecture "$b/${c#sha256:}")"
    done | paste -sd,
}
cairn_file() { # STORE NAME ARCH PATH -> the file, from the image's newest layer holding it
  local b=$1/blobs/sha256 d m l f # (NAME an image, or an index whose ARCH manifest is read)
  d=$(ref_digest "$1" "$2")
  [ -n "$d" ] || return 0
  if jq -e .manifests "$b/${d#sha256:}" >/dev/null; then
    m=$(jq -r --arg a "$3" '.manifests[] | select(.platform.architecture == $a) | .digest' \
      "$b/${d#sha256:}" | head -1)
  else
    m=$d
  fi
  for l in $(jq -r '.layers[].digest' "$b/${m#sha256:}" | tac); do
    f=$(tar -tf "$b/${l#sha256:}" | grep -xE "(\./)?${4#/}" | head -1) || true
    if [ -n "$f" ]; then tar -xOf "$b/${l#sha256:}" "$f"; return 0; fi
  done
}
docker_file() { # NAME PATH -> the file in docker's image (through a container created, never started)
  local c
  c=$($D create "$1" 2>/dev/null)
  $D cp "$c:$2" - | tar -xO
  $D rm "$c" >/dev/null
}
machine_of() { case $1 in amd64) echo x86_64 ;; arm64) echo aarch64 ;; esac; }

if [ "$workload" = runheavy ]; then
# --- checks before timing: the RUN steps really ran as aarch64, the images really are arm64 ---
"$bench/peer.sh" docker reset >/dev/null
dkr --platform linux/arm64 -t platform-check "$work/check" >"$work/check-docker.log" 2>&1 ||
  { tail -30 "$work/check-docker.log" >&2; fail "docker build --platform linux/arm64 failed"; }
grep -q 'arch-check: aarch64' "$work/check-docker.log" || fail "BuildKit's RUN did not print aarch64"
[ "$($D image inspect -f '{{.Architecture}}' platform-check)" = arm64 ] || fail "docker's image is not arm64"
cai "$work/check-store" --platform linux/arm64 -t platform-check "$work/check" >"$work/check-cairn.log" 2>&1 ||
  { tail -30 "$work/check-cairn.log" >&2; fail "cairn build --platform linux/arm64 failed"; }
grep -q 'arch-check: aarch64' "$work/check-cairn.log" || fail "cairn's RUN did not print aarch64"
"$CAIRN" --root "$work/check-store" inspect platform-check >"$work/check-cairn.json"
[ "$(jq -r '.[0].Architecture' "$work/check-cairn.json")" = arm64 ] ||
  fail "cairn's image is not arm64: $(head -c 400 "$work/check-cairn.json")"
cai "$work/check-store2" --platform linux/amd64,linux/arm64 -t platform-check "$work/check" \
  >"$work/check-two.log" 2>&1 || { tail -30 "$work/check-two.log" >&2; fail "cairn's two-platform build failed"; }
grep -q 'arch-check: aarch64' "$work/check-two.log" && grep -q 'arch-check: x86_64' "$work/check-two.log" ||
  fail "cairn's two-platform build did not run one RUN of each architecture"
[ "$(two_arches "$work/check-store2" platform-check)" = amd64=amd64,arm64=arm64 ] ||
  fail "cairn's two-platform image is not an index of amd64 and arm64: $(two_arches "$work/check-store2" platform-check)"
echo "checks passed: both builders' RUN printed aarch64, both images are arm64"
else
# --- checks before timing (crossbuild): for either target both builders ran the heavy steps
# natively; the images are of the target's architecture, /machine (the target stage's RUN) says
# its machine and /w/target (the build stage's last RUN) the target's arch; cairn's two-platform
# build ran the shared variant's heavy steps once, the perarch one's twice, natively each time.
for p in amd64 arm64; do
  "$bench/peer.sh" docker reset >/dev/null
  dkr --platform linux/$p -t platform-check "$work/check" >"$work/check-docker-$p.log" 2>&1 ||
    { tail -30 "$work/check-docker-$p.log" >&2; fail "docker build --platform linux/$p failed"; }
  grep -q 'heavy-ran: x86_64' "$work/check-docker-$p.log" ||
    fail "BuildKit's build stage did not run natively for linux/$p"
  [ "$($D image inspect -f '{{.Architecture}}' platform-check)" = $p ] || fail "docker's image is not $p"
  [ "$(docker_file platform-check /machine)" = "$(machine_of $p)" ] &&
    [ "$(docker_file platform-check /w/target)" = $p ] ||
    fail "docker's $p image: /machine $(docker_file platform-check /machine), /w/target $(docker_file platform-check /w/target)"
  cai "$work/check-store-$p" --platform linux/$p -t platform-check "$work/check" \
    >"$work/check-cairn-$p.log" 2>&1 ||
    { tail -30 "$work/check-cairn-$p.log" >&2; fail "cairn build --platform linux/$p failed"; }
  grep -q 'heavy-ran: x86_64' "$work/check-cairn-$p.log" ||
    fail "cairn's build stage did not run natively for linux/$p"
  [ "$("$CAIRN" --root "$work/check-store-$p" inspect platform-check | jq -r '.[0].Architecture')" = $p ] ||
    fail "cairn's image is not $p"
  [ "$(cairn_file "$work/check-store-$p" platform-check $p /machine)" = "$(machine_of $p)" ] &&
    [ "$(cairn_file "$work/check-store-$p" platform-check $p /w/target)" = $p ] ||
    fail "cairn's $p image: /machine $(cairn_file "$work/check-store-$p" platform-check $p /machine)"
done
for v in shared perarch; do
  c=$work/check
  [ $v = shared ] || c=$work/check-perarch
  cai "$work/check-two-$v" --platform linux/amd64,linux/arm64 -t platform-check "$c" \
    >"$work/check-two-$v.log" 2>&1 ||
    { tail -30 "$work/check-two-$v.log" >&2; fail "cairn's two-platform build ($v) failed"; }
  [ "$(two_arches "$work/check-two-$v" platform-check)" = amd64=amd64,arm64=arm64 ] ||
    fail "cairn's two-platform image ($v): $(two_arches "$work/check-two-$v" platform-check)"
  for p in amd64 arm64; do
    [ "$(cairn_file "$work/check-two-$v" platform-check $p /machine)" = "$(machine_of $p)" ] &&
      [ "$(cairn_file "$work/check-two-$v" platform-check $p /w/target)" = $p ] ||
      fail "cairn's two-platform image ($v), $p: /machine $(cairn_file "$work/check-two-$v" platform-check $p /machine)"
  done
  native=$(grep -c 'heavy-ran: x86_64' "$work/check-two-$v.log" || true)
  emulated=$(grep -c 'heavy-ran: aarch64' "$work/check-two-$v.log" || true)
  want=1
  [ $v = shared ] || want=2
  [ "$native $emulated" = "$want 0" ] ||
    fail "cairn's two-platform build ($v) ran the heavy steps $native times natively, $emulated emulated (want $want, 0)"
  eval "heavy_runs_$v=$native"
done
echo "checks passed: images amd64 and arm64 with /machine x86_64 and aarch64; heavy steps native;" \
  "cairn's two-platform build ran them once (shared), twice (perarch)"
fi

# Where cairn's emulated time goes: one cold build of each platform with --debug-timings
# (crossbuild: and of both platforms, of each variant).
for p in amd64 arm64; do
  rm -rf "$work/t-$p"
  cai "$work/t-$p" --debug-timings --platform linux/$p -t x "$work/ctx" >"$work/timings-$p.log" 2>&1
done
if [ "$workload" = crossbuild ]; then
  for v in shared perarch; do
    c=$work/ctx
    [ $v = shared ] || c=$work/ctx-perarch
    rm -rf "$work/t-two-$v"
    cai "$work/t-two-$v" --debug-timings --platform linux/amd64,linux/arm64 -t x "$c" \
      >"$work/timings-two-$v.log" 2>&1
  done
fi

# The floor under emulation, without any builder: in a plain chroot of each busybox rootfs (in
# a mount namespace of its own, the host's /dev bound in, as a RUN step has one), 300 execs of
# /bin/true, then the workload's RUN commands, one sh -c each, in order. binfmt_misc starts
# qemu-aarch64-static for every arm64 exec. (runheavy only: crossbuild's heavy steps run natively.)
if [ "$workload" = runheavy ]; then
sed -n 's/^RUN //p' "$work/ctx/Dockerfile" >"$work/run-lines"
cat >"$work/floor.sh" <<'FLOOR'
#!/bin/bash
# floor.sh ROOTFS RUN_LINES -> "MS_PER_EXEC SECONDS_FOR_THE_RUN_LINES"
set -euo pipefail
r=$1
mount --make-rprivate /
mount --rbind /dev "$r/dev"
t0=$(date +%s.%N)
chroot "$r" /bin/sh -c 'for i in $(seq 300); do /bin/true; done'
t1=$(date +%s.%N)
while IFS= read -r cmd; do chroot "$r" /bin/sh -c "$cmd"; done <"$2"
t2=$(date +%s.%N)
printf '%.1f %.2f\n' "$(echo "($t1 - $t0) * 1000 / 300" | bc -l)" "$(echo "$t2 - $t1" | bc -l)"
FLOOR
chmod +x "$work/floor.sh"
for p in amd64 arm64; do
  l=$work/bb-$p/blobs/sha256
  m=$(jq -r '.manifests[0].digest' "$work/bb-$p/index.json")
  layer=$(jq -r '.layers[0].digest' "$l/${m#sha256:}")
  mkdir -p "$work/rootfs-$p"
  tar -xf "$l/${layer#sha256:}" -C "$work/rootfs-$p"
  cp "$work/ctx/seed.txt" "$work/rootfs-$p/seed.txt"
  read -r "exec_ms_$p" "runs_s_$p" < <(unshare --mount --fork "$work/floor.sh" "$work/rootfs-$p" "$work/run-lines") ||
    fail "the floor in a chroot of the $p rootfs failed"
done
fi
# docker 20.10's built-in BuildKit takes one platform a build: what it says to two.
multi_err=$($D build --platform linux/amd64,linux/arm64 --network host -t x "$work/ctx" 2>&1 | tail -1) || true

# --- timing -----------------------------------------------------------------------------------
# Every cold prepare empties the builder's state and syncs; warm prepares make sure the image is
# built (a no-op once it is), so the timed command is a no-op rebuild.
cold_cairn="rm -rf $S; mkdir -p $S; sync"
cold_docker="'$bench/peer.sh' docker reset >/dev/null 2>&1; sync"
# Commands only (hyperfine discards their output); DOCKER_HOST and DOCKER_BUILDKIT=1 are exported.
load_before=$(cut -d" " -f1-3 /proc/loadavg)
# Interleaved: each round runs every command once, in this order, so that the machine's drifting
# load falls on all of them alike (hyperfine would run all runs of one command, then the next).
timed=(
  -p "$cold_cairn" -n cairn-amd64-cold "$CAIRN --root $S build --platform linux/amd64 -t x $work/ctx"
  -p "$cold_docker" -n docker-amd64-cold "$D build --platform linux/amd64 --network host -t x $work/ctx"
  -p "$cold_cairn" -n cairn-arm64-cold "$CAIRN --root $S build --platform linux/arm64 -t x $work/ctx"
  -p "$cold_docker" -n docker-arm64-cold "$D build --platform linux/arm64 --network host -t x $work/ctx"
  -p "$CAIRN --root $W build --platform linux/arm64 -t x $work/ctx"
  -n cairn-arm64-warm "$CAIRN --root $W build --platform linux/arm64 -t x $work/ctx"
  -p "$D build --platform linux/arm64 --network host -t x $work/ctx"
  -n docker-arm64-warm "$D build --platform linux/arm64 --network host -t x $work/ctx"
  -p "$cold_cairn" -n cairn-two-cold "$CAIRN --root $S build --platform linux/amd64,linux/arm64 -t x $work/ctx"
)
[ "$workload" = runheavy ] || timed+=(
  -p "rm -rf $P; mkdir -p $P; sync"
  -n cairn-two-perarch-cold "$CAIRN --root $P build --platform linux/amd64,linux/arm64 -t x $work/ctx-perarch"
)
# The share of CPU busy over 2 s while this script sleeps: other sessions' load (as run-peers.sh).
busy_pct() {
  local a b bi bt=0 i
  read -r -a a < <(head -1 /proc/stat); sleep 2; read -r -a b < <(head -1 /proc/stat)
  bi=$(((b[4] + b[5]) - (a[4] + a[5])))
  for i in 1 2 3 4 5 6 7 8; do bt=$((bt + b[i] - a[i])); done
  echo $((bt > 0 ? 100 * (bt - bi) / bt : 0))
}
: >"$work/rounds"
for r in $(seq "$runs"); do
  waited=0 busy=$(busy_pct)
  while [ "$busy" -ge 20 ] && [ $waited -lt "$quiet" ]; do sleep 8; waited=$((waited + 10)); busy=$(busy_pct); done
  echo "round $r/$runs: foreign CPU busy $busy% (after waiting ${waited}s), load $(cut -d" " -f1-3 /proc/loadavg)" |
    tee -a "$work/rounds"
  hyperfine -w 0 -r 1 --style basic --export-json "$work/hyperfine-$r.json" "${timed[@]}" \
    >"$work/hyperfine-$r.log"
done

# After timing, the images the unmodified Dockerfile gave are what they should be (docker's
# arm64 build came last of docker's).
"$CAIRN" --root "$W" inspect x | jq -e '.[0].Architecture' | grep -qx '"arm64"' ||
  fail "cairn's warm image is not arm64"
[ "$($D image inspect -f '{{.Architecture}}' x)" = arm64 ] || fail "docker's warm image is not arm64"
# The two-platform store of the last cold run names an index of both.
[ "$(two_arches "$S" x)" = amd64=amd64,arm64=arm64 ] || fail "cairn's timed two-platform image: $(two_arches "$S" x)"
if [ "$workload" = crossbuild ]; then # and their /machine says so
  [ "$(cairn_file "$W" x arm64 /machine)" = aarch64 ] || fail "cairn's warm image's /machine is not aarch64"
  [ "$(docker_file x /machine)" = aarch64 ] || fail "docker's warm image's /machine is not aarch64"
  [ "$(two_arches "$P" x)" = amd64=amd64,arm64=arm64 ] || fail "cairn's timed perarch image: $(two_arches "$P" x)"
  for st in "$S" "$P"; do
    [ "$(cairn_file "$st" x amd64 /machine) $(cairn_file "$st" x arm64 /machine)" = "x86_64 aarch64" ] ||
      fail "cairn's timed two-platform image in $st: /machine is not x86_64 and aarch64"
  done
fi
load_after=$(cut -d" " -f1-3 /proc/loadavg)

# --- results ----------------------------------------------------------------------------------
timings() { # LOG -> "process 5.94 s, layer 0.08 s, ..." (cairn --debug-timings, summed by phase)
  awk '$2 == "timing:" {s[$3] += $4} END {for (k in s) printf "%s %.2f s\n", k, s[k]}' "$1" |
    sort -k2 -nr | paste -sd, | sed 's/,/, /g'
}
if [ "$workload" = runheavy ]; then
  title="Multi-platform builds under emulation: cairn vs docker build (BuildKit)"
  flag=
  about_workload="../shared/bench/workloads/runheavy, unmodified (10 RUN steps on busybox)"
  perarch_row=
  checked="Checked before timing, with a copy of the workload that adds \`RUN echo \"arch-check: \$(uname -m)\"\`: both
builders' RUN printed \`aarch64\` for linux/arm64; docker's image says \`arm64\` (\`docker image inspect -f
'{{.Architecture}}'\`), cairn's too (\`cairn inspect\`); cairn's two-platform build ran that RUN once as
x86_64 and once as aarch64 and tagged an index of an amd64 and an arm64 image. After timing, the
unmodified workload's images were checked the same way."
else
  title="Multi-platform builds, the cross-compile shape (crossbuild): cairn vs docker build (BuildKit)"
  flag=" -w crossbuild"
  about_workload="bench/workloads/crossbuild, its shared variant (\`gen.sh OUT shared\`): runheavy's 10 RUN
  steps (and seed) in a \`FROM --platform=\$BUILDPLATFORM busybox AS build\` stage, then \`ARG TARGETARCH\`
  and \`RUN echo \$TARGETARCH > /w/target\`; the target stage \`FROM busybox\`, \`COPY --from=build /w /w\`,
  \`RUN uname -m > /machine\`. The heavy steps run natively for either target; their cache keys do
  not hold the target, so cairn's two-platform build runs them once. The perarch variant (\`gen.sh
  OUT perarch\`, CTX-PERARCH) declares \`ARG TARGETARCH\` first in the build stage instead: its heavy
  steps see the target and run once per target, natively each time"
  perarch_row="| cairn-two-perarch-cold | \`rm -rf STORE2\` | \`cairn --root STORE2 build --platform linux/amd64,linux/arm64 -t x CTX-PERARCH\` |"
  checked="Checked before timing, with copies of both variants whose build stage first runs \`RUN echo
\"heavy-ran: \$(uname -m)\"\`: for linux/amd64 and for linux/arm64, both builders' heavy steps ran on
x86_64, their images say \`amd64\` / \`arm64\` (\`docker image inspect\`, \`cairn inspect\`), /machine in
them says \`x86_64\` / \`aarch64\` and /w/target \`amd64\` / \`arm64\` (read from the image: \`docker
cp\` out of a created container, cairn's layer blobs); cairn's two-platform builds tagged an index of
an amd64 and an arm64 image with the same /machine and /w/target, and printed \`heavy-ran: x86_64\`
(counted) $heavy_runs_shared time(s) for the shared variant, $heavy_runs_perarch for the perarch one,
never \`aarch64\`. After timing, the timed images were checked the same way (architectures, /machine)."
fi
emulated="emulated "
[ "$workload" = runheavy ] || emulated=
mkdir -p "$(dirname "$out")"
{
  cat <<EOF
# $title — $(date +%F)

Written by \`bench/platform.sh$flag -r $runs\`, all in one run: compare the ratios, not absolute times
across runs. $runs rounds, each running every command below once through hyperfine (\`-r 1\`, its
prepare first), in the order listed, so that the machine's drifting load falls on all commands
alike; the medians are over the rounds.

## Machine
- $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r); shared with other sessions: load average $load_before before timing, $load_after after
- state on $BENCH_FS ($(findmnt -no FSTYPE --target "$BENCH_FS"), the journaled loop filesystem of ../shared/bench/setup-host.sh)
- emulation: $(/usr/bin/qemu-aarch64-static --version | head -1), binfmt_misc \`qemu-aarch64\` flags \`$(sed -n 's/^flags: //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)\`
- cairn: $("$CAIRN" --version) (release build), root, \`CAIRN_CONFIG=../shared/bench/config/cairn.toml\` (docker.io -> 127.0.0.1:5000)
- BuildKit: dockerd $($D version -f '{{.Server.Version}}') with its built-in BuildKit, overlay2, \`--registry-mirror http://127.0.0.1:5000\`; /usr/bin/docker with DOCKER_BUILDKIT=1
- base: \`busybox:latest\` in the local registry (as \`busybox\` and \`library/busybox\`) is a two-platform OCI index (amd64 from /bin/busybox, arm64 from Debian's busybox-static:arm64; fixtures/busybox/make.sh + make-index.sh); both builders pull it in every cold run
- workload: $about_workload

## Commands (in a round's order)
| name | prepare (a cold one then runs \`sync\`) | command |
|---|---|---|
| cairn-amd64-cold | \`rm -rf STORE\` | \`cairn --root STORE build --platform linux/amd64 -t x CTX\` |
| docker-amd64-cold | \`peer.sh docker reset\` (builder prune -a, rmi all, system prune -a) | \`docker build --platform linux/amd64 --network host -t x CTX\` |
| cairn-arm64-cold | \`rm -rf STORE\` | \`cairn --root STORE build --platform linux/arm64 -t x CTX\` |
| docker-arm64-cold | \`peer.sh docker reset\` | \`docker build --platform linux/arm64 --network host -t x CTX\` |
| cairn-arm64-warm | the same build (a no-op once built) | \`cairn --root WARM build --platform linux/arm64 -t x CTX\` |
| docker-arm64-warm | the same build | \`docker build --platform linux/arm64 --network host -t x CTX\` |
| cairn-two-cold | \`rm -rf STORE\` | \`cairn --root STORE build --platform linux/amd64,linux/arm64 -t x CTX\` |
$perarch_row

$checked

Before each round (up to ${quiet} s waited for < 20% foreign CPU):
\`\`\`
$(cat "$work/rounds")
\`\`\`

## Medians (seconds)
EOF
  python3 - "$workload" "$work"/hyperfine-*.json <<'PY'
import json, statistics, sys
r = {}
workload = sys.argv[1]
cross = workload == "crossbuild"
for f in sys.argv[2:]:
    for x in json.load(open(f))["results"]:
        e = r.setdefault(x["command"], {"times": [], "cpu": []})
        e["times"] += x["times"]
        e["cpu"].append(x["user"] + x["system"])
m = lambda n: statistics.median(r[n]["times"])
cpu = lambda n: statistics.median(r[n]["cpu"])
rng = lambda n: "%.2f–%.2f" % (min(r[n]["times"]), max(r[n]["times"]))
print("| build | cairn | BuildKit | cairn/BuildKit | cairn min–max | BuildKit min–max | cairn CPU (user+sys) |")
print("|---|--:|--:|--:|--:|--:|--:|")
arm = "linux/arm64, cold (heavy stage native, one RUN emulated)" if cross else "linux/arm64, cold (emulated)"
for label, k in [(arm, "arm64-cold"),
                 ("linux/arm64, warm (no-op rebuild)", "arm64-warm"),
                 ("linux/amd64, cold (native)", "amd64-cold")]:
    c, d = "cairn-" + k, "docker-" + k
    print("| %s | %.2f | %.2f | %.2fx | %s | %s | %.2f |" % (label, m(c), m(d), m(c) / m(d), rng(c), rng(d), cpu(c)))
sc = m("cairn-amd64-cold") + m("cairn-arm64-cold")
sd = m("docker-amd64-cold") + m("docker-arm64-cold")
print("| sum of the two single-platform cold builds | %.2f | %.2f | %.2fx | | | %.2f |"
      % (sc, sd, sc / sd, cpu("cairn-amd64-cold") + cpu("cairn-arm64-cold")))
two = m("cairn-two-cold")
print("| linux/amd64,linux/arm64 in one build, cold | %.2f | n/a (two builds: the sum) | %.2fx | %s | | %.2f |"
      % (two, two / sd, rng("cairn-two-cold"), cpu("cairn-two-cold")))
if cross:
    pa = m("cairn-two-perarch-cold")
    print("| the same, perarch variant (heavy steps once per target) | %.2f | n/a | %.2fx | %s | | %.2f |"
          % (pa, pa / sd, rng("cairn-two-perarch-cold"), cpu("cairn-two-perarch-cold")))
print()
print("## Ratios")
print("- cairn two-platform / BuildKit's two single-platform builds (their sum): **%.2fx**" % (two / sd))
print("- cairn/BuildKit: arm64 cold **%.2fx**, arm64 warm **%.2fx**, amd64 cold %.2fx"
      % (m("cairn-arm64-cold") / m("docker-arm64-cold"), m("cairn-arm64-warm") / m("docker-arm64-warm"),
         m("cairn-amd64-cold") / m("docker-amd64-cold")))
mx = max(m("cairn-amd64-cold"), m("cairn-arm64-cold"))
print("- cairn two-platform / the sum of its two single-platform builds: **%.2fx** (target < 0.7x)" % (two / sc))
print("- cairn two-platform / its slower single-platform build: %.2fx (1.00x: the faster platform's"
      " graph wholly hidden behind the slower one's)" % (two / mx))
print("- the best any two-platform build can reach against the sum here, slower/sum: %.2fx"
      " (arm64 is %.0f%% of the sum)" % (mx / sc, 100 * m("cairn-arm64-cold") / sc))
if cross:
    print("- perarch variant: two-platform / the sum %.2fx; the shared variant's two-platform build takes"
          " %.2fx of the perarch one's" % (pa / sc, two / pa))
PY
  cat <<EOF

## Where cairn's ${emulated}time goes
\`cairn build --debug-timings\`, one cold build of each platform before timing, summed by phase:
- linux/amd64: $(timings "$work/timings-amd64.log")
- linux/arm64: $(timings "$work/timings-arm64.log")
EOF
  if [ "$workload" = crossbuild ]; then
    cat <<EOF
- linux/amd64,linux/arm64, shared variant: $(timings "$work/timings-two-shared.log")
- linux/amd64,linux/arm64, perarch variant: $(timings "$work/timings-two-perarch.log")

"process" is the time the RUN steps' own processes take (in a two-platform build, summed over both
platforms' threads).
EOF
  else
    cat <<EOF

"process" is the time the RUN steps' own processes take. The floor without any builder, in a plain
chroot of each busybox rootfs (one run each, before timing):
- the workload's 10 RUN commands, one \`sh -c\` each in order: $runs_s_amd64 s native, $runs_s_arm64 s for arm64
- 300 execs of \`/bin/true\`: $exec_ms_amd64 ms an exec native, $exec_ms_arm64 ms for arm64 (binfmt_misc
  starts qemu-aarch64-static for every arm64 exec, and its translated code dies with the process)
EOF
  fi
  cat <<EOF

## BuildKit and two platforms
docker 20.10's \`docker build\` with its built-in BuildKit builds one platform a build (multi-platform
needs buildx with a docker-container builder, which this docker has not). Asked for two, it answers:
\`$multi_err\`
so its two-platform cost is taken as the sum of its two single-platform builds.
EOF
} >"$out"
cat "$out"
