"""The update lock on a real agent: a container of the release that asked for `update_lock` holds
/run/dockyard/locks/web.lock and Activate refuses to switch (FAILED_PRECONDITION "locked by …") while
it is there; an operator's lock file on the host does the same; letting go allows the switch; `force`
switches past a held lock."""

from __future__ import annotations

import grpc
import pytest

from .conftest import HostFactory, Images, policy, revision, web

pytestmark = pytest.mark.timeout(240)


async def test_update_lock_held_by_a_container(host_factory: HostFactory, images: Images) -> None:
    host = host_factory()
    app = web(images["v1"])
    app.update_lock = True
    staged = await host.stage(revision(app))
    await host.activate(staged[-1].revision, policy(min_healthy=0.5))
    await host.wait_phase("HEALTHY", "UNCONFIRMED")

    # the container takes the lock from inside (the release's lock directory is bound there)
    took = host.cli("exec", "web-app-r1", "sh", "-c", "echo migrating > /run/dockyard/locks/web.lock")
    assert took.returncode == 0, took.stderr
    assert (host.agent.socket.parent / "locks" / "web" / "web.lock").exists()

    v2 = web(images["v2"])
    v2.update_lock = True
    second = (await host.stage(revision(v2)))[-1].revision
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await host.activate(second, policy(min_healthy=0.5))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "release web is locked by" in (refused.value.details() or "")
    assert "(migrating)" in (refused.value.details() or "")
    assert (await host.get()).state.active_revision == 1  # nothing switched
    assert host.containers().get("web-app-r1") == "running"

    # the container lets go: the switch goes through
    assert host.cli("exec", "web-app-r1", "rm", "/run/dockyard/locks/web.lock").returncode == 0
    switched = await host.activate(second, policy(min_healthy=0.5))
    assert switched.switched and switched.state.active_revision == second
    await host.wait_phase("HEALTHY", "UNCONFIRMED")

    # an operator's lock on the host; force (the unix socket is local: admin) switches past it
    lock = host.agent.socket.parent / "locks" / "web.lock"
    lock.write_text("operator: do not touch\n")
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await host.activate(1, policy(min_healthy=0.5))
    assert f"locked by {lock} (operator: do not touch)" in (again.value.details() or "")
    forced = await host.activate(1, policy(min_healthy=0.5), force=True)
    assert forced.switched and forced.state.active_revision == 1
    lock.unlink()
