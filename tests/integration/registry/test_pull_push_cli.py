"""`dockyard pull|push|login|logout` end to end: the CLI, a real agent process, real registries, skopeo.

The agent runs as a separate process with its own data and config dirs; registries are Debian's
`docker-registry` on 127.0.0.1. Includes the crash case: the agent is killed in the middle of a pull and
the next pull resumes the partial layer instead of starting over.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import CLI_BIN, AgentProcess, FleetPki, run_cli, wait_for
from tests.support.images import busybox_rootfs_bytes
from tests.support.oci_layout import OciLayout, compressible_bytes, tar_of
from tests.support.registry import PASSWORD, USER, RegistryServer, running_registry, skopeo
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(180)

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("oci-cli") / "layout"
    oci = OciLayout(root)
    bb = busybox_rootfs_bytes()
    busybox = oci.add_image([bb, tar_of({"srv/hello.txt": b"hello from the registry\n"})])
    big = oci.add_image([tar_of({"big.bin": compressible_bytes(12_000_000, seed=3)})])
    amd = oci.add_image([tar_of({"arch": b"amd64\n"})], architecture="amd64")
    arm = oci.add_image([tar_of({"arch": b"arm64\n"})], architecture="arm64", variant="v8")
    index = oci.add_index([amd, arm])
    oci.tag(busybox.manifest, "busybox")
    oci.tag(big.manifest, "big")
    oci.tag(index, "multi")
    return {"root": root, "busybox": busybox, "big": big, "arm": arm, "index": index}


def push_source(layout: dict[str, Any], registry: RegistryServer, tag: str, target: str, work: Path) -> None:
    extra = ["--all", "--preserve-digests"] if tag == "multi" else []
    src = f"oci:{layout['root']}:{tag}"
    skopeo(["copy", *extra, src, f"docker://{registry.host}/{target}", *registry.skopeo_args()], work)


def start_agent(
    agent_factory: Callable[..., AgentProcess], config_dir: Path, insecure: list[str]
) -> AgentProcess:
    args = ["--config-dir", str(config_dir)]
    for host in insecure:
        args += ["--insecure-registry", host]
    return agent_factory(extra_args=args)  # type: ignore[no-any-return]


def cli_for(fleet_pki: FleetPki, agent: AgentProcess) -> Cli:
    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(fleet_pki.config_dir, *args, host=agent.unix_target, **kwargs)

    return run


@pytest.fixture
def http_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with running_registry(tmp_path / "registry", "http") as server:
        yield server


def test_pull_tag_push_through_the_cli(
    layout: dict[str, Any],
    http_registry: RegistryServer,
    agent_factory: Callable[..., AgentProcess],
    fleet_pki: FleetPki,
    tmp_path: Path,
) -> None:
    push_source(layout, http_registry, "busybox", "test/busybox:1", tmp_path / "skopeo")
    push_source(layout, http_registry, "multi", "test/multi:1", tmp_path / "skopeo")
    agent = start_agent(agent_factory, tmp_path / "agent-config", [http_registry.host])
    cli = cli_for(fleet_pki, agent)
    ref = f"{http_registry.host}/test/busybox:1"

    result = cli("pull", ref)
    assert result.returncode == 0, result.stderr
    # Not a terminal: plain per-layer lines, then the digest.
    for layer in layout["busybox"].layers:
        assert f"{layer['digest'][7:19]}: Pull complete" in result.stdout
    assert f"Digest: {layout['busybox'].manifest['digest']}" in result.stdout
    listed = cli("--format", "json", "images")
    assert ref in json.dumps(json.loads(listed.stdout))

    again = cli("--format", "json", "pull", ref)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["downloaded_bytes"] == 0

    arm = cli("--format", "json", "pull", "--platform", "linux/arm64", f"{http_registry.host}/test/multi:1")
    assert arm.returncode == 0, arm.stderr
    pulled = json.loads(arm.stdout)
    assert (pulled["digest"], pulled["platform"]) == (layout["arm"].manifest["digest"], "linux/arm64")
    assert pulled["index_digest"] == layout["index"]["digest"]

    bad = cli("pull", "--platform", "linux/mips64", f"{http_registry.host}/test/multi:1")
    assert bad.returncode != 0
    assert "no manifest for requested platform linux/mips64" in bad.stderr

    target = f"{http_registry.host}/copies/busybox:2"
    assert cli("tag", ref, target).returncode == 0
    pushed = cli("push", target)
    assert pushed.returncode == 0, pushed.stderr
    assert "Mounted from another repository" in pushed.stdout
    raw = skopeo(
        ["inspect", "--raw", f"docker://{target}", *http_registry.skopeo_args("")], tmp_path / "skopeo"
    )
    assert json.loads(raw.stdout)["layers"] == layout["busybox"].layers


def test_login_wrong_password_pull_logout(
    layout: dict[str, Any], agent_factory: Callable[..., AgentProcess], fleet_pki: FleetPki, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "registry-tls", "tls") as registry:
        push_source(layout, registry, "busybox", "private/busybox:1", tmp_path / "skopeo")
        config_dir = tmp_path / "agent-config"
        registry.install_certs(config_dir)
        agent = start_agent(agent_factory, config_dir, [])
        cli = cli_for(fleet_pki, agent)
        ref = f"{registry.host}/private/busybox:1"
        auth_file = fleet_pki.config_dir / "auth.json"

        denied = cli("pull", ref)
        assert denied.returncode != 0
        assert f"requires a login: run `dockyard login {registry.host}`" in denied.stderr

        wrong = cli("login", registry.host, "-u", USER, "--password-stdin", input=b"not-the-password\n")
        assert wrong.returncode != 0
        assert f"refused the credentials of user '{USER}'" in wrong.stderr
        assert not auth_file.exists()

        ok = cli("login", registry.host, "-u", USER, "--password-stdin", input=f"{PASSWORD}\n".encode())
        assert ok.returncode == 0, ok.stderr
        assert "Login Succeeded" in ok.stdout
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
        assert registry.host in json.loads(auth_file.read_text())["auths"]

        pulled = cli("pull", ref)
        assert pulled.returncode == 0, pulled.stderr
        # The agent never keeps or logs the password.
        assert PASSWORD not in agent.log_text()
        for path in agent.root.rglob("*"):
            if path.is_file() and not path.is_socket():
                assert PASSWORD.encode() not in path.read_bytes(), path

        out = cli("logout", registry.host)
        assert out.returncode == 0 and f"Removing login credentials for {registry.host}" in out.stdout
        assert registry.host not in json.loads(auth_file.read_text())["auths"]
        assert cli("logout", registry.host).stdout.strip() == f"Not logged in to {registry.host}"


def test_agent_killed_mid_pull_resumes_on_the_next_pull(
    layout: dict[str, Any],
    http_registry: RegistryServer,
    agent_factory: Callable[..., AgentProcess],
    fleet_pki: FleetPki,
    tmp_path: Path,
) -> None:
    push_source(layout, http_registry, "big", "test/big:1", tmp_path / "skopeo")
    proxy = TcpProxy(http_registry.port)
    try:
        agent = start_agent(agent_factory, tmp_path / "agent-config", [proxy.host])
        cli = cli_for(fleet_pki, agent)
        layer = layout["big"].layers[0]
        partial = agent.data_root / "content" / "ingest" / layer["digest"][7:] / "data"
        proxy.rate = 2_000_000  # bytes/s, so the pull is still running when the agent dies
        env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(fleet_pki.config_dir)}
        env.pop("DOCKYARD_HOST", None)
        first = subprocess.Popen(
            [CLI_BIN, "-H", agent.unix_target, "pull", f"{proxy.host}/test/big:1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            wait_for(
                lambda: partial.exists() and partial.stat().st_size > layer["size"] // 3,
                60,
                "a third of the layer on disk",
            )
            agent.kill()
            first.communicate(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        assert first.returncode != 0
        kept = partial.stat().st_size
        assert 0 < kept < layer["size"]

        proxy.rate = None
        agent.start()
        second = cli("--format", "json", "pull", f"{proxy.host}/test/big:1")
        assert second.returncode == 0, second.stderr
        result = json.loads(second.stdout)
        assert result["digest"] == layout["big"].manifest["digest"]
        assert result["downloaded_bytes"] <= layer["size"] - kept + layout["big"].config["size"]
        assert any(e.get("event") == "content.ingest_resumed" for e in agent.events())
        assert not partial.exists()
    finally:
        proxy.close()
