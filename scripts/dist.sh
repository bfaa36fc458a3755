#!/usr/bin/env bash
# Builds cairn as users get it: a stripped, statically linked binary.
#
#   scripts/dist.sh                  target/dist/cairn (glibc crt-static, the `dist` profile)
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
dist=$target_dir/dist
# An explicit --target keeps build scripts and proc-macros dynamic: RUSTFLAGS then applies to
# what runs on the target only, and a static proc-macro cannot be loaded.
triple=x86_64-unknown-linux-gnu

# Builds target/dist/cairn and checks that nothing is left to load at run time.
build_static() {
  # Reproducible: the checkout's and cargo's paths (in panic locations) are remapped, and
  # mimalloc's C code embeds __DATE__ and __TIME__, which GCC takes from SOURCE_DATE_EPOCH: a
  # constant keeps the binary a function of the source alone, whatever cargo had to rebuild.
  local remap="--remap-path-prefix=$PWD=. --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=cargo"
  SOURCE_DATE_EPOCH=0 RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static $remap" \
    cargo build --profile dist --locked -p cairn --target "$triple"
  mkdir -p "$dist"
  install -m 0755 "$target_dir/$triple/dist/cairn" "$dist/cairn"
  # ldd says "not a dynamic executable" for a static binary, "statically linked" for a
  # static-pie one (what crt-static gives on x86_64); a dynamic one lists its libraries.
  local says
  says=$(ldd "$dist/cairn" 2>&1 || true)
  case $says in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) echo "dist: $dist/cairn is not static; ldd says:" >&2; echo "$says" >&2; exit 1 ;;
  esac
  if readelf -lW "$dist/cairn" | grep -q INTERP || readelf -dW "$dist/cairn" | grep -q NEEDED; then
    echo "dist: $dist/cairn names a loader or shared libraries (readelf)" >&2
    exit 1
  fi
  echo "dist: $dist/cairn ($(stat -c %s "$dist/cairn") bytes, static)"
}

case ${1:-bin} in
  bin)
    build_static
    ;;
  *)
    echo "usage: scripts/dist.sh [bin]" >&2
    exit 2
    ;;
esac
