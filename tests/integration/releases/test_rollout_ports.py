"""`rollout apply` refuses a release whose host port a container outside the release already publishes on
a selected host (real agents; the holder is a plain `dockyard run -p` container on the agent's private
default network): one error line naming the file, line, key, host, port and holder, and nothing happened
on any host (no release, no release event, no rollout in the journal)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.support.agent import run_cli

from .conftest import HostFactory, Images
from .test_rollout_cli import rollout

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_host_port_held_by_another_container_refuses_the_rollout_before_anything(
    host_factory: HostFactory, images: Images, tmp_path: Path
) -> None:
    a, b = host_factory("a"), host_factory("b")
    port = free_port()
    httpd = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    assert b.cli("pull", images["v1"], timeout=120).returncode == 0
    held = b.cli("run", "-d", "--name", "holder", "-p", f"{port}:8080", images["v1"], *httpd, timeout=120)
    assert held.returncode == 0, held.stderr
    assert f":{port}->8080/tcp" in " ".join(json.loads(b.cli("--format", "json", "ps").stdout)[0]["ports"])

    path = tmp_path / "web.toml"
    path.write_text(
        f'name = "web"\n[containers.app]\nimage = "{images.registry.host}/shop/web:v1"\n'
        f'command = {json.dumps(httpd)}\nports = ["{port}:8080"]\n'
    )
    r = rollout([a, b], "rollout", "apply", "-f", str(path), "--min-healthy", "0s")

    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.splitlines() == [
        f"error: {path}:5: containers.app.ports: host port {port}/tcp on {b.agent.unix_target}"
        " is taken by container holder"
    ]
    for h in (a, b):
        assert json.loads(h.cli("--format", "json", "release", "ls").stdout) == []
        assert await h.events("release") == []
    assert json.loads(run_cli(a.config_dir, "--format", "json", "rollout", "ls").stdout) == []
