"""What a host is and has: one POSIX shell command that prints `key=value` lines, and its pure parser.

The command needs nothing but sh and coreutils on the host, so it runs before anything is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "/opt/dockyard"
ETC = "/etc/dockyard"
TLS_DIR = f"{ETC}/tls"
CONFIG_FILE = f"{ETC}/agent.toml"
UNIT_FILE = "/etc/systemd/system/dockyard-agent.service"
SUPERVISOR = f"{PREFIX}/bin/dockyard-supervise.sh"
INSTALLED = f"{PREFIX}/installed"
CERT_NAMES = f"{TLS_DIR}/names"
BINARIES = ("runc", "conmon", "nft")

COMMAND = rf"""
[ -r /etc/os-release ] && . /etc/os-release
echo "os_id=${{ID:-unknown}}"
echo "os_version=${{VERSION_ID:-}}"
echo "os_name=${{PRETTY_NAME:-unknown}}"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
py=$(command -v python3 || true)
echo "python=$py"
[ -n "$py" ] && echo "python_version=$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
[ -d /run/systemd/system ] && echo init=systemd || echo init=none
for b in {" ".join(BINARIES)}; do echo "bin_$b=$(command -v "$b" || true)"; done
for m in apt-get dnf yum zypper apk; do
  if command -v "$m" >/dev/null; then echo "pkg_manager=$m"; break; fi
done
sha() {{ [ -f "$1" ] && sha256sum "$1" | cut -d' ' -f1; }}
echo "installed=$(cat {INSTALLED} 2>/dev/null)"
echo "config_sha=$(sha {CONFIG_FILE})"
echo "unit_sha=$(sha {UNIT_FILE})"
echo "supervisor_sha=$(sha {SUPERVISOR})"
echo "ca_sha=$(sha {TLS_DIR}/ca.pem)"
echo "crl_sha=$(sha {TLS_DIR}/crl.pem)"
[ -s {TLS_DIR}/agent.pem ] && [ -s {TLS_DIR}/agent-key.pem ] && echo has_cert=yes
echo "cert_names=$(cat {CERT_NAMES} 2>/dev/null)"
if [ -d /run/systemd/system ]; then
  systemctl is-active --quiet dockyard-agent && echo running=yes
elif [ -x {SUPERVISOR} ]; then
  {SUPERVISOR} status >/dev/null 2>&1 && echo running=yes
fi
true
"""


@dataclass(frozen=True)
class Facts:
    os_id: str
    os_version: str
    os_name: str
    arch: str
    kernel: str
    hostname: str
    python: str
    python_version: tuple[int, ...]
    init: str
    binaries: dict[str, str]
    pkg_manager: str
    installed: str
    config_sha: str
    unit_sha: str
    supervisor_sha: str
    ca_sha: str
    has_cert: bool
    cert_names: tuple[str, ...]
    running: bool
    crl_sha: str = ""

    @property
    def python_tag(self) -> str:
        """`3.11` for the wheelhouse key; empty without Python."""
        return ".".join(str(p) for p in self.python_version[:2])

    @property
    def missing_binaries(self) -> list[str]:
        return [b for b in BINARIES if not self.binaries.get(b)]


def parse(text: str) -> Facts:
    """Parse the command's output; unknown keys are ignored so newer scripts stay compatible."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            kv[key.strip()] = value.strip()
    version_text = kv.get("python_version", "")
    try:
        version = tuple(int(p) for p in version_text.split(".")) if version_text else ()
    except ValueError:
        version = ()
    names = kv.get("cert_names", "")
    return Facts(
        os_id=kv.get("os_id", "unknown"),
        os_version=kv.get("os_version", ""),
        os_name=kv.get("os_name", "unknown"),
        arch=kv.get("arch", ""),
        kernel=kv.get("kernel", ""),
        hostname=kv.get("hostname", ""),
        python=kv.get("python", ""),
        python_version=version,
        init=kv.get("init", "none"),
        binaries={b: kv.get(f"bin_{b}", "") for b in BINARIES},
        pkg_manager=kv.get("pkg_manager", ""),
        installed=kv.get("installed", ""),
        config_sha=kv.get("config_sha", ""),
        unit_sha=kv.get("unit_sha", ""),
        supervisor_sha=kv.get("supervisor_sha", ""),
        ca_sha=kv.get("ca_sha", ""),
        has_cert=kv.get("has_cert") == "yes",
        cert_names=tuple(n for n in names.split(",") if n),
        running=kv.get("running") == "yes",
        crl_sha=kv.get("crl_sha", ""),
    )
