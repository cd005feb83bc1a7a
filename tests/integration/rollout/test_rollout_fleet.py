"""Rollouts end to end on 10 netns hosts with real agents (8 in group `edge`, site=a|b|c; dyf-h9 with a
too-small data root; dyf-h10 down), driven by the `dockyard` CLI as a user drives it.

What makes a release fail, with real parts only:
- v3 is an image without /www/health: its health check gets 404 everywhere.
- "fails only on site c": the release mounts a named volume at /flag and its health command is
  `test ! -e /flag/fail && wget …/health`; the test puts a `fail` file in that volume on the site=c hosts
  only (the volume is the host's own, under its agent's data root). Release files are the same for every
  host (per-host rendering is issue 23), so a host-local file is how a label can decide health here.

Bad release files (at the end) are refused with one clear error before anything happens anywhere.

Orderings are proved from the agents' event logs (one machine clock): a host is "switching or unverified"
from its first container event of the release after this rollout staged it, until its `committed` event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller import pki
from controller.rollout.journal import open_journal
from controller.rollout.plan import Count, PlanHost, PlanOptions, make_plan
from tests.integration.rollout.conftest import (
    HEALTH,
    Env,
    Rollout,
    activated,
    container_events,
    ns,
    phase,
    release_events,
    wait_activated,
)
from tests.support.fleet_hosts import FleetHost, wait_until
from tests.support.postgres import bin_dir, postgres_server

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

FLAG_HEALTH = f"test ! -e /flag/fail && {HEALTH}"
# Where a test checks the agent's own verdict (reverted), the controller waits for it: the agent needs the
# deadline plus the time to switch back, longer than the default grace (half a short deadline) on a busy
# machine.
AGENT_DECIDES = ("--watch-grace", "30s")


@pytest.fixture(autouse=True)
def no_containers_left(env: Env) -> Iterator[None]:
    """Each test starts from hosts that run nothing: what a test left running (and health-checking every
    half second) would only load the machine for the tests after it."""
    yield
    env.fleet.remove_containers()


def switch_windows(
    env: Env, release: str, rollout_id: str, hosts: list[FleetHost]
) -> dict[str, tuple[int, int]]:
    """Host → (ns when it began switching, ns when it was committed) in this rollout."""
    windows = {}
    for h in hosts:
        rel = release_events(h, release, rollout_id)
        staged = [ns(e) for e in rel if e.action == "staged"]
        committed = [ns(e) for e in rel if e.action == "committed"]
        act = [ns(e) for e in rel if e.action == "activated"]
        assert staged and committed and len(act) == 1, (h.name, [(e.action, ns(e)) for e in rel])
        touched = [ns(e) for e in container_events(h, release) if ns(e) > staged[-1]]
        windows[h.name] = (min([*touched, act[0]]), committed[0])
    return windows


def release_rows(env: Env, targets: str, release: str) -> dict[str, dict[str, Any]]:
    """`release ls --format json` → host → the row of `release`."""
    r = env.cli("-H", targets, "--format", "json", "release", "ls")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    per_host = doc if isinstance(doc, dict) else {targets: doc}  # one host: its list alone
    return {host: row for host, rows in per_host.items() for row in rows if row["release"] == release}


def test_good_release_goes_out_in_waves_that_keep_the_site_budget(env: Env) -> None:
    before = env.baseline("good", "v1")
    flags = (
        "--canary",
        "1",
        "--batch",
        "50%",
        "--budget",
        "site=1",
        "--min-healthy",
        "1s",
        "--deadline",
        "30s",
    )
    r = env.apply("@edge", env.release_file("good", "v2"), *flags)
    assert r.code == 0, r.text
    assert r.final_state() == "done"

    # the plan: canary h1, then waves of at most one host per site (50% = 4 hosts, cut to 3 by the budget)
    plan = make_plan(
        [PlanHost(h.name, h.labels) for h in env.edge],
        PlanOptions(canary=Count(1), batch=Count(50, percent=True), budgets={"site": 1}),
    )
    expected = [list(w.hosts) for w in plan.waves]
    assert expected == [
        ["dyf-h1"],
        ["dyf-h2", "dyf-h4", "dyf-h7"],
        ["dyf-h3", "dyf-h5", "dyf-h8"],
        ["dyf-h6"],
    ]
    assert r.waves() == {h: i for i, wave in enumerate(expected) for h in wave}

    # every host runs v2 by digest: the agents say so, and so does `release ls`
    v2 = env.digests["v2"]
    for h in env.edge:
        got = h.release("good")
        assert got is not None
        assert phase(got.state) == "committed" and dict(got.state.image_digests) == {"app": v2}, got.state
        assert got.state.active_revision == before[h.name] + 1 == got.state.last_known_good
    rows = release_rows(env, "@edge", "good")
    assert sorted(rows) == sorted(h.name for h in env.edge)
    assert all(v2 in json.dumps(row) for row in rows.values()), rows

    # the agents' event logs: every host staged before any switched; waves one after the other; never
    # two hosts of one site switching or unverified at the same time
    windows = switch_windows(env, "good", r.id, env.edge)
    staged_last = max(
        ns(e) for h in env.edge for e in release_events(h, "good", r.id) if e.action == "staged"
    )
    assert staged_last < min(start for start, _ in windows.values())
    for earlier, later in itertools.pairwise(expected):
        assert max(windows[h][1] for h in earlier) < min(windows[h][0] for h in later), (
            earlier,
            later,
            windows,
        )
    for a in env.edge:
        for b in env.edge:
            if a.name < b.name and a.labels["site"] == b.labels["site"]:
                (s1, e1), (s2, e2) = windows[a.name], windows[b.name]
                assert e1 < s2 or e2 < s1, f"{a.name} and {b.name} (site {a.labels['site']}) overlapped"


def test_bad_release_canary_reverts_by_itself_and_nothing_else_is_touched(env: Env) -> None:
    before = env.baseline("canary", "v2")
    flags = (
        "--canary",
        "1",
        "--batch",
        "50%",
        "--budget",
        "site=1",
        "--min-healthy",
        "1s",
        "--deadline",
        "5s",
        *AGENT_DECIDES,
    )
    r = env.apply("@edge", env.release_file("canary", "v3"), *flags)
    assert r.code == 3, r.text  # max-fail 0 and --on-failure pause (the default): paused before wave 1
    assert r.final_state() == "paused"

    canary, others = env.edge[0], env.edge[1:]
    got = canary.release("canary")
    assert got is not None
    state = got.state
    assert phase(state) == "reverted", state
    assert (
        state.active_revision == before[canary.name] and state.candidate_revision == before[canary.name] + 1
    )
    assert dict(state.image_digests) == {"app": env.digests["v2"]}
    assert "health check failing" in state.reason and "404" in state.reason, state.reason
    assert r.steps()[canary.name] == "reverted"

    for h in others:  # staged, and nothing after that: no switch, no container touched
        mine = release_events(h, "canary", r.id)
        assert [e.action for e in mine] == ["staged"], (h.name, [e.action for e in mine])
        assert not [e for e in container_events(h, "canary") if ns(e) > ns(mine[0])], h.name
        other = h.release("canary")
        assert other is not None and phase(other.state) == "committed"
        assert other.state.active_revision == before[h.name]

    row = release_rows(env, canary.name, "canary")[canary.name]
    text = json.dumps(row)
    assert "reverted" in text and "health check failing" in text, row

    status = env.cli("--format", "json", "rollout", "status", r.id)
    assert status.returncode == 0, status.stderr
    assert "paused" in status.stdout


def test_on_failure_rollback_returns_every_switched_host_when_one_site_fails(env: Env) -> None:
    before = env.baseline("site", "v2")
    for h in env.edge:
        if h.labels["site"] == "c":  # the volume exists on every host; the flag only on site c
            r = env.cli("-H", h.name, "volume", "create", "siteflag")
            assert r.returncode == 0, r.stderr
            (h.volume_dir("siteflag") / "fail").write_text("site c cannot run this\n")
    release = env.release_file("site", "v2", health=FLAG_HEALTH, volumes=["siteflag:/flag"])
    flags = (
        "--canary",
        "1",
        "--batch",
        "50%",
        "--budget",
        "site=1",
        "--min-healthy",
        "1s",
        "--deadline",
        "5s",
        *AGENT_DECIDES,
    )
    r = env.apply("@edge", release, *flags, "--on-failure", "rollback", "--max-fail", "0")
    assert r.code == 1, r.text
    assert r.final_state() == "rolled_back"

    # canary h1 (a) and wave 1's h2 (a) and h4 (b) had switched and verified; h7 (c) reverted itself
    switched = ["dyf-h1", "dyf-h2", "dyf-h4"]
    steps = r.steps()
    assert {h: steps[h] for h in switched} == dict.fromkeys(switched, "rolled_back"), steps
    assert steps["dyf-h7"] == "reverted"
    for h in env.edge:
        got = h.release("site")
        assert got is not None
        assert got.state.active_revision == before[h.name], (h.name, got.state)
        assert dict(got.state.image_digests) == {"app": env.digests["v2"]}
        actions = [e.action for e in release_events(h, "site", r.id)]
        if h.name in switched:
            assert phase(got.state) == "rolled_back" and actions[-1] == "rolled_back", (h.name, actions)
        elif h.name == "dyf-h7":
            assert phase(got.state) == "reverted" and "reverted" in actions
        else:
            assert actions == ["staged"], (h.name, actions)
    # the rollback went in reverse wave order: wave 1's hosts before the canary
    back = {
        h: ns(next(e for e in release_events(env.host(h), "site", r.id) if e.action == "rolled_back"))
        for h in switched
    }
    assert max(back["dyf-h2"], back["dyf-h4"]) < back["dyf-h1"]


def test_controller_killed_during_a_wave_resumes_and_activates_each_host_once(env: Env) -> None:
    env.baseline("resume", "v1")
    flags = ("--canary", "1", "--batch", "2", "--min-healthy", "2s", "--deadline", "30s")
    bg = env.start_apply("@edge", env.release_file("resume", "v2"), *flags)
    try:
        wait_activated([env.host("dyf-h2")], "resume", bg, timeout=90)  # wave 1 (h2, h3) is switching
    finally:
        bg.kill()
    rollout_id = bg.rollout_id()
    assert rollout_id
    assert not activated(env.host("dyf-h4"), "resume", rollout_id)  # killed mid-way: later waves untouched

    listed = env.cli("--format", "json", "rollout", "ls")
    assert listed.returncode == 0 and rollout_id in listed.stdout, listed.stderr
    r = resume(env, rollout_id)
    assert r.code == 0, r.text
    assert r.final_state() == "done"
    for h in env.edge:
        got = h.release("resume")
        assert got is not None and phase(got.state) == "committed", (h.name, got)
        assert dict(got.state.image_digests) == {"app": env.digests["v2"]}
        actions = [e.action for e in release_events(h, "resume", rollout_id)]
        assert actions.count("activated") == 1 and actions.count("committed") == 1, (h.name, actions)


def resume(env: Env, rollout_id: str) -> Rollout:
    """`rollout resume ID` of a rollout whose controller was SIGKILLed: refused while its heartbeat is
    fresh (another controller might still drive it), then `--force` (the operator knows it is dead)."""
    refused = env.cli("rollout", "resume", rollout_id)
    assert refused.returncode == 1 and "still being driven" in refused.stderr, refused.stderr
    return Rollout.of(env.cli("--format", "json", "rollout", "resume", "--force", rollout_id))


def test_cut_link_unhealthy_reverts_on_the_agent_healthy_stays_unconfirmed(env: Env) -> None:
    """dyf-h3 gets a release that is unhealthy there (flag file), dyf-h6 one that is healthy; both links are
    cut right after the switch (with --min-healthy 3s, well before either can be verified). The agents
    decide alone; the controller counts both hosts as failed once its watch times out (deadline + grace,
    2 s here)."""
    bad, good = env.host("dyf-h3"), env.host("dyf-h6")
    targets = f"{bad.name},{good.name}"
    before = env.baseline("cut", "v2", targets)
    r = env.cli("-H", bad.name, "volume", "create", "cutflag")
    assert r.returncode == 0, r.stderr
    (bad.volume_dir("cutflag") / "fail").write_text("unhealthy here\n")
    release = env.release_file("cut", "v2", health=FLAG_HEALTH, volumes=["cutflag:/flag"])
    flags = (
        "--canary",
        "0",
        "--batch",
        "100%",
        "--min-healthy",
        "3s",
        "--deadline",
        "6s",
        "--watch-grace",
        "2s",
    )
    bg = env.start_apply(targets, release, *flags)
    try:
        wait_activated([bad, good], "cut", bg)
        bad.cut()
        good.cut()
        # the agents alone: h3 goes back to its last known good, h6 verifies and keeps the new revision
        # unconfirmed (nobody can Commit) once the deadline after becoming healthy passes
        wait_until(lambda: _phase_of(bad, "cut") == "reverted", 60, "dyf-h3 to revert by itself")
        wait_until(lambda: _phase_of(good, "cut") == "unconfirmed", 60, "dyf-h6 to become unconfirmed")
        result = bg.wait(timeout=120)
    finally:
        bg.kill()
        bad.restore()
        good.restore()
    got_bad, got_good = bad.release("cut"), good.release("cut")
    assert got_bad is not None and got_good is not None
    assert got_bad.state.active_revision == before[bad.name], got_bad.state
    assert got_good.state.active_revision == before[good.name] + 1, got_good.state
    assert got_good.state.last_known_good == before[good.name]  # not confirmed: not last known good
    assert result.code == 1, result.text
    steps = result.steps()
    assert steps[bad.name] == steps[good.name] == "failed", steps
    assert any("not verified within" in d for d in result.details(good.name)), result.details(good.name)


def _phase_of(host: FleetHost, release: str) -> str:
    got = host.release(release)
    return phase(got.state) if got is not None else ""


def test_a_down_host_and_a_too_small_data_root_are_refused_at_staging_before_any_switch(env: Env) -> None:
    hosts = "dyf-h1,dyf-h2,dyf-h9,dyf-h10"
    r = env.apply(
        hosts, env.release_file("tiny", "big"), "--canary", "1", "--batch", "100%", "--min-healthy", "0s"
    )
    assert r.code == 3, r.text  # 2 stage failures > max-fail 0: paused before the first wave
    steps = r.steps()
    assert steps["dyf-h9"] == "stage_failed" and steps["dyf-h10"] == "stage_failed", steps
    assert steps["dyf-h1"] == "staged" and steps["dyf-h2"] == "staged", steps
    text = r.stdout + r.stderr
    assert "not enough space" in " ".join(r.details("dyf-h9")), r.details("dyf-h9")
    assert "connection refused" in " ".join(r.details("dyf-h10")), r.details("dyf-h10")
    assert "dyf-h9" in text and "dyf-h10" in text
    for name in ("dyf-h1", "dyf-h2", "dyf-h9"):
        h = env.host(name)
        assert not activated(h, "tiny"), name
        assert not container_events(h, "tiny"), name
        got = h.release("tiny")
        assert got is None or got.state.active_revision == 0, (name, got)


def test_a_second_rollout_of_the_same_release_is_refused_with_the_holder(env: Env) -> None:
    targets = "dyf-h4,dyf-h5"
    release = env.release_file("lease", "v1")
    flags = ("--canary", "1", "--batch", "1", "--min-healthy", "2s", "--deadline", "30s")
    first = env.start_apply(targets, release, *flags)
    try:
        holder = wait_activated([env.host("dyf-h4")], "lease", first)  # the first rollout is switching
        second = env.apply(targets, release, *flags)
        assert second.code != 0, second.text
        assert "held by" in second.stderr + second.stdout and str(holder) in second.stderr + second.stdout, (
            second.text
        )
        done = first.wait(timeout=120)
    finally:
        first.kill()
    assert done.code == 0, done.text
    for name in ("dyf-h4", "dyf-h5"):  # only the first rollout ever switched anything
        events = release_events(env.host(name), "lease")
        assert {e.attributes["rollout_id"] for e in events if e.action == "activated"} == {holder}


def test_an_expired_lease_of_a_crashed_rollout_is_taken_over_by_rollout_resume(env: Env) -> None:
    """A controller that died holding the release leaves its lease on the agents (planted here through the
    agent's API as that controller would have left it; its last renewal with a short lifetime, so the test
    does not wait out a minute)."""
    hosts = [env.host("dyf-h5"), env.host("dyf-h6")]
    targets = ",".join(h.name for h in hosts)
    for h in hosts:
        h.lease("takeover", owner="alice@laptop", rollout_id="r-crashed", ttl=60)
    release = env.release_file("takeover", "v1")
    flags = ("--canary", "0", "--batch", "100%", "--min-healthy", "0s", "--deadline", "20s")

    live = env.apply(targets, release, *flags)
    assert live.code == 1 and live.final_state() == "failed", live.text  # a live holder: refused for good
    assert "is held by alice@laptop (rollout r-crashed)" in live.stderr + live.stdout, live.text

    # the crashed controller's last renewal ran out (the same rollout renewing with a short lifetime)
    leases = [h.lease("takeover", owner="alice@laptop", rollout_id="r-crashed", ttl=0.2) for h in hosts]
    expires = max(lease.expires_at.ToNanoseconds() for lease in leases) / 1e9
    wait_until(lambda: time.time() > expires + 0.1, 10, "the crashed rollout's leases to expire")
    expired = env.apply(targets, release, *flags)
    assert expired.code == 3 and expired.final_state() == "paused", expired.text  # resumable
    assert "(expired)" in expired.stderr + expired.stdout and "rollout resume" in expired.stdout, expired.text
    for h in hosts:  # refused: nothing staged, nothing switched
        assert not release_events(h, "takeover"), h.name

    taken = Rollout.of(env.cli("--format", "json", "rollout", "resume", expired.id))
    assert taken.code == 0, taken.text
    for h in hosts:
        got = h.release("takeover")
        assert got is not None and phase(got.state) == "committed", (h.name, got)
        assert dict(got.state.image_digests) == {"app": env.digests["v1"]}
        assert {e.attributes["rollout_id"] for e in release_events(h, "takeover")} == {expired.id}


@pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL is not installed (scripts/setup.sh)")
def test_two_controllers_share_a_postgresql_journal_and_either_resumes(env: Env, tmp_path: Path) -> None:
    """Controller A (certificate CN `controller`) stages; controller B (its own client certificate, CN
    `bob`, from the same fleet CA) sees the rollout in `rollout ls` and resumes it to the end."""
    other = tmp_path / "bob"
    pki.issue_client(env.fleet.config_dir, "bob", other)
    shutil.copy(env.fleet.config_dir / "inventory.toml", other / "inventory.toml")
    assert (other / "client.pem").read_bytes() != (env.fleet.config_dir / "client.pem").read_bytes()
    hosts = [env.host("dyf-h7"), env.host("dyf-h8")]
    targets = ",".join(h.name for h in hosts)
    with postgres_server() as pg:
        shared = {"DOCKYARD_JOURNAL": pg.url}
        release = env.release_file("shared", "v2")
        flags = ("--canary", "1", "--batch", "1", "--min-healthy", "0s", "--deadline", "20s", "--stage-only")
        r = env.apply(targets, release, *flags, journal_env=shared)
        assert r.code == 0 and r.final_state() == "paused", r.text  # --stage-only: stopped as asked
        assert all(not activated(h, "shared") for h in hosts)

        listed = env.cli("--format", "json", "rollout", "ls", config_dir=other, env=shared)
        assert listed.returncode == 0, listed.stderr
        mine = [row for row in json.loads(listed.stdout) if row.get("id") == r.id]
        assert len(mine) == 1 and mine[0]["release"] == "shared" and mine[0]["state"] == "paused", (
            listed.stdout
        )

        done = Rollout.of(
            env.cli("--format", "json", "rollout", "resume", r.id, config_dir=other, env=shared)
        )
        assert done.code == 0, done.text
        status = env.cli("--format", "json", "rollout", "status", r.id, env=shared)
        assert status.returncode == 0 and '"done"' in status.stdout, status.stdout
    for h in hosts:
        got = h.release("shared")
        assert got is not None and phase(got.state) == "committed", (h.name, got)
        assert got.revisions[0].created_by == "controller"  # staged by A
        assert h.agent is not None
        activations = [
            e
            for e in h.agent.events()
            if e.get("event") == "rpc.finished" and e.get("rpc", "").endswith("/Activate")
        ]
        assert [e.get("peer") for e in activations][-1:] == ["bob"], activations  # switched by B


# ---- bad release files: each one clear `error:` line naming the file, line and key (or the image), a
# non-zero exit, and nothing anywhere — no rollout in the journal, no release, revision, image or event on
# any host

APP = """[containers.app]
image = "{image}"
command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""

# (case, release file ({image}: a pushed tag, {missing}: a tag the registry lacks), what the error says)
CASES = [
    (
        "unknown-key",
        'name = "b1"\n' + APP + 'memroy = "256m"\n',
        "bad.toml:5: containers.app.memroy: unknown key (did you mean memory?)",
    ),
    (
        "bad-duration",
        'name = "b2"\n' + APP + '[containers.app.health]\ncmd = ["CMD-SHELL", "true"]\ninterval = "soon"\n',
        "bad.toml:7: containers.app.health.interval:",
    ),
    (
        "no-image",
        'name = "b3"\n[containers.app]\ncommand = ["true"]\n',
        "bad.toml:2: containers.app.image: missing",
    ),
    (
        "image-not-in-registry",
        'name = "b4"\n' + APP.replace("{image}", "{missing}"),
        "bad.toml:3: containers.app.image: {missing}: not found in the registry",
    ),
    ("toml-syntax", 'name = "b5\n' + APP, "bad.toml:1: "),
    ("bad-name", 'name = "Web!"\n' + APP, "bad.toml:1: name: invalid release name 'Web!'"),
    ("no-containers", 'name = "b7"\n', "the release has no containers"),
    (
        "port-twice",
        'name = "b8"\n'
        + APP
        + 'ports = ["8080:80"]\n[containers.side]\nimage = "{image}"\nports = ["8080:81"]\n',
        "bad.toml:8: containers.side.ports: host port 8080/tcp of '8080:81' is also published by"
        " containers.app",
    ),
    (
        "unknown-dependency",
        'name = "b9"\n' + APP + 'depends_on = ["db"]\n',
        "containers.app.depends_on: unknown container 'db'",
    ),
    (
        "dependency-cycle",
        'name = "b10"\n'
        + APP
        + 'depends_on = ["side"]\n[containers.side]\nimage = "{image}"\ndepends_on = ["app"]\n',
        "dependency cycle app → side → app",
    ),
    (
        "reserved-label",
        'name = "b11"\n' + APP + 'labels = { "dockyard.release" = "other" }\n',
        "containers.app.labels: dockyard.release: the agent sets this label",
    ),
    (
        "bad-restart",
        'name = "b12"\n' + APP + 'restart = "sometimes"\n',
        "containers.app.restart: invalid restart policy 'sometimes'",
    ),
    ("bad-memory", 'name = "b13"\n' + APP + 'memory = "lots"\n', "bad.toml:5: containers.app.memory:"),
    (
        "container-name",
        'name = "b14"\n' + APP + 'name = "web-1"\n',
        "containers.app.name: not allowed in a release",
    ),
    (
        "wrong-type",
        'name = "b15"\n' + APP + 'read_only = "yes"\n',
        "containers.app.read_only: expected true or false, got a string",
    ),
]


def fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def snapshot(env: Env) -> dict[str, object]:
    """What every host has that a rollout could change: releases, images, release and image events."""
    return {
        h.name: (sorted(s.release for s in h.releases()), h.images(), h.events("release"), h.events("image"))
        for h in env.fleet.hosts
        if h.agent is not None
    }


def journal_ids(env: Env) -> list[str]:
    async def ids() -> list[str]:
        journal = open_journal(cfg_dir=env.fleet.config_dir)
        try:
            return [r.id for r in await journal.list(1000)]
        finally:
            await journal.close()

    return asyncio.run(ids())


@pytest.mark.parametrize(("case", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_release_file_is_one_clear_error_and_changes_nothing(
    env: Env, tmp_path: Path, case: str, text: str, expected: str
) -> None:
    missing = f"{env.registry}/shop/web:nope"
    values = {"image": env.images["v1"], "missing": missing}
    path = tmp_path / "bad.toml"
    path.write_text(fill(text, values))
    before = snapshot(env)
    journal_before = journal_ids(env)

    r = env.cli("-H", "@edge", "rollout", "apply", "-f", str(path), "--min-healthy", "0s")

    assert r.returncode != 0, (case, r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, (case, r.stderr)
    print(errors[0])
    assert fill(expected, values) in errors[0], (case, errors[0])
    assert "Traceback" not in r.stderr
    assert snapshot(env) == before
    assert journal_ids(env) == journal_before


def test_a_missing_release_file_is_one_clear_error(env: Env, tmp_path: Path) -> None:
    r = env.cli("-H", "@edge", "rollout", "apply", "-f", str(tmp_path / "nope.toml"))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        f"error: cannot read release file {tmp_path / 'nope.toml'}: No such file or directory"
    ]


def test_a_host_port_another_release_publishes_is_a_release_file_error(env: Env, tmp_path: Path) -> None:
    env.baseline("porta", "v1", ports=["18080:8080"])
    path = tmp_path / "bad.toml"
    path.write_text('name = "b16"\n' + APP.replace("{image}", env.images["v2"]) + 'ports = ["18080:80"]\n')
    before = snapshot(env)
    journal_before = journal_ids(env)

    r = env.cli("-H", "@edge", "rollout", "apply", "-f", str(path), "--min-healthy", "0s")

    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {path}:5: containers.app.ports: host port 18080/tcp on dyf-h1 is taken by release porta"
        " (container porta-app-r1)"
    ], r.stderr
    assert snapshot(env) == before
    assert journal_ids(env) == journal_before
