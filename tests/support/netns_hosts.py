"""Test hosts: each a network namespace plus a mount namespace, on a private bridge, with its own sshd.

Each fleet takes a free slot X (0-254): bridge `dyf-brX` at 10.231.X.1/24, owned by the creating process
(pid in /run/dyf-fleet-X.pid), so concurrent runs (two developers, a test run and a benchmark) never touch
each other's hosts. Host N is named `dyf-hN` (its inventory name), lives in netns `dyf-X-hN` at
10.231.X.(10+N)/24, with veth `dyfXvN` on the bridge. Its sshd runs inside `unshare -m` with private
/etc/dockyard, /opt/dockyard, /var/lib/dockyard and /run/dockyard (tmp dirs bind-mounted over them) and
an empty shell profile for root, so every SSH session — and every agent a session starts — sees only that
host's files. sshd has its own host key and config, root login by key only, no PAM.

Teardown kills every process inside each namespace by pid (`ip netns pids`), then removes the namespaces,
veths and the bridge; `Fleet.close()` is safe to call after a partial setup and twice. A slot whose owner
died without cleaning up is reclaimed (its processes killed by pid, its links removed) by the next fleet.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PREFIX = "dyf-"
NET = "10.231"
OWNER_FILE = "/run/dyf-fleet-{slot}.pid"
PRIVATE_DIRS = ("etc/dockyard", "opt/dockyard", "var/lib/dockyard", "run/dockyard")
PROFILES = ("/root/.bashrc", "/root/.profile")
SSHD = "/usr/sbin/sshd"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def wait_until(predicate: object, deadline_s: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate()` until true; fail with `what` when the deadline passes."""
    assert callable(predicate)
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(interval)


def port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class TestHost:
    __test__ = False  # not a pytest test class

    index: int
    slot: int
    root: Path
    client_pubkey: str
    sshd_proc: subprocess.Popen[bytes] | None = None

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
    def address(self) -> str:
        return f"{NET}.{self.slot}.{10 + self.index}"

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    def private(self, path: str) -> Path:
        """Where the host's private `path` (e.g. /var/lib/dockyard/agent.log) is seen from outside."""
        for d in PRIVATE_DIRS:
            if path == f"/{d}" or path.startswith(f"/{d}/"):
                return self.root / d.replace("/", "-") / path[len(d) + 2 :]
        raise ValueError(f"{path} is not private to the host")

    def setup(self) -> None:
        self.root.mkdir(parents=True)
        for d in PRIVATE_DIRS:
            (self.root / d.replace("/", "-")).mkdir()
        (self.root / "empty-profile").write_text("")
        (self.root / "authorized_keys").write_text(self.client_pubkey)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(self.host_key))
        (self.root / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress {self.address}:22",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "UseDNS no",
                    "MaxStartups 200",
                    "MaxSessions 50",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        veth_root, veth_ns = self.veth, f"dyf{self.slot}p{self.index}"
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", veth_root, "type", "veth", "peer", "name", veth_ns)
        sh("ip", "link", "set", veth_ns, "netns", self.netns)
        sh("ip", "link", "set", veth_root, "master", f"{PREFIX}br{self.slot}", "up")
        inside = ("ip", "netns", "exec", self.netns)
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "link", "set", veth_ns, "name", "eth0")
        sh(*inside, "ip", "addr", "add", f"{self.address}/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        for d in PRIVATE_DIRS:
            # Mount points must exist; they stay (empty) afterwards, because removing a directory that
            # another fleet's mount namespace uses as a mount point would detach that fleet's mounts.
            (Path("/") / d).mkdir(parents=True, exist_ok=True)
        self.start_sshd()

    def _sshd_script(self) -> str:
        lines = [f"mount --bind {self.root / d.replace('/', '-')} /{d}" for d in PRIVATE_DIRS]
        lines += [f"mount --bind {self.root / 'empty-profile'} {p}" for p in PROFILES if Path(p).exists()]
        lines += ["mkdir -p /run/sshd", f"exec {SSHD} -D -e -f {self.root / 'sshd_config'}"]
        return " && ".join(lines)

    def start_sshd(self) -> None:
        log = (self.root / "sshd.log").open("ab")
        # nsenter, not `ip netns exec`: the latter mounts a fresh sysfs, hiding the cgroup mounts runc needs.
        argv = ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "-m", "--propagation", "private"]
        argv += ["sh", "-c", self._sshd_script()]
        self.sshd_proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        proc = self.sshd_proc
        wait_until(lambda: proc.poll() is not None or port_open(self.address, 22), 10, f"sshd of {self.name}")
        if proc.poll() is not None:
            raise RuntimeError(f"sshd of {self.name} exited: {(self.root / 'sshd.log').read_text()[-2000:]}")

    def stop_sshd(self) -> None:
        """Stop the listening sshd (sessions already open are ended too: they are its children)."""
        proc, self.sshd_proc = self.sshd_proc, None
        if proc is None:
            return
        for pid in self.pids():
            if pid != proc.pid and _ppid(pid) == proc.pid:
                _signal(pid, signal.SIGKILL)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wait_until(lambda: not port_open(self.address, 22), 5, f"sshd of {self.name} to close")

    def replace_host_key(self) -> bytes:
        """Give sshd a new host key (restart); returns the old private key so a test can restore it."""
        old = self.host_key.read_bytes()
        self.stop_sshd()
        self.host_key.unlink()
        Path(f"{self.host_key}.pub").unlink()
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(self.host_key))
        self.start_sshd()
        return old

    def restore_host_key(self, old: bytes) -> None:
        self.stop_sshd()
        self.host_key.write_bytes(old)
        os.chmod(self.host_key, 0o600)
        self.start_sshd()

    def pids(self) -> list[int]:
        out = sh("ip", "netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def all_pids(self) -> list[int]:
        """Processes in the namespace and all their descendants (containers have namespaces of their own)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                ppid = _ppid(int(entry.name))
                children.setdefault(ppid, []).append(int(entry.name))
        found: list[int] = []
        todo = self.pids()
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.append(pid)
                todo.extend(children.get(pid, []))
        return found

    def read_pidfile(self, path: str) -> int | None:
        try:
            return int(self.private(path).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def teardown(self) -> None:
        """Kill everything in the namespace (SIGTERM, then SIGKILL), then remove it."""
        if self.sshd_proc is not None:
            self.sshd_proc.terminate()
        for pid in self.all_pids():
            _signal(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self.pids(), 5, f"processes of {self.name}")
        for pid in self.all_pids():
            _signal(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self.pids(), 5, f"processes of {self.name} after SIGKILL")
        if self.sshd_proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshd_proc.wait(timeout=5)
            self.sshd_proc = None
        sh("ip", "link", "del", self.veth, check=False)
        sh("ip", "netns", "del", self.netns, check=False)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


class Fleet:
    """N test hosts plus the client key that logs in to all of them as root."""

    def __init__(self, count: int, base: Path | None = None) -> None:
        self.count = count
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
            host = TestHost(index=i, slot=self.slot, root=self.base / f"h{i}", client_pubkey=pub)
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
                    _signal(int(pid), signal.SIGKILL)
                sh("ip", "netns", "del", name, check=False)
        for veth in re.findall(rf"^\d+: (dyf{slot}v\d+)@", sh("ip", "-o", "link", check=False).stdout, re.M):
            sh("ip", "link", "del", veth, check=False)
        sh("ip", "link", "del", f"{PREFIX}br{slot}", check=False)
        Path(OWNER_FILE.format(slot=slot)).unlink(missing_ok=True)


@contextlib.contextmanager
def fleet(count: int) -> Iterator[Fleet]:
    f = Fleet(count)
    try:
        f.setup()
        yield f
    finally:
        f.close()
