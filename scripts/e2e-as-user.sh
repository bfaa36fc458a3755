#!/usr/bin/env bash
# Runs the end-to-end test executables as an unprivileged user with /etc/subuid and /etc/subgid
# ranges, from a staged copy that user can read. Called by scripts/test.sh after a root run.
# By hand: `scripts/e2e-as-user.sh [TEST [FILTER...]]` runs one test binary (tests/tests/TEST.rs),
# with libtest's FILTER arguments, after `cargo build -p cairn`.
set -euo pipefail
cd "$(dirname "$0")/.."

user=${CAIRN_TEST_USER:-cairn-test}
if [ "$(id -u)" -ne 0 ]; then
  # Already unprivileged: the ordinary test run was the unprivileged run.
  echo "e2e-as-user: not root; the suite already ran as $(id -un)"
  exit 0
fi

id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
# The in_docker tests talk to the Docker daemon, whose socket is the docker group's (docker.io
# makes the group). runuser below sets the user's groups from /etc/group, so it takes effect.
usermod -aG docker "$user"
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  grep -q "^$user:" "$f" || echo "$user:200000:65536" >>"$f"
done

# The test executables of the e2e package, as cargo built them.
mapfile -t exes < <(cargo test -p cairn-e2e --locked --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])
')
[ ${#exes[@]} -gt 0 ] || { echo "e2e-as-user: no end-to-end test executables found" >&2; exit 1; }

stage=$(mktemp -d /tmp/cairn-e2e.XXXXXX)
trap 'rm -rf "$stage"' EXIT
# The static cairn that the in_docker tests put in cairn's image (scripts/dist.sh built it).
dist_bin=${CAIRN_DIST_BIN:-target/dist/cairn}
if [ ! -x "$dist_bin" ] && [ -n "${1:-}" ] && [ "$1" != in_docker ]; then
  # One test binary by hand: only in_docker runs the static binary.
  dist_bin=target/debug/cairn
fi
[ -x "$dist_bin" ] || { echo "e2e-as-user: $dist_bin missing: run scripts/dist.sh" >&2; exit 1; }

mkdir -p "$stage/bin" "$stage/repo"
cp target/debug/cairn "$stage/bin/"
cp "$dist_bin" "$stage/bin/cairn-dist"
cp "${exes[@]}" "$stage/bin/"
# fixtures for the tests; dist/ and scripts/ for cairn's image (scripts/dist.sh context).
cp -r fixtures dist scripts "$stage/repo/"
chmod -R a+rX "$stage"

only=${1:-}
shift || true
status=0
for exe in "${exes[@]}"; do
  name=$(basename "$exe")
  # cargo names test executables TEST-HASH.
  [ -z "$only" ] || [ "${name%-*}" = "$only" ] || continue
  echo "e2e-as-user: $name as $user"
  runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="/home/$user" \
    CAIRN_BIN="$stage/bin/cairn" CAIRN_DIST_BIN="$stage/bin/cairn-dist" CAIRN_REPO_ROOT="$stage/repo" \
    CAIRN_E2E_EXPECT_UNPRIVILEGED=1 \
    "$stage/bin/$name" --test-threads=2 "$@" || status=1
done
exit $status
