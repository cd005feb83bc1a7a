"""`stats`: samples of cgroup usage for running containers, with CPU% over the last interval."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent import hostinfo
from agent.runtime import cgroups
from agent.state.containers import ACTIVE

if TYPE_CHECKING:
    from agent.containers.manager import ContainerManager

INTERVAL = 1.0
FIRST_INTERVAL = 0.25


@dataclass(frozen=True)
class Sample:
    id: str
    name: str
    time_ns: int
    cpu_percent: float
    cpu_usage_ns: int
    memory_usage: int
    memory_limit: int
    pids: int
    net_rx: int
    net_tx: int
    block_read: int
    block_write: int


def _read(mgr: ContainerManager, refs: list[str]) -> list[tuple[str, str, int, cgroups.Usage]]:
    records = [mgr.find(r) for r in refs] if refs else mgr.list_containers(all_=False)
    host_memory = hostinfo.memory_bytes()
    out = []
    for rec in records:
        if rec.status not in ACTIVE:
            continue
        path = f"{mgr.settings.cgroup_parent.rstrip('/')}/{rec.id}"
        usage = cgroups.usage(path, rec.pid)
        if host_memory and usage.memory_limit > host_memory:  # "no limit" shows as the host's memory
            usage = dataclasses.replace(usage, memory_limit=host_memory)
        out.append((rec.id, rec.name, time.monotonic_ns(), usage))
    return out


async def sample(mgr: ContainerManager, refs: list[str], *, stream: bool) -> AsyncIterator[list[Sample]]:
    previous = {cid: (t, u.cpu_ns) for cid, _, t, u in await asyncio.to_thread(_read, mgr, refs)}
    await asyncio.sleep(FIRST_INTERVAL)
    while True:
        now_ns = time.time_ns()
        samples = []
        current = await asyncio.to_thread(_read, mgr, refs)
        for cid, name, t, u in current:
            pt, pcpu = previous.get(cid, (t, u.cpu_ns))
            elapsed = t - pt
            pct = 100.0 * (u.cpu_ns - pcpu) / elapsed if elapsed > 0 else 0.0
            samples.append(
                Sample(
                    cid,
                    name,
                    now_ns,
                    max(pct, 0.0),
                    u.cpu_ns,
                    u.memory,
                    u.memory_limit,
                    u.pids,
                    u.net_rx,
                    u.net_tx,
                    u.block_read,
                    u.block_write,
                )
            )
            previous[cid] = (t, u.cpu_ns)
        yield samples
        if not stream:
            return
        await asyncio.sleep(INTERVAL)
