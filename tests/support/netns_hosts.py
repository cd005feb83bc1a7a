"""Test hosts: each a network namespace plus a mount namespace, on a private bridge, with its own sshd.

Each fleet takes a free slot X (0-254): bridge `dyf-brX` at 10.231.X.1/24, owned by the creating process
(pid in /run/dyf-fleet-X.pid), so concurrent runs (two developers, a test run and a benchmark) never touch
each other's hosts. Host N is named `dyf-hN` (its inventory name), lives in netns `dyf-X-hN` at
10.231.X.(10+N)/24, with veth `dyfXvN` on the bridge. Its sshd runs inside `unshare -m` with private
/etc/dockyard, /opt/dockyard, /var/lib/dockyard and /run/dockyard (tmp dirs bind-mounted over them) and
an empty shell profile for root, so every SSH session — and every agent a session starts — sees only that
host's files. sshd has its own host key and config, root login by key only, no PAM. With `ssh=False` a
host is only its network namespace and address (tests start their processes in it with nsenter).

Teardown kills every process inside each namespace by pid (`ip netns pids`), then removes the namespaces,
veths and the bridge; `Fleet.close()` is safe to call after a partial setup and twice. A slot whose owner
died without cleaning up is reclaimed (its processes killed by pid, its links removed) by the next fleet.
The host itself (namespaces, sshd, teardown) is scripts/netns_hosts.py, shared with `make demo`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts.netns_hosts import (
    NamespaceHost,
    port_open,
    sh,
    signal_pid,
    wait_until,
)

__all__ = ["Fleet", "TestHost", "fleet", "port_open", "wait_until"]

PREFIX = "dyf-"
NET = "10.231"
OWNER_FILE = "/run/dyf-fleet-{slot}.pid"


@dataclass
class TestHost(NamespaceHost):
    __test__ = False  # not a pytest test class

    index: int
    slot: int
    root: Path
    client_pubkey: str
    sshd_proc: subprocess.Popen[bytes] | None = None
    ssh: bool = True

    @property
    def name(self) -> str:
        return f"{PREFIX}h{self.index}"

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.slot}-h{self.index}"

    @property
    def veth(self) -> str:
        return f"dyf{self.slot}v{self.index}"

    @property
    def veth_peer(self) -> str:
        return f"dyf{self.slot}p{self.index}"

    @property
    def address(self) -> str:
        return f"{NET}.{self.slot}.{10 + self.index}"

    @property
    def bridge(self) -> str:
        return f"{PREFIX}br{self.slot}"


class Fleet:
    """N test hosts plus the client key that logs in to all of them as root."""

    def __init__(self, count: int, base: Path | None = None, *, ssh: bool = True) -> None:
        self.count = count
        self.ssh = ssh
        self.base = Path(tempfile.mkdtemp(prefix="dyf-fleet-", dir=base))
        self.client_key = self.base / "id_ed25519"
        self.hosts: list[TestHost] = []
        self.slot: int | None = None

    @property
    def bridge(self) -> str:
        return f"{PREFIX}br{self.slot}"

    @property
    def gateway(self) -> str:
        return f"{NET}.{self.slot}.1"

    def setup(self) -> None:
        _reclaim_abandoned()
        self.slot = _claim_slot()
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dyf-client", "-f", str(self.client_key))
        pub = Path(f"{self.client_key}.pub").read_text()
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(1, self.count + 1):
            root = self.base / f"h{i}"
            host = TestHost(index=i, slot=self.slot, root=root, client_pubkey=pub, ssh=self.ssh)
            self.hosts.append(host)
            host.setup()

    def close(self) -> None:
        for host in self.hosts:
            try:
                host.teardown()
            except Exception as exc:  # keep tearing down the others
                print(f"teardown of {host.name} failed: {exc}")
        self.hosts = []
        if self.slot is not None:
            sh("ip", "link", "del", self.bridge, check=False)
            Path(OWNER_FILE.format(slot=self.slot)).unlink(missing_ok=True)
            self.slot = None
        shutil.rmtree(self.base, ignore_errors=True)

    def __getitem__(self, i: int) -> TestHost:
        return self.hosts[i]


def _claim_slot() -> int:
    """Create the first free bridge `dyf-brX` (creation is the lock) and record this process as owner."""
    for slot in range(255):
        if sh("ip", "link", "add", f"{PREFIX}br{slot}", "type", "bridge", check=False).returncode == 0:
            Path(OWNER_FILE.format(slot=slot)).write_text(f"{os.getpid()}\n")
            return slot
    raise RuntimeError("no free dyf- bridge slot")


def _owner_alive(slot: int) -> bool:
    try:
        pid = int(Path(OWNER_FILE.format(slot=slot)).read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reclaim_abandoned() -> None:
    """Remove the hosts of fleets whose owning process died without tearing down (only those)."""
    links = sh("ip", "-o", "link", "show", "type", "bridge", check=False).stdout
    slots = [int(m) for m in re.findall(rf"^\d+: {PREFIX}br(\d+):", links, flags=re.M)]
    for slot in slots:
        if _owner_alive(slot):
            continue
        for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(f"{PREFIX}{slot}-h"):
                for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                    signal_pid(int(pid), signal.SIGKILL)
                sh("ip", "netns", "del", name, check=False)
        for veth in re.findall(rf"^\d+: (dyf{slot}v\d+)@", sh("ip", "-o", "link", check=False).stdout, re.M):
            sh("ip", "link", "del", veth, check=False)
        sh("ip", "link", "del", f"{PREFIX}br{slot}", check=False)
        Path(OWNER_FILE.format(slot=slot)).unlink(missing_ok=True)


@contextlib.contextmanager
def fleet(count: int, *, ssh: bool = True) -> Iterator[Fleet]:
    f = Fleet(count, ssh=ssh)
    try:
        f.setup()
        yield f
    finally:
        f.close()
