#!/usr/bin/env bash
# Makes sure a Docker daemon answers on the default socket, for the end-to-end tests that run
# cairn's own image in Docker (tests/tests/in_docker.rs). Does nothing when `docker info`
# answers; else starts dockerd (Debian's docker.io, scripts/install-deps.sh) in the background,
# its log in /tmp/cairn-dockerd.log, and waits until it answers, at most DOCKERD_WAIT seconds.
set -euo pipefail

docker info >/dev/null 2>&1 && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "dockerd: no Docker daemon answers, and only root can start one (scripts/dockerd.sh as root)" >&2
  exit 1
fi
command -v dockerd >/dev/null || { echo "dockerd: dockerd missing: run scripts/install-deps.sh" >&2; exit 1; }

log=/tmp/cairn-dockerd.log
# setsid: the daemon outlives this script and is no part of the caller's process group, so a
# test run's ^C or a CI step's end does not take it down halfway through a test.
setsid dockerd >"$log" 2>&1 </dev/null &
pid=$!

wait_s=${DOCKERD_WAIT:-60}
for _ in $(seq $((wait_s * 10))); do
  docker info >/dev/null 2>&1 && { echo "dockerd: started (pid $pid, log $log)"; exit 0; }
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
echo "dockerd: dockerd did not answer within ${wait_s}s; the end of $log:" >&2
tail -n 20 "$log" >&2
exit 1
