"""Fake agents for the rollout engine's unit tests: the Releases semantics of agent/releases (revisions by
spec digest, idempotent Activate, verification outcome per host, leases, Rollback(PREVIOUS)) in memory,
with counters the tests assert on (activations, rollbacks, lease renewals) and a global order of acts."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.api.v1 import releases_pb2 as pb
from controller.api.releases import (
    Activated,
    Lease,
    ReleaseDetails,
    ReleaseState,
    RollbackTarget,
    StageProgress,
    VerifyPolicy,
)
from controller.errors import AgentCallError, ConnectError
from controller.rollout.engine import Published

HEALTHY, REVERT, FAIL, HANG = "healthy", "revert", "fail", "hang"


@dataclass
class _Lease:
    token: str
    owner: str
    rollout_id: str
    expires: datetime


@dataclass
class FakeAgent:
    name: str
    log: list[tuple[str, str]]  # shared by the fleet: (act, host) in the order acts happened
    outcome: str = HEALTHY  # what verification of a new revision ends in
    down: bool = False
    stage_error: str = ""  # refuse staging with this (RESOURCE_EXHAUSTED)
    delay: float = 0.0  # seconds before the verdict
    revisions: dict[str, int] = field(default_factory=dict)  # spec digest → number
    state: ReleaseState = field(
        default_factory=lambda: ReleaseState("web", "staged", 0, 0, 0, 0, "", None, {}, "", "")
    )
    activations: int = 0  # Activate calls that switched
    rollbacks: int = 0
    lease_calls: int = 0
    held: _Lease | None = None  # the lease
    locked: str = ""  # the update lock's holder: Activate refuses unless forced
    forced: int = 0  # Activate calls with force
    materials: list[Any] = field(default_factory=list)  # secret values received with Stage
    staged_specs: list[pb.RevisionSpec] = field(default_factory=list)
    unleased: int = 0
    containers: list[Published] = field(default_factory=list)  # what publishes host ports (`ps`)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _check(self) -> None:
        if self.down:
            raise ConnectError("cannot reach the agent: connection refused", self.name)

    def _token_ok(self, token: str) -> None:
        lease = self.held
        if lease is not None and lease.expires > datetime.now(UTC) and token != lease.token:
            raise AgentCallError(
                f"release web is held by {lease.owner} (rollout {lease.rollout_id})",
                "FAILED_PRECONDITION",
                self.name,
            )

    def _set(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)
        self._changed.set()
        self._changed = asyncio.Event()

    async def lease(
        self, release: str, *, owner: str, rollout_id: str, ttl: float, takeover: bool = False
    ) -> Lease:
        self._check()
        self.lease_calls += 1
        now = datetime.now(UTC)
        current = self.held
        if current is not None and current.rollout_id == rollout_id:
            current.expires = now + timedelta(seconds=ttl)
            return Lease(current.token, current.expires)
        if current is not None and (current.expires > now or not takeover):
            raise AgentCallError(
                f"release web is held by {current.owner} (rollout {current.rollout_id})",
                "FAILED_PRECONDITION",
                self.name,
            )
        self.held = _Lease(secrets.token_hex(4), owner, rollout_id, now + timedelta(seconds=ttl))
        return Lease(self.held.token, self.held.expires)

    async def unlease(self, release: str, token: str) -> None:
        self._check()
        if self.held is not None and self.held.token == token:
            self.held = None
            self.unleased += 1

    async def stage(
        self,
        spec: pb.RevisionSpec,
        *,
        lease_token: str = "",
        rollout_id: str = "",
        materials: Any = (),
    ) -> AsyncIterator[StageProgress]:
        self._check()
        self._token_ok(lease_token)
        self.materials.extend(materials)
        self.staged_specs.append(spec)
        if self.stage_error:
            raise AgentCallError(self.stage_error, "RESOURCE_EXHAUSTED", self.name)
        number = self.revisions.setdefault(spec.spec_digest, len(self.revisions) + 1)
        self.log.append(("stage", self.name))
        yield StageProgress(f"pulling {spec.containers[0].config.image}", 0, 10, 0, False)
        yield StageProgress("staged", 10, 10, number, True)

    async def activate(
        self,
        release: str,
        revision: int,
        *,
        policy: VerifyPolicy = VerifyPolicy(),
        lease_token: str = "",
        rollout_id: str = "",
        timeout: float | None = None,
        force: bool = False,
    ) -> Activated:
        self._check()
        self._token_ok(lease_token)
        if self.locked and not force:
            raise AgentCallError(
                f"release {release} is locked by {self.locked}", "FAILED_PRECONDITION", self.name
            )
        self.forced += force
        s = self.state
        if s.active_revision == revision:
            return Activated(s, False)
        if (
            s.candidate_revision == revision
            and s.phase in ("reverted", "failed")
            and s.rollout_id == rollout_id
        ):
            return Activated(s, False)
        self.activations += 1
        self.log.append(("activate", self.name))
        self._set(
            phase="verifying",
            previous_revision=s.active_revision,
            active_revision=revision,
            candidate_revision=revision,
            rollout_id=rollout_id,
            image_digests={"app": f"sha256:{revision:064x}"},
            reason="",
        )
        asyncio.get_running_loop().create_task(self._verify(revision))
        return Activated(self.state, True)

    async def _verify(self, revision: int) -> None:
        await asyncio.sleep(self.delay)
        if self.state.active_revision != revision or self.state.phase != "verifying":
            return
        if self.outcome == HEALTHY:
            self._set(phase="healthy")
        elif self.outcome == REVERT and self.state.last_known_good:
            self.log.append(("revert", self.name))
            self._set(phase="reverted", active_revision=self.state.last_known_good, reason="app: exited 1")
        elif self.outcome in (REVERT, FAIL):
            self._set(phase="failed", reason="app: exited 1; no last known good revision to go back to")

    async def commit(
        self, release: str, revision: int, *, lease_token: str = "", timeout: float | None = None
    ) -> ReleaseState:
        self._check()
        self._token_ok(lease_token)
        s = self.state
        if s.active_revision != revision:
            raise AgentCallError(
                f"revision {revision} of release web is not active", "FAILED_PRECONDITION", self.name
            )
        if s.phase == "committed":
            return s
        if s.phase not in ("healthy", "unconfirmed"):
            raise AgentCallError(f"revision {revision} is {s.phase}", "FAILED_PRECONDITION", self.name)
        self.log.append(("commit", self.name))
        self._set(phase="committed", last_known_good=revision)
        return self.state

    async def rollback(
        self,
        release: str,
        target: RollbackTarget,
        *,
        lease_token: str = "",
        reason: str = "",
        timeout: float | None = None,
    ) -> ReleaseState:
        self._check()
        self._token_ok(lease_token)
        s = self.state
        number = s.previous_revision if target == "previous" else s.last_known_good
        if not number:
            raise AgentCallError(f"release web has no {target} revision", "FAILED_PRECONDITION", self.name)
        if number == s.active_revision:
            return s
        self.rollbacks += 1
        self.log.append(("rollback", self.name))
        self._set(phase="rolled_back", active_revision=number, reason=reason)
        return self.state

    async def get(self, release: str) -> ReleaseDetails:
        self._check()
        return ReleaseDetails(self.state, ())

    async def watch(self, release: str) -> AsyncIterator[ReleaseState]:
        self._check()
        last = None
        while True:
            changed = self._changed
            if self.state != last:
                last = self.state
                yield last
            await changed.wait()
            self._check()

    def commit_old(self, revision: int) -> None:
        """Start as a host that runs `revision`, committed (what an earlier rollout left)."""
        self.revisions[f"old-{revision}"] = revision
        self._set(
            phase="committed", active_revision=revision, last_known_good=revision, candidate_revision=revision
        )


class FakeFleet:
    def __init__(self, names: list[str], digests: dict[str, str] | None = None) -> None:
        self.log: list[tuple[str, str]] = []
        self.agents = {n: FakeAgent(n, self.log) for n in names}
        self.digests = digests or {}
        self.resolved: list[tuple[str, str]] = []
        self.missing: set[str] = set()  # references the registry does not have (resolve: NOT_FOUND)

    def releases(self, host: str) -> FakeAgent:
        return self.agents[host]

    async def resolve(self, host: str, reference: str) -> str:
        self.agents[host]._check()
        self.resolved.append((host, reference))
        if reference in self.missing:
            raise AgentCallError(
                f"manifest {reference}: HTTP 404 (MANIFEST_UNKNOWN: manifest unknown)", "NOT_FOUND", host
            )
        return self.digests.get(reference, "sha256:" + "ab" * 32)

    async def published(self, host: str) -> list[Published]:
        self.agents[host]._check()
        return list(self.agents[host].containers)

    async def close(self) -> None:
        return None

    def acts(self, act: str) -> list[str]:
        return [h for a, h in self.log if a == act]
