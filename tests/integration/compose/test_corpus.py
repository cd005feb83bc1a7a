"""Real-world compose files (tests/data/compose/corpus, see its README) run on a real agent:
`up -d` → every service running, healthy where it has a health check, each service resolving the others
on their shared networks by name, published ports answering; `up -d` again recreates nothing; one
service changed (an override file) → only it is recreated; `down -v` leaves nothing of the project.
"""

from __future__ import annotations

import shutil
import socket
import urllib.request
from itertools import permutations
from pathlib import Path

import pytest

from controller.compose import load
from tests.integration.compose.conftest import CHECK_PORT, CORPUS, Yard, wait_healthy

pytestmark = pytest.mark.root

FILES = sorted(p.parent.name for p in CORPUS.glob("*/compose.yaml"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def port_env(text: str) -> dict[str, str]:
    """A free host port for each DYC_PORT_n the file uses (its published ports)."""
    env = {}
    n = 1
    while f"DYC_PORT_{n}" in text:
        env[f"DYC_PORT_{n}"] = str(free_port())
        n += 1
    return env


def ids(yard: Yard, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    return {r["service"]: r["id"] for r in yard.json("compose", "ps", "-a", cwd=cwd, env=env)}


def test_the_corpus_has_at_least_ten_files() -> None:
    assert len(FILES) >= 10


@pytest.mark.parametrize("name", FILES)
def test_up_check_reup_change_down(yard: Yard, tmp_path: Path, name: str) -> None:
    project_dir = tmp_path / name
    shutil.copytree(CORPUS / name, project_dir)
    env = port_env((project_dir / "compose.yaml").read_text())
    project = load.load(load.Options(cwd=project_dir, environ=env))
    services = [s for s in project.services if s.name in project.active]
    try:
        up = yard.ok("compose", "up", "-d", cwd=project_dir, env=env, timeout=300)
        rows = wait_healthy(yard, project_dir, env)
        assert sorted(r["service"] for r in rows) == sorted(s.name for s in services), up.stderr
        assert {r["name"] for r in rows} == {f"{project.name}-{s.name}-1" for s in services}

        # name resolution: each service reaches every other one on a network they share, by service name
        for a, b in permutations(services, 2):
            if {x.network for x in a.networks} & {x.network for x in b.networks}:
                got = yard.ok("compose", "exec", a.name, "wget", "-q", "-O-",
                              f"http://{b.name}:{CHECK_PORT}/", cwd=project_dir, env=env)  # fmt: skip
                assert got.stdout == "ok\n", (a.name, b.name, got.stderr)

        # published TCP ports answer on the host
        for service in services:
            for spec in service.config.publish:
                host_part, _, proto = spec.rpartition("/")
                if proto != "tcp":
                    continue
                host_port = int(host_part.split(":")[-2])
                with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=10) as response:
                    assert response.read() == b"ok\n", (service.name, spec)

        before = ids(yard, project_dir, env)
        again = yard.ok("compose", "up", "-d", cwd=project_dir, env=env)
        assert ids(yard, project_dir, env) == before, again.stderr
        assert "Recreated" not in again.stderr and "Created" not in again.stderr

        changed = services[-1].name
        (project_dir / "changed.yaml").write_text(
            f"services:\n  {changed}:\n    environment:\n      DYC_CHANGED: '1'\n"
        )
        files = ("-f", "compose.yaml", "-f", "changed.yaml")
        yard.ok("compose", *files, "up", "-d", cwd=project_dir, env=env, timeout=300)
        wait_healthy(yard, project_dir, env)
        after = ids(yard, project_dir, env)
        assert after[changed] != before[changed]
        assert {k: v for k, v in after.items() if k != changed} == {
            k: v for k, v in before.items() if k != changed
        }
        env_of = yard.ok(
            "compose", *files, "exec", changed, "sh", "-c", "echo $DYC_CHANGED", cwd=project_dir, env=env
        )
        assert env_of.stdout == "1\n"
    finally:
        down = yard.cli("compose", "down", "-v", cwd=project_dir, env=env)
    assert down.returncode == 0, down.stderr
    assert yard.project_objects(project.name) == {"containers": [], "networks": [], "volumes": []}
