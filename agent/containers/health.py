"""Health checks run by the agent, as Docker defines them: an exec every `interval`; `retries` consecutive
failures make the container unhealthy; failures inside `start_period` do not count; a check that runs
longer than `timeout` fails. One task per running container, ended when its run ends.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Protocol

import agent.log
from agent.errors import AgentError
from agent.runtime.options import HealthConfig

log = agent.log.get(__name__)

LOG_KEEP = 5
OUTPUT_LIMIT = 4096


class HealthHost(Protocol):
    async def exec_capture(
        self, container_id: str, args: tuple[str, ...], timeout: float
    ) -> tuple[int, str]: ...

    def record_health(self, container_id: str, status: str, streak: int, entry: dict[str, Any]) -> str: ...


def command_of(test: tuple[str, ...]) -> tuple[str, ...]:
    """Docker's test forms: ["CMD", args...], ["CMD-SHELL", "cmd"]; a bare string list is CMD-SHELL."""
    if not test:
        return ()
    kind, rest = test[0], test[1:]
    if kind == "CMD":
        return rest
    if kind == "CMD-SHELL":
        return ("/bin/sh", "-c", " ".join(rest))
    return ("/bin/sh", "-c", " ".join(test))


def next_state(ok: bool, streak: int, retries: int, in_start_period: bool, status: str) -> tuple[str, int]:
    """(status, failing streak) after one check (pure)."""
    if ok:
        return "healthy", 0
    if in_start_period:
        return status, streak
    streak += 1
    return ("unhealthy" if streak >= max(1, retries) else status), streak


async def run_health_checks(host: HealthHost, cid: str, exited: asyncio.Event, cfg: HealthConfig) -> None:
    """Check until `exited` (the run's monitor ended) is set."""
    cmd = command_of(cfg.test)
    if not cmd:
        return
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, streak = "starting", 0
    while not exited.is_set():
        try:
            async with asyncio.timeout(max(cfg.interval_s, 0.05)):
                await exited.wait()
            return
        except TimeoutError:
            pass
        begin = datetime.now(UTC)
        try:
            code, output = await host.exec_capture(cid, cmd, cfg.timeout_s)
        except AgentError as exc:
            if exited.is_set():
                return
            code, output = -1, str(exc)
        ok = code == 0
        in_start = loop.time() - started < cfg.start_period_s
        status, streak = next_state(ok, streak, cfg.retries, in_start, status)
        entry = {
            "start": begin.isoformat(),
            "end": datetime.now(UTC).isoformat(),
            "exit_code": code,
            "output": output[-OUTPUT_LIMIT:],
        }
        if exited.is_set():
            return
        try:
            host.record_health(cid, status, streak, entry)
        except AgentError as exc:
            log.warning("container.health_record_failed", id=cid, error=str(exc))
            return
