"""The in-memory run lifecycle (agent/containers/lifecycle.py): every move of the transition table."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from agent.containers.lifecycle import TRANSITIONS, InvalidMove, Phase, Run


def _run_at(phase: Phase) -> Run:
    run = Run(monitor_pid=1, started_ns=0)
    for p in Phase:
        if Phase.RUNNING < p <= phase:
            run.advance(p)
    return run


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(Phase, Phase)))
async def test_every_move_is_allowed_exactly_when_the_table_says(src: Phase, dst: Phase) -> None:
    run = _run_at(src)
    if dst in TRANSITIONS[src]:
        run.advance(dst)
        assert run.phase is dst
    else:
        with pytest.raises(InvalidMove):
            run.advance(dst)
        assert run.phase is src


def test_the_table_is_one_line_from_running_to_finished() -> None:
    assert [p for p in Phase if TRANSITIONS[p]] == [Phase.RUNNING, Phase.EXITED, Phase.RECORDED]
    assert all(TRANSITIONS[p] == {Phase(p + 1)} for p in Phase if p < Phase.FINISHED)


@pytest.mark.parametrize("phase", list(Phase))
async def test_reaching_a_phase_reaches_every_earlier_one_and_no_later_one(phase: Phase) -> None:
    run = _run_at(phase)
    for p in Phase:
        assert run.reached(p) is (p <= phase)
        assert run.event(p).is_set() is (p <= phase)


async def test_waiters_wake_on_the_phase_they_wait_for() -> None:
    run = Run(monitor_pid=1, started_ns=0)
    recorded = asyncio.ensure_future(run.wait(Phase.RECORDED))
    await asyncio.sleep(0)
    run.advance(Phase.EXITED)
    await asyncio.sleep(0)
    assert not recorded.done()
    run.advance(Phase.RECORDED)
    assert await recorded is True
    assert await run.wait(Phase.FINISHED, timeout=0.01) is False


async def test_readers_are_counted_until_the_last_one_leaves() -> None:
    run = Run(monitor_pid=1, started_ns=0)
    await run.readers_gone(0.01)  # none: returns at once
    with run.reader():
        with run.reader():
            pass
        gone = asyncio.ensure_future(run.readers_gone(5))
        await asyncio.sleep(0)
        assert not gone.done()
    await asyncio.wait_for(gone, 5)
