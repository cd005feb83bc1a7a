"""`dockyard compose config` against a peer's: podman-compose's `config` for the same corpus files must give
the same resolved values — each service's image, environment, published ports and volumes.

podman-compose is installed into the test venv here (it is a peer for comparison, never used by the
product); without it (no network, no index) the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.compose.conftest import CORPUS
from tests.support.agent import CLI_BIN

FILES = sorted(p.parent.name for p in CORPUS.glob("*/compose.yaml"))
PEER = Path(sys.executable).parent / "podman-compose"


@pytest.fixture(scope="module")
def podman_compose() -> Path:
    if not PEER.exists():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "podman-compose"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0 or not PEER.exists():
            pytest.skip(f"podman-compose cannot be installed: {done.stderr.strip().splitlines()[-1:]}")
    return PEER


def _env(project_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKYARD_HOST"))}
    text = (project_dir / "compose.yaml").read_text()
    env.update({f"DYC_PORT_{n}": str(40000 + n) for n in range(1, 20) if f"DYC_PORT_{n}" in text})
    return env


def _port(entry: Any) -> tuple[str, str, str, str]:
    """(host_ip, published, target, protocol) of either form."""
    if isinstance(entry, dict):
        return (
            str(entry.get("host_ip", "")),
            str(entry.get("published", "")),
            str(entry["target"]),
            str(entry.get("protocol", "tcp")),
        )
    body, _, proto = str(entry).partition("/")
    parts = body.split(":")
    host_ip = parts[0] if len(parts) == 3 else ""
    published = parts[-2] if len(parts) >= 2 else ""
    return host_ip, published, parts[-1], proto or "tcp"


def _volume(entry: Any, project_dir: Path) -> tuple[str, str, str, bool]:
    """(type, source, target, read_only) of either form; bind sources absolute."""
    if isinstance(entry, dict):
        kind, source, target = entry.get("type", "volume"), entry.get("source", ""), entry["target"]
        read_only = bool(entry.get("read_only", False))
    else:
        parts = str(entry).split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        read_only = len(parts) == 3 and "ro" in parts[2].split(",")
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    if kind == "bind":
        source = os.path.normpath(project_dir / os.path.expanduser(source))
    return kind, source, str(target).rstrip("/") or "/", read_only


def _environment(value: Any) -> dict[str, str]:
    if isinstance(value, list):
        return {k: v for k, _, v in (str(item).partition("=") for item in value)}
    return {
        str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in (value or {}).items()
    }


def resolved(doc: dict[str, Any], project_dir: Path, with_image: set[str]) -> dict[str, Any]:
    out = {}
    for name, service in (doc.get("services") or {}).items():
        out[name] = {
            "image": service.get("image") if name in with_image else None,
            "environment": _environment(service.get("environment")),
            "ports": sorted(_port(p) for p in service.get("ports") or []),
            "volumes": sorted(_volume(v, project_dir) for v in service.get("volumes") or []),
        }
    return out


@pytest.mark.parametrize("name", FILES)
def test_config_matches_podman_compose(podman_compose: Path, name: str) -> None:
    project_dir = CORPUS / name
    env = _env(project_dir)
    ours = subprocess.run(
        [CLI_BIN, "--format", "json", "compose", "config"],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run(
        [str(podman_compose), "--dry-run", "config"], cwd=project_dir, env=env, capture_output=True, text=True
    )
    assert theirs.returncode == 0, theirs.stderr
    written = yaml.safe_load((project_dir / "compose.yaml").read_text())
    with_image = {n for n, s in written["services"].items() if "image" in s}
    mine = resolved(json.loads(ours.stdout), project_dir, with_image)
    peer = resolved(yaml.safe_load(theirs.stdout), project_dir, with_image)
    assert mine == peer
