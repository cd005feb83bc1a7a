"""What a rollout checks before anything happens on a host, and how it reports, against fake agents:
an image tag the registry lacks and a host port another release (or a plain container) publishes are
release-file errors naming the file, line and key (nothing journaled, nothing leased or staged); the
watch grace derives from the deadline or comes from --watch-grace; the live table shows "-" for hosts
not started and keeps the rollout's state lines inside the view; `--format json` of `rollout status` /
`rollout ls` and the keys of `release ls` that scripts read."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.api.releases import ReleaseState
from controller.commands.release import state_json
from controller.errors import AgentCallError, ControllerError
from controller.rollout import engine as eng
from controller.rollout import spec
from controller.rollout import view as view_mod
from controller.rollout.engine import Engine, Event, HostInfo, Options, Published
from controller.rollout.journal import RolloutState, SqliteJournal, Step
from controller.target import Target
from tests.unit.rollout.fake_agents import HANG, FakeFleet

REPO = Path(__file__).resolve().parents[3]
WEB = "registry.lab:5000/shop/web:2"
# a container with its ports at line 9 (as in the example) ...
APP_PORTS = f"""name = "web"
[containers.app]
image = "{WEB}"
command = ["/bin/httpd", "-f", "-p", "8080"]
memory = "256m"
restart = "always"
env = {{ MODE = "prod" }}
stop_timeout = 1
ports = ["8080:8080", "9090:90/udp"]
[containers.app.health]
cmd = ["true"]
"""
# ... and one that spells them `publish` (line 8)
RELEASE = f"""name = "web"
[containers.app]
image = "{WEB}"
command = ["/bin/httpd", "-f", "-p", "8080"]
memory = "256m"
[containers.side]
image = "registry.lab:5000/shop/logship:1"
publish = ["127.0.0.1:9090:90/udp"]
"""


def hosts(n: int) -> list[HostInfo]:
    return [HostInfo(f"edge-{i}", Target(f"edge-{i}", "tcp", f"10.0.0.{i}", 7443)) for i in range(1, n + 1)]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "rollouts.db")
    yield j
    await j.close()


async def untouched(journal: SqliteJournal, fleet: FakeFleet) -> None:
    """Nothing happened anywhere: no rollout journaled, no lease, stage or switch on any agent."""
    assert await journal.list(10) == []
    assert fleet.log == []
    assert all(a.lease_calls == 0 and not a.staged_specs for a in fleet.agents.values())


# ---- 1. an image the registry lacks --------------------------------------------------------------------


async def test_a_tag_missing_from_the_registry_is_an_error_at_the_image_line(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["edge-1", "edge-2"])
    fleet.missing.add(WEB)
    release = spec.parse(APP_PORTS, "web.toml")

    with pytest.raises(ControllerError) as caught:
        await eng.create(journal, fleet, release, hosts(2), Options())

    assert str(caught.value) == f"web.toml:3: containers.app.image: {WEB}: not found in the registry"
    await untouched(journal, fleet)


async def test_other_resolve_refusals_name_the_image_line_and_the_host(journal: SqliteJournal) -> None:
    class Refusing(FakeFleet):
        async def resolve(self, host: str, reference: str) -> str:
            raise AgentCallError("registry.lab:5000: HTTP 401 (UNAUTHORIZED)", "UNAUTHENTICATED", host)

    fleet = Refusing(["edge-1"])
    release = spec.parse(APP_PORTS, "web.toml")
    with pytest.raises(ControllerError) as caught:
        await eng.create(journal, fleet, release, hosts(1), Options())
    assert str(caught.value) == (
        f"web.toml:3: containers.app.image: {WEB}: cannot resolve it"
        " (edge-1: registry.lab:5000: HTTP 401 (UNAUTHORIZED))"
    )
    await untouched(journal, fleet)


# ---- 2. a host port another release holds ----------------------------------------------------------


async def test_a_host_port_taken_by_another_release_is_one_error_and_nothing_happens(
    journal: SqliteJournal,
) -> None:
    fleet = FakeFleet(["edge-1", "edge-2", "edge-3"])
    fleet.agents["edge-1"].containers = [
        Published("web-app-r1", "web", ("0.0.0.0:8080->8080/tcp",)),  # the release's own: not a clash
        Published("dns", "", ("0.0.0.0:8080->53/udp",)),  # another protocol
        Published("local", "", ("127.0.0.1:9091->90/udp",)),  # another port
    ]
    fleet.agents["edge-3"].containers = [Published("shop-app-r2", "shop", ("0.0.0.0:8080->80/tcp",))]
    release = spec.parse(APP_PORTS, "web.toml")

    with pytest.raises(ControllerError) as caught:
        await eng.create(journal, fleet, release, hosts(3), Options())

    assert str(caught.value) == (
        "web.toml:9: containers.app.ports: host port 8080/tcp on edge-3 is taken by release shop"
        " (container shop-app-r2)"
    )
    await untouched(journal, fleet)


async def test_a_plain_container_on_the_port_is_named_and_the_key_is_as_written(
    journal: SqliteJournal,
) -> None:
    fleet = FakeFleet(["edge-1", "edge-2"])
    fleet.agents["edge-1"].down = True  # unreachable: left to staging, not an error here
    fleet.agents["edge-2"].containers = [Published("nginx", "", ("127.0.0.1:9090->90/udp",))]
    release = spec.parse(RELEASE, "web.toml")

    with pytest.raises(ControllerError) as caught:
        await eng.create(journal, fleet, release, hosts(2), Options())

    assert str(caught.value) == (
        "web.toml:8: containers.side.publish: host port 9090/udp on edge-2 is taken by container nginx"
    )
    assert await journal.list(10) == []


async def test_free_ports_and_the_releases_own_containers_let_the_rollout_run(
    journal: SqliteJournal,
) -> None:
    fleet = FakeFleet(["edge-1", "edge-2"])
    for agent in fleet.agents.values():
        agent.containers = [
            Published("web-app-r1", "web", ("0.0.0.0:8080->8080/tcp",)),
            Published("other", "", ("10.0.0.9:9091->9090/udp",)),
        ]
    rollout = await eng.create(journal, fleet, spec.parse(APP_PORTS, "web.toml"), hosts(2), Options())
    result = await Engine(journal, fleet, watch_grace=0.5).run(rollout.id)
    assert (result.state, result.exit_code) == (RolloutState.DONE, 0)


# ---- 3. the watch grace ----------------------------------------------------------------------------


def test_the_watch_grace_derives_from_the_deadline_unless_given() -> None:
    assert Options().grace() == 30.0  # default deadline 2m: min(30 s, 60 s)
    assert Options(deadline=15.0).grace() == 7.5
    assert Options(deadline=15.0).watch_timeout() == 22.5
    assert Options(deadline=15.0, watch_grace=2.0).watch_timeout() == 17.0
    assert Options(deadline=15.0).watch_timeout(0.5) == 15.5  # a test's override of the engine
    # journaled with the flags, so a resume watches as long
    assert Options.from_json(Options(watch_grace=2.0).to_json()).grace() == 2.0
    assert Options.from_json({"canary": "1"}).watch_grace is None  # an older journal


async def test_a_silent_host_fails_after_deadline_plus_the_rollouts_grace(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["edge-1"])
    fleet.agents["edge-1"].outcome = HANG  # no verdict ever arrives (a cut link)
    options = Options(deadline=0.4, watch_grace=0.3, max_fail="1")
    rollout = await eng.create(journal, fleet, spec.parse(APP_PORTS, "web.toml"), hosts(1), options)
    result = await Engine(journal, fleet).run(rollout.id)  # no engine override: the rollout's grace
    assert result.steps["edge-1"].step is Step.FAILED
    assert result.steps["edge-1"].detail.startswith("not verified within 0.7s")


def test_apply_help_documents_watch_grace() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_JOURNAL"}
    out = subprocess.run(
        [sys.executable, "-m", "controller", "rollout", "apply", "--help"],
        cwd=REPO,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "--watch-grace DURATION" in out.stdout
    assert "default: half the deadline, at most 30s" in " ".join(out.stdout.split())


# ---- 4. the live table -----------------------------------------------------------------------------


def test_hosts_not_started_show_no_time() -> None:
    row = view_mod.Row(1, "edge-1")
    assert row.cells(time.time(), False)[5] == "-"
    row.since = time.time() - 75
    assert row.cells(time.time(), False)[5] == "1m15s"


async def test_the_live_view_keeps_state_lines_and_messages_inside_its_table(journal: SqliteJournal) -> None:
    from rich.console import Console

    fleet = FakeFleet(["edge-1", "edge-2"])
    rollout = await eng.create(journal, fleet, spec.parse(APP_PORTS, "web.toml"), hosts(2), Options())
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160)
    view = view_mod.RolloutView(rollout.plan, mode="live", console=console)
    with view:
        view(Event("rollout", rollout.id, time.time(), state="running"))
        view(Event("message", rollout.id, time.time(), detail="waiting 5s before wave 1"))
        table = view.table()
        assert "waiting 5s before wave 1" in str(table.caption)
        assert str(table.title).startswith("running")
    assert f"rollout {rollout.id}: running" not in buffer.getvalue()  # printed between two redraws before
    assert "29943" not in buffer.getvalue()  # no time since the epoch for a planned host

    lines = io.StringIO()
    plain = view_mod.RolloutView(rollout.plan, mode="lines", console=Console(file=lines, width=160))
    with plain:  # off a terminal: one line per change, as before
        plain(Event("rollout", rollout.id, time.time(), state="running"))
    assert f"rollout {rollout.id}: running" in lines.getvalue()


# ---- 5. --format json of status, ls and release ls -----------------------------------------------


async def test_status_and_ls_print_json(journal: SqliteJournal, tmp_path: Path) -> None:
    fleet = FakeFleet(["edge-1", "edge-2"])
    rollout = await eng.create(journal, fleet, spec.parse(APP_PORTS, "web.toml"), hosts(2), Options())
    await Engine(journal, fleet, watch_grace=0.5).run(rollout.id)
    env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_JOURNAL"}

    def cli(*args: str) -> object:
        out = subprocess.run(
            [sys.executable, "-m", "controller", "--config-dir", str(tmp_path), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    status = cli("rollout", "status", rollout.id, "--format", "json")
    assert isinstance(status, dict)
    assert (status["id"], status["state"]) == (rollout.id, "done")
    assert {h: s["step"] for h, s in status["steps"].items()} == {
        "edge-1": "committed",
        "edge-2": "committed",
    }
    listed = cli("--format", "json", "rollout", "ls")
    assert isinstance(listed, list)
    assert [(r["id"], r["release"], r["state"], r["revisions"]) for r in listed] == [
        (rollout.id, "web", "done", [1])
    ]


def test_release_ls_json_keeps_the_keys_scripts_read() -> None:
    state = ReleaseState("web", "reverted", 2, 1, 1, 3, "app: exited 1", None, {"app": "sha256:ab"}, "", "")
    data = state_json(state)
    assert {
        "release": "web",
        "phase": "reverted",
        "active_revision": 2,
        "last_known_good": 1,
        "candidate_revision": 3,
        "reason": "app: exited 1",
        "image_digests": {"app": "sha256:ab"},
    }.items() <= data.items()
    json.dumps(data)
