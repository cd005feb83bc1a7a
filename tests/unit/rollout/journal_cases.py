"""The journal's contract, as test functions run against every store: tests/unit/rollout/test_journal.py
(SQLite) and tests/integration/rollout/test_journal_postgres.py (a real PostgreSQL server) import them and
provide the `store` fixture (a `Store`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from controller.rollout.journal import (
    Journal,
    JournalError,
    Rollout,
    RolloutState,
    Step,
    StepUpdate,
    new_rollout_id,
    open_journal,
)
from controller.rollout.plan import Count, PlanHost, PlanOptions, make_plan

SPEC = b"\x0a\x03web\x12\x00\xff\x00binary"


@dataclass
class Store:
    """One journal store: `url` is what DOCKYARD_JOURNAL would say; `open()` is a new controller on it."""

    url: str
    opened: list[Journal]

    def open(self) -> Journal:
        journal = open_journal(self.url)
        self.opened.append(journal)
        return journal

    async def close(self) -> None:
        for journal in self.opened:
            await journal.close()


def rollout(rid: str = "r-1", hosts: int = 5, owner: str = "alice") -> Rollout:
    plan_hosts = [PlanHost(f"h{i}", {"site": "ab"[i % 2]}) for i in range(1, hosts + 1)]
    plan = make_plan(plan_hosts, PlanOptions(canary=Count(1), batch=Count(2), max_fail=Count(1)))
    return Rollout(
        id=rid,
        release="web",
        spec=SPEC,
        options={"canary": "1", "batch": "2", "budget": ["site=1"], "min_healthy": 10.0},
        plan=plan,
        state=RolloutState.PLANNED,
        owner=owner,
    )


async def test_a_rollout_reads_back_as_written(store: Store) -> None:
    journal = store.open()
    written = await journal.create(rollout())
    assert written.created_at > 0 and written.updated_at == written.created_at
    got = await journal.get("r-1")
    assert got == written
    assert got.spec == SPEC
    assert got.options == {"canary": "1", "batch": "2", "budget": ["site=1"], "min_healthy": 10.0}
    assert [list(w.hosts) for w in got.plan.waves] == [["h1"], ["h2", "h3"], ["h4", "h5"]]
    assert got.plan.max_fail == 1


async def test_every_host_starts_planned_in_its_wave(store: Store) -> None:
    journal = store.open()
    await journal.create(rollout())
    last = await journal.last_steps("r-1")
    assert {h: (s.wave, s.step, s.revision) for h, s in last.items()} == {
        "h1": (0, Step.PLANNED, 0),
        "h2": (1, Step.PLANNED, 0),
        "h3": (1, Step.PLANNED, 0),
        "h4": (2, Step.PLANNED, 0),
        "h5": (2, Step.PLANNED, 0),
    }


async def test_steps_append_and_the_last_one_counts(store: Store) -> None:
    journal = store.open()
    await journal.create(rollout())
    await journal.record("r-1", [StepUpdate("h1", Step.STAGING), StepUpdate("h2", Step.STAGING)])
    await journal.record("r-1", [StepUpdate("h1", Step.STAGED, revision=4, detail="pulled 2 images")])
    await journal.record("r-1", [StepUpdate("h1", Step.ACTIVATING)])
    written = await journal.record("r-1", [StepUpdate("h1", Step.VERIFYING)])
    assert written[0].revision == 4 and written[0].wave == 0  # carried from the host's last step
    last = await journal.last_steps("r-1")
    assert (last["h1"].step, last["h1"].revision, last["h1"].detail) == (Step.VERIFYING, 4, "")
    assert last["h2"].step is Step.STAGING
    assert last["h3"].step is Step.PLANNED
    history = await journal.history("r-1", "h1")
    assert [s.step for s in history] == [
        Step.PLANNED,
        Step.STAGING,
        Step.STAGED,
        Step.ACTIVATING,
        Step.VERIFYING,
    ]
    assert history[2].detail == "pulled 2 images"
    assert [s.seq for s in history] == sorted(s.seq for s in history)
    everything = await journal.history("r-1")
    assert len(everything) == 5 + 5 and everything[-1] == history[-1]


async def test_another_controller_resumes_from_the_plan_and_the_last_steps(store: Store) -> None:
    first = store.open()
    created = await first.create(rollout())
    await first.set_state("r-1", RolloutState.RUNNING)
    await first.record(
        "r-1", [StepUpdate(h, Step.STAGED, revision=7) for h in ("h1", "h2", "h3", "h4", "h5")]
    )
    await first.record("r-1", [StepUpdate("h1", Step.COMMITTED), StepUpdate("h2", Step.ACTIVATING)])
    await first.close()

    second = store.open()
    got = await second.get("r-1")
    assert got.plan == created.plan and got.state is RolloutState.RUNNING
    last = await second.last_steps("r-1")
    assert {h: s.step for h, s in last.items()} == {
        "h1": Step.COMMITTED,
        "h2": Step.ACTIVATING,
        "h3": Step.STAGED,
        "h4": Step.STAGED,
        "h5": Step.STAGED,
    }
    assert {s.revision for s in last.values()} == {7}


async def test_state_changes_and_compare_and_set(store: Store) -> None:
    a, b = store.open(), store.open()
    await a.create(rollout())
    assert await a.set_state("r-1", RolloutState.PAUSED, "max-fail 1 reached: h3 reverted")
    got = await b.get("r-1")
    assert (got.state, got.reason) == (RolloutState.PAUSED, "max-fail 1 reached: h3 reverted")
    # two controllers resume at once: exactly one moves it from paused to running
    results = await asyncio.gather(
        a.set_state("r-1", RolloutState.RUNNING, expect={RolloutState.PAUSED}),
        b.set_state("r-1", RolloutState.RUNNING, expect={RolloutState.PAUSED}),
    )
    assert sorted(results) == [False, True]
    assert not await a.set_state("r-1", RolloutState.ABORTED, expect=[RolloutState.PAUSED])
    assert (await b.get("r-1")).state is RolloutState.RUNNING
    with pytest.raises(JournalError, match="no rollout r-404"):
        await a.set_state("r-404", RolloutState.DONE)


async def test_list_is_newest_first_and_shared(store: Store) -> None:
    a, b = store.open(), store.open()
    await a.create(rollout("r-a", owner="alice"))
    await b.create(rollout("r-b", owner="bob"))
    await a.create(rollout("r-c", owner="alice"))
    assert [r.id for r in await b.list()] == ["r-c", "r-b", "r-a"]
    assert [r.id for r in await a.list(limit=2)] == ["r-c", "r-b"]
    assert [r.owner for r in await a.list()] == ["alice", "bob", "alice"]


async def test_a_write_is_all_or_nothing(store: Store) -> None:
    journal = store.open()
    await journal.create(rollout())
    before = await journal.history("r-1")
    with pytest.raises(JournalError, match="host h9 is not in rollout r-1"):
        await journal.record("r-1", [StepUpdate("h1", Step.STAGING), StepUpdate("h9", Step.STAGING)])
    assert await journal.history("r-1") == before
    with pytest.raises(JournalError, match="rollout r-1 already exists"):
        await journal.create(rollout(hosts=8))
    assert len(await journal.history("r-1")) == 5
    with pytest.raises(JournalError, match="no rollout r-2"):
        await journal.get("r-2")


async def test_concurrent_writers_lose_nothing(store: Store) -> None:
    a, b = store.open(), store.open()
    await a.create(rollout(hosts=20))
    hosts = [f"h{i}" for i in range(1, 21)]

    async def drive(journal: Journal, host: str) -> None:
        for step in (Step.STAGING, Step.STAGED, Step.ACTIVATING, Step.VERIFYING, Step.COMMITTED):
            await journal.record("r-1", [StepUpdate(host, step)])

    await asyncio.gather(*(drive(a if i % 2 else b, h) for i, h in enumerate(hosts)))
    last = await a.last_steps("r-1")
    assert {s.step for s in last.values()} == {Step.COMMITTED}
    assert len(await b.history("r-1")) == 20 * 6


def run_and_kill(url: str, code: str) -> None:
    """Run `code` (with `journal` open on `url`) in a process that SIGKILLs itself at the end."""
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        from controller.rollout.journal import *
        from tests.unit.rollout.journal_cases import rollout
        async def main():
            journal = open_journal(sys.argv[1])
        {code}
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
        """
    ).format(code=textwrap.indent(textwrap.dedent(code), "    "))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", script, url], env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


async def test_a_controller_killed_after_writing_lost_nothing(store: Store) -> None:
    run_and_kill(
        store.url,
        """
        await journal.create(rollout())
        await journal.set_state("r-1", RolloutState.RUNNING)
        await journal.record("r-1", [StepUpdate("h1", Step.ACTIVATING)])
        """,
    )
    journal = store.open()
    assert (await journal.get("r-1")).state is RolloutState.RUNNING
    assert (await journal.last_steps("r-1"))["h1"].step is Step.ACTIVATING


def test_rollout_ids_sort_by_time() -> None:
    a, b = new_rollout_id(1_700_000_000), new_rollout_id(1_700_000_001)
    assert a.startswith("r-20231114-221320-") and len(a) == len("r-20231114-221320-") + 4
    assert a < b
    assert len({new_rollout_id(1_700_000_000) for _ in range(50)}) > 40
