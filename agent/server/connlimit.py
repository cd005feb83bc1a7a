"""Caps on the agent's TCP listeners, so idle or half-open peers can never starve the agent of fds.

Every TCP connection costs the agent a file descriptor, and an attacker needs no certificate to open
one. Three layers keep the unix socket and the agent's own work (runc, conmon, files) working whatever
arrives on the TCP port:

- the agent raises its soft RLIMIT_NOFILE to the hard limit and lets TCP peers hold at most a quarter of
  it (`total`), so three quarters stay for everything else;
- gRPC drops a peer that has not finished its TLS handshake within `handshake_timeout`
  (`grpc.server_handshake_timeout_ms`, default 120 s) and refuses connections beyond `total`
  (`grpc.max_allowed_incoming_connections`; counted on TCP listeners only — unix socket connections are
  never refused by it, checked against grpcio 1.85);
- nftables, in a table of the agent's own (`<network_nft_table>-listen`), resets new connections beyond
  `per_peer` from one source address and beyond `total` altogether before they reach the agent (gRPC has
  no per-peer cap), counting each refusal; the agent logs the count once per interval when it grew.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Iterable
from dataclasses import dataclass

from agent import log
from agent.config import AgentConfig
from agent.errors import InvalidArgument, NetworkSetup
from agent.network import nft

_log = log.get(__name__)

SHED_LOG_INTERVAL = 10.0  # seconds between two `listen.connections_shed` lines at most
FD_SHARE = 4  # TCP peers get at most 1/FD_SHARE of the fd limit


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the default soft 1024 is far too low); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            _log.warning("agent.fd_limit_unchanged", soft=soft, hard=hard, error=str(exc))
    return soft


@dataclass(frozen=True)
class ConnectionLimits:
    handshake_timeout_ms: int
    total: int
    per_peer: int

    @classmethod
    def from_config(cls, config: AgentConfig, fd_limit: int) -> ConnectionLimits:
        """The configured caps, with `total` bounded by the fd share and `per_peer` by `total`."""
        if config.handshake_timeout <= 0:
            raise InvalidArgument(f"handshake_timeout must be > 0 seconds, got {config.handshake_timeout}")
        if config.max_connections < 1 or config.max_connections_per_peer < 1:
            raise InvalidArgument("max_connections and max_connections_per_peer must be at least 1")
        total = max(1, min(config.max_connections, fd_limit // FD_SHARE))
        return cls(
            handshake_timeout_ms=int(config.handshake_timeout * 1000),
            total=total,
            per_peer=min(config.max_connections_per_peer, total),
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.server_handshake_timeout_ms", self.handshake_timeout_ms),
            ("grpc.max_allowed_incoming_connections", self.total),
        ]


class ListenerGuard:
    """Owner of the nft table that caps connections to the agent's TCP ports, and of its shedding log."""

    def __init__(self, table: str, limits: ConnectionLimits, interval: float = SHED_LOG_INTERVAL) -> None:
        self.table = table
        self.limits = limits
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._installed = False

    async def start(self, ports: Iterable[int]) -> None:
        """Install the caps for `ports`; without nftables only gRPC's total cap remains (logged)."""
        ports = sorted(set(ports))
        if not ports:
            return
        try:
            await nft.apply(
                nft.build_listener_guard(self.table, ports, self.limits.per_peer, self.limits.total)
            )
        except NetworkSetup as exc:
            _log.warning("listen.guard_unavailable", table=self.table, error=exc.message)
            return
        self._installed = True
        _log.info(
            "listen.guard_installed",
            table=self.table,
            ports=ports,
            per_peer=self.limits.per_peer,
            total=self.limits.total,
            handshake_timeout_ms=self.limits.handshake_timeout_ms,
        )
        self._task = asyncio.create_task(self._watch(), name="listen-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._installed:
            self._installed = False
            try:
                await nft.delete_table(self.table)
            except NetworkSetup as exc:
                _log.warning("listen.guard_remove_failed", table=self.table, error=exc.message)

    async def _watch(self) -> None:
        seen = {nft.SHED_PER_PEER: 0, nft.SHED_TOTAL: 0}
        while True:
            await asyncio.sleep(self.interval)
            counters = await nft.read_counters(self.table)
            delta = {name: counters.get(name, 0) - before for name, before in seen.items()}
            if any(n > 0 for n in delta.values()):
                _log.warning(
                    "listen.connections_shed",
                    over_per_peer=delta[nft.SHED_PER_PEER],
                    over_total=delta[nft.SHED_TOTAL],
                    per_peer=self.limits.per_peer,
                    total=self.limits.total,
                    interval_seconds=self.interval,
                )
            seen.update({name: counters.get(name, before) for name, before in seen.items()})
