"""The Networks API end to end: a real dockyard-agent process and the dockyard CLI."""

from __future__ import annotations

import json

import pytest

from tests.integration.network.conftest import Cli, Lab, link_exists, ok

pytestmark = pytest.mark.root


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
