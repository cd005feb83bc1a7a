"""Fixtures for release tests: real agents (separate processes, real runc + conmon), Debian's
`docker-registry`, and web images built here from busybox-static whose health depends on their content.

Images (pushed once per module, referenced by digest as a controller pins them):
    v1, v2   busybox + /www/index.html ("v1"/"v2") + /www/health → `wget …/health` succeeds
    bad      busybox + /www/index.html only → the health check gets 404 and fails
Each container runs `busybox httpd -f -p 8080 -h /www` with that health check, on no network (loopback only).
Teardown removes every container through the agent and sweeps what could be left (tests/support/sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from agent.api.v1 import containers_pb2 as cpb
from agent.api.v1 import events_pb2, events_pb2_grpc, releases_pb2_grpc
from agent.api.v1 import releases_pb2 as pb
from tests.support.agent import AgentProcess, FleetPki, config_text, run_cli, wait_for
from tests.support.images import busybox_rootfs_bytes
from tests.support.oci_layout import OciLayout, compressible_bytes, tar_of
from tests.support.registry import RegistryServer, running_registry, skopeo
from tests.support.sweep import sweep_agent

PHASE = pb.ReleasePhase.Name
HEALTH_CMD = "wget -q -O- http://127.0.0.1:8080/health"


@dataclass(frozen=True)
class Images:
    """Digest-pinned references of the test images in the module's registry."""

    registry: RegistryServer
    refs: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.refs[name]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    root = tmp_path_factory.mktemp("releases-images")
    oci = OciLayout(root / "layout")
    base = busybox_rootfs_bytes()
    built = {
        "v1": oci.add_image([base, tar_of({"www/index.html": b"v1\n", "www/health": b"ok\n"})]),
        "v2": oci.add_image([base, tar_of({"www/index.html": b"v2\n", "www/health": b"ok\n"})]),
        "bad": oci.add_image([base, tar_of({"www/index.html": b"bad\n"})]),
        "big": oci.add_image([tar_of({"big.bin": compressible_bytes(12_000_000, seed=7)})]),
    }
    with running_registry(root / "registry", "http") as registry:
        refs = {}
        for name, image in built.items():
            oci.tag(image.manifest, name)
            target = f"{registry.host}/shop/web:{name}"
            skopeo(
                ["copy", f"oci:{root / 'layout'}:{name}", f"docker://{target}", *registry.skopeo_args()], root
            )
            refs[name] = f"{registry.host}/shop/web@{image.manifest['digest']}"
        yield Images(registry, refs)


def web(ref: str, name: str = "app", *, publish: tuple[str, ...] = (), **config: Any) -> pb.ReleaseContainer:
    """A busybox httpd serving /www, healthy when /www/health exists."""
    cfg = cpb.ContainerConfig(
        image=ref,
        network="none",
        command=cpb.StringList(values=["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]),
        health_cmd=HEALTH_CMD,
        health_interval="300ms",
        health_timeout="2s",
        health_retries=2,
        stop_timeout=1,  # httpd as pid 1 ignores SIGTERM: do not wait 10 s for each stop
        publish=list(publish),
        **config,
    )
    return pb.ReleaseContainer(name=name, config=cfg)


def revision(*containers: pb.ReleaseContainer, release: str = "web") -> pb.RevisionSpec:
    return pb.RevisionSpec(release=release, containers=list(containers))


def policy(min_healthy: float = 1.0, deadline: float = 30.0, start_first: bool = False) -> pb.VerifyPolicy:
    p = pb.VerifyPolicy(start_first=start_first)
    p.min_healthy.CopyFrom(Duration(seconds=int(min_healthy), nanos=int(min_healthy % 1 * 1e9)))
    p.deadline.CopyFrom(Duration(seconds=int(deadline), nanos=int(deadline % 1 * 1e9)))
    return p


@dataclass
class Host:
    """One agent under test and the means to drive its Releases service."""

    agent: AgentProcess
    config_dir: Path
    cgroup_parent: str
    extra: dict[str, Any] = field(default_factory=dict)

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config_dir, *args, host=self.agent.unix_target, **kwargs)

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix:{self.agent.socket}")

    @contextlib.asynccontextmanager
    async def releases(self) -> AsyncIterator[releases_pb2_grpc.ReleasesStub]:
        async with self.channel() as ch:
            yield releases_pb2_grpc.ReleasesStub(ch)

    async def stage(self, spec: pb.RevisionSpec, **kwargs: Any) -> list[pb.StageReleaseProgress]:
        async with self.releases() as stub:
            return [p async for p in stub.Stage(pb.StageReleaseRequest(spec=spec, **kwargs))]

    async def activate(self, number: int, pol: pb.VerifyPolicy, **kwargs: Any) -> pb.ActivateReleaseResponse:
        async with self.releases() as stub:
            req = pb.ActivateReleaseRequest(release="web", revision=number, policy=pol, **kwargs)
            response: pb.ActivateReleaseResponse = await stub.Activate(req)
            return response

    async def get(self, release: str = "web") -> pb.GetReleaseResponse:
        async with self.releases() as stub:
            response: pb.GetReleaseResponse = await stub.Get(pb.GetReleaseRequest(release=release))
            return response

    async def wait_phase(self, *phases: str, release: str = "web", timeout: float = 60) -> pb.ReleaseState:
        """Watch the release until it is in one of `phases` (names without the RELEASE_PHASE_ prefix)."""
        wanted = {f"RELEASE_PHASE_{p}" for p in phases}
        async with self.releases() as stub:
            seen = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    async for state in stub.Watch(pb.WatchReleaseRequest(release=release)):
                        seen.append(PHASE(state.phase))
                        if PHASE(state.phase) in wanted:
                            return state
        raise AssertionError(f"release {release} never reached {phases}; phases seen: {seen}")

    async def events(self, type_: str = "release") -> list[events_pb2.AgentEvent]:
        async with self.channel() as ch:
            stub = events_pb2_grpc.EventsStub(ch)
            req = events_pb2.StreamEventsRequest(since=0, filters=[f"type={type_}"], no_follow=True)
            return [r.event async for r in stub.Stream(req)]

    def containers(self) -> dict[str, str]:
        """Name → status of every container, by `ps -a` through the CLI."""
        rows = json.loads(self.cli("--format", "json", "ps", "-a").stdout or "[]")
        return {r["name"]: r["status"] for r in rows}


HostFactory = Callable[..., Host]


@pytest.fixture
def host_factory(tmp_path: Path, images: Images) -> Iterator[HostFactory]:
    made: list[Host] = []
    pki = FleetPki.create(tmp_path)

    def make(name: str = "agent", *, data_tmpfs: int = 0, **config: Any) -> Host:
        root = tmp_path / name
        root.mkdir(parents=True)
        if data_tmpfs:
            (root / "data").mkdir()
            size = f"size={data_tmpfs},mode=0700"
            subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(root / "data")], check=True)
        parent = f"/dytest-{secrets.token_hex(4)}"
        values = {"cgroup_parent": parent, "insecure_registries": [images.registry.host], **config}
        cfg = root / "agent.toml"
        cfg.write_text(config_text(values))
        agent = AgentProcess(root=root, tls_dir=None, listen=None, extra_args=["--config", str(cfg)])
        host = Host(agent, pki.config_dir, parent, {"tmpfs": bool(data_tmpfs)})
        made.append(host)
        agent.start()
        return host

    try:
        yield make
    finally:
        for host in made:
            try:
                if host.agent.running:
                    with contextlib.suppress(Exception):
                        ids = host.cli("ps", "-aq", "--no-trunc", timeout=30).stdout.split()
                        if ids:
                            host.cli("rm", "-f", *ids, timeout=120)
                sweep_agent(host.agent, host.cgroup_parent)
            finally:
                host.agent.release()
                if host.extra.get("tmpfs"):
                    data = host.agent.data_root
                    if subprocess.run(["umount", str(data)], capture_output=True).returncode != 0:
                        subprocess.run(["umount", "-l", str(data)], check=False)


@pytest.fixture
def host(host_factory: HostFactory) -> Host:
    return host_factory()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_for(predicate, timeout, what, interval=0.1)
