#!/usr/bin/env bash
# Run every benchmark under tests/benchmarks/ (each prints its figures and ratios against peers).
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
for bench in tests/benchmarks/bench_*.py; do
  [ -e "$bench" ] || continue
  echo "=== $bench"
  .venv/bin/python "$bench" || rc=1
done
exit $rc
