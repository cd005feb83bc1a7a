"""`dockyard move` between two real agents: data in a named volume and in the rootfs both arrive, the
configuration is the same, the source is gone; a target that refuses leaves the source running."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.integration.transfer.conftest import IMAGE, Host, HostFactory, cli_for

pytestmark = pytest.mark.root


def start_web(a: Host) -> dict[str, Any]:
    a.ok(
        "run", "-d", "--name", "web", "--network", "none", "-v", "webdata:/data", "-e", "GREETING=hello",
        "--label", "app=web", "--restart", "unless-stopped", "--memory", "64m",
        IMAGE, "sh", "-c", 'trap "exit 0" TERM; echo "$GREETING" > /data/from-env; sleep 600 & wait',
    )  # fmt: skip
    a.exec(
        "web", "sh", "-c", "echo volume-data > /data/v.txt && echo rootfs-data > /etc/marker && rm /bin/vi"
    )
    return a.inspect("web")


def move_images(host: Host) -> list[str]:
    listed = json.loads(host.ok("--format", "json", "images"))
    return [n for i in listed for n in i["names"] if "dockyard-move/" in n]


def test_move_carries_volume_and_rootfs_and_configuration(hosts: HostFactory) -> None:
    a, b = hosts("a", "b")
    before = start_web(a)

    done = cli_for([a])("move", "web", "--from", a.target, "--to", b.target, timeout=120)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"web now runs on b \(id ([0-9a-f]{12})\); downtime (\d+\.\d\d)s", last)
    assert m, done.stdout
    assert 0 < float(m.group(2)) < 30

    after = b.inspect("web")
    assert after["status"] == "running" and after["id"].startswith(m.group(1))
    assert b.exec("web", "cat", "/data/v.txt", "/data/from-env", "/etc/marker").split() == [
        "volume-data",
        "hello",
        "rootfs-data",
    ]
    assert b.cli("exec", "web", "test", "-e", "/bin/vi").returncode == 1  # the deletion moved too
    # the same configuration, on the committed image
    same = {k: v for k, v in before["config"].items() if k != "image"}
    assert {k: v for k, v in after["config"].items() if k != "image"} == same
    assert after["config"]["image"].startswith("dockyard-move/web:")
    assert after["labels"] == {"app": "web"} and after["restart_policy"] == "unless-stopped"
    assert after["mounts"] == before["mounts"]
    # the source is gone, its named volume stays there (as after `docker rm`), no move image left
    assert a.cli("inspect", "web").returncode == 1
    assert "webdata" in a.ok("volume", "ls")
    assert move_images(a) == []
    assert move_images(b) == [after["config"]["image"].replace("dockyard-move", "docker.io/dockyard-move")]


def test_a_target_that_refuses_the_create_leaves_the_source_running(hosts: HostFactory) -> None:
    a, b = hosts("a", "b")
    start_web(a)
    started = a.inspect("web")["started_at"]
    # the target cannot make the container's directory: its create fails after image and volume arrived
    (b.data_root / "containers").write_text("not a directory\n")

    done = cli_for([a])("move", "web", "--from", a.target, "--to", b.target, timeout=120)
    assert done.returncode == 1
    assert "move failed:" in done.stderr and "web is still on a and running again" in done.stderr
    assert "Traceback" not in done.stderr
    after = a.inspect("web")
    assert after["status"] == "running" and after["started_at"] != started
    assert a.exec("web", "cat", "/data/v.txt", "/etc/marker").split() == ["volume-data", "rootfs-data"]
    # nothing of the attempt is left on the target, nor the move image on the source
    assert b.containers() == []
    assert "webdata" not in b.ok("volume", "ls")
    assert move_images(a) == [] and move_images(b) == []


def test_a_name_taken_on_the_target_refuses_before_anything_stops(hosts: HostFactory) -> None:
    a, b = hosts("a", "b")
    start_web(a)
    started = a.inspect("web")["started_at"]
    b.ok("create", "--name", "web", "--network", "none", IMAGE, "true")
    stopped_target = hosts("c", image=False)[0]
    stopped_target.agent.stop()

    done = cli_for([a])("move", "web", "--from", a.target, "--to", b.target)
    assert done.returncode == 1
    assert "error: b: a container named web already exists there" in done.stderr
    a.ok("run", "-d", "--rm", "--name", "temp", "--network", "none", IMAGE, "sleep", "600")
    rm = cli_for([a])("move", "temp", "--from", a.target, "--to", b.target)
    assert rm.returncode == 1 and "started with --rm" in rm.stderr
    assert a.inspect("temp")["status"] == "running"
    down = cli_for([a])("move", "web", "--from", a.target, "--to", stopped_target.target)
    assert down.returncode == 1 and "error: c:" in down.stderr
    assert a.inspect("web")["started_at"] == started  # never stopped
    assert move_images(a) == []
