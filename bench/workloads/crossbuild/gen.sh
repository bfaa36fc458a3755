#!/bin/bash
# gen.sh OUTDIR [shared|perarch] : runheavy's 10 RUN steps in a stage pinned to $BUILDPLATFORM,
# the target stage copying /w and recording `uname -m` in /machine (see the Dockerfile). The seed
# comes from runheavy's own gen.sh (../shared/bench/workloads/runheavy, or $RUNHEAVY), whose RUN
# steps the Dockerfile must still repeat verbatim.
#   shared (default; bench/platform.sh -w crossbuild times it): ARG TARGETARCH after the heavy
#     steps, so a multi-platform build shares them between its platforms: they run once;
#   perarch: ARG TARGETARCH first in the stage, so every RUN's key (and environment) holds it and
#     the heavy steps run once per target platform, natively each time.
set -euo pipefail
out=$1 variant=${2:-shared}
here=$(cd "$(dirname "$0")" && pwd)
runheavy=${RUNHEAVY:-$(cd "$here/../../../.." && pwd)/shared/bench/workloads/runheavy}
diff <(grep '^RUN ' "$runheavy/Dockerfile") <(grep '^RUN ' "$here/Dockerfile" | head -10) >/dev/null ||
  { echo "gen.sh: the Dockerfile's heavy RUN steps are no longer runheavy's ($runheavy)" >&2; exit 1; }
"$runheavy/gen.sh" "$out" # rm -rf OUTDIR, then its Dockerfile and seed.txt
case $variant in
  shared) cp "$here/Dockerfile" "$out/Dockerfile" ;;
  perarch) sed -e '/^ARG TARGETARCH$/d' -e '/^FROM --platform=\$BUILDPLATFORM /a ARG TARGETARCH' \
    "$here/Dockerfile" >"$out/Dockerfile" ;;
  *) echo "gen.sh: no variant $variant (shared|perarch)" >&2; exit 2 ;;
esac
