"""The Releases service: what a host should run, as state the agent keeps (revisions; active, previous and
last-known-good; leases; verification on the agent). The rollout engine drives one host with
lease → stage → activate → watch → commit (or rollback); `release ls` lists.

Every call is safe to repeat after a lost reply (the agent numbers a spec by its digest; activating the
active revision switches nothing). The spec goes in as the `RevisionSpec` controller.rollout.spec builds.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from agent.api.v1 import releases_pb2 as pb
from controller.client import AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Releases"]
LEASE = rpc(_SERVICE, "Lease", pb.LeaseReleaseRequest, pb.LeaseReleaseResponse)
UNLEASE = rpc(_SERVICE, "Unlease", pb.UnleaseReleaseRequest, pb.UnleaseReleaseResponse)
STAGE = rpc(_SERVICE, "Stage", pb.StageReleaseRequest, pb.StageReleaseProgress)
ACTIVATE = rpc(_SERVICE, "Activate", pb.ActivateReleaseRequest, pb.ActivateReleaseResponse)
COMMIT = rpc(_SERVICE, "Commit", pb.CommitReleaseRequest, pb.CommitReleaseResponse)
ROLLBACK = rpc(_SERVICE, "Rollback", pb.RollbackReleaseRequest, pb.RollbackReleaseResponse)
LIST = rpc(_SERVICE, "List", pb.ListReleasesRequest, pb.ListReleasesResponse)
GET = rpc(_SERVICE, "Get", pb.GetReleaseRequest, pb.GetReleaseResponse)
WATCH = rpc(_SERVICE, "Watch", pb.WatchReleaseRequest, pb.ReleaseState)

# staged | activating | verifying | healthy | committed | unconfirmed | reverted | failed | rolled_back
PHASE_NAMES = {
    value: name.removeprefix("RELEASE_PHASE_").lower()
    for name, value in pb.ReleasePhase.items()
    if value != pb.RELEASE_PHASE_UNSPECIFIED
}
# phases after which the agent does nothing more by itself for that revision
SETTLED = frozenset({"committed", "unconfirmed", "reverted", "failed", "rolled_back"})
RollbackTarget = Literal["previous", "last_known_good"]
_TARGETS = {"previous": pb.ROLLBACK_TARGET_PREVIOUS, "last_known_good": pb.ROLLBACK_TARGET_LAST_KNOWN_GOOD}


@dataclass(frozen=True)
class Material:
    """A secret's value for one host, delivered with Stage (never shown, logged or journaled)."""

    name: str
    version: str
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class ReleaseState:
    release: str
    phase: str  # a value of PHASE_NAMES, or "unknown" (a phase newer than this controller)
    active_revision: int  # 0 = none
    previous_revision: int
    last_known_good: int
    candidate_revision: int  # the revision being verified; after "reverted", the one that failed
    reason: str
    updated_at: datetime | None
    image_digests: Mapping[str, str]  # container → image digest of the active revision
    lease: str  # "<owner> (rollout <id>), until <time>" while one is held, else ""
    rollout_id: str


@dataclass(frozen=True)
class Revision:
    number: int
    spec_digest: str
    containers: tuple[str, ...]
    created_at: datetime | None
    created_by: str  # certificate CN of the stager ("local" over the unix socket)
    rollout_id: str
    image_digests: Mapping[str, str]


@dataclass(frozen=True)
class ReleaseDetails:
    state: ReleaseState
    revisions: tuple[Revision, ...]  # newest first


@dataclass(frozen=True)
class Lease:
    token: str
    expires_at: datetime | None


@dataclass(frozen=True)
class StageProgress:
    message: str
    bytes_done: int
    bytes_total: int
    revision: int  # set with `done`: the number this spec has on the agent
    done: bool


@dataclass(frozen=True)
class VerifyPolicy:
    """None = the agent's default (min_healthy 10 s, deadline 2 m)."""

    min_healthy: float | None = None  # seconds
    deadline: float | None = None
    start_first: bool = False


@dataclass(frozen=True)
class Activated:
    state: ReleaseState
    switched: bool  # False: the revision was already active, this call switched nothing


class ReleasesApi:
    """Typed calls to one agent's Releases service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def lease(
        self, release: str, *, owner: str, rollout_id: str, ttl: float, takeover: bool = False
    ) -> Lease:
        """Hold `release` for a rollout (the same rollout_id renews); FAILED_PRECONDITION names the holder."""
        req = pb.LeaseReleaseRequest(release=release, owner=owner, rollout_id=rollout_id, takeover=takeover)
        req.ttl.FromNanoseconds(round(ttl * 1e9))
        r = await self.client.unary(LEASE, req)
        return Lease(r.token, _time(r.expires_at))

    async def unlease(self, release: str, token: str) -> None:
        await self.client.unary(UNLEASE, pb.UnleaseReleaseRequest(release=release, token=token))

    async def stage(
        self,
        spec: pb.RevisionSpec,
        *,
        lease_token: str = "",
        rollout_id: str = "",
        materials: Sequence[Material] = (),
    ) -> AsyncIterator[StageProgress]:
        """Record the revision and pull what it lacks; the last progress has `done` and the revision.
        `materials`: the values of the secrets the spec names, for this host only."""
        req = pb.StageReleaseRequest(
            spec=spec,
            lease_token=lease_token,
            rollout_id=rollout_id,
            materials=[
                pb.SecretMaterial(name=m.name, version=m.version, secret_value=m.value) for m in materials
            ],
        )
        async for p in self.client.server_stream(STAGE, req):
            yield StageProgress(p.message, p.bytes_done, p.bytes_total, p.revision, p.done)

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
        """Switch to a staged revision; returns when the switch is done and the agent verifies it.
        `force` switches even when the release's update lock is held on the host (needs admin)."""
        req = pb.ActivateReleaseRequest(
            release=release,
            revision=revision,
            policy=_policy(policy),
            lease_token=lease_token,
            rollout_id=rollout_id,
            force=force,
        )
        r = await self.client.unary(ACTIVATE, req, timeout=timeout)
        return Activated(release_state(r.state), r.switched)

    async def commit(
        self, release: str, revision: int, *, lease_token: str = "", timeout: float | None = None
    ) -> ReleaseState:
        """Confirm a verified revision (it becomes last known good)."""
        req = pb.CommitReleaseRequest(release=release, revision=revision, lease_token=lease_token)
        return release_state((await self.client.unary(COMMIT, req, timeout=timeout)).state)

    async def rollback(
        self,
        release: str,
        target: RollbackTarget,
        *,
        lease_token: str = "",
        reason: str = "",
        timeout: float | None = None,
    ) -> ReleaseState:
        """Reactivate the previous or the last-known-good revision now."""
        req = pb.RollbackReleaseRequest(
            release=release, target=_TARGETS[target], lease_token=lease_token, reason=reason
        )
        return release_state((await self.client.unary(ROLLBACK, req, timeout=timeout)).state)

    async def list(self) -> builtins.list[ReleaseState]:
        r = await self.client.unary(LIST, pb.ListReleasesRequest())
        return [release_state(s) for s in r.releases]

    async def get(self, release: str) -> ReleaseDetails:
        r = await self.client.unary(GET, pb.GetReleaseRequest(release=release))
        return ReleaseDetails(release_state(r.state), tuple(_revision(v) for v in r.revisions))

    async def watch(self, release: str) -> AsyncIterator[ReleaseState]:
        """The state now, then every change, until the caller stops iterating (which cancels the call)."""
        async for s in self.client.server_stream(WATCH, pb.WatchReleaseRequest(release=release)):
            yield release_state(s)


def _time(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _policy(p: VerifyPolicy) -> pb.VerifyPolicy:
    msg = pb.VerifyPolicy(start_first=p.start_first)
    if p.min_healthy is not None:
        msg.min_healthy.FromNanoseconds(round(p.min_healthy * 1e9))
    if p.deadline is not None:
        msg.deadline.FromNanoseconds(round(p.deadline * 1e9))
    return msg


def release_state(s: pb.ReleaseState) -> ReleaseState:
    return ReleaseState(
        release=s.release,
        phase=PHASE_NAMES.get(s.phase, "unknown"),
        active_revision=s.active_revision,
        previous_revision=s.previous_revision,
        last_known_good=s.last_known_good,
        candidate_revision=s.candidate_revision,
        reason=s.reason,
        updated_at=_time(s.updated_at),
        image_digests=dict(s.image_digests),
        lease=s.lease,
        rollout_id=s.rollout_id,
    )


def _revision(v: pb.Revision) -> Revision:
    return Revision(
        number=v.number,
        spec_digest=v.spec.spec_digest,
        containers=tuple(c.name for c in v.spec.containers),
        created_at=_time(v.created_at),
        created_by=v.created_by,
        rollout_id=v.rollout_id,
        image_digests=dict(v.image_digests),
    )
