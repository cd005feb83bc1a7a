"""The agent verifies alone: an unhealthy revision is reverted to last known good with the reason while no
controller is connected, and an agent SIGKILLed during verification goes on after its restart and decides
by the same deadline."""

from __future__ import annotations

import time

import pytest

from agent.api.v1 import releases_pb2 as pb
from agent.api.v1 import releases_pb2_grpc
from tests.integration.releases.conftest import (
    PHASE,
    Host,
    HostFactory,
    Images,
    policy,
    revision,
    wait_until,
    web,
)

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


async def committed_v1(host: Host, images: Images) -> None:
    await host.stage(revision(web(images["v1"])))
    await host.activate(1, policy(min_healthy=0.5))
    await host.wait_phase("HEALTHY")
    async with host.releases() as stub:
        await stub.Commit(pb.CommitReleaseRequest(release="web", revision=1))


async def test_unhealthy_revision_is_reverted_by_the_agent_without_a_controller(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory()
    await committed_v1(host, images)
    await host.stage(revision(web(images["bad"])))
    # the "controller": one channel, Activate, then gone — nobody watches, nobody commits
    async with host.channel() as ch:
        stub = releases_pb2_grpc.ReleasesStub(ch)
        req = pb.ActivateReleaseRequest(release="web", revision=2, policy=policy(min_healthy=1, deadline=6))
        activated = await stub.Activate(req)
        assert activated.switched and PHASE(activated.state.phase) == "RELEASE_PHASE_VERIFYING"

    # no connection while it decides: watch the agent's own log from outside
    def reverted_in_log() -> bool:
        return any(
            e.get("event") == "release.switched" and e.get("phase") == "reverted" for e in host.agent.events()
        )

    wait_until(reverted_in_log, 60, "the agent to revert release web by itself")
    got = await host.get()
    state = got.state
    assert PHASE(state.phase) == "RELEASE_PHASE_REVERTED", state
    assert (state.active_revision, state.candidate_revision, state.last_known_good) == (1, 2, 1)
    assert state.reason.startswith("app: health check failing: failed ")
    assert "404" in state.reason and "within the 6s deadline" in state.reason
    assert host.containers() == {"web-app-r1": "running", "web-app-r2": "exited"}
    actions = [(e.action, e.attributes["revision"]) for e in await host.events()]
    assert actions[-2:] == [("unhealthy", "2"), ("reverted", "1")]
    reverted_event = (await host.events())[-1]
    assert reverted_event.attributes["reason"] == state.reason


async def test_agent_killed_during_verification_goes_on_after_restart_and_decides(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory()
    await committed_v1(host, images)
    await host.stage(revision(web(images["bad"])))
    activated = await host.activate(2, policy(min_healthy=1, deadline=8))
    assert PHASE(activated.state.phase) == "RELEASE_PHASE_VERIFYING"
    host.agent.kill()  # SIGKILL: no chance to clean up or to decide
    restarted_at = time.time_ns()
    host.agent.start()
    state = await host.wait_phase("REVERTED", timeout=60)
    assert (state.active_revision, state.candidate_revision) == (1, 2)
    assert "health check failing" in state.reason
    events = await host.events()
    activations = [e.attributes["revision"] for e in events if e.action == "activated"]
    assert activations == ["1", "2"]  # the restart did not switch to revision 2 again
    reverted = [e for e in events if e.action == "reverted"]
    assert len(reverted) == 1 and reverted[0].time.ToNanoseconds() > restarted_at
    assert host.containers() == {"web-app-r1": "running", "web-app-r2": "exited"}


async def test_verified_but_never_confirmed_is_kept_running_as_unconfirmed(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory()
    await host.stage(revision(web(images["v1"])))
    await host.activate(1, policy(min_healthy=0.5, deadline=3))
    await host.wait_phase("HEALTHY")
    state = await host.wait_phase("UNCONFIRMED", timeout=30)  # nobody commits within the deadline
    assert (state.active_revision, state.last_known_good) == (1, 0)
    assert state.reason == "verified, but no Commit within 3s"
    assert host.containers() == {"web-app-r1": "running"}
    async with host.releases() as stub:  # a late Commit still confirms it
        done = await stub.Commit(pb.CommitReleaseRequest(release="web", revision=1))
    assert PHASE(done.state.phase) == "RELEASE_PHASE_COMMITTED" and done.state.last_known_good == 1
