"""Hosts on this machine: each a network namespace plus a mount namespace on a bridge, with its own sshd.

The machinery shared by `make demo` (scripts/demo.py) and the fleet tests (tests/support/netns_hosts.py,
which adds numbered slots so concurrent test runs never meet). A host lives in its own network namespace
with `eth0` on a bridge of the root namespace; its sshd runs inside `unshare -m` with private
/etc/dockyard, /opt/dockyard, /var/lib/dockyard and /run/dockyard (directories under the host's `root`
bind-mounted over them) and an empty shell profile for root, so every SSH session — and every agent a
session starts — sees only that host's files. sshd has its own host key and config, root login by key
only, no PAM.

Teardown needs nothing but the names: it kills every process inside the namespace and their descendants
by pid (`ip netns pids`; containers have namespaces of their own but are children of processes in it),
which ends the mount namespace and every mount made in it, then removes the namespace and its veth.
So a host made by one process can be removed by another (the demo's `make demo-clean`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

PRIVATE_DIRS = ("etc/dockyard", "opt/dockyard", "var/lib/dockyard", "run/dockyard")
PROFILES = ("/root/.bashrc", "/root/.profile")
SSHD = "/usr/sbin/sshd"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def wait_until(predicate: Callable[[], object], deadline_s: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate()` until true; fail with `what` when the deadline passes."""
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


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def ppid_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


def netns_pids(netns: str) -> list[int]:
    out = sh("ip", "netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split()]


def with_descendants(pids: list[int]) -> list[int]:
    """`pids` and every process descending from them."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children.setdefault(ppid_of(int(entry.name)), []).append(int(entry.name))
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def namespaces(prefix: str) -> list[str]:
    """Network namespaces whose name starts with `prefix`."""
    names = [
        line.split()[0] for line in sh("ip", "netns", "list", check=False).stdout.splitlines() if line.strip()
    ]
    return [n for n in names if n.startswith(prefix)]


def kill_namespace(netns: str, grace_s: float = 5.0) -> None:
    """SIGTERM everything in `netns` and its descendants, SIGKILL what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in with_descendants(netns_pids(netns)):
            signal_pid(pid, sig)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not netns_pids(netns), wait_s, f"processes of {netns}")


def make_bridge(name: str, gateway_cidr: str) -> None:
    sh("ip", "link", "add", name, "type", "bridge")
    sh("ip", "addr", "add", gateway_cidr, "dev", name)
    sh("ip", "link", "set", name, "up")


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", name, check=False).returncode == 0


class NamespaceHost:
    """One host. Subclasses say who it is: `name`, `netns`, `veth` (root side), `veth_peer` (renamed
    `eth0` inside), `address`, `prefix_len`, `bridge`; `root` holds its files, `client_pubkey` may log in;
    `ssh = False` makes only the namespace and its address (a test then starts processes in it itself)."""

    root: Path
    client_pubkey: str
    sshd_proc: subprocess.Popen[bytes] | None

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def netns(self) -> str:
        raise NotImplementedError

    @property
    def veth(self) -> str:
        raise NotImplementedError

    @property
    def veth_peer(self) -> str:
        raise NotImplementedError

    @property
    def address(self) -> str:
        raise NotImplementedError

    @property
    def bridge(self) -> str:
        raise NotImplementedError

    prefix_len = 24

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    def private(self, path: str) -> Path:
        """Where the host's private `path` (e.g. /var/lib/dockyard/agent.log) is seen from outside."""
        for d in PRIVATE_DIRS:
            if path == f"/{d}" or path.startswith(f"/{d}/"):
                return self.root / d.replace("/", "-") / path[len(d) + 2 :]
        raise ValueError(f"{path} is not private to the host")

    ssh = True  # False: the namespace and its address only (no files, no sshd)

    def setup(self) -> None:
        if self.ssh:
            self._write_files()
        self._make_namespace()
        if self.ssh:
            for d in PRIVATE_DIRS:
                # Mount points must exist; they stay (empty) afterwards, because removing a directory that
                # another host's mount namespace uses as a mount point would detach that host's mounts.
                (Path("/") / d).mkdir(parents=True, exist_ok=True)
            self.start_sshd()

    def _write_files(self) -> None:
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

    def _make_namespace(self) -> None:
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.veth_peer)
        sh("ip", "link", "set", self.veth_peer, "netns", self.netns)
        sh("ip", "link", "set", self.veth, "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", self.netns)
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "link", "set", self.veth_peer, "name", "eth0")
        sh(*inside, "ip", "addr", "add", f"{self.address}/{self.prefix_len}", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")

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
        # its own session: a demo's sshd outlives the script that made it, and no terminal signal reaches it
        self.sshd_proc = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
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
            if pid != proc.pid and ppid_of(pid) == proc.pid:
                signal_pid(pid, signal.SIGKILL)
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
        return netns_pids(self.netns)

    def all_pids(self) -> list[int]:
        """Processes in the namespace and all their descendants (containers have namespaces of their own)."""
        return with_descendants(self.pids())

    def read_pidfile(self, path: str) -> int | None:
        try:
            return int(self.private(path).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def teardown(self) -> None:
        """Kill everything in the namespace (SIGTERM, then SIGKILL), then remove it."""
        if self.sshd_proc is not None:
            self.sshd_proc.terminate()
        kill_namespace(self.netns)
        if self.sshd_proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshd_proc.wait(timeout=5)
            self.sshd_proc = None
        sh("ip", "link", "del", self.veth, check=False)
        sh("ip", "netns", "del", self.netns, check=False)
