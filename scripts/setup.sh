#!/usr/bin/env bash
# Idempotent set-up for a Debian/Ubuntu host: the system packages Dockyard needs, then .venv with the
# project installed editable (plus dev tools). Re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(
  runc crun conmon            # OCI runtimes and the container monitor
  iproute2 nftables           # networking (the agent itself uses netlink/nftables; tests use ip netns)
  busybox-static              # the demo and test images are built from it
  docker-registry             # Debian's distribution registry, started by the tests and `make demo`
  openssh-server openssl curl # sshd of the test and demo hosts; the demo registry's cert; the demo's pages
  skopeo podman               # peers checked against in tests and benchmarks (never used by the product)
  zstd sqlite3 util-linux procps ca-certificates
  postgresql                  # the rollout journal tests start a private PostgreSQL server
  python3 python3-venv python3-dev
)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # with recommends: the way the packages were verified (podman, for one, is tested with them)
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    raise SystemExit(f"setup: Python 3.11+ needed, found {sys.version.split()[0]}")
PY

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # compat mode: a plain .pth path entry, no import-hook finder (~10 ms off every CLI start); setuptools
  # calls it transitional, so a setuptools without it gets the default editable mode instead
  .venv/bin/pip install -q -e '.[dev]' --config-settings editable_mode=compat \
    || .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/dockyard, .venv/bin/dockyard-agent)"
