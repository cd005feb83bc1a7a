"""Activate, verify, Commit and Rollback on a real agent: stop-first and start-first (and start-first
refused on a shared host port), last known good after a Commit, a repeated Activate switching nothing, the
images releases hold kept by prune and named by `rmi`."""

from __future__ import annotations

import grpc
import pytest

from agent.api.v1 import releases_pb2 as pb
from agent.api.v1.events_pb2 import AgentEvent
from tests.integration.releases.conftest import PHASE, Host, HostFactory, Images, policy, revision, web

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


async def deploy(
    host: Host, ref: str, expect_revision: int, *, min_healthy: float = 1.0, start_first: bool = False
) -> pb.ReleaseState:
    """Stage, activate, wait until verified, commit; returns the committed state."""
    staged = await host.stage(revision(web(ref)))
    assert staged[-1].revision == expect_revision
    activated = await host.activate(expect_revision, policy(min_healthy, start_first=start_first))
    assert activated.switched
    assert PHASE(activated.state.phase) == "RELEASE_PHASE_VERIFYING", activated.state.reason
    await host.wait_phase("HEALTHY")
    async with host.releases() as stub:
        done = await stub.Commit(pb.CommitReleaseRequest(release="web", revision=expect_revision))
    assert PHASE(done.state.phase) == "RELEASE_PHASE_COMMITTED"
    return done.state


def order(events: list[AgentEvent], *pairs: tuple[str, str]) -> list[int]:
    """The positions of the first event with each (action, container name)."""
    out = []
    for action, name in pairs:
        out.append(
            next(i for i, e in enumerate(events) if e.action == action and e.attributes["name"] == name)
        )
    return out


async def test_stop_first_verify_commit_lkg_repeat_and_rollback(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory()
    first = await deploy(host, images["v1"], 1)
    assert (first.active_revision, first.last_known_good) == (1, 1)
    assert first.image_digests["app"] == images["v1"].split("@", 1)[1]
    assert host.containers() == {"web-app-r1": "running"}
    labels = host.cli("inspect", "web-app-r1").stdout
    assert '"dockyard.release": "web"' in labels and '"dockyard.revision": "1"' in labels

    # a repeated Activate of the active revision switches nothing
    again = await host.activate(1, policy())
    assert not again.switched
    assert [e.action for e in await host.events()].count("activated") == 1

    second = await deploy(host, images["v2"], 2)
    assert (second.active_revision, second.previous_revision, second.last_known_good) == (2, 1, 2)
    # stop-first: r1 stopped before r2 started; after the Commit r1 is removed
    containers = await host.events("container")
    stop_r1, start_r2 = order(containers, ("die", "web-app-r1"), ("start", "web-app-r2"))
    assert stop_r1 < start_r2
    assert host.containers() == {"web-app-r2": "running"}

    # Rollback(PREVIOUS): r1 is recreated from the stored spec (its image was kept), started, r2 kept stopped
    async with host.releases() as stub:
        back = await stub.Rollback(
            pb.RollbackReleaseRequest(release="web", target=pb.ROLLBACK_TARGET_PREVIOUS, reason="undo")
        )
        assert PHASE(back.state.phase) == "RELEASE_PHASE_ROLLED_BACK"
        assert (back.state.active_revision, back.state.reason) == (1, "undo")
        repeat = await stub.Rollback(
            pb.RollbackReleaseRequest(release="web", target=pb.ROLLBACK_TARGET_PREVIOUS)
        )
        assert repeat.state.active_revision == 1  # not a toggle
    assert host.containers() == {"web-app-r1": "running", "web-app-r2": "exited"}
    actions = [e.action for e in await host.events()]
    assert actions.count("rolled_back") == 1 and actions.count("committed") == 2

    # images of the active and last-known-good revisions: kept by prune -a, rmi names the release
    host.cli("rm", "-f", "web-app-r2")
    pruned = host.cli("image", "prune", "-a", "-f")
    assert pruned.returncode == 0, pruned.stderr
    listed = host.cli("--format", "json", "images").stdout
    assert images["v1"].split("@", 1)[1] in listed and images["v2"].split("@", 1)[1] in listed
    refused = host.cli("rmi", images["v2"])
    assert refused.returncode != 0
    assert "is used by release web (revision 2, last known good)" in refused.stderr


async def test_start_first_starts_the_new_revision_before_stopping_the_old(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory()
    await deploy(host, images["v1"], 1, min_healthy=0.5)
    await deploy(host, images["v2"], 2, min_healthy=0.5, start_first=True)
    containers = await host.events("container")
    start_r2, stop_r1 = order(containers, ("start", "web-app-r2"), ("die", "web-app-r1"))
    assert start_r2 < stop_r1


async def test_start_first_is_refused_when_both_revisions_publish_a_host_port(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory()
    await host.stage(revision(web(images["v1"], publish=("18080:8080",))))
    await host.activate(1, policy(min_healthy=0.5))
    await host.wait_phase("HEALTHY")
    await host.stage(revision(web(images["v2"], publish=("18080:8080",))))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await host.activate(2, policy(start_first=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == (
        "start-first cannot switch release web: revisions 1 and 2 both publish host port 18080/tcp;"
        " use stop-first"
    )
    got = await host.get()
    assert got.state.active_revision == 1
    assert host.containers() == {"web-app-r1": "running"}
