"""Fixtures for image-trust tests: real agents with a policy file in their tmp config dir, a real
`docker-registry` holding test images, and signing keys made with openssl.

Each agent's config dir is `<root>/etc` (its policy file `<root>/etc/policy.toml`, its keys under
`<root>/etc/keys/`); the registry is plain HTTP and listed as insecure. Teardown removes every container
through the agent, stops it, and sweeps whatever its containers left, even when the test failed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, FleetPki, run_cli
from tests.support.cosign_openssl import OpensslKey
from tests.support.images import busybox_rootfs_bytes
from tests.support.oci_layout import Image, OciLayout, tar_of
from tests.support.registry import RegistryServer, running_registry, skopeo
from tests.support.sweep import sweep_agent

pytestmark = pytest.mark.root


@dataclass
class Host:
    name: str
    agent: AgentProcess
    pki: FleetPki
    cgroup_parent: str

    @property
    def etc(self) -> Path:
        return self.agent.root / "etc"

    @property
    def policy_file(self) -> Path:
        return self.etc / "policy.toml"

    @property
    def target(self) -> str:
        return f"{self.name}={self.agent.tcp_target}"

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(self.pki.config_dir, *args, host=self.agent.unix_target, **kwargs)

    def ok(self, *args: str, **kwargs: Any) -> str:
        done = self.cli(*args, **kwargs)
        assert done.returncode == 0, f"dockyard {' '.join(args)} on {self.name} failed: {done.stderr}"
        return done.stdout

    def refused(self, *args: str) -> str:
        """Run a command that must fail; its one error line without `error: HOST: `."""
        done = self.cli(*args, timeout=120)
        assert done.returncode != 0, f"dockyard {' '.join(args)} was not refused: {done.stdout}"
        line = done.stderr.strip()
        prefix = f"error: {self.agent.unix_target}: "
        assert line.startswith(prefix) and "\n" not in line, line
        return line[len(prefix) :]

    def set_policy(self, text: str) -> None:
        path = self.agent.root / "to-push.toml"
        path.write_text(text)
        self.ok("trust", "set", str(path))


HostFactory = Callable[..., list[Host]]


@pytest.fixture
def trust_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with running_registry(tmp_path / "registry", "http") as server:
        yield server


@pytest.fixture
def trust_hosts(
    tmp_path: Path, trust_registry: RegistryServer, request: pytest.FixtureRequest
) -> Iterator[HostFactory]:
    """`trust_hosts("a", "b")`: one agent per name, the registry insecure, config dir in its tmp root."""
    pki = FleetPki.create(tmp_path)
    made: list[Host] = []

    def make(*names: str) -> list[Host]:
        out = []
        for name in names:
            root = tmp_path / name
            (root / "etc" / "keys").mkdir(parents=True)
            parent = f"/dytest-{secrets.token_hex(4)}"
            cfg = root / "agent.toml"
            cfg.write_text(
                f'cgroup_parent = "{parent}"\n'
                f'config_dir = "{root / "etc"}"\n'
                f'policy_file = "{root / "etc" / "policy.toml"}"\n'
                f'insecure_registries = ["{trust_registry.host}"]\n'
            )
            agent = AgentProcess(
                root=root, tls_dir=pki.agent_tls(root / "tls", name=name), extra_args=["--config", str(cfg)]
            )
            host = Host(name, agent, pki, parent)
            made.append(host)
            agent.start()
            out.append(host)
        return out

    try:
        yield make
    finally:
        failed = any(
            getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
            for w in ("setup", "call")
        )
        for host in made:
            try:
                if host.agent.running:
                    with contextlib.suppress(Exception):
                        listed = json.loads(host.ok("--format", "json", "ps", "-a"))
                        if listed:
                            host.cli("rm", "-f", *[str(c["name"]) for c in listed], timeout=120)
                sweep_agent(host.agent, host.cgroup_parent)
            finally:
                host.agent.release()
                if failed:
                    print(f"\n----- agent log {host.name} -----\n{host.agent.log_text()[-15000:]}")


@dataclass(frozen=True)
class Images:
    """Test images in an OCI layout: three single-platform variants of busybox and a two-platform index."""

    root: Path
    web: list[Image]
    amd64: Image
    index: dict[str, Any]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    root = tmp_path_factory.mktemp("trust-images") / "layout"
    oci = OciLayout(root)
    base = busybox_rootfs_bytes()
    web = [oci.add_image([base, tar_of({"version": f"{n}\n".encode()})], cmd=["true"]) for n in range(4)]
    for n, image in enumerate(web):
        oci.tag(image.manifest, f"web{n}")
    amd64 = oci.add_image([base, tar_of({"arch": b"amd64\n"})], architecture="amd64", cmd=["true"])
    arm64 = oci.add_image([tar_of({"arch": b"arm64\n"})], architecture="arm64", variant="v8")
    index = oci.add_index([amd64, arm64])
    oci.tag(index, "multi")
    return Images(root, web, amd64, index)


def push_image(images: Images, registry: RegistryServer, tag: str, target: str, work: Path) -> None:
    """Copy a layout image to the registry as `target` (digests preserved)."""
    extra = ["--all", "--preserve-digests"] if tag == "multi" else []
    src = f"oci:{images.root}:{tag}"
    skopeo(["copy", *extra, src, f"docker://{registry.host}/{target}", *registry.skopeo_args()], work)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OpensslKey]:
    root = tmp_path_factory.mktemp("trust-keys")
    return {"ci": OpensslKey.generate(root, "ci"), "stranger": OpensslKey.generate(root, "stranger")}


# ---- the registry side of cosign's format, done by hand (a second implementation, for interop) ---------


def registry_put_blob(registry: RegistryServer, repository: str, data: bytes) -> None:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    conn = registry.connection()
    try:
        conn.request("POST", f"/v2/{repository}/blobs/uploads/", headers={"Content-Length": "0"})
        started = conn.getresponse()
        started.read()
        assert started.status == 202, started.status
        location = started.getheader("Location") or ""
        sep = "&" if "?" in location else "?"
        path = location.split(registry.host, 1)[-1] if "://" in location else location
        conn.request(
            "PUT",
            f"{path}{sep}digest={digest}",
            body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        done = conn.getresponse()
        done.read()
        assert done.status == 201, done.status
    finally:
        conn.close()


def registry_put_manifest(registry: RegistryServer, repository: str, tag: str, manifest: bytes) -> None:
    conn = registry.connection()
    try:
        conn.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            body=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        done = conn.getresponse()
        done.read()
        assert done.status == 201, (done.status, done.read())
    finally:
        conn.close()


def registry_get_manifest(registry: RegistryServer, repository: str, tag: str) -> bytes | None:
    conn: http.client.HTTPConnection = registry.connection()
    try:
        conn.request(
            "GET",
            f"/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        response = conn.getresponse()
        body = response.read()
        return body if response.status == 200 else None
    finally:
        conn.close()


def registry_get_blob(registry: RegistryServer, repository: str, digest: str) -> bytes:
    conn = registry.connection()
    try:
        conn.request("GET", f"/v2/{repository}/blobs/{digest}")
        response = conn.getresponse()
        body = response.read()
        if response.status in (301, 302, 307):
            raise AssertionError("registry redirected a blob read")
        assert response.status == 200, response.status
        return body
    finally:
        conn.close()
