"""Live restore: containers outlive the agent (SIGTERM or SIGKILL) and are reconciled when it returns."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from agent.api.v1 import containers_pb2_grpc
from tests.integration.containers.conftest import (
    IMAGE,
    Yard,
    YardFactory,
    assert_nothing_left,
    config,
    leftovers,
    run_detached,
    start_many,
)
from tests.support.agent import wait_for

pytestmark = pytest.mark.root


def conmon_gone(cid: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"conmon" in cmd and cid.encode() in cmd:
                return False
    return True


async def _in_flight_then_kill(yard: Yard, n: int) -> list[BaseException | str]:
    """Start `n` runs and SIGKILL the agent while they are in progress."""
    async with yard.channel() as ch:
        stub = containers_pb2_grpc.ContainersStub(ch)
        tasks = [asyncio.ensure_future(run_detached(stub, config(IMAGE, "sleep", "600"))) for _ in range(n)]
        # kill as soon as the agent has started working on them (the first create is logged)
        await asyncio.to_thread(
            wait_for,
            lambda: any(e.get("event") == "container.created" for e in yard.agent.events()[-40:]),
            20,
            "the in-flight creates to begin",
            0.002,
        )
        await asyncio.to_thread(yard.agent.kill)
        return list(await asyncio.gather(*tasks, return_exceptions=True))


def test_sigkill_with_10_running_and_5_being_created(yard_factory: YardFactory) -> None:
    yard = yard_factory("crash")
    running = asyncio.run(
        start_many(yard, [config(IMAGE, "sh", "-c", f"echo up-{i}; exec sleep 600") for i in range(10)])
    )
    exiting = asyncio.run(start_many(yard, [config(IMAGE, "sh", "-c", "echo bye; sleep 2; exit 42")]))[0]
    pids = {cid: yard.inspect(cid)["pid"] for cid in running}
    results = asyncio.run(_in_flight_then_kill(yard, 5))
    assert not yard.agent.running
    # the exiting container finishes while the agent is down; conmon records it
    wait_for(lambda: conmon_gone(exiting), 30, "the exiting container's conmon to finish")
    yard.agent.start()

    # the 10 are adopted: still running with the same process, and their exits are watched again
    for i, cid in enumerate(running):
        info = yard.inspect(cid)
        assert info["status"] == "running", info
        assert info["pid"] == pids[cid]
        assert yard.ok("logs", cid) == f"up-{i}\n"
    assert yard.ok("exec", running[0], "echo", "adopted") == "adopted\n"
    yard.ok("kill", running[1])
    assert yard.ok("wait", running[1]).strip() == "137"
    # the exit that happened while the agent was down is recorded with its code and logs
    gone = yard.inspect(exiting)
    assert gone["status"] == "exited" and gone["exit_code"] == 42
    assert yard.ok("logs", exiting) == "bye\n"
    # the 5 in flight: each either complete (a usable container) or gone without a trace
    known = {*running, exiting}
    others = [c for c in yard.ok("ps", "-aq", "--no-trunc").split() if c not in known]
    assert len(others) <= 5
    for cid in others:
        info = yard.inspect(cid)
        assert info["status"] in ("created", "running", "exited"), info
        if info["status"] != "running":
            yard.ok("start", cid)
        assert yard.status(cid) == "running"
    returned = [r for r in results if isinstance(r, str) and r]
    assert set(returned) <= set(others)  # every ID the agent handed out still exists
    left = leftovers(yard)
    assert sorted(left["dirs"]) == sorted([*running, exiting, *others])
    yard.ok("rm", "-f", *running, exiting, *others)
    assert_nothing_left(yard)


def test_graceful_agent_restart_keeps_containers_running(yard_factory: YardFactory) -> None:
    yard = yard_factory("graceful")
    cid = yard.ok("run", "-d", IMAGE, "sh", "-c", "while true; do echo tick; sleep 0.2; done").strip()
    pid = yard.inspect(cid)["pid"]
    yard.restart_agent()
    info = yard.inspect(cid)
    assert info["status"] == "running" and info["pid"] == pid
    os.kill(pid, 0)
    count = yard.ok("logs", cid).count("tick")
    wait_for(lambda: yard.ok("logs", cid).count("tick") > count, 10, "logging to continue")
    yard.ok("rm", "-f", cid)


def test_restart_policies_across_an_agent_crash(yard_factory: YardFactory) -> None:
    yard = yard_factory("policies")
    ids = {
        policy: yard.ok("run", "-d", "--name", name, "--restart", policy, IMAGE, "sleep", "600").strip()
        for policy, name in (
            ("always", "p-always"),
            ("no", "p-no"),
            ("on-failure", "p-onfail"),
            ("unless-stopped", "p-unless"),
        )
    }
    yard.ok("stop", "-t", "0", "p-unless")  # stopped by the user: must stay stopped
    pids = {policy: yard.inspect(cid)["pid"] for policy, cid in ids.items() if policy != "unless-stopped"}
    yard.agent.kill()
    for pid in pids.values():  # the containers die while nobody watches
        os.kill(pid, signal.SIGKILL)
    for cid in ids.values():
        wait_for(lambda c=cid: conmon_gone(c), 30, "conmon to record the exit")  # type: ignore[misc]
    yard.agent.start()

    def restarted(name: str) -> dict[str, object] | None:
        d = yard.inspect(name)
        return d if d["status"] == "running" and d["restart_count"] >= 1 else None

    always = wait_for(lambda: restarted("p-always"), 30, "always to come back", 0.1)
    assert always["pid"] != pids["always"]
    wait_for(lambda: restarted("p-onfail"), 30, "on-failure to come back (exit 137)", 0.1)
    no = yard.inspect("p-no")
    assert no["status"] == "exited" and no["exit_code"] == 137
    assert yard.status("p-unless") == "exited"
    yard.ok("rm", "-f", *ids.values())
