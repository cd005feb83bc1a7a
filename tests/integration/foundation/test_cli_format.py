"""Docker's habits in the CLI against real agents: `--format` after the command (the same output as before
it), `{{.Field}}` templates on one host and fanned out to an inventory group, and shell completion that
offers the agent's container and image names through click's protocol (COMP_WORDS/COMP_CWORD).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess, FleetPki, run_cli
from tests.support.images import busybox_rootfs_tar

pytestmark = pytest.mark.root

IMAGE = "fmt-test:latest"
HOSTS = ("web1", "web2")


@dataclass
class Web:
    config_dir: Path
    agents: dict[str, AgentProcess]

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config_dir, *args, env=env)

    def ok(self, *args: str) -> str:
        done = self.cli(*args)
        assert done.returncode == 0, f"dockyard {' '.join(args)}: {done.stderr}"
        return done.stdout

    def on(self, host: str, *args: str) -> str:
        return self.ok("-H", host, *args)


@pytest.fixture
def web(fleet_pki: FleetPki, agent_factory: Callable[..., AgentProcess], tmp_path: Path) -> Iterator[Web]:
    """Two agents, each with the image, a created container `c-<host>` and a labelled volume, in an
    inventory whose group `web` holds both."""
    agents = {name: agent_factory(name) for name in HOSTS}
    inventory = "".join(f'[hosts.{n}]\naddress = "{a.unix_target}"\n\n' for n, a in agents.items())
    (fleet_pki.config_dir / "inventory.toml").write_text(f'{inventory}[groups]\nweb = ["web1", "web2"]\n')
    w = Web(fleet_pki.config_dir, agents)
    tar = busybox_rootfs_tar(tmp_path / "busybox.tar")
    try:
        for name in HOSTS:
            w.on(name, "import", str(tar), IMAGE)
            w.on(name, "create", "--name", f"c-{name}", "--network", "none", "-l", "app=shop", IMAGE, "true")
            w.on(name, "volume", "create", "-l", "tier=db", f"v-{name}")
        yield w
    finally:
        for name in HOSTS:
            w.cli("-H", name, "rm", "-f", f"c-{name}")


LISTS = (("ps", "-a"), ("images",), ("volume", "ls"), ("network", "ls"), ("info",), ("version",))


def test_format_after_the_command_prints_what_before_prints(web: Web) -> None:
    for command in LISTS:
        before = web.on("web1", "--format", "json", *command)
        after = web.on("web1", *command, "--format", "json")
        if command == ("info",):  # live figures (uptime, memory) may move between two calls
            assert json.loads(before).keys() == json.loads(after).keys()
        else:
            assert before == after, command
        assert json.loads(after)
    table_before = web.on("web1", "--format", "table", "volume", "ls")
    assert table_before == web.on("web1", "volume", "ls", "--format", "table")
    assert "v-web1" in table_before
    # fanned out to a group: one JSON document keyed by host, either way
    before = web.ok("-H", "@web", "--format", "json", "ps", "-a")
    after = web.ok("-H", "@web", "ps", "-a", "--format", "json")
    assert before == after
    by_host = json.loads(after)
    assert {h: [c["name"] for c in rows] for h, rows in by_host.items()} == {h: [f"c-{h}"] for h in HOSTS}


def test_conflicting_formats_are_an_error(web: Web) -> None:
    done = web.cli("-H", "web1", "--format", "json", "ps", "--format", "table")
    assert done.returncode == 2
    assert done.stderr == "error: --format given twice with different values\n"
    assert done.stdout == ""
    unknown = web.cli("-H", "web1", "ps", "--format", "{{.Names}} {{.Bogus}}")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith(
        "error: --format: unknown field .Bogus for `ps`; known fields: ID, Image"
    )


def test_templates_on_one_host_and_fanned_out(web: Web) -> None:
    assert (
        web.on("web1", "ps", "-a", "--format", "{{.Names}} {{.State}} {{.Labels}}")
        == "c-web1 created app=shop\n"
    )
    # the same template before the command
    assert web.on("web1", "--format", "{{.Names}}", "ps", "-a") == "c-web1\n"
    assert web.on("web1", "images", "--format", "{{.Repository}}:{{.Tag}}") == f"{IMAGE}\n"
    volumes = web.on("web1", "volume", "ls", "--format", r"table {{.Name}}\t{{.Driver}}\t{{.Labels}}")
    assert volumes.splitlines() == ["VOLUME NAME   DRIVER    LABELS", "v-web1        local     tier=db"]
    networks = [
        json.loads(line) for line in web.on("web1", "network", "ls", "--format", "{{json .}}").splitlines()
    ]
    assert networks and all(
        set(n) == {"ID", "Name", "Driver", "Scope", "IPv6", "Internal", "Labels", "CreatedAt"}
        for n in networks
    )
    full = json.loads(web.on("web1", "ps", "-a", "--format", "json"))
    assert web.on("web1", "ps", "-a", "--no-trunc", "--format", "{{.ID}}") == f"{full[0]['id']}\n"
    assert web.on("web1", "ps", "-a", "--format", "{{.ID}}") == f"{full[0]['id'][:12]}\n"

    fanned = web.cli("-H", "@web", "ps", "-a", "--format", "{{.Names}}")
    assert fanned.returncode == 0, fanned.stderr
    assert fanned.stdout.splitlines() == ["web1 | c-web1", "web2 | c-web2"]
    assert fanned.stderr == "2 ok, 0 failed\n"
    table = web.ok("-H", "@web", "ps", "-a", "--format", r"table {{.Names}}\t{{.Status}}")
    assert table.splitlines() == [
        "HOST      NAMES     STATUS",
        "web1      c-web1    Created",
        "web2      c-web2    Created",
    ]


def _complete(web: Web, words: str) -> list[str]:
    """What bash gets from `dockyard` for the command line `words` (the cursor at its end)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    done = web.cli(env={"_DOCKYARD_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_completion_offers_the_agents_names(web: Web) -> None:
    host = web.agents["web1"].unix_target
    assert _complete(web, f"dockyard -H {host} start c-") == ["plain,c-web1"]
    assert _complete(web, f"dockyard -H {host} logs ") == ["plain,c-web1"]
    assert _complete(web, f"dockyard -H {host} rmi fmt") == [f"plain,{IMAGE}"]
    assert _complete(web, f"dockyard -H {host} run fmt") == [f"plain,{IMAGE}"]
    # from every host of a group
    assert _complete(web, "dockyard -H @web rm c") == ["plain,c-web1", "plain,c-web2"]
    # commands and flags need no agent
    assert _complete(web, "dockyard volu") == ["plain,volume"]
    assert "plain,--format" in _complete(web, f"dockyard -H {host} ps --f")
