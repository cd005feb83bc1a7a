"""`dockyard rollout apply -f compose.yaml` on two real agents and docker-registry: the compose project is
the release (its name, its services as containers started in depends_on order, their health checks as the
verification); a revision whose service fails its health check is reverted on the canary and the rollout
pauses before the other host is switched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.agent import run_cli

from .conftest import Host, HostFactory, Images

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

# the test agents have no bridge: the project's network is the host's "none" network, declared external
COMPOSE = """\
name: shop
services:
  db:
    image: {registry}/shop/web:v1
    command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    stop_grace_period: 1s
    healthcheck: &health
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health"]
      interval: 300ms
      timeout: 2s
      retries: 2
  web:
    image: {registry}/shop/web:{web}
    command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    stop_grace_period: 1s
    healthcheck: *health
    depends_on:
      db: {{condition: service_healthy}}
networks:
  default: {{external: true, name: none}}
"""


def rollout(hosts: list[Host], path: Path) -> subprocess.CompletedProcess[str]:
    cmd: list[str] = []
    for h in hosts:
        cmd += ["-H", h.agent.unix_target]
    flags = [
        "--format",
        "json",
        "rollout",
        "apply",
        "--min-healthy",
        "1s",
        "--deadline",
        "8s",
        "-f",
        str(path),
    ]
    return run_cli(hosts[0].config_dir, *cmd, *flags, timeout=180)


def test_compose_rollout_reverts_the_canary_when_a_health_check_fails(
    host_factory: HostFactory, images: Images, tmp_path: Path
) -> None:
    a, b = host_factory("a"), host_factory("b")
    registry = images.registry.host
    (tmp_path / "v1").mkdir()
    good = tmp_path / "v1" / "compose.yaml"
    good.write_text(COMPOSE.format(registry=registry, web="v1"))
    v1 = rollout([a, b], good)
    assert v1.returncode == 0, v1.stderr + v1.stdout
    for h in (a, b):
        assert h.containers() == {"shop-db-r1": "running", "shop-web-r1": "running"}

    (tmp_path / "bad").mkdir()
    bad_file = tmp_path / "bad" / "compose.yml"
    bad_file.write_text(COMPOSE.format(registry=registry, web="bad"))  # no /www/health: web is unhealthy
    bad = rollout([a, b], bad_file)
    assert bad.returncode == 3, bad.stderr + bad.stdout
    final = [json.loads(line) for line in bad.stdout.splitlines() if line.startswith("{")][-1]
    assert final["state"] == "paused"
    canary, other = (final["hosts"][h.agent.unix_target] for h in (a, b))
    assert canary["step"] == "reverted" and other["step"] == "staged"
    states = json.loads(
        run_cli(a.config_dir, "-H", a.agent.unix_target, "--format", "json", "release", "ls").stdout
    )
    assert states[0]["release"] == "shop" and states[0]["phase"] == "reverted"
    assert states[0]["reason"].startswith("web: health check failing"), states[0]
    assert a.containers()["shop-web-r1"] == "running" and a.containers()["shop-db-r1"] == "running"
    assert b.containers() == {"shop-db-r1": "running", "shop-web-r1": "running"}  # never switched
