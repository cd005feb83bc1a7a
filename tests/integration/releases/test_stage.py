"""Stage on a real agent: images pulled by digest, the same spec is the same revision, nothing running is
touched; a data root too small for the image is refused with the numbers before anything is downloaded."""

from __future__ import annotations

import shutil

import grpc
import pytest

from tests.integration.releases.conftest import PHASE, HostFactory, Images, revision, web

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


async def test_stage_pulls_by_digest_once_and_touches_nothing_running(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory()
    spec = revision(web(images["v1"]), web(images["v1"], "side"))
    progress = await host.stage(spec, rollout_id="r-1")
    assert progress[-1].done and progress[-1].revision == 1
    assert any(f"pulling {images['v1']}" in p.message for p in progress)
    assert progress[-1].revision == 1

    got = await host.get()
    assert PHASE(got.state.phase) == "RELEASE_PHASE_STAGED"
    assert got.state.active_revision == 0
    digest = images["v1"].split("@", 1)[1]
    assert dict(got.revisions[0].image_digests) == {"app": digest, "side": digest}
    assert got.revisions[0].rollout_id == "r-1" and got.revisions[0].created_by == "local"
    assert host.containers() == {}  # nothing was created or started

    again = await host.stage(spec)
    assert again[-1].revision == 1  # same spec digest: the same revision, the image already present
    assert any(p.message == f"{images['v1']}: present" for p in again)
    staged = [e for e in await host.events() if e.action == "staged"]
    assert [e.attributes["revision"] for e in staged] == ["1", "1"]


async def test_stage_refuses_before_downloading_when_the_data_root_is_too_small(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory(data_tmpfs=8 * 1024 * 1024)
    used_before = shutil.disk_usage(host.agent.data_root).used
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await host.stage(revision(web(images["big"])))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = err.value.details() or ""
    assert f"not enough space on {host.agent.data_root} for {images['big']}: needs at least" in message
    assert "to download" in message and "free" in message
    # nothing was downloaded: the data root holds what it held before (the database may grow a page)
    assert shutil.disk_usage(host.agent.data_root).used - used_before < 512 * 1024
    got = await host.get()
    assert dict(got.revisions[0].image_digests) == {}  # recorded, not staged
    assert not [e for e in await host.events() if e.action == "staged"]
