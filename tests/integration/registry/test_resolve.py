"""Images.Resolve against real `docker-registry` processes through a real agent: a tag becomes the digest a
pull on that agent would fetch (the platform manifest of an index), with its compressed size, and nothing
is pulled. Rollouts pin every tag by it once, at the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller import target as target_mod
from controller.api.images import ImagesApi
from controller.api.registry import RegistryApi, ResolvedImage
from controller.client import AgentClient
from controller.credentials import Login
from controller.errors import AgentCallError
from tests.support.agent import AgentProcess, FleetPki
from tests.support.images import busybox_rootfs_bytes
from tests.support.oci_layout import OciLayout, tar_of
from tests.support.registry import PASSWORD, USER, RegistryServer, running_registry, skopeo

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("oci-resolve") / "layout"
    oci = OciLayout(root)
    busybox = oci.add_image([busybox_rootfs_bytes(), tar_of({"srv/v.txt": b"resolve\n"})])
    amd = oci.add_image([tar_of({"arch": b"amd64\n"})], architecture="amd64")
    arm = oci.add_image([tar_of({"arch": b"arm64\n"})], architecture="arm64", variant="v8")
    index = oci.add_index([amd, arm])
    oci.tag(busybox.manifest, "busybox")
    oci.tag(index, "multi")
    return {"root": root, "busybox": busybox, "amd": amd, "arm": arm, "index": index}


def push(layout: dict[str, Any], registry: RegistryServer, tag: str, target: str, work: Path) -> None:
    extra = ["--all", "--preserve-digests"] if tag == "multi" else []
    src = f"oci:{layout['root']}:{tag}"
    skopeo(["copy", *extra, src, f"docker://{registry.host}/{target}", *registry.skopeo_args()], work)


@pytest.fixture
def http_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with running_registry(tmp_path / "registry", "http") as server:
        yield server


def resolve(
    fleet_pki: FleetPki, agent: AgentProcess, reference: str, **kwargs: Any
) -> tuple[ResolvedImage, int]:
    """The resolution and how many images the agent holds afterwards."""

    async def go() -> tuple[ResolvedImage, int]:
        client = AgentClient(target_mod.parse(agent.unix_target), fleet_pki.config_dir)
        try:
            resolved = await RegistryApi(client).resolve(reference, **kwargs)
            return resolved, len(await ImagesApi(client).list())
        finally:
            await client.close()

    return asyncio.run(go())


def test_resolve_tag_and_index_without_pulling(
    layout: dict[str, Any],
    http_registry: RegistryServer,
    agent_factory: Callable[..., AgentProcess],
    fleet_pki: FleetPki,
    tmp_path: Path,
) -> None:
    push(layout, http_registry, "busybox", "shop/web:2", tmp_path / "skopeo")
    push(layout, http_registry, "multi", "shop/multi:1", tmp_path / "skopeo")
    agent = agent_factory(extra_args=["--insecure-registry", http_registry.host])

    one, images = resolve(fleet_pki, agent, f"{http_registry.host}/shop/web:2")
    busybox = layout["busybox"]
    assert one.reference == f"{http_registry.host}/shop/web:2"
    assert one.digest == busybox.manifest["digest"]
    assert one.media_type == busybox.manifest["mediaType"]
    assert one.size == sum(layer["size"] for layer in busybox.layers)
    assert one.index_digest is None
    assert images == 0  # nothing pulled

    arm, _ = resolve(fleet_pki, agent, f"{http_registry.host}/shop/multi:1", platform="linux/arm64")
    assert (arm.digest, arm.index_digest) == (layout["arm"].manifest["digest"], layout["index"]["digest"])
    assert arm.platform.startswith("linux/arm64")
    amd, images = resolve(fleet_pki, agent, f"{http_registry.host}/shop/multi:1", platform="linux/amd64")
    assert amd.digest == layout["amd"].manifest["digest"]
    assert amd.size == layout["amd"].layers[0]["size"]
    assert images == 0

    # a digest reference resolves to itself
    pinned, _ = resolve(fleet_pki, agent, f"{http_registry.host}/shop/web@{one.digest}")
    assert pinned.digest == one.digest

    with pytest.raises(AgentCallError) as missing:
        resolve(fleet_pki, agent, f"{http_registry.host}/shop/web:404")
    assert missing.value.code == "NOT_FOUND"
    with pytest.raises(AgentCallError) as mips:
        resolve(fleet_pki, agent, f"{http_registry.host}/shop/multi:1", platform="linux/mips64")
    assert mips.value.code == "NOT_FOUND"
    assert "no manifest for requested platform linux/mips64" in str(mips.value)


def test_resolve_with_credentials_as_pull_does(
    layout: dict[str, Any], agent_factory: Callable[..., AgentProcess], fleet_pki: FleetPki, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "registry-tls", "tls") as registry:
        push(layout, registry, "busybox", "private/web:1", tmp_path / "skopeo")
        config_dir = tmp_path / "agent-config"
        registry.install_certs(config_dir)
        agent = agent_factory(extra_args=["--config-dir", str(config_dir)])
        ref = f"{registry.host}/private/web:1"

        with pytest.raises(AgentCallError) as denied:
            resolve(fleet_pki, agent, ref)
        assert denied.value.code == "UNAUTHENTICATED"
        with pytest.raises(AgentCallError) as wrong:
            resolve(fleet_pki, agent, ref, login=Login(USER, "not-the-password"))
        assert wrong.value.code == "UNAUTHENTICATED"

        ok, images = resolve(fleet_pki, agent, ref, login=Login(USER, PASSWORD))
        assert ok.digest == layout["busybox"].manifest["digest"]
        assert images == 0
        assert PASSWORD not in agent.log_text()
