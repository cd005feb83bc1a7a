"""`dockyard rollout` through the CLI against two real agents and docker-registry (a smoke of the engine's
wiring: the end-to-end suite on netns hosts lives elsewhere). Tags are resolved once by an agent and every
host runs that digest; a bad release reverts on the canary by itself, the rollout pauses (exit 3) and the
other host is never switched; `release ls` says why; `rollout abort` gives the lease back; `rollout undo`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import run_cli

from .conftest import Host, HostFactory, Images

pytestmark = pytest.mark.timeout(300)

RELEASE = """\
name = "web"
[containers.app]
image = "{image}"
network = "none"
command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
stop_timeout = 1
[containers.app.health]
cmd = ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health"]
interval = "300ms"
timeout = "2s"
retries = 2
"""


def rollout(hosts: list[Host], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd: list[str] = []
    for h in hosts:
        cmd += ["-H", h.agent.unix_target]
    return run_cli(hosts[0].config_dir, *cmd, *args, timeout=timeout)


def events(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def write(tmp_path: Path, name: str, image: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(RELEASE.format(image=image))
    return path


def test_rollout_good_then_bad_then_undo(host_factory: HostFactory, images: Images, tmp_path: Path) -> None:
    a, b = host_factory("a"), host_factory("b")
    registry = images.registry.host
    flags = ["--format", "json", "rollout", "apply", "--min-healthy", "1s", "--deadline", "30s"]
    flags += ["--batch", "1"]

    plain = [f for f in flags if f not in ("--format", "json")]
    v1 = rollout([a, b], *plain, "-f", str(write(tmp_path, "v1", f"{registry}/shop/web:v1")))
    assert v1.returncode == 0, v1.stderr + v1.stdout
    # off a terminal: a line per change, then the summary
    assert f"wave 0 {a.agent.unix_target}: committed" in v1.stdout
    assert f"wave 1 {b.agent.unix_target}: verifying [healthy]" in v1.stdout
    assert "): done in " in v1.stdout and "2 committed" in v1.stdout

    v2 = rollout([a, b], *flags, "-f", str(write(tmp_path, "v2", f"{registry}/shop/web:v2")))
    assert v2.returncode == 0, v2.stderr + v2.stdout
    v2_digest = images["v2"].split("@", 1)[1]
    listed = json.loads(rollout([a, b], "--format", "json", "release", "ls").stdout)
    for states in listed.values():
        assert states[0]["phase"] == "committed"
        assert states[0]["image_digests"] == {"app": v2_digest}  # the tag, pinned once

    bad = rollout([a, b], *flags, "-f", str(write(tmp_path, "bad", f"{registry}/shop/web:bad")))
    assert bad.returncode == 3, bad.stderr + bad.stdout
    final = events(bad)[-1]
    assert final["state"] == "paused"
    canary, other = (final["hosts"][h.agent.unix_target] for h in (a, b))
    assert canary["step"] == "reverted" and other["step"] == "staged"
    states = json.loads(rollout([a, b], "--format", "json", "release", "ls").stdout)
    assert states[a.agent.unix_target][0]["phase"] == "reverted"
    assert states[a.agent.unix_target][0]["reason"]
    assert states[b.agent.unix_target][0]["phase"] == "committed"

    rid = final["rollout_id"]
    status = run_cli(a.config_dir, "rollout", "status", rid)
    assert status.returncode == 0 and "paused" in status.stdout and "reverted" in status.stdout
    ls = run_cli(a.config_dir, "rollout", "ls")
    assert rid in ls.stdout and "paused" in ls.stdout
    aborted = run_cli(a.config_dir, "rollout", "abort", rid)
    assert aborted.returncode == 0, aborted.stderr
    assert json.loads(rollout([a], "--format", "json", "release", "ls").stdout)[0]["lease"] == ""

    undo = rollout([a, b], "--format", "json", "rollout", "undo", "web")
    assert undo.returncode == 0, undo.stderr
    assert {s["active_revision"] for s in json.loads(undo.stdout).values()} == {2}
