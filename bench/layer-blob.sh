#!/usr/bin/env bash
# Benchmark: a directory → gzip layer blob with diff_id and digest, cairn against the shell
# pipeline `tar -c | tee >(sha256sum) | pigz -p2 | sha256sum`, on
#   (a) 20,000 files of 1–8 KiB, and
#   (b) 1 GiB of random data in 8 files plus 256 MiB of text.
# Prints wall time and peak RSS for each, and cairn's ratio. Needs pigz and GNU time (installed
# here if missing). Run from the repository root: bench/layer-blob.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/cairn-bench-layer}
need=()
command -v pigz >/dev/null || need+=(pigz)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi

cargo build --release --locked -p cairn-layers --example dir_to_blob
bin=target/release/examples/dir_to_blob

mkdir -p "$work"
gen_small() {
  local d=$work/manyfiles
  [ -f "$d/.done" ] && return
  rm -rf "$d"; mkdir -p "$d"
  python3 - "$d" <<'PY'
import os, random, sys
root = sys.argv[1]; rnd = random.Random(42)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(5000)]
for i in range(20000):
    d = os.path.join(root, f"d{i // 500:02d}")
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(1024, 8192)
    buf = bytearray()
    while len(buf) < size:
        buf += rnd.choice(words) + b" "
    with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
        f.write(buf[:size])
PY
  touch "$d/.done"
}
gen_big() {
  local d=$work/bigfiles
  [ -f "$d/.done" ] && return
  rm -rf "$d"; mkdir -p "$d"
  for i in 0 1 2 3 4 5 6 7; do head -c 128M /dev/urandom >"$d/random$i.bin"; done
  python3 - "$d/text.txt" <<'PY'
import random, sys
rnd = random.Random(7)
words = [''.join(rnd.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rnd.randint(2, 9))) for _ in range(20000)]
with open(sys.argv[1], 'w') as f:
    written = 0
    while written < 256 << 20:
        line = ' '.join(rnd.choice(words) for _ in range(12)) + '\n'
        f.write(line); written += len(line)
PY
  touch "$d/.done"
}
gen_small; gen_big
sync

measure() { # label, command...
  local label=$1; shift
  local out
  out=$( { /usr/bin/time -f '%e %M' "$@" >/dev/null; } 2>&1 | tail -1 )
  echo "$label $out"
}

printf '%-12s %-9s %10s %12s\n' workload tool seconds peak_rss_MiB
for w in manyfiles bigfiles; do
  d=$work/$w
  # Warm the page cache so both tools read from memory.
  tar -C "$d" -cf - . >/dev/null
  read -r _ c_s c_kb < <(measure cairn "$bin" "$d" "$work/$w.blob" gzip)
  read -r _ p_s p_kb < <(measure pipeline bash -c "tar -C '$d' -cf - . | tee >(sha256sum >/dev/null) | pigz -p2 | sha256sum")
  printf '%-12s %-9s %10s %12d\n' "$w" cairn "$c_s" $((c_kb / 1024))
  printf '%-12s %-9s %10s %12d\n' "$w" tar+pigz "$p_s" $((p_kb / 1024))
  python3 -c "print(f'{\"$w\":<12} ratio     {$p_s / max($c_s, 0.001):10.2f}x  (pipeline time / cairn time)')"
  ls -l "$work/$w.blob" | awk '{print "             cairn blob bytes: " $5}'
done
