#!/bin/bash
# gen.sh OUTDIR : a large package set in one RUN (build-essential, ~250 MB in one layer), then a
# small compile; the step that writes tens of thousands of files into a layer.
set -euo pipefail
out=$1; here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out"; mkdir -p "$out"
cp "$here/Dockerfile" "$out/"
echo "notes" >"$out/notes.txt"
printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' >"$out/hello.c"
