#!/usr/bin/env bash
# `make demo` (up) and `make demo-clean` (clean): a fleet of 3 hosts on this machine, bootstrapped over SSH,
# and rollouts of a web app, the last one a bad release that reverts. The steps are in scripts/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3  # demo-clean works without the venv too (standard library only)
exec "$PY" -m scripts.demo "${1:-up}"
