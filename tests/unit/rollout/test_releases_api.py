"""The typed Releases client (controller/api/releases.py) against a fake agent on a unix socket: what goes
on the wire (durations, targets, the spec), what comes back (phases, times, revisions), errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api.v1 import releases_pb2 as pb
from agent.api.v1 import releases_pb2_grpc
from controller.api.releases import PHASE_NAMES, ReleasesApi, VerifyPolicy
from controller.client import AgentClient
from controller.errors import AgentCallError
from controller.rollout import spec
from controller.target import Target

T = TypeVar("T")
WHEN = Timestamp(seconds=1_700_000_000)


def _state(phase: int = pb.RELEASE_PHASE_VERIFYING, **kw: Any) -> pb.ReleaseState:
    return pb.ReleaseState(release="web", phase=phase, active_revision=3, updated_at=WHEN, **kw)


class _Agent(releases_pb2_grpc.ReleasesServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def Lease(self, request: Any, context: Any) -> pb.LeaseReleaseResponse:
        self.requests.append(request)
        if request.rollout_id == "r-2":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "release web is held by alice (rollout r-1) until 12:03:04",
            )
        return pb.LeaseReleaseResponse(token="tok", expires_at=WHEN)

    async def Unlease(self, request: Any, context: Any) -> pb.UnleaseReleaseResponse:
        self.requests.append(request)
        return pb.UnleaseReleaseResponse()

    async def Stage(self, request: Any, context: Any) -> AsyncIterator[pb.StageReleaseProgress]:
        self.requests.append(request)
        yield pb.StageReleaseProgress(message="pulling", bytes_done=5, bytes_total=10)
        yield pb.StageReleaseProgress(message="staged", revision=4, done=True)

    async def Activate(self, request: Any, context: Any) -> pb.ActivateReleaseResponse:
        self.requests.append(request)
        return pb.ActivateReleaseResponse(state=_state(candidate_revision=4), switched=True)

    async def Commit(self, request: Any, context: Any) -> pb.CommitReleaseResponse:
        self.requests.append(request)
        return pb.CommitReleaseResponse(state=_state(pb.RELEASE_PHASE_COMMITTED, last_known_good=3))

    async def Rollback(self, request: Any, context: Any) -> pb.RollbackReleaseResponse:
        self.requests.append(request)
        return pb.RollbackReleaseResponse(state=_state(pb.RELEASE_PHASE_ROLLED_BACK, reason=request.reason))

    async def List(self, request: Any, context: Any) -> pb.ListReleasesResponse:
        return pb.ListReleasesResponse(
            releases=[_state(image_digests={"app": "sha256:" + "a" * 64}), _state(phase=99)]
        )

    async def Get(self, request: Any, context: Any) -> pb.GetReleaseResponse:
        if request.release != "web":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no release {request.release}")
        spec_msg = pb.RevisionSpec(
            release="web", spec_digest="sha256:x", containers=[pb.ReleaseContainer(name="app")]
        )
        revision = pb.Revision(number=4, spec=spec_msg, created_by="alice", rollout_id="r-1", created_at=WHEN)
        return pb.GetReleaseResponse(state=_state(), revisions=[revision])

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[pb.ReleaseState]:
        yield _state(pb.RELEASE_PHASE_VERIFYING)
        yield _state(pb.RELEASE_PHASE_HEALTHY)
        await asyncio.Event().wait()  # a watch never ends by itself


def _with_agent(tmp_path: Path, body: Callable[[ReleasesApi, _Agent], Awaitable[T]]) -> T:
    async def main() -> T:
        agent = _Agent()
        server = grpc.aio.server()
        releases_pb2_grpc.add_ReleasesServicer_to_server(agent, server)
        sock = tmp_path / "agent.sock"
        server.add_insecure_port(f"unix:{sock}")
        await server.start()
        client = AgentClient(Target(name="h1", kind="unix", address=str(sock)), tmp_path)
        try:
            return await body(ReleasesApi(client), agent)
        finally:
            await client.close()
            await server.stop(None)

    return asyncio.run(main())


def test_a_host_driven_through_one_rollout(tmp_path: Path) -> None:
    release = spec.parse('name = "web"\n[containers.app]\nimage = "busybox"\nmemory = "64m"\n', "web.toml")
    revision_spec = spec.revision_spec(release.pinned({"busybox": "sha256:" + "b" * 64}))

    async def body(api: ReleasesApi, agent: _Agent) -> None:
        lease = await api.lease("web", owner="alice", rollout_id="r-1", ttl=30.5)
        assert lease.token == "tok" and lease.expires_at == datetime.fromtimestamp(1_700_000_000, UTC)
        progress = [p async for p in api.stage(revision_spec, lease_token=lease.token, rollout_id="r-1")]
        assert [(p.message, p.done, p.revision) for p in progress] == [
            ("pulling", False, 0),
            ("staged", True, 4),
        ]
        assert progress[0].bytes_done == 5 and progress[0].bytes_total == 10
        activated = await api.activate(
            "web", 4, policy=VerifyPolicy(min_healthy=0, deadline=90), lease_token="tok", rollout_id="r-1"
        )
        assert activated.switched and activated.state.phase == "verifying"
        assert activated.state.candidate_revision == 4
        committed = await api.commit("web", 4, lease_token="tok")
        assert (committed.phase, committed.last_known_good) == ("committed", 3)
        rolled = await api.rollback("web", "last_known_good", lease_token="tok", reason="max-fail reached")
        assert (rolled.phase, rolled.reason) == ("rolled_back", "max-fail reached")
        await api.unlease("web", "tok")

        lease_req, stage_req, activate_req, commit_req, rollback_req, unlease_req = agent.requests
        assert lease_req.ttl.ToNanoseconds() == 30_500_000_000 and not lease_req.takeover
        assert stage_req.spec == revision_spec and stage_req.spec.spec_digest == revision_spec.spec_digest
        assert stage_req.spec.containers[0].config.memory_bytes == 64 << 20
        assert (stage_req.lease_token, stage_req.rollout_id) == ("tok", "r-1")
        assert (
            activate_req.policy.HasField("min_healthy") and activate_req.policy.min_healthy.ToSeconds() == 0
        )
        assert activate_req.policy.deadline.ToSeconds() == 90 and not activate_req.policy.start_first
        assert (commit_req.revision, commit_req.lease_token) == (4, "tok")
        assert rollback_req.target == pb.ROLLBACK_TARGET_LAST_KNOWN_GOOD
        assert (unlease_req.release, unlease_req.token) == ("web", "tok")

    _with_agent(tmp_path, body)


def test_the_agents_defaults_are_left_unset(tmp_path: Path) -> None:
    async def body(api: ReleasesApi, agent: _Agent) -> None:
        await api.activate("web", 4)
        await api.rollback("web", "previous")
        activate_req, rollback_req = agent.requests
        assert not activate_req.policy.HasField("min_healthy") and not activate_req.policy.HasField(
            "deadline"
        )
        assert rollback_req.target == pb.ROLLBACK_TARGET_PREVIOUS

    _with_agent(tmp_path, body)


def test_list_get_and_watch(tmp_path: Path) -> None:
    async def body(api: ReleasesApi, agent: _Agent) -> None:
        states = await api.list()
        assert [s.phase for s in states] == ["verifying", "unknown"]
        assert states[0].image_digests == {"app": "sha256:" + "a" * 64}
        assert states[0].updated_at == datetime.fromtimestamp(1_700_000_000, UTC)
        details = await api.get("web")
        (revision,) = details.revisions
        assert (revision.number, revision.spec_digest, revision.containers) == (4, "sha256:x", ("app",))
        assert (revision.created_by, revision.rollout_id) == ("alice", "r-1")
        seen = []
        async for state in api.watch("web"):
            seen.append(state.phase)
            if state.phase == "healthy":
                break
        assert seen == ["verifying", "healthy"]

    _with_agent(tmp_path, body)


def test_refusals_carry_the_status_and_the_host(tmp_path: Path) -> None:
    async def body(api: ReleasesApi, agent: _Agent) -> None:
        with pytest.raises(AgentCallError) as info:
            await api.lease("web", owner="bob", rollout_id="r-2", ttl=30)
        assert info.value.code == "FAILED_PRECONDITION" and info.value.host == "h1"
        assert str(info.value) == "h1: release web is held by alice (rollout r-1) until 12:03:04"
        with pytest.raises(AgentCallError) as info:
            await api.get("db")
        assert info.value.code == "NOT_FOUND"

    _with_agent(tmp_path, body)


def test_every_phase_has_a_name() -> None:
    assert set(PHASE_NAMES.values()) == {
        "staged",
        "activating",
        "verifying",
        "healthy",
        "committed",
        "unconfirmed",
        "reverted",
        "failed",
        "rolled_back",
    }
