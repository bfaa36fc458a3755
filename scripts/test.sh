#!/usr/bin/env bash
# Runs cairn's whole test suite on a fresh machine: installs what the tests need, checks
# formatting and lints, runs every test as the current user (root in CI), then the end-to-end
# tests again as an unprivileged user.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# arm64 programs run through qemu (the multi-platform tests), and the arm64 busybox package is
# cached for the fixture: both as root, before the unprivileged pass needs them.
scripts/binfmt.sh
fixtures/busybox/fetch-arm64.sh >/dev/null
# The in_docker tests run cairn's own image in a Docker daemon.
scripts/dockerd.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== structure: no import cycles, no production file over 800 lines"
scripts/check-structure.sh
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
echo "== fuzz target builds"
cargo check --manifest-path fuzz/Cargo.toml --locked --quiet
echo "== static cairn for the image (scripts/dist.sh)"
# The static cairn that cairn's own image holds, for the in_docker tests: a release build of
# minutes, so made once here for every test process (they read CAIRN_DIST_BIN, fail without it).
scripts/dist.sh
export CAIRN_DIST_BIN=${CARGO_TARGET_DIR:-$PWD/target}/dist/cairn
echo "== cargo test"
cargo build --workspace --locked
cargo test --workspace --locked
echo "== end-to-end tests as an unprivileged user"
scripts/e2e-as-user.sh
