"""The Releases servicer: validate → ReleaseManager → convert to agent.api.v1 messages. Nothing else.

Each container config of a revision goes through the same `run_options` as `dockyard run`, so a bad
option is an InvalidArgument naming the flag before anything is recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api.v1 import releases_pb2 as pb
from agent.api.v1 import releases_pb2_grpc
from agent.errors import InvalidArgument
from agent.releases import leases
from agent.releases import spec as specs
from agent.releases.manager import Caller, ReleaseManager, Target
from agent.releases.phases import Phase
from agent.releases.secrets import SecretRef, check_ref
from agent.releases.store import Policy, ReleaseState, Revision
from agent.server import permissions
from agent.server.containers import run_options
from agent.server.interceptors import peer_identity

PHASES = {
    Phase.STAGED: pb.RELEASE_PHASE_STAGED,
    Phase.ACTIVATING: pb.RELEASE_PHASE_ACTIVATING,
    Phase.VERIFYING: pb.RELEASE_PHASE_VERIFYING,
    Phase.HEALTHY: pb.RELEASE_PHASE_HEALTHY,
    Phase.COMMITTED: pb.RELEASE_PHASE_COMMITTED,
    Phase.UNCONFIRMED: pb.RELEASE_PHASE_UNCONFIRMED,
    Phase.REVERTED: pb.RELEASE_PHASE_REVERTED,
    Phase.FAILED: pb.RELEASE_PHASE_FAILED,
    Phase.ROLLED_BACK: pb.RELEASE_PHASE_ROLLED_BACK,
}
TARGETS = {
    pb.ROLLBACK_TARGET_PREVIOUS: Target.PREVIOUS,
    pb.ROLLBACK_TARGET_LAST_KNOWN_GOOD: Target.LAST_KNOWN_GOOD,
}
MIN_HEALTHY_DEFAULT = 10.0
DEADLINE_DEFAULT = 120.0
DEADLINE_MAX = 24 * 3600.0


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def _seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def release_spec(msg: pb.RevisionSpec) -> specs.ReleaseSpec:
    """The API's RevisionSpec → a validated ReleaseSpec (spec_digest computed when the caller sent none)."""
    specs.check_name(msg.release, "release name")
    containers = tuple(
        specs.ContainerSpec(
            specs.check_name(c.name, "container name"),
            run_options(c.config),
            tuple(c.depends_on),
            tuple(
                check_ref(
                    SecretRef(f.name, f.version, f.target or f.name, f.mode or 0o400, f.uid, f.gid),
                    f"release {msg.release}: container {c.name}",
                )
                for f in c.secrets
            ),
            c.update_lock,
        )
        for c in msg.containers
    )
    digest = msg.spec_digest
    if not digest:
        canonical = pb.RevisionSpec()
        canonical.CopyFrom(msg)
        canonical.spec_digest = ""
        digest = "sha256:" + hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()
    raw = pb.RevisionSpec()
    raw.CopyFrom(msg)
    raw.spec_digest = digest
    return specs.validate(
        specs.ReleaseSpec(msg.release, containers, digest, raw.SerializeToString(deterministic=True))
    )


def policy(msg: pb.VerifyPolicy) -> Policy:
    min_healthy = _seconds(msg.min_healthy) if msg.HasField("min_healthy") else MIN_HEALTHY_DEFAULT
    deadline = _seconds(msg.deadline) if msg.HasField("deadline") else DEADLINE_DEFAULT
    if min_healthy < 0 or not 0 < deadline <= DEADLINE_MAX:
        raise InvalidArgument(
            "invalid verify policy: min_healthy must be 0 or more and the deadline between 0 and"
            f" {DEADLINE_MAX:.0f}s"
        )
    if min_healthy > deadline:
        raise InvalidArgument(
            f"invalid verify policy: min_healthy {min_healthy:g}s is longer than the deadline {deadline:g}s"
        )
    return Policy(min_healthy, deadline, msg.start_first)


def _name(value: str) -> str:
    if not value:
        raise InvalidArgument("a release name is required")
    return specs.check_name(value, "release name")


class ReleasesServicer(releases_pb2_grpc.ReleasesServicer):
    def __init__(self, manager: ReleaseManager) -> None:
        self._m = manager

    def _state(self, state: ReleaseState) -> pb.ReleaseState:
        lease = self._m.live_lease(state.name)
        p = state.pointers
        return pb.ReleaseState(
            release=state.name,
            phase=PHASES[state.phase],
            active_revision=p.active,
            previous_revision=p.previous,
            last_known_good=p.last_known_good,
            reason=state.reason,
            updated_at=_ts(state.updated_at),
            image_digests=self._m.image_digests(state),
            candidate_revision=p.candidate,
            lease=leases.describe(lease) if lease is not None else "",
            rollout_id=state.rollout_id,
        )

    @staticmethod
    def _revision(rev: Revision) -> pb.Revision:
        return pb.Revision(
            number=rev.number,
            spec=pb.RevisionSpec.FromString(rev.spec.raw),
            created_at=_ts(rev.created_at),
            created_by=rev.created_by,
            rollout_id=rev.rollout_id,
            image_digests=rev.image_digests,
        )

    async def Lease(
        self, request: pb.LeaseReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseReleaseResponse:
        ttl = _seconds(request.ttl) if request.HasField("ttl") else 0.0
        owner = request.owner or peer_identity(context)
        lease = self._m.lease(_name(request.release), owner, request.rollout_id, ttl, request.takeover)
        return pb.LeaseReleaseResponse(token=lease.token, expires_at=_ts(lease.expires_at))

    async def Unlease(
        self, request: pb.UnleaseReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnleaseReleaseResponse:
        self._m.unlease(_name(request.release), request.token)
        return pb.UnleaseReleaseResponse()

    async def Stage(
        self, request: pb.StageReleaseRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StageReleaseProgress]:
        spec = release_spec(request.spec)
        caller = Caller(peer_identity(context), request.lease_token, request.rollout_id)
        materials = [(m.name, m.version, m.secret_value) for m in request.materials]
        async for p in self._m.stage(spec, caller, materials):
            yield pb.StageReleaseProgress(
                message=p.message,
                bytes_done=p.bytes_done,
                bytes_total=p.bytes_total,
                revision=p.revision,
                done=p.done,
            )

    async def Activate(
        self, request: pb.ActivateReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ActivateReleaseResponse:
        if request.revision <= 0:
            raise InvalidArgument("a revision number (1 or more) is required")
        caller = Caller(peer_identity(context), request.lease_token, request.rollout_id)
        if request.force:  # switching past an update lock is an admin's call
            permissions.check_permission(permissions.current_caller(), permissions.Permission.ADMIN)
        state, switched = await self._m.activate(
            _name(request.release), request.revision, policy(request.policy), caller, force=request.force
        )
        return pb.ActivateReleaseResponse(state=self._state(state), switched=switched)

    async def Commit(
        self, request: pb.CommitReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommitReleaseResponse:
        caller = Caller(peer_identity(context), request.lease_token)
        state = await self._m.commit(_name(request.release), request.revision, caller)
        return pb.CommitReleaseResponse(state=self._state(state))

    async def Rollback(
        self, request: pb.RollbackReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.RollbackReleaseResponse:
        target = TARGETS.get(request.target)
        if target is None:
            raise InvalidArgument("a rollback target is required: PREVIOUS or LAST_KNOWN_GOOD")
        caller = Caller(peer_identity(context), request.lease_token)
        state = await self._m.rollback(_name(request.release), target, request.reason, caller)
        return pb.RollbackReleaseResponse(state=self._state(state))

    async def List(
        self, request: pb.ListReleasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReleasesResponse:
        return pb.ListReleasesResponse(releases=[self._state(s) for s in self._m.all()])

    async def Get(
        self, request: pb.GetReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReleaseResponse:
        state, revisions = self._m.get(_name(request.release))
        return pb.GetReleaseResponse(
            state=self._state(state), revisions=[self._revision(r) for r in revisions]
        )

    async def Watch(
        self, request: pb.WatchReleaseRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReleaseState]:
        async for state in self._m.watch(_name(request.release)):
            yield self._state(state)
