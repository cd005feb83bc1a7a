"""Fixtures for network tests: a NetworkManager on private names and subnets, "containers" that are plain
network namespaces running busybox, and test "hosts" (namespaces wired to the host by a veth).

Every name a test creates starts with `dyn-`; every subnet is inside 10.232.0.0/16. Teardown removes the
namespaces (killing what runs in them), the bridges and veths the manager made, and the nft table, even
when the test failed.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from agent.network import nft
from agent.network.etcfiles import EtcPaths
from agent.network.manager import ContainerLookup, NetworkManager, NetworkSettings
from agent.state.db import Database
from tests.support.agent import AgentProcess, FleetPki, run_cli

pytestmark = pytest.mark.root

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
CGI_WHOAMI = (
    '#!/bin/sh\nprintf \'Content-Type: text/plain\\r\\n\\r\\n%s %s\\n\' "$SERVER_NAME_TAG" "$REMOTE_ADDR"\n'
)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def sh(*argv: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


@dataclass
class Block:
    """This test's /20 of 10.232.0.0/16: a default subnet, a pool for user networks, and link nets."""

    base: IPv4Network

    @property
    def default_subnet(self) -> IPv4Network:
        return next(self.base.subnets(new_prefix=24))

    @property
    def pool(self) -> IPv4Network:
        return list(self.base.subnets(new_prefix=22))[1]

    def link_net(self, n: int) -> IPv4Network:
        """/30s for host↔namespace veths (test hosts, upstream servers)."""
        last = list(self.base.subnets(new_prefix=24))[-1]
        return list(last.subnets(new_prefix=30))[n]


@dataclass
class Namespace:
    """A network namespace named dyn-*; `run`/`popen` execute inside it, optionally with the container's
    /etc/hosts and resolv.conf bind-mounted in a private mount namespace."""

    name: str
    etc: EtcPaths
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mount_etc: bool = False  # run commands with `etc` bind-mounted over /etc/hosts and /etc/resolv.conf

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def _argv(self, argv: Sequence[str]) -> list[str]:
        if not self.mount_etc:
            return ["ip", "netns", "exec", self.name, *argv]
        hosts, resolv = self.etc.hosts, self.etc.resolv_conf
        script = f'mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf && exec "$@"'
        return [
            "ip",
            "netns",
            "exec",
            self.name,
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *argv,
        ]

    def run(self, *argv: str, timeout: float = 10, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(*self._argv(argv), timeout=timeout, check=check)

    def popen(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            self._argv(argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.procs.append(proc)
        return proc

    def serve_http(self, root: Path, tag: str, port: int = 80, bind: str = "0.0.0.0") -> None:
        """busybox httpd whose /cgi-bin/whoami answers "<tag> <client address>"; waits until it listens."""
        (root / "cgi-bin").mkdir(parents=True, exist_ok=True)
        script = root / "cgi-bin" / "whoami"
        script.write_text(CGI_WHOAMI)
        script.chmod(0o755)
        (root / "index.html").write_text(f"{tag}\n")
        where = f"{bind}:{port}" if bind else str(port)
        self.popen(BUSYBOX, "httpd", "-f", "-p", where, "-h", str(root), env={"SERVER_NAME_TAG": tag})
        wait_until(lambda: f":{port:04X}" in self._listening(), 5, f"httpd on {self.name}:{port}")

    def _listening(self) -> str:
        return self.run("cat", "/proc/net/tcp", "/proc/net/tcp6", check=False).stdout

    def fetch(self, url: str, timeout: float = 5) -> str | None:
        """`busybox wget` from inside; None when it fails (refused, unreachable, timed out)."""
        try:
            done = self.run(BUSYBOX, "wget", "-q", "-O", "-", url, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return None
        return done.stdout if done.returncode == 0 else None


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def fetch_host(url: str, timeout: float = 5) -> str | None:
    """`busybox wget` from the host itself."""
    try:
        done = sh(BUSYBOX, "wget", "-q", "-O", "-", url, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass
class Lab:
    """Everything one test made, so teardown can remove it."""

    tag: str
    block: Block
    scratch: Path
    namespaces: list[Namespace] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    managers: list[NetworkManager] = field(default_factory=list)
    databases: list[Path] = field(default_factory=list)  # agents' databases: their bridges go at teardown

    @property
    def table(self) -> str:
        return f"dyn-{self.tag}"

    @property
    def bridge(self) -> str:
        return f"dyn-{self.tag}0"

    def www(self, ns: Namespace) -> Path:
        """A document root for a server in `ns`."""
        root = self.scratch / f"www-{ns.name}"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def netns(self, suffix: str) -> Namespace:
        name = f"dyn-{self.tag}-{suffix}"
        etc_dir = self.scratch / f"etc-{name}"
        etc_dir.mkdir(parents=True)
        etc = EtcPaths(etc_dir / "hosts", etc_dir / "hostname", etc_dir / "resolv.conf")
        for path in (etc.hosts, etc.hostname, etc.resolv_conf):
            path.write_text("")
        ns = Namespace(name, etc)
        sh("ip", "netns", "add", ns.name)
        self.namespaces.append(ns)
        sh("ip", "netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        return ns

    def test_host(self, suffix: str, n: int) -> tuple[Namespace, IPv4Interface, IPv4Interface]:
        """A namespace wired to the host by a veth on link_net(n): (namespace, host side, its side)."""
        ns = self.netns(suffix)
        net = self.block.link_net(n)
        host_if, ns_if = (IPv4Interface(f"{a}/{net.prefixlen}") for a in list(net.hosts())[:2])
        link = f"dyn-{self.tag}h{n}"
        sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        self.links.append(link)
        sh("ip", "addr", "add", str(host_if), "dev", link)
        sh("ip", "link", "set", link, "up")
        ns.run("ip", "addr", "add", str(ns_if), "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        return ns, host_if, ns_if

    def settings(self, etc_dir: Path | None = None) -> NetworkSettings:
        return NetworkSettings(
            etc_dir=etc_dir,
            bridge=self.bridge,
            subnet=str(self.block.default_subnet),
            pool=str(self.block.pool),
            name_prefix="dyn-",
            nft_table=self.table,
        )

    def agent_config(self, path: Path) -> Path:
        """A dockyard-agent TOML config using this lab's names and subnets."""
        s = self.settings()
        path.write_text(
            f'network_bridge = "{s.bridge}"\nnetwork_subnet = "{s.subnet}"\nnetwork_pool = "{s.pool}"\n'
            f'network_name_prefix = "{s.name_prefix}"\nnetwork_nft_table = "{s.nft_table}"\n'
        )
        return path

    def manager(self, db_path: Path, containers: ContainerLookup | None = None) -> NetworkManager:
        mgr = NetworkManager(Database(db_path), self.settings(db_path.parent / "etc"), containers)
        self.managers.append(mgr)
        return mgr

    def teardown(self) -> None:
        for ns in self.namespaces:
            for proc in ns.procs:
                proc.kill()
                proc.wait()
            pids = sh("ip", "netns", "pids", ns.name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", ns.name, check=False)
        bridges: set[str] = {self.bridge}
        for mgr in self.managers:
            bridges |= {n.bridge for n in mgr.networks()}
        for path in self.databases:
            if path.exists():
                db = Database(path)
                bridges |= {r["bridge"] for r in db.query("SELECT bridge FROM network_networks")}
                db.close()
        for bridge in sorted(bridges):
            for port in bridge_ports(bridge):
                sh("ip", "link", "del", port, check=False)
            sh("ip", "link", "del", bridge, check=False)
        for link in self.links:
            sh("ip", "link", "del", link, check=False)
        sh("nft", "delete", "table", "inet", self.table, check=False)


def bridge_ports(bridge: str) -> list[str]:
    out = sh("ip", "-o", "link", "show", "master", bridge, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", name, check=False).returncode == 0


async def table_rules(table: str) -> list[dict[str, object]]:
    return await nft.list_rules(table)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root()
    tag = secrets.token_hex(3)[:5]
    block = Block(IPv4Network(f"10.232.{16 * random.randrange(15)}.0/20"))
    lab = Lab(tag, block, tmp_path)
    try:
        yield lab
    finally:
        lab.teardown()


@pytest.fixture
async def manager(lab: Lab, tmp_path: Path) -> AsyncIterator[NetworkManager]:
    mgr = lab.manager(tmp_path / "dockyard.db")
    await mgr.start()
    try:
        yield mgr
    finally:
        await mgr.stop()


def ip_of(address: IPv4Interface | IPv4Address) -> str:
    return str(address.ip if isinstance(address, IPv4Interface) else address)


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def net_agent(lab: Lab, agent_factory: Callable[..., AgentProcess], tmp_path: Path) -> AgentProcess:
    """A real dockyard-agent configured with this lab's bridge, subnets and nft table."""
    config = lab.agent_config(tmp_path / "agent.toml")
    agent = agent_factory("netagent", extra_args=["--config", str(config)])
    lab.databases.append(agent.data_root / "dockyard.db")
    return agent


@pytest.fixture
def dy(fleet_pki: FleetPki, net_agent: AgentProcess) -> Iterator[Cli]:
    """`dy("network", "ls")`: the CLI against `net_agent`. Removes every container it left at teardown."""

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(fleet_pki.config_dir, *args, host=net_agent.unix_target, **kwargs)

    yield run
    if net_agent.running:
        left = run("ps", "-a", "-q", "--no-trunc").stdout.split()
        if left:
            run("rm", "-f", *left, timeout=120)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout
