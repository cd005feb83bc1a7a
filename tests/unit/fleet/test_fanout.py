"""Fan-out mechanics with in-process operations: deadlines, isolation, retries, bounded parallelism."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from controller import fanout
from controller.client import AgentClient
from controller.errors import AgentCallError, ConnectError, ControllerError, UsageError
from controller.target import Target


def targets(n: int) -> list[Target]:
    return [Target(name=f"h{i}", kind="tcp", address=f"192.0.2.{i}", port=7443) for i in range(n)]


async def test_slow_and_failing_hosts_do_not_sink_the_rest(tmp_path: Path) -> None:
    async def op(client: AgentClient) -> str:
        if client.name == "h1":
            await asyncio.Event().wait()  # hangs forever
        if client.name == "h2":
            raise AgentCallError("no such container", "NOT_FOUND", client.name)
        if client.name == "h3":
            raise RuntimeError("bug")
        return client.name.upper()

    start = time.monotonic()
    outcomes = await fanout.run(targets(6), op, pool=fanout.Pool(tmp_path), deadline_s=0.3)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0
    assert [o.host for o in outcomes] == ["h0", "h1", "h2", "h3", "h4", "h5"]
    assert [o.value for o in outcomes if o.ok] == ["H0", "H4", "H5"]
    errors = {o.host: str(o.error) for o in outcomes if not o.ok}
    assert errors == {
        "h1": "h1: timed out after 0.3s",
        "h2": "h2: no such container",
        "h3": "h3: internal error: RuntimeError: bug",
    }
    assert fanout.summarize(outcomes).line == "3 ok, 3 failed"


@pytest.mark.parametrize(("idempotent", "expected_attempts", "ok"), [(True, 3, True), (False, 1, False)])
async def test_retries_only_idempotent_calls_on_unavailable(
    tmp_path: Path, idempotent: bool, expected_attempts: int, ok: bool
) -> None:
    calls = 0

    async def op(client: AgentClient) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectError("connection refused", client.name)
        return calls

    [outcome] = await fanout.run(
        targets(1), op, pool=fanout.Pool(tmp_path), deadline_s=5, idempotent=idempotent
    )
    assert (outcome.attempts, outcome.ok) == (expected_attempts, ok)


async def test_agent_errors_are_never_retried(tmp_path: Path) -> None:
    calls = 0

    async def op(client: AgentClient) -> None:
        nonlocal calls
        calls += 1
        raise AgentCallError("exists", "ALREADY_EXISTS", client.name)

    [outcome] = await fanout.run(targets(1), op, pool=fanout.Pool(tmp_path), idempotent=True)
    assert calls == 1 and not outcome.ok


async def test_parallel_bounds_concurrency_and_deadline_starts_with_the_slot(tmp_path: Path) -> None:
    running = peak = 0

    async def op(client: AgentClient) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    outcomes = await fanout.run(targets(8), op, pool=fanout.Pool(tmp_path), parallel=2, deadline_s=0.2)
    assert peak == 2
    assert all(o.ok for o in outcomes)  # 4 rounds of 0.05 s exceed 0.2 s in total, not per host


async def test_pool_keeps_one_client_per_host(tmp_path: Path) -> None:
    pool = fanout.Pool(tmp_path)
    seen: list[AgentClient] = []

    async def op(client: AgentClient) -> None:
        seen.append(client)

    ts = targets(3)
    await fanout.run(ts, op, pool=pool)
    await fanout.run(ts, op, pool=pool)
    assert len({id(c) for c in seen}) == 3
    await pool.close()


@pytest.mark.parametrize(
    ("text", "total", "allowed"),
    [(None, 10, 0), ("2", 10, 2), ("10%", 10, 1), ("10%", 9, 0), ("50%", 13, 6), ("100%", 4, 4)],
)
def test_max_fail(text: str | None, total: int, allowed: int) -> None:
    assert fanout.parse_max_fail(text).allowed(total) == allowed


@pytest.mark.parametrize("text", ["-1", "x", "101%", "%"])
def test_max_fail_rejects_nonsense(text: str) -> None:
    with pytest.raises(UsageError, match="--max-fail"):
        fanout.parse_max_fail(text)


def test_summary_success_follows_max_fail() -> None:
    outcomes: list[fanout.Outcome[object]] = [
        fanout.Outcome("a", 1),
        fanout.Outcome("b", error=ControllerError("down", "b")),
        fanout.Outcome("c", 1),
    ]
    assert not fanout.summarize(outcomes).success
    summary = fanout.summarize(outcomes, fanout.parse_max_fail("1"))
    assert summary.success and summary.line == "2 ok, 1 failed"
    assert [str(e) for e in summary.failures] == ["b: down"]


async def test_streams_have_no_deadline(tmp_path: Path) -> None:
    async def op(client: AgentClient) -> str:
        await asyncio.sleep(0.3)
        return "streamed"

    [outcome] = await fanout.run(targets(1), op, pool=fanout.Pool(tmp_path), deadline_s=None)
    assert outcome.value == "streamed" and outcome.seconds >= 0.3
