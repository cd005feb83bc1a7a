"""Every role × a representative call of every RPC group, over real mTLS with real certificates.

One agent, one running container; for each certificate (viewer, operator, deployer, admin, one issued
without a grant, and roles given --allow), every call below is made. Allowed calls succeed or fail for a
reason other than permission; the others are PERMISSION_DENIED with the exact message. The expected
permission of each call is written here, independently of the agent's table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.api.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    containers_pb2,
    containers_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    networks_pb2,
    networks_pb2_grpc,
    pki_pb2,
    pki_pb2_grpc,
    releases_pb2,
    releases_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
    volumes_pb2,
    volumes_pb2_grpc,
)
from agent.server.permissions import Permission, Role
from tests.integration.security.conftest import IMAGE, SecureFleet, channel

pytestmark = pytest.mark.root

Call = Callable[[grpc.aio.Channel, str], Awaitable[Any]]


async def _drain(stream: AsyncIterator[Any]) -> None:
    async for _ in stream:
        pass


async def _requests(*messages: Any) -> AsyncIterator[Any]:
    for m in messages:
        yield m


def _exec(ch: grpc.aio.Channel, who: str) -> Awaitable[None]:
    start = containers_pb2.ExecStart(container="web", command=["true"])
    stub = containers_pb2_grpc.ContainersStub(ch)
    return _drain(stub.Exec(_requests(containers_pb2.ExecContainerRequest(start=start))))


CALLS: dict[str, tuple[Permission, Call]] = {
    "info": (Permission.READ, lambda ch, who: system_pb2_grpc.SystemStub(ch).Info(system_pb2.InfoRequest())),
    "ps": (
        Permission.READ,
        lambda ch, who: containers_pb2_grpc.ContainersStub(ch).List(containers_pb2.ListContainersRequest()),
    ),
    "logs": (
        Permission.READ,
        lambda ch, who: _drain(
            containers_pb2_grpc.ContainersStub(ch).Logs(containers_pb2.ContainerLogsRequest(container="web"))
        ),
    ),
    "release ls": (
        Permission.READ,
        lambda ch, who: releases_pb2_grpc.ReleasesStub(ch).List(releases_pb2.ListReleasesRequest()),
    ),
    "start": (
        Permission.OPERATE,
        lambda ch, who: containers_pb2_grpc.ContainersStub(ch).Start(
            containers_pb2.StartContainerRequest(container="web")
        ),
    ),
    "pull": (
        Permission.OPERATE,
        lambda ch, who: _drain(
            images_pb2_grpc.ImagesStub(ch).Pull(images_pb2.PullImageRequest(reference="127.0.0.1:9/nope:1"))
        ),
    ),
    "create": (
        Permission.DEPLOY,
        lambda ch, who: containers_pb2_grpc.ContainersStub(ch).Create(
            containers_pb2.CreateContainerRequest(
                config=containers_pb2.ContainerConfig(image=IMAGE, name=f"c-{who}", network="none")
            )
        ),
    ),
    "tag": (
        Permission.DEPLOY,
        lambda ch, who: images_pb2_grpc.ImagesStub(ch).Tag(
            images_pb2.TagImageRequest(source=IMAGE, target=f"t-{who}:1")
        ),
    ),
    "volume create": (
        Permission.DEPLOY,
        lambda ch, who: volumes_pb2_grpc.VolumesStub(ch).Create(
            volumes_pb2.CreateVolumeRequest(name=f"v-{who}")
        ),
    ),
    "network rm": (
        Permission.DEPLOY,
        lambda ch, who: networks_pb2_grpc.NetworksStub(ch).Remove(
            networks_pb2.RemoveNetworkRequest(name="nope")
        ),
    ),
    "release lease": (
        Permission.DEPLOY,
        lambda ch, who: releases_pb2_grpc.ReleasesStub(ch).Lease(
            releases_pb2.LeaseReleaseRequest(release=f"r-{who}", owner=who, rollout_id=f"ro-{who}")
        ),
    ),
    "exec": (Permission.EXEC, _exec),
    "cp": (
        Permission.EXEC,
        lambda ch, who: _drain(
            containers_pb2_grpc.ContainersStub(ch).CopyFrom(
                containers_pb2.CopyFromContainerRequest(container="web", path="/etc/hostname")
            )
        ),
    ),
    "push crl": (
        Permission.ADMIN,
        lambda ch, who: pki_pb2_grpc.PkiStub(ch).InstallCrl(pki_pb2.InstallCrlRequest(crl_pem=b"not a crl")),
    ),
    "audit verify": (
        Permission.AUDIT,
        lambda ch, who: audit_pb2_grpc.AuditStub(ch).Verify(audit_pb2.VerifyAuditRequest()),
    ),
}

ROLE_PERMS = {
    Role.VIEWER: {Permission.READ},
    Role.OPERATOR: {Permission.READ, Permission.OPERATE},
    Role.DEPLOYER: {Permission.READ, Permission.OPERATE, Permission.DEPLOY},
    Role.ADMIN: set(Permission),
}
HINT = {
    Permission.OPERATE: "needs role operator",
    Permission.DEPLOY: "needs role deployer",
    Permission.ADMIN: "needs role admin",
    Permission.EXEC: "needs --allow exec",
    Permission.AUDIT: "needs --allow audit",
}
IDENTITIES: list[tuple[str, Role | None, tuple[Permission, ...]]] = [
    ("vic", Role.VIEWER, ()),
    ("olga", Role.OPERATOR, ()),
    ("dee", Role.DEPLOYER, ()),
    ("ada", Role.ADMIN, ()),
    ("oldie", None, ()),  # issued without a grant, as before roles: admin
    ("vex", Role.VIEWER, (Permission.EXEC,)),
    ("vaud", Role.VIEWER, (Permission.AUDIT,)),
    ("oex", Role.OPERATOR, (Permission.EXEC,)),
]


async def _outcome(call: Call, ch: grpc.aio.Channel, who: str) -> tuple[grpc.StatusCode, str]:
    try:
        await asyncio.wait_for(call(ch, who), 60)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_every_role_against_every_rpc_group(fleet: SecureFleet) -> None:
    a = fleet.start_agent("a1")
    done = fleet.cli(fleet.admin_dir, "run", "-d", "--name", "web", IMAGE, "sleep", "600", host=a.unix)
    assert done.returncode == 0, done.stderr
    identities = {name: (fleet.identity(name, role, allow), role, allow) for name, role, allow in IDENTITIES}

    async def run_all() -> list[str]:
        problems = []
        for name, (identity, role, allow) in identities.items():
            granted = ROLE_PERMS[role or Role.ADMIN] | set(allow)
            async with channel(identity, a.agent.port) as ch:
                for label, (permission, call) in CALLS.items():
                    code, details = await _outcome(call, ch, name)
                    if permission in granted:
                        if code == grpc.StatusCode.PERMISSION_DENIED:
                            problems.append(f"{name} {label}: refused although allowed: {details}")
                    else:
                        want = f"role {role} may not {permission} ({HINT[permission]})"
                        if (code, details) != (grpc.StatusCode.PERMISSION_DENIED, want):
                            problems.append(f"{name} {label}: {code.name} {details!r}, wanted {want!r}")
        return problems

    problems = asyncio.run(run_all())
    assert not problems, "\n".join(problems)
    # allowed calls did their work: the deployer's volume and tag exist, the viewer's do not
    volumes = fleet.cli(fleet.admin_dir, "volume", "ls", "-q", host=a.unix).stdout.split()
    assert "v-dee" in volumes and "v-ada" in volumes and "v-oldie" in volumes and "v-vic" not in volumes


def test_cli_prints_one_refusal_line_per_host(fleet: SecureFleet) -> None:
    a = fleet.start_agent("a1")
    b = fleet.start_agent("a2")
    olga = fleet.identity("olga", Role.OPERATOR)
    done = fleet.cli(olga, "volume", "create", "x", host=f"{a.tcp},{b.tcp}")
    assert done.returncode != 0
    lines = sorted(line for line in done.stderr.strip().splitlines() if line.startswith("error:"))
    assert lines == sorted(
        f"error: {t}: role operator may not deploy (needs role deployer)" for t in (a.tcp, b.tcp)
    ), done.stderr
    assert "0 ok, 2 failed" in done.stderr
    done = fleet.cli(olga, "exec", "web", "true", host=a.tcp)
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: {a.tcp}: role operator may not exec (needs --allow exec)"


def test_legacy_certificate_acts_as_admin_and_says_so(fleet: SecureFleet) -> None:
    a = fleet.start_agent("a1")
    oldie = fleet.identity("oldie", None)
    assert fleet.cli(oldie, "volume", "create", "legacy-vol", host=a.tcp).returncode == 0
    done = fleet.cli(fleet.admin_dir, "pki", "inspect", str(oldie / "client.pem"), host=None)
    assert "grant: admin (legacy: admin)" in done.stdout, done.stdout + done.stderr
    listing = fleet.cli(fleet.admin_dir, "pki", "ls", host=None).stdout
    assert any("oldie" in line and "admin (legacy: admin)" in line for line in listing.splitlines()), listing


def test_revocation_applies_to_every_role(fleet: SecureFleet, tmp_path: Path) -> None:
    a = fleet.start_agent("a1")
    vic = fleet.identity("vic", Role.VIEWER)
    assert fleet.cli(vic, "info", host=a.tcp).returncode == 0
    assert fleet.cli(fleet.admin_dir, "pki", "revoke", "vic", host=None).returncode == 0
    assert fleet.cli(fleet.admin_dir, "pki", "push-crl", host=a.tcp).returncode == 0
    done = fleet.cli(vic, "info", host=a.tcp)
    assert done.returncode != 0 and "is revoked" in done.stderr
