#!/usr/bin/env bash
# Registers qemu's user-mode emulators with the kernel (binfmt_misc), so arm64 and arm binaries
# run on this machine: the multi-platform fixtures and tests need it. Idempotent; run as root
# (otherwise it checks, and does what is missing through `sudo -n`).
#
# The registrations must carry the F (fix-binary) flag: the kernel then opens the emulator
# once, at registration, and uses that file for every arm64 program, so a program in a chroot
# or a user namespace runs without the emulator inside its image (a RUN step of an arm64 build).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=/proc/sys/fs/binfmt_misc
# The formats to register, each with the static emulator to fall back to (see fix_binary).
formats=(qemu-aarch64 qemu-arm)

# Prints why the format is not usable, or nothing when it is.
problem() {
  local e=$dir/$1
  [ -f "$e" ] || { echo "$e missing"; return; }
  head -1 "$e" | grep -qx enabled || { echo "$e is not enabled"; return; }
  grep -q '^flags:.*F' "$e" || echo "$e has no F (fix-binary) flag: $(grep '^flags:' "$e")"
}

check() {
  local f p bad=0
  for f in "${formats[@]}"; do
    p=$(problem "$f")
    [ -z "$p" ] || { echo "binfmt: $p" >&2; bad=1; }
  done
  return $bad
}

if [ "$(id -u)" -ne 0 ]; then
  # Nothing to do needs no root; anything to do needs it.
  check 2>/dev/null && exit 0
  command -v sudo >/dev/null ||
    { echo "binfmt.sh: emulation is not set up, and that needs root (or sudo)" >&2; exit 1; }
  exec sudo -n "$0" "$@"
fi

scripts/install-deps.sh

# Many containers and some VMs boot without binfmt_misc mounted; the kernel still has it.
if ! mountpoint -q "$dir"; then
  mount -t binfmt_misc binfmt_misc "$dir"
fi

# Writes the format again with F added: the same magic, mask and offset, and the same
# interpreter when it still exists (Debian's -binfmt-P name tells qemu that P, keep argv[0],
# is set), else the static emulator.
fix_binary() {
  local name=$1 e=$dir/$1 interp flags offset magic mask
  interp=$(sed -n 's/^interpreter //p' "$e")
  flags=$(sed -n 's/^flags: *//p' "$e")
  offset=$(sed -n 's/^offset //p' "$e")
  magic=$(sed -n 's/^magic //p' "$e" | sed 's/../\\x&/g')
  mask=$(sed -n 's/^mask //p' "$e" | sed 's/../\\x&/g')
  if [ ! -x "$interp" ]; then
    interp=/usr/bin/$name-static
    flags=${flags//P/}
  fi
  [ -x "$interp" ] || { echo "binfmt.sh: no emulator $interp for $name" >&2; exit 1; }
  echo -1 >"$e"
  printf ':%s:M:%s:%s:%s:%s:%sF\n' "$name" "$offset" "$magic" "$mask" "$interp" "$flags" \
    >"$dir/register"
}

for f in "${formats[@]}"; do
  # binfmt-support's database has the format from qemu-user-static's installation; enabling
  # writes it to the kernel (when it was not mounted at install time, nothing was written).
  [ -f "$dir/$f" ] || update-binfmts --enable "$f"
  [ -f "$dir/$f" ] || { echo "binfmt.sh: update-binfmts did not register $f" >&2; exit 1; }
  # Registered but switched off (`echo 0 > entry`): switch it on.
  head -1 "$dir/$f" | grep -qx enabled || echo 1 >"$dir/$f"
  grep -q '^flags:.*F' "$dir/$f" || fix_binary "$f"
done

check || { echo "binfmt.sh: emulation is not set up (see above)" >&2; exit 1; }
