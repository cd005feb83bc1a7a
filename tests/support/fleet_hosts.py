"""Real agents on netns test hosts, for end-to-end tests of what the controller does to a fleet (rollouts).

`agent_fleet(base, labels)` makes one host per entry of `labels`: a network namespace on a private bridge
(tests/support/netns_hosts.Fleet with ssh=False, address 10.231.X.(10+N)), and in it a real
`dockyard-agent` started with `nsenter --net` (the host's network, the machine's filesystem): mutual TLS
on ADDRESS:7443 with a certificate of the fleet's CA, a unix socket under the host's directory (the test
inspects an agent there even while its network is cut), its own data root (optionally a small tmpfs),
config dir and cgroup parent. The controller config dir holds the CA, a client certificate and an
inventory naming every host with its labels (and groups), as `bootstrap` would have left it — without
SSH, which these tests do not need. Debian's docker-registry listens on the bridge gateway (plain HTTP,
an insecure registry for every agent), so hosts pull from it as edge devices pull from a lab registry.

Teardown, also after a failure or a partial setup: containers removed through each agent, then
`sweep_agent` (processes, cgroups, mounts), tmpfs data roots unmounted, the namespaces removed with what
is left in them (nft rules a test added inside a namespace go with it), the registry stopped.
"""

from __future__ import annotations

import contextlib
import http.client
import secrets
import subprocess
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from agent.api.v1 import (
    containers_pb2,
    containers_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    releases_pb2_grpc,
)
from agent.api.v1 import releases_pb2 as rpb
from controller import inventory, pki
from tests.support.agent import AgentProcess, config_text, run_cli, wait_for
from tests.support.netns_hosts import Fleet, TestHost
from tests.support.registry import REGISTRY_BIN, free_port, skopeo
from tests.support.sweep import mounts_under, sweep_agent

AGENT_PORT = 7443
CUT_TABLE = "dyfcut"


@dataclass
class NetnsAgent(AgentProcess):
    """An AgentProcess whose process runs in a test host's network namespace."""

    netns: str = ""

    def args(self) -> list[str]:
        # nsenter, not `ip netns exec` (which remounts /sys and hides the cgroup mounts runc needs); it
        # execs the agent, so the pid is the agent's.
        return ["nsenter", f"--net=/run/netns/{self.netns}", *super().args()]

    def _isolate_network(self) -> None:
        """Nothing to do: the agent's bridge and nftables tables live in the host's own network namespace,
        so it takes none of the machine-wide test network slots (a 50-host fleet would use them up)."""


@dataclass
class GatewayRegistry:
    """Debian's docker-registry (plain HTTP, no auth) on the fleet's bridge gateway address."""

    root: Path
    address: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "\n".join(
                [
                    "version: 0.1",
                    "log:",
                    "  level: warn",
                    "  accesslog:",
                    "    disabled: true",
                    "storage:",
                    "  filesystem:",
                    f"    rootdirectory: {self.root / 'storage'}",
                    "http:",
                    f"  addr: {self.host}",
                    f"  secret: {secrets.token_hex(16)}",
                    "",
                ]
            )
        )
        with open(self.root / "registry.log", "wb") as log:
            self.process = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self._ready, 15, f"docker-registry on {self.host}", interval=0.05)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited:\n{(self.root / 'registry.log').read_text()}")
        conn = http.client.HTTPConnection(self.address, self.port, timeout=2)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def push(self, layout: Path, tag: str, repository: str) -> str:
        """Copy `oci:LAYOUT:TAG` to `HOST/REPOSITORY:TAG`; returns that reference."""
        target = f"{self.host}/{repository}:{tag}"
        skopeo(
            ["copy", f"oci:{layout}:{tag}", f"docker://{target}", "--dest-tls-verify=false"], self.root / "sk"
        )
        return target

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class FleetHost:
    """One netns host with its agent (None: a host whose agent is down)."""

    test_host: TestHost
    labels: dict[str, str]
    root: Path
    cgroup_parent: str
    agent: NetnsAgent | None = None
    tmpfs: bool = False
    cut_active: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return self.test_host.name

    @property
    def address(self) -> str:
        return self.test_host.address

    @property
    def netns(self) -> str:
        return self.test_host.netns

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    # -- the agent over its unix socket (works while the host's network is cut) -----------------------

    def _channel(self) -> grpc.Channel:
        assert self.agent is not None, f"{self.name} has no agent"
        return grpc.insecure_channel(f"unix:{self.agent.socket}")

    def release(self, name: str) -> rpb.GetReleaseResponse | None:
        """The agent's state and revisions of release `name`; None when it never heard of it."""
        with self._channel() as ch:
            try:
                response: rpb.GetReleaseResponse = releases_pb2_grpc.ReleasesStub(ch).Get(
                    rpb.GetReleaseRequest(release=name), timeout=30
                )
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                raise
            return response

    def lease(self, release: str, *, owner: str, rollout_id: str, ttl: float) -> rpb.LeaseReleaseResponse:
        """Hold `release` as a rollout would (what a controller that died leaves behind)."""
        req = rpb.LeaseReleaseRequest(release=release, owner=owner, rollout_id=rollout_id)
        req.ttl.FromNanoseconds(int(ttl * 1e9))
        with self._channel() as ch:
            response: rpb.LeaseReleaseResponse = releases_pb2_grpc.ReleasesStub(ch).Lease(req, timeout=30)
            return response

    def releases(self) -> list[rpb.ReleaseState]:
        with self._channel() as ch:
            response = releases_pb2_grpc.ReleasesStub(ch).List(rpb.ListReleasesRequest(), timeout=30)
            return list(response.releases)

    def events(self, type_: str = "release") -> list[events_pb2.AgentEvent]:
        """The agent's persisted events of one type, oldest first (with their timestamps)."""
        with self._channel() as ch:
            req = events_pb2.StreamEventsRequest(since=0, filters=[f"type={type_}"], no_follow=True)
            return [r.event for r in events_pb2_grpc.EventsStub(ch).Stream(req, timeout=30)]

    def images(self) -> list[str]:
        """Every image the agent holds, as `id name,name` lines (sorted)."""
        with self._channel() as ch:
            response = images_pb2_grpc.ImagesStub(ch).List(images_pb2.ListImagesRequest(), timeout=30)
            return sorted(f"{i.id} {','.join(sorted(i.names))}" for i in response.images)

    def volume_dir(self, name: str) -> Path:
        """Where volume `name` keeps its files (agent/containers/volumes.py)."""
        return self.data_root / "volumes" / name / "_data"

    # -- the network -----------------------------------------------------------------------------------

    def cut(self) -> None:
        """Drop every packet in or out of the host's eth0 (the controller's connection stalls, as over a
        dead link: no reset, no error, just silence)."""
        rules = (
            f"table inet {CUT_TABLE} {{\n"
            '  chain input { type filter hook input priority -300; policy accept; iifname "eth0" drop; }\n'
            '  chain output { type filter hook output priority -300; policy accept; oifname "eth0" drop; }\n'
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "-f", "-"], input=rules, text=True, check=True,
            capture_output=True,
        )  # fmt: skip
        self.cut_active = True

    def restore(self) -> None:
        if self.cut_active:
            subprocess.run(
                ["ip", "netns", "exec", self.netns, "nft", "delete", "table", "inet", CUT_TABLE],
                check=False, capture_output=True,
            )  # fmt: skip
            self.cut_active = False


class AgentFleet:
    """Netns hosts with agents, a controller config dir with their inventory, and a registry they reach."""

    def __init__(
        self,
        base: Path,
        labels: Sequence[Mapping[str, str]],
        *,
        groups: Mapping[str, Sequence[int]] | None = None,
        tmpfs: Mapping[int, int] | None = None,
        no_agent: Collection[int] = (),
    ) -> None:
        """`labels[i]` are host i+1's labels; `groups` name lists of host numbers (1-based); `tmpfs` gives
        hosts a data root of that many bytes; hosts in `no_agent` get none (a host that is down)."""
        self.base = base
        self.labels = [dict(x) for x in labels]
        self.groups = dict(groups or {})
        self.tmpfs = dict(tmpfs or {})
        self.no_agent = set(no_agent)
        self.netns = Fleet(len(labels), base, ssh=False)
        self.config_dir = base / "controller"
        self.hosts: list[FleetHost] = []
        self.registry: GatewayRegistry | None = None

    def setup(self) -> None:
        self.netns.setup()
        pki.init(self.config_dir)
        self.registry = GatewayRegistry(self.base / "registry", self.netns.gateway, free_port())
        self.registry.start()
        for i, test_host in enumerate(self.netns.hosts, 1):
            root = self.base / "agents" / test_host.name
            host = FleetHost(test_host, self.labels[i - 1], root, f"/dyroll-{secrets.token_hex(4)}")
            self.hosts.append(host)
            if i not in self.no_agent:
                host.agent = self._agent(host, self.tmpfs.get(i, 0))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda a: a.start(timeout=60), [h.agent for h in self.hosts if h.agent]))
        self._write_inventory()

    def _agent(self, host: FleetHost, tmpfs_bytes: int) -> NetnsAgent:
        assert self.registry is not None
        host.root.mkdir(parents=True)
        if tmpfs_bytes:
            host.data_root.mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={tmpfs_bytes},mode=0700", "tmpfs", str(host.data_root)],
                check=True,
            )
            host.tmpfs = True
        tls = host.root / "tls"
        pki.issue_agent(self.config_dir, host.name, [host.address], tls)
        (host.root / "etc").mkdir()
        cfg = host.root / "agent.toml"
        values: dict[str, Any] = {
            "cgroup_parent": host.cgroup_parent,
            "insecure_registries": [self.registry.host],
            "config_dir": str(host.root / "etc"),
        }
        cfg.write_text(config_text(values))
        return NetnsAgent(
            root=host.root,
            tls_dir=tls,
            listen=f"{host.address}:{AGENT_PORT}",
            extra_args=["--config", str(cfg)],
            netns=host.netns,
        )

    def _write_inventory(self) -> None:
        hosts = {
            h.name: inventory.Host(h.name, h.address, AGENT_PORT, labels=dict(h.labels)) for h in self.hosts
        }
        groups = {g: tuple(self.hosts[i - 1].name for i in members) for g, members in self.groups.items()}
        inventory.save(inventory.Inventory(hosts, groups), self.config_dir / inventory.INVENTORY_FILE)

    def __getitem__(self, name: str) -> FleetHost:
        return next(h for h in self.hosts if h.name == name)

    def names(self, *numbers: int) -> list[str]:
        return [self.hosts[i - 1].name for i in numbers]

    def cli(
        self,
        *args: str,
        config_dir: Path | None = None,
        timeout: float = 180,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(config_dir or self.config_dir, *args, timeout=timeout, env=env)

    def remove_containers(self) -> None:
        """Every container on every host, removed through its agent (hosts in parallel). Release state
        stays on the agents; what stops is the running (and health-checking) of what a test left."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(_remove_containers, [h.agent for h in self.hosts if h.agent is not None]))

    def close(self) -> None:
        """Everything the fleet made goes, whatever state a test left it in (hosts in parallel)."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self._close_host, self.hosts))
        self.netns.close()
        if self.registry is not None:
            self.registry.stop()

    def _close_host(self, host: FleetHost) -> None:
        with contextlib.suppress(Exception):
            host.restore()
        try:
            if host.agent is not None:
                _remove_containers(host.agent)
                sweep_agent(host.agent, host.cgroup_parent)
                host.agent.release()
        except Exception as exc:  # go on with the rest of this host, and the other hosts
            print(f"teardown of {host.name}'s agent failed: {exc}")
        if host.tmpfs and str(host.data_root) in mounts_under(host.data_root):  # (sweep_agent may have)
            if subprocess.run(["umount", str(host.data_root)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(host.data_root)], check=False)


def _remove_containers(agent: AgentProcess) -> None:
    """Every container, removed by the agent itself (over its socket: no CLI process per call)."""
    if not agent.running:
        return
    with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(f"unix:{agent.socket}") as ch:
        stub = containers_pb2_grpc.ContainersStub(ch)
        for c in stub.List(containers_pb2.ListContainersRequest(all=True), timeout=30).containers:
            with contextlib.suppress(grpc.RpcError):
                stub.Remove(containers_pb2.RemoveContainerRequest(container=c.id, force=True), timeout=60)


@contextlib.contextmanager
def agent_fleet(base: Path, labels: Sequence[Mapping[str, str]], **kwargs: Any) -> Iterator[AgentFleet]:
    fleet = AgentFleet(base, labels, **kwargs)
    try:
        fleet.setup()
        yield fleet
    finally:
        fleet.close()


def print_agent_logs(fleet: AgentFleet, tail: int = 3000) -> None:
    """The end of every agent's log (teardown of a failed module: what the agents saw)."""
    for host in fleet.hosts:
        if host.agent is not None:
            print(f"\n----- {host.name} agent log (tail) -----\n{host.agent.log_text()[-tail:]}")


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    return wait_for(predicate, timeout, what, interval=0.05)


def now() -> float:
    return time.time()
