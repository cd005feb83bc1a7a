"""`dockyard load` of an archive whose names are partly invalid: the image loads, and every name that
could not be used is reported (a warning line from the CLI, a log line from the agent), never silently lost.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess, FleetPki, run_cli
from tests.support.images import busybox_rootfs_tar

pytestmark = pytest.mark.root


def _rewrite_repo_tags(src: Path, dst: Path, tags: list[object]) -> None:
    """A copy of a docker-archive with manifest.json's RepoTags replaced (as a careless tool writes them)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read() if member.isreg() else None  # type: ignore[union-attr]
            if member.name == "manifest.json" and data is not None:
                manifest = json.loads(data)
                manifest[0]["RepoTags"] = tags
                data = json.dumps(manifest).encode()
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)


def test_load_reports_each_dropped_repo_tag(
    agent_factory: Callable[..., AgentProcess], fleet_pki: FleetPki, tmp_path: Path
) -> None:
    agent = agent_factory()
    imported = run_cli(
        fleet_pki.config_dir, "import", str(busybox_rootfs_tar(tmp_path / "bb.tar")), "bb:1",
        host=agent.unix_target,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    saved = tmp_path / "saved.tar"
    result = run_cli(fleet_pki.config_dir, "save", "-o", str(saved), "bb:1", host=agent.unix_target)
    assert result.returncode == 0, result.stderr
    assert run_cli(fleet_pki.config_dir, "rmi", "bb:1", host=agent.unix_target).returncode == 0

    archive = tmp_path / "odd-names.tar"
    _rewrite_repo_tags(saved, archive, ["good:1", "Bad Name!!", 42, "x:tag with space"])
    loaded = run_cli(fleet_pki.config_dir, "load", "-i", str(archive), host=agent.unix_target)
    assert loaded.returncode == 0, loaded.stderr
    assert "Loaded image: good:1" in loaded.stdout
    warnings = [line for line in loaded.stderr.splitlines() if "warning: " in line]
    assert len(warnings) == 3, loaded.stderr
    assert "manifest.json entry 0 RepoTags: invalid reference 'Bad Name!!'" in warnings[0]
    assert "name dropped" in warnings[0]
    assert "manifest.json entry 0 RepoTags: 42 is not a string; name dropped" in warnings[1]
    assert "invalid reference 'x:tag with space'" in warnings[2]
    events = [json.loads(line) for line in agent.log_text().splitlines() if line.startswith("{")]
    assert len([e for e in events if e.get("event") == "archive.name_dropped"]) == 3
    images = run_cli(fleet_pki.config_dir, "images", host=agent.unix_target).stdout
    assert "good" in images and "Bad" not in images
