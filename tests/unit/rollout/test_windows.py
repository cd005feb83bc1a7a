"""Download and apply windows: the simple day/time form, next_fit (a switch needs min-healthy + deadline
before the window closes), and the engine against fake agents driven by a controllable clock (no sleeps):
staging waits for the download window, switching for the apply window, a wave that would overrun the
window waits for the next one, the rollout says until when; update locks (wait, --lock-timeout, --force)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from controller.errors import ControllerError, UsageError
from controller.rollout import engine as eng
from controller.rollout import spec, windows
from controller.rollout.engine import Engine, Event, HostInfo, Options
from controller.rollout.journal import RolloutState, SqliteJournal, Step
from controller.target import Target
from tests.unit.rollout.fake_agents import FakeFleet

BERLIN = ZoneInfo("Europe/Berlin")
RELEASE = 'name = "web"\n[containers.app]\nimage = "registry.lab:5000/shop/web:2"\n'


def at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type-checked by the datetime signature


class FakeClock:
    """Virtual time: `sleep` moves the clock forward (hosts sleeping at once move it to the latest wake,
    not the sum) and yields; `acts` records (time, what) for the assertions."""

    def __init__(self, start: float) -> None:
        self.t = start
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        wake = self.t + seconds
        await asyncio.sleep(0)
        self.t = max(self.t, wake)
        self.slept += seconds
        await asyncio.sleep(0)


# ---- the form ------------------------------------------------------------------------------------------


def test_parse_forms() -> None:
    w = windows.parse("Mon-Fri 01:00-05:00; Sat 02:00-04:00", "Europe/Berlin")
    assert [sorted(s.days) for s in w.spans] == [[0, 1, 2, 3, 4], [5]]
    assert windows.parse("Fri 22:00-02:00").spans[0].end == 26 * 60  # past midnight
    assert sorted(windows.parse("Fri-Mon 01:00-02:00").spans[0].days) == [0, 4, 5, 6]
    assert sorted(windows.parse("Mon,Wed 01:00-02:00").spans[0].days) == [0, 2]
    assert len(windows.parse("03:00-24:00").spans[0].days) == 7


@pytest.mark.parametrize(
    ("text", "tz", "problem"),
    [
        ("Mon-Fri", "", "expected \\[DAYS\\] HH:MM-HH:MM"),
        ("Mox 01:00-02:00", "", "'Mox' is not a day"),
        ("Mon 25:00-26:00", "", "not a time of day"),
        ("Mon 01:00-02:00", "Mars/Base", "not a time zone name"),
    ],
)
def test_bad_windows_are_usage_errors(text: str, tz: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        windows.parse(text, tz, flag="--apply-window")


def test_next_fit_needs_time_left_before_the_window_closes() -> None:
    w = windows.parse("Sat 02:00-04:00", "Europe/Berlin")
    inside = at(2024, 6, 8, 3, 0)  # a Saturday
    assert w.next_fit(inside, 130) == (inside, at(2024, 6, 8, 4, 0))
    late = at(2024, 6, 8, 3, 59)  # open, but 60 s left: the next Saturday
    assert w.open_at(late) is not None
    assert w.next_fit(late, 130) == (at(2024, 6, 15, 2, 0), at(2024, 6, 15, 4, 0))
    assert w.next_fit(late, 3 * 3600) is None  # never long enough
    joined = windows.parse("Mon 22:00-24:00; Tue 00:00-03:00", "UTC")
    start, end = joined.next_fit(datetime(2024, 6, 10, 23, 0, tzinfo=ZoneInfo("UTC")).timestamp(), 3600)
    assert end - start == 4 * 3600  # one window across midnight


# ---- the engine ----------------------------------------------------------------------------------------


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(tmp_path / "rollouts.db")
    yield j
    await j.close()


def hosts(n: int, values: dict[str, str] | None = None) -> list[HostInfo]:
    return [
        HostInfo(f"h{i}", Target(f"h{i}", "tcp", f"10.0.0.{i + 1}", 7443), {}, dict(values or {}))
        for i in range(n)
    ]


class Timeline:
    """Engine events with the virtual time they happened at."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[tuple[float, Event]] = []

    def __call__(self, event: Event) -> None:
        self.events.append((self.clock.now(), event))

    def first(self, step: str, host: str) -> float:
        return next(t for t, e in self.events if e.kind == "host" and e.step == step and e.host == host)


async def run(
    journal: SqliteJournal, fleet: FakeFleet, hs: list[HostInfo], options: Options, clock: FakeClock
) -> tuple[eng.Result, Timeline]:
    timeline = Timeline(clock)
    rollout = await eng.create(journal, fleet, spec.parse(RELEASE), hs, options, owner="t")
    engine = Engine(
        journal, fleet, owner="t", watch_grace=0.5, on_event=timeline, time_source=clock, wait_step=3600
    )
    return await engine.run(rollout.id), timeline


async def test_stage_in_download_window_switch_in_apply_window(journal: SqliteJournal) -> None:
    clock = FakeClock(at(2024, 6, 7, 12, 0))  # Friday noon: both windows closed
    fleet = FakeFleet(["h0", "h1"])
    options = Options(
        canary="1",
        batch="1",
        min_healthy=0,
        deadline=60,
        download_window="Mon-Fri 20:00-23:00",
        apply_window="Sat 02:00-04:00",
        tz="Europe/Berlin",
    )
    result, timeline = await run(journal, fleet, hosts(2), options, clock)
    assert result.exit_code == 0, result.reason
    staged = timeline.first("staged", "h0")
    assert at(2024, 6, 7, 20, 0) <= staged < at(2024, 6, 7, 23, 0)
    for h in ("h0", "h1"):
        switched = timeline.first("activating", h)
        assert at(2024, 6, 8, 2, 0) <= switched <= at(2024, 6, 8, 4, 0) - 60
    # while waiting, the rollout said until when
    waits = [e.detail for _, e in timeline.events if e.kind == "rollout" and "waiting" in e.detail]
    assert any("download window" in w and "opens Fri 2024-06-07 20:00 CEST" in w for w in waits)
    assert any("apply window" in w and "opens Sat 2024-06-08 02:00 CEST" in w for w in waits)
    # the journal kept what each host waited for
    history = await journal.history(result.rollout_id, "h0")
    assert any(s.step is Step.STAGED and "apply window" in s.detail for s in history)


async def test_a_wave_that_would_overrun_the_window_waits_for_the_next(journal: SqliteJournal) -> None:
    clock = FakeClock(at(2024, 6, 8, 3, 58))  # Saturday, 2 minutes before the window closes
    fleet = FakeFleet(["h0"])
    options = Options(min_healthy=10, deadline=120, apply_window="Sat 02:00-04:00", tz="Europe/Berlin")
    result, timeline = await run(journal, fleet, hosts(1), options, clock)
    assert result.exit_code == 0, result.reason
    assert timeline.first("activating", "h0") >= at(2024, 6, 15, 2, 0)  # a week later, not at 03:58
    detail = next(
        s.detail for s in await journal.history(result.rollout_id, "h0") if "not 130s left" in s.detail
    )
    assert "next at Sat 2024-06-15 02:00 CEST" in detail


async def test_group_windows_come_from_the_hosts_values(journal: SqliteJournal) -> None:
    clock = FakeClock(at(2024, 6, 8, 1, 0))
    fleet = FakeFleet(["h0"])
    hs = hosts(1, {"apply_window": "Sat 05:00-06:00", "window_tz": "Europe/Berlin"})
    result, timeline = await run(journal, fleet, hs, Options(min_healthy=0, deadline=60), clock)
    assert result.exit_code == 0
    assert timeline.first("activating", "h0") >= at(2024, 6, 8, 5, 0)


async def test_an_apply_window_never_long_enough_is_refused_at_plan(journal: SqliteJournal) -> None:
    options = Options(min_healthy=10, deadline=7200, apply_window="Sat 02:00-03:00")
    with pytest.raises(ControllerError, match="never open for 7210s"):
        await eng.create(journal, FakeFleet(["h0"]), spec.parse(RELEASE), hosts(1), options, owner="t")


async def test_pause_while_waiting_stops_the_wait(journal: SqliteJournal) -> None:
    clock = FakeClock(at(2024, 6, 8, 12, 0))
    fleet = FakeFleet(["h0"])
    options = Options(min_healthy=0, deadline=60, apply_window="Sun 02:00-04:00", tz="Europe/Berlin")
    rollout = await eng.create(journal, fleet, spec.parse(RELEASE), hosts(1), options, owner="t")

    asks: list[asyncio.Future[bool]] = []

    def on_event(event: Event) -> None:
        if event.kind == "rollout" and "waiting" in event.detail:
            asks.append(asyncio.ensure_future(journal.set_state(rollout.id, RolloutState.PAUSED, "by bob")))

    result = await Engine(journal, fleet, owner="t", on_event=on_event, time_source=clock).run(rollout.id)
    assert result.state is RolloutState.PAUSED
    assert fleet.acts("activate") == []


# ---- update locks --------------------------------------------------------------------------------------


async def test_a_locked_host_waits_then_switches_when_the_lock_goes(journal: SqliteJournal) -> None:
    clock = FakeClock(at(2024, 6, 8, 12, 0))
    fleet = FakeFleet(["h0"])
    fleet.agents["h0"].locked = "/run/dockyard/locks/web.lock"

    class UnlockingClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            await super().sleep(seconds)
            if self.t >= at(2024, 6, 8, 12, 1):  # the container let go of the lock at 12:01
                fleet.agents["h0"].locked = ""

    clock = UnlockingClock(clock.t)
    result, timeline = await run(journal, fleet, hosts(1), Options(min_healthy=0, deadline=60), clock)
    assert result.exit_code == 0
    assert timeline.first("committed", "h0") >= at(2024, 6, 8, 12, 1)
    assert any(
        "locked by /run/dockyard/locks/web.lock" in s.detail for s in await journal.history(result.rollout_id)
    )
    assert fleet.agents["h0"].forced == 0


async def test_lock_timeout_fails_the_host_or_forces_it(journal: SqliteJournal) -> None:
    clock = FakeClock(at(2024, 6, 8, 12, 0))
    fleet = FakeFleet(["h0"])
    fleet.agents["h0"].locked = "update in progress"
    result, _ = await run(
        journal, fleet, hosts(1), Options(min_healthy=0, deadline=60, lock_timeout=30), clock
    )
    assert result.exit_code != 0
    assert "for longer than --lock-timeout 30s" in result.steps["h0"].detail
    assert fleet.acts("activate") == []

    fleet = FakeFleet(["h0"])
    fleet.agents["h0"].locked = "update in progress"
    forced = Options(min_healthy=0, deadline=60, lock_timeout=30, force=True)
    result, _ = await run(journal, fleet, hosts(1), forced, clock)
    assert result.exit_code == 0
    assert fleet.agents["h0"].forced == 1
