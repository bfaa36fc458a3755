#!/usr/bin/env bash
# Builds cairn as users get it: a stripped, statically linked binary, and cairn's own image.
#
#   scripts/dist.sh                  target/dist/cairn (glibc crt-static, profile release-static),
#                                    its man pages (target/dist/man/man1) and shell completions
#   scripts/dist.sh image            that, then dist/Dockerfile built by that same binary:
#                                    target/dist/cairn-image.{oci,docker}.tar, cairn:VERSION
#   scripts/dist.sh context DIR BIN  only stages dist/Dockerfile's context in DIR around the
#                                    static cairn BIN (what `image` builds; the e2e tests too)
#
# The image is reproducible: SOURCE_DATE_EPOCH (default: the last commit's time) dates it and
# clamps its file times, so two builds of one commit on one machine give one digest.
set -euo pipefail
caller=$PWD
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
    cargo build --profile release-static --locked -p cairn --target "$triple"
  mkdir -p "$dist"
  install -m 0755 "$target_dir/$triple/release-static/cairn" "$dist/cairn"
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
  # Man pages and completions, from the binary's own command definitions.
  rm -rf "$dist/man" "$dist/completions"
  "$dist/cairn" man "$dist/man/man1"
  mkdir -p "$dist/completions"
  "$dist/cairn" completion bash >"$dist/completions/cairn.bash"
  "$dist/cairn" completion zsh >"$dist/completions/_cairn"
  "$dist/cairn" completion fish >"$dist/completions/cairn.fish"
  echo "dist: $dist/man/man1 ($(ls "$dist/man/man1" | wc -l) pages), $dist/completions"
}

# Copies every shared library ldd lists for `bin`, with its loader, to the same path under the
# context's libs/ (files, not links: the image has no /usr merge).
stage_libs() {
  local ctx=$1 bin=$2 lib
  while read -r lib; do
    mkdir -p "$ctx/libs$(dirname "$lib")"
    cp -L "$lib" "$ctx/libs$lib"
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}

# Writes uidmap.tar: /usr/bin/newuidmap and newgidmap, root's, mode 0755, each with the one file
# capability it needs (cap_setuid, cap_setgid: +ep) as a PAX `SCHILY.xattr.security.capability`
# record, which ADD keeps. Anyone can write such a tar; setcap on a file needs CAP_SETFCAP.
stage_uidmap_tar() {
  python3 - "$1/uidmap.tar" <<'EOF'
import io, struct, sys, tarfile

# struct vfs_cap_data, revision 2 (linux/capability.h): magic_etc with the effective flag, then
# permitted and inheritable for capabilities 0-31 and 32-63, little-endian.
VFS_CAP_REVISION_2, VFS_CAP_FLAGS_EFFECTIVE = 0x02000000, 0x000001
CAP_SETGID, CAP_SETUID = 6, 7

with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as tar:
    for name, cap in (("newgidmap", CAP_SETGID), ("newuidmap", CAP_SETUID)):
        with open(f"/usr/bin/{name}", "rb") as f:
            data = f.read()
        caps = struct.pack("<5I", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 1 << cap, 0, 0, 0)
        info = tarfile.TarInfo(f"usr/bin/{name}")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        # Binary values go through as they are (tarfile marks them hdrcharset=BINARY).
        info.pax_headers = {"SCHILY.xattr.security.capability": caps.decode("utf-8", "surrogateescape")}
        tar.addfile(info, io.BytesIO(data))
EOF
}

# Stages dist/Dockerfile's build context in `ctx` around the static cairn `bin`.
stage_context() {
  local ctx=$1 bin=$2 f
  for f in /usr/bin/newuidmap /usr/bin/newgidmap /usr/bin/slirp4netns \
    /etc/ssl/certs/ca-certificates.crt; do
    [ -r "$f" ] || {
      echo "dist: $f missing: install uidmap and ca-certificates (scripts/install-deps.sh)" >&2
      exit 1
    }
  done
  rm -rf "$ctx"
  mkdir -p "$ctx"/{etc/ssl/certs,root,home,cairn-home,tmp,libs}
  install -m 0755 "$bin" "$ctx/cairn"
  stage_libs "$ctx" /usr/bin/newuidmap
  stage_libs "$ctx" /usr/bin/newgidmap
  stage_uidmap_tar "$ctx"
  # slirp4netns: a userns step's own network (pasta refuses to serve root); it needs the
  # container's /dev/net/tun (docker run --device /dev/net/tun).
  stage_libs "$ctx" /usr/bin/slirp4netns
  mkdir -p "$ctx/libs/usr/bin"
  install -m 0755 /usr/bin/slirp4netns "$ctx/libs/usr/bin/slirp4netns"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/"
  cat >"$ctx/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
cairn:x:1000:1000:cairn:/home/cairn:/sbin/nologin
EOF
  cat >"$ctx/etc/group" <<'EOF'
root:x:0:
cairn:x:1000:
EOF
  echo 'cairn:100000:65536' >"$ctx/etc/subuid"
  echo 'cairn:100000:65536' >"$ctx/etc/subgid"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$ctx/etc/nsswitch.conf"
  chmod -R u=rwX,go=rX "$ctx"
}

case ${1:-bin} in
  bin)
    build_static
    ;;
  image)
    build_static
    version=$("$dist/cairn" --version | awk '{ print $2 }')
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
    revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    stage_context "$dist/context" "$dist/cairn"
    # A fresh store each time: the image is built from nothing, never from an older cache.
    rm -rf "$dist/store"
    "$dist/cairn" --root "$dist/store" build --progress plain -f dist/Dockerfile \
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" -t "cairn:$version" \
      -o "type=oci-archive,dest=$dist/cairn-image.oci.tar" \
      -o "type=docker-archive,dest=$dist/cairn-image.docker.tar" \
      --iidfile "$dist/cairn-image.id" "$dist/context"
    digest=$(tar -xOf "$dist/cairn-image.oci.tar" index.json | jq -r '.manifests[0].digest')
    echo "dist: cairn:$version, image $(cat "$dist/cairn-image.id"), manifest $digest"
    echo "dist: $dist/cairn-image.oci.tar (skopeo, cairn load) and cairn-image.docker.tar (docker load)"
    ;;
  context)
    [ $# -eq 3 ] || { echo "usage: scripts/dist.sh context DIR STATIC_CAIRN" >&2; exit 2; }
    # DIR and BIN as the caller named them, from where it called.
    abs() { case $1 in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }
    stage_context "$(abs "$2")" "$(abs "$3")"
    ;;
  *)
    echo "usage: scripts/dist.sh [bin | image | context DIR STATIC_CAIRN]" >&2
    exit 2
    ;;
esac
