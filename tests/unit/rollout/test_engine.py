"""The rollout engine against fake agents (tests/unit/rollout/fake_agents.py) and a real SQLite journal:
phases and waves, canary failure, max-fail with pause and rollback, stage failures, leases and their
renewal, pause/abort requests, stage-only, exit codes, and resume after a crash at every journal write
(each host activated exactly once)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.api.v1 import releases_pb2 as pb
from controller.errors import ControllerError
from controller.rollout import engine as eng
from controller.rollout import spec
from controller.rollout.engine import Engine, Event, HostInfo, Options
from controller.rollout.journal import Journal, RolloutState, SqliteJournal, Step, StepUpdate
from controller.target import Target
from tests.unit.rollout.fake_agents import FAIL, HANG, REVERT, FakeFleet

RELEASE = """
name = "web"
[containers.app]
image = "registry.lab:5000/shop/web:2"
ports = ["8080:8080"]
[containers.sidecar]
image = "registry.lab:5000/shop/logship@sha256:{}"
""".format("cd" * 32)
WEB_DIGEST = "sha256:" + "12" * 32


def hosts(n: int, sites: str = "abc") -> list[HostInfo]:
    return [
        HostInfo(f"h{i}", Target(f"h{i}", "tcp", f"10.0.0.{i + 1}", 7443), {"site": sites[i % len(sites)]})
        for i in range(n)
    ]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "rollouts.db")
    yield j
    await j.close()


async def start(
    journal: Journal, fleet: FakeFleet, n: int, options: Options = Options(), **engine: Any
) -> tuple[str, Engine]:
    release = spec.parse(RELEASE, "web.toml")
    rollout = await eng.create(journal, fleet, release, hosts(n), options, owner="alice@laptop")
    return rollout.id, Engine(journal, fleet, owner="alice@laptop", watch_grace=0.5, **engine)


async def steps_of(journal: Journal, rid: str) -> dict[str, Step]:
    return {h: s.step for h, s in (await journal.last_steps(rid)).items()}


# ---- the whole rollout --------------------------------------------------------------------------------


async def test_happy_path_canary_then_waves_each_host_once(journal: SqliteJournal) -> None:
    fleet = FakeFleet([f"h{i}" for i in range(5)], {"registry.lab:5000/shop/web:2": WEB_DIGEST})
    events: list[Event] = []
    rid, engine = await start(journal, fleet, 5, Options(canary="1", batch="2"), on_event=events.append)
    result = await engine.run(rid)

    assert (result.state, result.exit_code) == (RolloutState.DONE, 0)
    assert set((await steps_of(journal, rid)).values()) == {Step.COMMITTED}
    assert {a.name: a.activations for a in fleet.agents.values()} == {f"h{i}": 1 for i in range(5)}
    # tags resolved once, on the first host; a digest reference is not asked about
    assert fleet.resolved == [("h0", "registry.lab:5000/shop/web:2")]
    staged = pb.RevisionSpec.FromString((await journal.get(rid)).spec)
    assert [c.config.image for c in staged.containers] == [
        f"registry.lab:5000/shop/web@{WEB_DIGEST}",
        "registry.lab:5000/shop/logship@sha256:" + "cd" * 32,
    ]
    # every host staged before any switched; waves in order, each committed before the next starts
    log = fleet.log
    assert max(i for i, (a, _) in enumerate(log) if a == "stage") < min(
        i for i, (a, _) in enumerate(log) if a == "activate"
    )
    waves = [w.hosts for w in (await journal.get(rid)).plan.waves]
    assert waves == [("h0",), ("h1", "h2"), ("h3", "h4")]
    for before, after in itertools.pairwise(waves):
        last_commit = max(i for i, (a, h) in enumerate(log) if a == "commit" and h in before)
        first_activate = min(i for i, (a, h) in enumerate(log) if a == "activate" and h in after)
        assert last_commit < first_activate
    # leases held by this rollout, given back at the end
    assert all(a.held is None and a.unleased == 1 for a in fleet.agents.values())
    # the journal wrote each step before the act: staging … committed, in order, per host
    history = [s.step for s in await journal.history(rid, "h3")]
    assert history == [
        Step.PLANNED, Step.STAGING, Step.STAGED,
        Step.ACTIVATING, Step.VERIFYING, Step.VERIFIED, Step.COMMITTED,
    ]  # fmt: skip
    assert events[-1].kind == "rollout" and events[-1].state == "done"
    assert any(e.kind == "host" and e.phase == "healthy" and e.host == "h4" for e in events)


async def test_canary_failure_stops_before_any_other_host_switches(journal: SqliteJournal) -> None:
    fleet = FakeFleet([f"h{i}" for i in range(4)])
    for agent in fleet.agents.values():
        agent.commit_old(1)
    fleet.agents["h0"].outcome = REVERT
    rid, engine = await start(journal, fleet, 4)
    result = await engine.run(rid)

    assert (result.state, result.exit_code) == (RolloutState.PAUSED, 3)
    assert "1 failed, max-fail 0: h0 reverted" in result.reason
    assert result.steps["h0"].detail == "reverted to revision 1: app: exited 1"
    assert fleet.acts("activate") == ["h0"]
    assert (await steps_of(journal, rid)) == {
        "h0": Step.REVERTED, "h1": Step.STAGED, "h2": Step.STAGED, "h3": Step.STAGED
    }  # fmt: skip
    assert fleet.agents["h1"].held is not None  # a paused rollout keeps its hold on the release


async def test_resuming_a_paused_rollout_accepts_the_failures_so_far(journal: SqliteJournal) -> None:
    fleet = FakeFleet([f"h{i}" for i in range(4)])
    for agent in fleet.agents.values():
        agent.commit_old(1)
    fleet.agents["h0"].outcome = REVERT
    rid, engine = await start(journal, fleet, 4)
    assert (await engine.run(rid)).exit_code == 3

    result = await Engine(journal, fleet, owner="bob@desk").run(rid, resume=True)
    assert (result.state, result.exit_code) == (RolloutState.DONE, 0)
    assert "3 of 4 hosts committed, 1 failed (h0" in result.reason
    assert [a.activations for a in fleet.agents.values()] == [1, 1, 1, 1]


async def test_rollback_on_max_fail_returns_switched_hosts_in_reverse_wave_order(
    journal: SqliteJournal,
) -> None:
    fleet = FakeFleet([f"h{i}" for i in range(5)])
    for agent in fleet.agents.values():
        agent.commit_old(1)
    fleet.agents["h2"].outcome = REVERT  # wave 1 = h1, h2
    options = Options(canary="1", batch="2", on_failure="rollback")
    rid, engine = await start(journal, fleet, 5, options)
    result = await engine.run(rid)

    assert (result.state, result.exit_code) == (RolloutState.ROLLED_BACK, 1)
    assert "rolled back 2 host(s)" in result.reason
    assert fleet.acts("rollback") == ["h1", "h0"]  # wave 1 before the canary; h2 reverted by itself
    assert [a.state.active_revision for a in fleet.agents.values()] == [1, 1, 1, 1, 1]
    assert (await steps_of(journal, rid)) == {
        "h0": Step.ROLLED_BACK, "h1": Step.ROLLED_BACK, "h2": Step.REVERTED,
        "h3": Step.STAGED, "h4": Step.STAGED,
    }  # fmt: skip
    assert fleet.acts("activate") == ["h0", "h1", "h2"]
    assert all(a.held is None for a in fleet.agents.values())


async def test_rollback_after_a_canary_that_reverted_by_itself(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1"])
    for agent in fleet.agents.values():
        agent.commit_old(1)
    fleet.agents["h0"].outcome = REVERT
    rid, engine = await start(journal, fleet, 2, Options(on_failure="rollback"))
    result = await engine.run(rid)
    assert (result.state, result.exit_code) == (RolloutState.ROLLED_BACK, 1)
    assert "rolled back 0 host(s)" in result.reason
    assert fleet.acts("activate") == ["h0"] and fleet.acts("rollback") == []


async def test_failures_within_max_fail_finish_done(journal: SqliteJournal) -> None:
    fleet = FakeFleet([f"h{i}" for i in range(4)])
    fleet.agents["h1"].outcome = FAIL  # no last known good: FAILED on the agent
    rid, engine = await start(journal, fleet, 4, Options(batch="50%", max_fail="25%"))
    result = await engine.run(rid)
    assert (result.state, result.exit_code) == (RolloutState.DONE, 0)
    assert (await journal.last_steps(rid))["h1"].step is Step.FAILED
    assert "no last known good" in (await journal.last_steps(rid))["h1"].detail


async def test_over_max_fail_in_the_last_wave_is_failed_not_paused(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1"])
    fleet.agents["h1"].outcome = FAIL
    rid, engine = await start(journal, fleet, 2)
    result = await engine.run(rid)
    assert (result.state, result.exit_code) == (RolloutState.FAILED, 1)


async def test_a_host_that_never_verifies_fails_after_the_deadline(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1"])
    fleet.agents["h0"].outcome = HANG
    rid, engine = await start(journal, fleet, 2, Options(deadline=0.2, max_fail="1"))
    result = await engine.run(rid)
    assert result.exit_code == 0
    h0 = (await journal.last_steps(rid))["h0"]
    assert h0.step is Step.FAILED and "not verified within 0.7s (last phase: verifying)" in h0.detail


# ---- staging ------------------------------------------------------------------------------------------


async def test_stage_failures_stop_before_any_switch(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1", "h2"])
    fleet.agents["h1"].down = True
    fleet.agents[
        "h2"
    ].stage_error = "not enough space on /var/lib/dockyard: needs at least 150 MB, 20 MB free"
    rid, engine = await start(journal, fleet, 3)
    result = await engine.run(rid)

    assert (result.state, result.exit_code) == (RolloutState.PAUSED, 3)
    assert fleet.acts("activate") == []
    last = await journal.last_steps(rid)
    assert last["h1"].step is Step.STAGE_FAILED and "connection refused" in last["h1"].detail
    assert last["h2"].step is Step.STAGE_FAILED and "needs at least 150 MB" in last["h2"].detail

    # fixed: resume stages them again, then switches everyone
    fleet.agents["h1"].down = False
    fleet.agents["h2"].stage_error = ""
    result = await Engine(journal, fleet).run(rid, resume=True)
    assert (result.state, result.exit_code) == (RolloutState.DONE, 0)
    assert [a.activations for a in fleet.agents.values()] == [1, 1, 1]


async def test_stage_failure_with_rollback_is_failed_before_switching(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1"])
    fleet.agents["h1"].down = True
    rid, engine = await start(journal, fleet, 2, Options(on_failure="rollback"))
    result = await engine.run(rid)
    assert (result.state, result.exit_code) == (RolloutState.FAILED, 1)
    assert "no host had switched" in result.reason
    assert fleet.acts("activate") == [] and fleet.acts("rollback") == []


async def test_stage_only_then_resume(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1", "h2"])
    rid, engine = await start(journal, fleet, 3, Options(stage_only=True))
    result = await engine.run(rid)
    assert (result.state, result.exit_code) == (RolloutState.PAUSED, 0)
    assert set((await steps_of(journal, rid)).values()) == {Step.STAGED}
    assert fleet.acts("activate") == []

    result = await Engine(journal, fleet).run(rid, resume=True)
    assert (result.state, result.exit_code) == (RolloutState.DONE, 0)
    assert fleet.acts("stage") == ["h0", "h1", "h2"]  # not staged twice
    assert [a.activations for a in fleet.agents.values()] == [1, 1, 1]


async def test_tags_are_resolved_on_the_first_reachable_host(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1", "h2"])
    fleet.agents["h0"].down = True
    await start(journal, fleet, 3)
    assert fleet.resolved == [("h1", "registry.lab:5000/shop/web:2")]
    for agent in fleet.agents.values():
        agent.down = True
    with pytest.raises(ControllerError, match="no selected host answered"):
        await start(journal, fleet, 3)


# ---- leases, pause, abort ------------------------------------------------------------------------------


async def test_a_release_held_by_another_rollout_is_refused_with_the_holder(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1"])
    await fleet.agents["h1"].lease("web", owner="carol@ops", rollout_id="r-other", ttl=60)
    rid, engine = await start(journal, fleet, 2)
    result = await engine.run(rid)
    assert (result.state, result.exit_code) == (RolloutState.FAILED, 1)
    assert "h1: release web is held by carol@ops (rollout r-other)" in result.reason
    assert fleet.acts("stage") == []
    assert fleet.agents["h0"].held is None  # what it took is given back


async def test_leases_are_renewed_while_running(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0", "h1"])
    for agent in fleet.agents.values():
        agent.delay = 0.5
    rid, engine = await start(journal, fleet, 2, lease_ttl=0.15)
    result = await engine.run(rid)
    assert result.exit_code == 0
    assert engine.lease_renewals >= 2
    assert all(a.lease_calls >= 3 for a in fleet.agents.values())


class Hooked:
    """The SQLite journal with a hook after each `record` (a pause/abort request, or a crash: the k-th
    write raises before or after it is written, as if the controller died there)."""

    def __init__(self, inner: SqliteJournal) -> None:
        self.inner = inner
        self.location = inner.location
        self.records = 0
        self.crash_at = 0  # raise at this record() call (1-based), 0 = never
        self.crash_after_write = False
        self.crashed = False
        self.after: Any = None  # async (updates) -> None, run after each write

    def _dead(self) -> None:
        if self.crashed:
            raise Crash("the controller is dead")

    async def create(self, rollout: Any) -> Any:
        return await self.inner.create(rollout)

    async def set_state(
        self, rollout_id: str, state: RolloutState, reason: str = "", *, expect: Any = ()
    ) -> bool:
        self._dead()
        return await self.inner.set_state(rollout_id, state, reason, expect=expect)

    async def record(self, rollout_id: str, updates: Sequence[StepUpdate]) -> Any:
        self._dead()
        self.records += 1
        number = self.records  # other hosts' writes go on while this one awaits
        if number == self.crash_at and not self.crash_after_write:
            self.crashed = True
            raise Crash(f"killed before write {number}")
        written = await self.inner.record(rollout_id, updates)
        self._dead()
        if number == self.crash_at:
            self.crashed = True
            raise Crash(f"killed after write {number}")
        if self.after is not None:
            await self.after(updates)
        return written

    async def get(self, rollout_id: str) -> Any:
        return await self.inner.get(rollout_id)

    async def list(self, limit: int = 50) -> Any:
        return await self.inner.list(limit)

    async def last_steps(self, rollout_id: str) -> Any:
        return await self.inner.last_steps(rollout_id)

    async def history(self, rollout_id: str, host: str | None = None) -> Any:
        return await self.inner.history(rollout_id, host)

    async def close(self) -> None:
        await self.inner.close()


class Crash(Exception):
    pass


@pytest.mark.parametrize("request_state", [RolloutState.PAUSED, RolloutState.ABORTED])
async def test_pause_or_abort_requests_stop_before_the_next_wave(
    journal: SqliteJournal, request_state: RolloutState
) -> None:
    fleet = FakeFleet(["h0", "h1", "h2"])
    hooked = Hooked(journal)
    rid, engine = await start(hooked, fleet, 3)

    async def ask(updates: Sequence[StepUpdate]) -> None:
        if any(u.host == "h0" and u.step is Step.COMMITTED for u in updates):
            await journal.set_state(
                rid, request_state, f"{request_state} by bob", expect=[RolloutState.RUNNING]
            )

    hooked.after = ask
    result = await engine.run(rid)
    assert (result.state, result.reason) == (request_state, f"{request_state} by bob")
    assert result.exit_code == (3 if request_state is RolloutState.PAUSED else 1)
    assert fleet.acts("activate") == ["h0"]
    if request_state is RolloutState.ABORTED:
        assert all(a.held is None for a in fleet.agents.values())
        with pytest.raises(ControllerError, match="is aborted: there is nothing to resume"):
            await Engine(journal, fleet).run(rid, resume=True)
        return
    result = await Engine(journal, fleet).run(rid, resume=True)
    assert result.exit_code == 0
    assert fleet.acts("activate") == ["h0", "h1", "h2"]


async def test_resume_refuses_a_rollout_that_is_still_being_driven(journal: SqliteJournal) -> None:
    fleet = FakeFleet(["h0"])
    rid, _ = await start(journal, fleet, 1)
    await journal.set_state(rid, RolloutState.RUNNING)
    with pytest.raises(ControllerError, match="still being driven"):
        await Engine(journal, fleet).run(rid, resume=True)
    with pytest.raises(ControllerError, match="continue it with `rollout resume"):
        await Engine(journal, fleet).run(rid)


# ---- crash anywhere, resume -----------------------------------------------------------------------------

HAPPY_WRITES = (
    1 + 3 + 3 * 4
)  # staging (one write for all) + staged ×3 + activating/verifying/verified/committed ×3


@pytest.mark.parametrize("after_write", [False, True], ids=["before-write", "after-write"])
@pytest.mark.parametrize("k", range(1, HAPPY_WRITES + 1))
async def test_resume_after_a_crash_at_any_journal_write(
    journal: SqliteJournal, k: int, after_write: bool
) -> None:
    fleet = FakeFleet(["h0", "h1", "h2"])
    for agent in fleet.agents.values():
        agent.commit_old(1)
    hooked = Hooked(journal)
    hooked.crash_at, hooked.crash_after_write = k, after_write
    rid, engine = await start(hooked, fleet, 3, Options(canary="1", batch="2"))
    with pytest.raises(BaseException) as crashed:
        await engine.run(rid)
    assert (
        crashed.group_contains(Crash)
        if isinstance(crashed.value, BaseExceptionGroup)
        else crashed.type is Crash
    )
    assert (await journal.get(rid)).state in (RolloutState.STAGING, RolloutState.RUNNING)

    result = await Engine(journal, fleet, watch_grace=0.5).run(rid, resume=True, heartbeat_window=0)
    assert (result.state, result.exit_code) == (RolloutState.DONE, 0), result.reason
    assert [a.activations for a in fleet.agents.values()] == [1, 1, 1]
    assert [a.state.last_known_good for a in fleet.agents.values()] == [2, 2, 2]
    assert set((await steps_of(journal, rid)).values()) == {Step.COMMITTED}
    # the canary still went first: no other host switched before it committed
    log = fleet.log
    assert log.index(("commit", "h0")) < min(log.index(("activate", h)) for h in ("h1", "h2"))


@pytest.mark.parametrize("k", range(1, 12))
async def test_resume_after_a_crash_during_rollback_finishes_it(journal: SqliteJournal, k: int) -> None:
    fleet = FakeFleet(["h0", "h1", "h2"])
    for agent in fleet.agents.values():
        agent.commit_old(1)
    fleet.agents["h2"].outcome = REVERT
    hooked = Hooked(journal)
    rid, engine = await start(hooked, fleet, 3, Options(canary="1", batch="2", on_failure="rollback"))
    # writes: staging, 3 staged, h0 ×4, h1+h2 ×(activating, verifying) … then the rollback's writes
    hooked.crash_at = k + 11
    try:
        first = await engine.run(rid)
    except BaseException:  # the simulated crash, possibly inside a task group
        first = None
    if first is not None:  # fewer writes than k: the run finished
        assert first.state is RolloutState.ROLLED_BACK
        return
    result = await Engine(journal, fleet).run(rid, resume=True, heartbeat_window=0)
    assert (result.state, result.exit_code) == (RolloutState.ROLLED_BACK, 1), result.reason
    assert [a.state.active_revision for a in fleet.agents.values()] == [1, 1, 1]
    assert sorted(fleet.acts("rollback")) == ["h0", "h1"]
