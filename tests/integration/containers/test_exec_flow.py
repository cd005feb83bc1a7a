"""Exec output under a client that does not read: the agent's memory stays flat and a cancel ends the process.

A raw gRPC client (no CLI in between) starts `exec yes`, takes the first message and then reads nothing
while the agent's RSS is sampled; `yes` must block on its output instead of the agent buffering it. The
client then cancels the call, and the `yes` process must be gone from the container and the memory
back. Run for the pipe path (no terminal: the agent runs `runc exec` itself) and the conmon path (tty).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.api.v1 import containers_pb2 as pb
from agent.api.v1 import containers_pb2_grpc
from tests.integration.containers.conftest import IMAGE, Yard
from tests.support.agent import wait_for

pytestmark = pytest.mark.root

NOT_READING_S = 10.0
RSS_GROWTH_LIMIT = 20 * 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of a process in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def processes_named(init_pid: int, name: str) -> list[int]:
    """Processes called `name` in the pid namespace of the container whose init is `init_pid`."""
    ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.readlink(p / "ns" / "pid") == ns and (p / "comm").read_text().strip() == name:
                found.append(int(p.name))
        except OSError:
            continue  # gone meanwhile
    return found


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_exec_output_to_a_client_that_never_reads_is_bounded_and_cancel_ends_it(
    yard: Yard, tty: bool
) -> None:
    name = f"flow-{'tty' if tty else 'pipes'}"
    yard.ok("run", "-d", "--name", name, IMAGE, "sleep", "600")
    try:
        init_pid = int(yard.inspect(name)["pid"])
        agent_pid = yard.agent.proc.pid  # type: ignore[union-attr]
        before, peak = asyncio.run(_never_read_then_cancel(yard, name, agent_pid, tty))
        assert peak - before < RSS_GROWTH_LIMIT, f"agent RSS grew {(peak - before) >> 20} MiB"
        wait_for(lambda: not processes_named(init_pid, "yes"), 15, "the exec'd yes to be gone")
        assert rss(agent_pid) - before < RSS_GROWTH_LIMIT
    finally:
        yard.ok("rm", "-f", name)


async def _never_read_then_cancel(yard: Yard, name: str, agent_pid: int, tty: bool) -> tuple[int, int]:
    """(RSS when the exec has started, highest RSS while the client does not read)."""
    hold = asyncio.Event()

    async def requests() -> AsyncIterator[pb.ExecContainerRequest]:
        yield pb.ExecContainerRequest(start=pb.ExecStart(container=name, command=["yes"], tty=tty))
        await hold.wait()  # keep the request side open, as a client that is merely slow would

    async with yard.channel() as ch:
        call = containers_pb2_grpc.ContainersStub(ch).Exec(requests())
        first = await call.read()
        assert first.WhichOneof("msg") in ("exec_id", "output")
        before = peak = rss(agent_pid)
        deadline = time.monotonic() + NOT_READING_S
        while time.monotonic() < deadline and peak - before < RSS_GROWTH_LIMIT:  # stop early when failing
            await asyncio.sleep(0.2)
            peak = max(peak, rss(agent_pid))
        call.cancel()
        hold.set()
    return before, peak


def test_a_health_check_that_floods_its_output_leaves_the_agent_flat(yard: Yard) -> None:
    """A check's output is kept to its tail while it runs (it used to be gathered whole until the timeout)."""
    name = "flow-health"
    yard.ok(
        "run", "-d", "--name", name, "--health-cmd", "yes", "--health-interval", "1s",
        "--health-timeout", "5s", IMAGE, "sleep", "600",
    )  # fmt: skip
    try:
        agent_pid = yard.agent.proc.pid  # type: ignore[union-attr]
        before = peak = rss(agent_pid)

        def checked() -> list[dict[str, object]] | None:
            nonlocal peak
            peak = max(peak, rss(agent_pid))
            assert peak - before < RSS_GROWTH_LIMIT, f"agent RSS grew {(peak - before) >> 20} MiB"
            log: list[dict[str, object]] = yard.inspect(name).get("health_log") or []
            return log or None

        entry = wait_for(checked, 30, "the first health check to end", interval=0.2)[0]
        assert entry["exit_code"] == -1 and "timed out" in str(entry["output"])
        assert peak - before < RSS_GROWTH_LIMIT
    finally:
        yard.ok("rm", "-f", name)
