#!/usr/bin/env bash
# Run every benchmark under tests/benchmarks/ (each prints its figures and ratios against peers).
set -uo pipefail
cd "$(dirname "$0")/.."
# Peers measured against (never used by the product): ansible and parallel-ssh for the fleet benchmark.
peers=()
for pkg in ansible-core pssh; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || peers+=("$pkg")
done
if [ "${#peers[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${peers[@]}" >/dev/null \
    || echo "bench: could not install ${peers[*]}; those peers will be skipped" >&2
fi
# The CLI's warm command servers started by the benchmarks live in a private dir and end with them.
DOCKYARD_RUNTIME_DIR=$(mktemp -d /tmp/dyb-XXXXXX)
export DOCKYARD_RUNTIME_DIR
stop_warm() {
  for pid_file in "$DOCKYARD_RUNTIME_DIR"/warm-*.pid; do
    [ -e "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null
  done
  rm -rf "$DOCKYARD_RUNTIME_DIR"
}
trap stop_warm EXIT
rc=0
for bench in tests/benchmarks/bench_*.py; do
  [ -e "$bench" ] || continue
  echo "=== $bench"
  .venv/bin/python "$bench" || rc=1
done
exit $rc
