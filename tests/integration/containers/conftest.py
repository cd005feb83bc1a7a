"""Fixtures for container tests: real agents (separate processes) running real runc + conmon.

Each agent gets its own data root, its own cgroup parent (`/dytest-<random>`) and the busybox image
imported with `dockyard import`. Teardown removes every container through the agent (`rm -f`), stops the
agent, and then sweeps whatever might be left — processes whose command line names the agent's data
root or that sit in its cgroups, mounts under the data root, the cgroups themselves — so a failing test
leaves nothing behind. `leftovers()` is what the leak assertions check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.api.v1 import containers_pb2 as pb
from agent.api.v1 import containers_pb2_grpc
from agent.runtime import cgroups
from tests.support.agent import AgentProcess, FleetPki, config_text, run_cli, wait_for
from tests.support.images import busybox_rootfs_tar
from tests.support.sweep import cmdline, mounts_under, pids_mentioning, sweep_agent

IMAGE = "busybox:test"


@dataclass
class Yard:
    """One agent under test plus the means to drive it and to check what it left behind."""

    agent: AgentProcess
    config_dir: Path
    cgroup_parent: str
    extra_config: dict[str, Any] = field(default_factory=dict)

    @property
    def data_root(self) -> Path:
        return self.agent.data_root

    @property
    def host(self) -> str:
        return self.agent.unix_target

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config_dir, *args, host=self.host, **kwargs)

    def ok(self, *args: str, **kwargs: Any) -> str:
        """Run the CLI and insist on success; returns stdout."""
        done = self.cli(*args, **kwargs)
        assert done.returncode == 0, f"dockyard {' '.join(args)} failed ({done.returncode}): {done.stderr}"
        return done.stdout

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.ok("inspect", ref))
        return data[0]

    def status(self, ref: str) -> str:
        return str(self.inspect(ref)["status"])

    def wait_status(self, ref: str, status: str, timeout: float = 20) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            d = self.inspect(ref)
            return d if d["status"] == status else None

        return wait_for(check, timeout, f"{ref} to be {status}", interval=0.1)  # type: ignore[no-any-return]

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix:{self.agent.socket}")

    def restart_agent(self, *, kill: bool = False) -> None:
        if kill:
            self.agent.kill()
        else:
            self.agent.stop()
        self.agent.start()


def leftovers(yard: Yard) -> dict[str, list[str]]:
    """Mounts, cgroups, processes, runtime state and directories the agent's containers still hold."""
    root = str(yard.data_root)
    mounts = mounts_under(root)
    groups = [str(p) for p in cgroups.leftover(yard.cgroup_parent)]
    procs = []
    agent_pid = yard.agent.proc.pid if yard.agent.proc is not None else -1
    for pid in pids_mentioning(root):
        if pid == agent_pid:
            continue
        procs.append(f"{pid} {cmdline(pid)[:120]}")
    runc_root = yard.data_root / "run" / "runc"
    state = sorted(p.name for p in runc_root.iterdir()) if runc_root.exists() else []
    ctr_root = yard.data_root / "containers"
    dirs = sorted(p.name for p in ctr_root.iterdir()) if ctr_root.exists() else []
    return {"mounts": mounts, "cgroups": groups, "processes": procs, "runtime_state": state, "dirs": dirs}


def sweep(yard: Yard) -> None:
    """Remove everything the agent's containers may have left, whatever state the test ended in."""
    if yard.agent.running:
        with contextlib.suppress(Exception):
            ids = yard.cli("ps", "-aq", "--no-trunc", timeout=30).stdout.split()
            if ids:
                yard.cli("rm", "-f", *ids, timeout=120)
    sweep_agent(yard.agent, yard.cgroup_parent)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("images") / "busybox.tar")


YardFactory = Callable[..., Yard]


@contextlib.contextmanager
def _yards(base: Path, busybox_tar: Path) -> Iterator[YardFactory]:
    made: list[Yard] = []
    pki = FleetPki.create(base)

    def make(name: str = "agent", **config: Any) -> Yard:
        root = base / name
        root.mkdir(parents=True)
        parent = f"/dytest-{secrets.token_hex(4)}"
        values = {"cgroup_parent": parent, **config}
        cfg = root / "agent.toml"
        cfg.write_text(config_text(values))
        agent = AgentProcess(root=root, tls_dir=None, listen=None, extra_args=["--config", str(cfg)])
        yard = Yard(agent, pki.config_dir, parent, config)
        made.append(yard)
        agent.start()
        yard.ok("import", str(busybox_tar), IMAGE, timeout=120)
        return yard

    try:
        yield make
    finally:
        for yard in made:
            try:
                sweep(yard)
            finally:
                if yard.agent.proc is not None and yard.agent.proc.returncode not in (0, None, -9):
                    print(f"\n----- agent log {yard.agent.root} -----\n{yard.agent.log_text()[-20000:]}")


@pytest.fixture
def yard_factory(tmp_path: Path, busybox_tar: Path) -> Iterator[YardFactory]:
    """Agents for one test (restart/crash tests own theirs)."""
    with _yards(tmp_path, busybox_tar) as make:
        yield make


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Yard]:
    """One agent shared by a module's tests (they clean up their own containers)."""
    with _yards(tmp_path_factory.mktemp("yard"), busybox_tar) as make:
        yield make("shared", container_log_max_size=256 * 1024, container_log_max_files=3)


# ---- gRPC helpers for tests that need many operations quickly (no CLI process per call) -------------


def config(image: str = IMAGE, *command: str, **fields: Any) -> pb.ContainerConfig:
    cfg = pb.ContainerConfig(image=image, network="none", **fields)
    if command:
        cfg.command.values.extend(command)
    return cfg


async def run_detached(stub: containers_pb2_grpc.ContainersStub, cfg: pb.ContainerConfig) -> str:
    async def requests() -> Any:
        yield pb.RunContainerRequest(start=pb.RunStart(config=cfg, detach=True))

    cid = ""
    async for resp in stub.Run(requests()):
        if resp.WhichOneof("msg") == "id":
            cid = resp.id
    return cid


async def start_many(yard: Yard, cfgs: list[pb.ContainerConfig]) -> list[str]:
    """`run -d` of every config at once over one channel; returns the IDs in order."""
    async with yard.channel() as ch:
        stub = containers_pb2_grpc.ContainersStub(ch)
        return list(await asyncio.gather(*(run_detached(stub, c) for c in cfgs)))


async def remove_many(yard: Yard, ids: list[str]) -> None:
    async with yard.channel() as ch:
        stub = containers_pb2_grpc.ContainersStub(ch)
        await asyncio.gather(*(stub.Remove(pb.RemoveContainerRequest(container=c, force=True)) for c in ids))


NOTHING_LEFT = {"mounts": [], "cgroups": [], "processes": [], "runtime_state": [], "dirs": []}


def assert_nothing_left(yard: Yard, timeout: float = 10.0) -> None:
    """The runtime's state of an exited container is released moments after the exit is recorded (the
    agent does not hold a reply for runc's cgroup retries): wait for it with a deadline, then compare."""
    try:
        wait_for(lambda: leftovers(yard) == NOTHING_LEFT, timeout, "the containers' leftovers to go")
    except TimeoutError:
        left = leftovers(yard)
        assert left == NOTHING_LEFT, left
