"""`dockyard -H a -H b compose …` fans out like every command: the same project on each agent."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.compose.conftest import IMAGE, corpus_image_tar
from tests.support.agent import CLI_BIN, AgentProcess, FleetPki, config_text
from tests.support.sweep import sweep_agent

pytestmark = pytest.mark.root

FILE = f"""
name: fan
services:
  web:
    image: {IMAGE}
  worker:
    image: {IMAGE}
    depends_on: [web]
"""


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[FleetPki, list[AgentProcess]]]:
    pki = FleetPki.create(tmp_path)
    tar = corpus_image_tar(tmp_path / "image.tar")
    made: list[tuple[AgentProcess, str]] = []
    try:
        for name in ("a1", "a2"):
            root = tmp_path / name
            root.mkdir()
            parent = f"/dytest-{secrets.token_hex(4)}"
            (root / "agent.toml").write_text(config_text({"cgroup_parent": parent}))
            agent = AgentProcess(
                root=root, tls_dir=None, listen=None, extra_args=["--config", str(root / "agent.toml")]
            )
            made.append((agent, parent))
            agent.start(timeout=90)
            run(pki, [agent], "import", "-c", 'ENTRYPOINT ["/bin/sh", "/serve.sh"]', str(tar), IMAGE)
        yield pki, [a for a, _ in made]
    finally:
        for agent, parent in made:
            try:
                sweep_agent(agent, parent)
            finally:
                agent.release()


def run(
    pki: FleetPki, agents: list[AgentProcess], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(pki.config_dir), "COLUMNS": "200"}
    env.pop("DOCKYARD_HOST", None)
    hosts = [x for a in agents for x in ("-H", a.unix_target)]
    done = subprocess.run(
        [CLI_BIN, *hosts, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done


def test_up_ps_down_on_two_agents(agents: tuple[FleetPki, list[AgentProcess]], tmp_path: Path) -> None:
    pki, pair = agents
    d = tmp_path / "proj"
    d.mkdir()
    (d / "compose.yaml").write_text(FILE)
    up = run(pki, pair, "compose", "up", "-d", cwd=d)
    assert "2 ok, 0 failed" in up.stderr
    rows = json.loads(run(pki, pair, "--format", "json", "compose", "ps", cwd=d).stdout)
    assert len(rows) == 2
    for host_rows in rows.values():
        assert sorted((r["name"], r["status"]) for r in host_rows) == [
            ("fan-web-1", "running"),
            ("fan-worker-1", "running"),
        ]
    table = run(pki, pair, "compose", "ps", cwd=d).stdout
    assert table.splitlines()[0].split()[0] == "HOST" and table.count("fan-web-1") == 2
    run(pki, pair, "compose", "down", cwd=d)
    rows = json.loads(run(pki, pair, "--format", "json", "compose", "ps", "-a", cwd=d).stdout)
    assert all(host_rows == [] for host_rows in rows.values())
