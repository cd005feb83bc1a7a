"""Leases on a real agent: a second rollout is refused with the holder's name, the holder's token lets its
calls through, and an expired lease is taken over only when asked."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from agent.api.v1 import releases_pb2 as pb
from tests.integration.releases.conftest import PHASE, HostFactory, Images, revision, web

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


async def test_second_rollout_refused_naming_the_holder_then_takeover_after_expiry(
    host_factory: HostFactory, images: Images
) -> None:
    host = host_factory()
    async with host.releases() as stub:
        held = await stub.Lease(
            pb.LeaseReleaseRequest(release="web", owner="alice", rollout_id="r-7", ttl=Duration(seconds=2))
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Lease(
                pb.LeaseReleaseRequest(release="web", owner="bob", rollout_id="r-8", takeover=True)
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (err.value.details() or "").startswith("release web is held by alice (rollout r-7) until ")

        # calls without the token are refused; with it they go through
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await host.stage(revision(web(images["v1"])))
        assert "held by alice (rollout r-7)" in (err.value.details() or "")
        staged = await host.stage(revision(web(images["v1"])), lease_token=held.token, rollout_id="r-7")
        assert staged[-1].done
        got = await host.get()
        assert PHASE(got.state.phase) == "RELEASE_PHASE_STAGED"
        assert got.state.lease.startswith("alice (rollout r-7), until ")

        # the same rollout renews (same token)
        renewed = await stub.Lease(
            pb.LeaseReleaseRequest(release="web", owner="alice", rollout_id="r-7", ttl=Duration(seconds=1))
        )
        assert renewed.token == held.token

        # expired: a new rollout must ask for the takeover
        # the lease ends at the time the agent gave (its clock is this machine's)
        await asyncio.sleep(max(0.0, renewed.expires_at.ToNanoseconds() / 1e9 - time.time()) + 0.05)
        assert (await host.get()).state.lease == ""
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Lease(pb.LeaseReleaseRequest(release="web", owner="bob", rollout_id="r-8"))
        assert "(expired); take the lease over" in (err.value.details() or "")
        taken = await stub.Lease(
            pb.LeaseReleaseRequest(release="web", owner="bob", rollout_id="r-8", takeover=True)
        )
        assert taken.token != held.token
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await host.stage(revision(web(images["v1"])), lease_token=held.token)
        assert "held by bob (rollout r-8)" in (err.value.details() or "")
        await stub.Unlease(pb.UnleaseReleaseRequest(release="web", token=taken.token))
        assert (await host.get()).state.lease == ""
