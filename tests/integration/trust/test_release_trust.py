"""The trust policy applies to releases: an Activate whose image the policy refuses starts nothing (the
release goes back to what ran, with the refusal as its reason).

Uses the release tests' fixtures (real agent, docker-registry, digest-pinned web images)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from agent.api.v1 import releases_pb2 as pb
from tests.integration.releases.conftest import (  # noqa: F401  (fixtures)
    HostFactory,
    Images,
    host_factory,
    images,
    policy,
    revision,
    web,
)

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]


def digests_policy(scope: str, *allowed: str) -> str:
    listed = ", ".join(f'"{d}"' for d in allowed)
    return f'[[rules]]\nscope = "{scope}"\npolicy = "digests"\ndigests = [{listed}]\n'


async def test_an_activation_the_policy_refuses_starts_nothing(
    host_factory: HostFactory,  # noqa: F811  (the release tests' fixture)
    images: Images,  # noqa: F811
    tmp_path: Path,
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    policy_file = etc / "policy.toml"
    host = host_factory(config_dir=str(etc), policy_file=str(policy_file))
    scope = f"{images.registry.host}/"
    v1, v2 = images["v1"].split("@", 1)[1], images["v2"].split("@", 1)[1]

    # only v1 is allowed: v2 stages (pulling is not running) but its activation starts nothing
    policy_file.write_text(digests_policy(scope, v1))
    await host.stage(revision(web(images["v1"])))
    activated = await host.activate(1, policy())
    assert activated.switched
    await host.wait_phase("HEALTHY")
    async with host.releases() as stub:
        await stub.Commit(pb.CommitReleaseRequest(release="web", revision=1))
    await host.stage(revision(web(images["v2"])))
    refused = ""
    try:
        response = await host.activate(2, policy())
        state = (
            await host.wait_phase("FAILED", "REVERTED", "ROLLED_BACK")
            if response.switched
            else response.state
        )
        refused = state.reason
    except grpc.aio.AioRpcError as exc:
        assert exc.code() is grpc.StatusCode.PERMISSION_DENIED
        refused = exc.details() or ""
    assert (
        f"@{v2} refused by trust policy rule" in refused and "(digests): its digest is not listed" in refused
    )
    assert host.containers() == {"web-app-r1": "running"}  # reverted to r1; r2 never ran
