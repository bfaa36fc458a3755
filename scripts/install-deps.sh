#!/usr/bin/env bash
# Installs the system packages cairn's tests need, idempotently (nothing is done when all are present).
set -euo pipefail

# uidmap: newuidmap/newgidmap, which rootless user namespaces with /etc/subuid ranges need.
# busybox-static: the test base image (fixtures/busybox/make.sh).
# skopeo, umoci, oci-image-tool, podman: the validators the end-to-end tests check images with.
# jq: reading JSON in scripts; pigz: the benchmark's reference pipeline.
# bzip2, xz-utils, zstd: the tests make ADD archives in every compression.
# docker-registry: the real registry server the registry tests push to and pull from;
# apache2-utils: htpasswd -B for its basic-auth user file; openssl: the tests' CA, server
# certificates and the token server's signing key and signatures.
# gcc, libc6-dev: the sandbox tests compile a small static program that calls TIOCSTI, which
# busybox cannot do.
# e2fsprogs, mount: the ENOSPC test's small ext4 filesystem (mkfs.ext4, mount -o loop) as root;
# util-linux: unshare for its tmpfs in a user namespace otherwise, runuser for other users.
# time: /usr/bin/time -v reports cairn's peak memory in the hostile-input tests.
# passt (pasta) and slirp4netns: RUN's user-mode network; the network tests run a step with each.
# binutils (readelf), ca-certificates and python3: scripts/dist.sh checks that the binary it
# builds is static, puts the CA bundle in cairn's own image and writes the tar that gives its
# uidmap helpers their file capabilities (e2e-as-user.sh reads cargo's JSON with python3 too).
# debootstrap: fixtures/debian/make.sh, the Debian base the in_docker tests run apt-get on.
# docker.io: dockerd and docker, which the in_docker tests run that image with (started by
# scripts/dockerd.sh: in a container or a CI job no init starts its service).
# git: ADD of git repositories runs it, and the git tests serve repositories with git daemon;
# openssh-client and openssh-server: --ssh's ssh-agent and ssh-add, and the ssh tests' sshd on
# 127.0.0.1 (run as the test's user, never as a service).
# qemu-user-static, binfmt-support: run arm64 (and arm) binaries under emulation, for the
# multi-platform fixtures and tests; scripts/binfmt.sh registers them with the kernel.
# rpm: rpmbuild, rpm and rpmdb make the small rpm databases the sbom tests read.
# python3-venv, and spdx-tools from PyPI in a venv below: pyspdxtools, the SPDX 2.3 validator the
# sbom tests check `cairn sbom`'s documents with (Debian packages none).
spdx_venv=/opt/cairn-tests/spdx-tools
spdx_tools_version=0.8.5
packages=(uidmap busybox-static skopeo umoci oci-image-tool podman runc jq pigz bzip2 xz-utils zstd
  docker-registry apache2-utils openssl gcc libc6-dev e2fsprogs mount util-linux time passt
  slirp4netns binutils ca-certificates python3 docker.io debootstrap qemu-user-static binfmt-support python3-venv
  git openssh-client openssh-server rpm)

# pasta and slirp4netns open /dev/net/tun as the building user: udev gives it mode 0666 on an
# ordinary system, but a bare container or VM image may leave it root's only, and then no
# rootless RUN step gets a network.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  if [ "$(id -u)" -eq 0 ]; then chmod 0666 /dev/net/tun; else sudo -n chmod 0666 /dev/net/tun; fi
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

sudo=()
if [ "$(id -u)" -ne 0 ] && { [ ${#missing[@]} -gt 0 ] || [ ! -x "$spdx_venv/bin/pyspdxtools" ]; }; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]} spdx-tools" >&2; exit 1; }
  sudo=(sudo -n)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own python3, not whichever a user's PATH finds first: the venv must run for the
# unprivileged test user too.
if [ ! -x "$spdx_venv/bin/pyspdxtools" ]; then
  echo "install-deps: installing spdx-tools $spdx_tools_version in $spdx_venv"
  "${sudo[@]}" /usr/bin/python3 -m venv "$spdx_venv"
  "${sudo[@]}" "$spdx_venv/bin/pip" install -q --disable-pip-version-check "spdx-tools==$spdx_tools_version"
fi
