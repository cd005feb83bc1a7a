"""The Networks API end to end: a real dockyard-agent process and the dockyard CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.network.conftest import Lab, link_exists
from tests.support.agent import AgentProcess, FleetPki, run_cli

pytestmark = pytest.mark.root

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def net_agent(lab: Lab, agent_factory: Callable[..., AgentProcess], tmp_path: Path) -> AgentProcess:
    config = lab.agent_config(tmp_path / "agent.toml")
    agent = agent_factory("netagent", extra_args=["--config", str(config)])
    lab.databases.append(agent.data_root / "dockyard.db")
    return agent


@pytest.fixture
def dy(fleet_pki: FleetPki, net_agent: AgentProcess) -> Cli:
    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(fleet_pki.config_dir, *args, host=net_agent.unix_target, **kwargs)

    return run


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_network_lifecycle_through_the_cli(lab: Lab, dy: Cli) -> None:
    net_id = ok(dy("network", "create", "--label", "team=a", "appnet")).strip()
    assert len(net_id) == 64
    ok(
        dy(
            "network",
            "create",
            "--internal",
            "--subnet",
            str(lab.block.link_net(8).supernet(new_prefix=28)),
            "quiet",
        )
    )

    listing = ok(dy("network", "ls"))
    assert "appnet" in listing and "quiet" in listing and "bridge" in listing
    nets = {n["name"]: n for n in json.loads(ok(dy("--format", "json", "network", "ls")))}
    assert nets["quiet"]["internal"] and nets["appnet"]["labels"] == {"team": "a"}
    assert nets["bridge"]["bridge"] == lab.bridge and nets["bridge"]["subnet"] == str(
        lab.block.default_subnet
    )

    inspected = json.loads(ok(dy("network", "inspect", net_id[:12])))
    assert inspected[0]["name"] == "appnet" and inspected[0]["endpoints"] == []
    assert link_exists(inspected[0]["bridge"])

    dup = dy("network", "create", "appnet")
    assert dup.returncode != 0 and "already exists" in dup.stderr
    builtin = dy("network", "rm", "bridge")
    assert builtin.returncode != 0 and "default network" in builtin.stderr
    missing = dy("network", "inspect", "nope")
    assert missing.returncode != 0 and "not found" in missing.stderr

    assert ok(dy("network", "rm", "appnet", "quiet")).split() == ["appnet", "quiet"]
    assert not link_exists(inspected[0]["bridge"])
    assert "appnet" not in ok(dy("network", "ls"))
