"""The RPC → permission table, roles, grants in certificates, scopes and host-power options (pure)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from cryptography import x509

import agent.api.v1
from agent import errors
from agent.runtime.options import RunOptions, parse_mount, parse_tmpfs, parse_volume
from agent.server import permissions
from agent.server.permissions import (
    RPC_PERMISSIONS,
    Caller,
    Grant,
    HostIdentity,
    Permission,
    Role,
    authorize,
    grant_from_uris,
    grant_uris,
    host_power,
)
from controller import pki


def _service_methods() -> list[str]:
    """Every RPC of every service generated into agent/api/v1, as the full method name gRPC routes."""
    methods = []
    for info in pkgutil.iter_modules(agent.api.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"agent.api.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return methods


def test_every_rpc_of_every_service_has_a_permission() -> None:
    methods = _service_methods()
    assert len(methods) > 80  # the walk found the services
    missing = [m for m in methods if m not in RPC_PERMISSIONS]
    assert not missing, f"RPCs without an entry in agent/server/permissions.py RPC_PERMISSIONS: {missing}"


def test_table_entries_name_real_rpcs_of_known_services() -> None:
    methods = set(_service_methods())
    services = {m.rsplit("/", 1)[0] for m in methods}
    stale = [m for m in RPC_PERMISSIONS if m.rsplit("/", 1)[0] in services and m not in methods]
    assert not stale


def test_an_rpc_missing_from_the_table_needs_admin() -> None:
    assert permissions.permission_for("/agent.api.v1.Nope/Thing") is Permission.ADMIN


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.VIEWER, {"read"}),
        (Role.OPERATOR, {"read", "operate"}),
        (Role.DEPLOYER, {"read", "operate", "deploy"}),
        (Role.ADMIN, {p.value for p in Permission}),
    ],
)
def test_roles_are_nested(role: Role, allowed: set[str]) -> None:
    assert {p.value for p in Grant(role).permissions} == allowed


def test_viewer_reads_what_the_issue_lists() -> None:
    reads = [
        "System/Info", "Containers/List", "Containers/ListStream", "Images/List", "Containers/Inspect",
        "Containers/Logs", "Events/Stream", "Containers/Stats", "Containers/Top", "Releases/List",
        "Releases/Get", "Releases/Watch", "Images/DiskUsage",
    ]  # fmt: skip
    viewer = Caller("vic", "1", Grant(Role.VIEWER))
    for name in reads:
        authorize(viewer, f"/agent.api.v1.{name}", HostIdentity())


@pytest.mark.parametrize(
    ("role", "method", "message"),
    [
        (Role.OPERATOR, "Containers/Exec", "role operator may not exec (needs --allow exec)"),
        (Role.VIEWER, "Containers/Stop", "role viewer may not operate (needs role operator)"),
        (Role.OPERATOR, "Containers/Create", "role operator may not deploy (needs role deployer)"),
        (Role.DEPLOYER, "Pki/InstallCrl", "role deployer may not admin (needs role admin)"),
        (Role.DEPLOYER, "Audit/Read", "role deployer may not audit (needs --allow audit)"),
    ],
)
def test_refusals_name_role_and_what_is_missing(role: Role, method: str, message: str) -> None:
    with pytest.raises(errors.PermissionDenied) as info:
        authorize(Caller("x", "1", Grant(role)), f"/agent.api.v1.{method}", HostIdentity())
    assert info.value.message == message


def test_allow_adds_to_any_role() -> None:
    viewer = Caller("v", "1", Grant(Role.VIEWER, frozenset({Permission.EXEC, Permission.AUDIT})))
    authorize(viewer, "/agent.api.v1.Containers/Exec", HostIdentity())
    authorize(viewer, "/agent.api.v1.Containers/CopyFrom", HostIdentity())
    authorize(viewer, "/agent.api.v1.Audit/Verify", HostIdentity())
    with pytest.raises(errors.PermissionDenied):
        authorize(viewer, "/agent.api.v1.Containers/Stop", HostIdentity())


def test_grant_round_trips_through_san_uris() -> None:
    grant = Grant(
        Role.DEPLOYER,
        frozenset({Permission.EXEC}),
        ((("site", "lab"),), (("arch", "arm64"), ("site", "north, 2"))),
    )
    uris = grant_uris(grant)
    assert "dockyard:role:deployer" in uris and "dockyard:allow:exec" in uris
    assert grant_from_uris(uris) == grant


def test_no_uris_is_legacy_admin_and_malformed_grants_are_refused() -> None:
    legacy = grant_from_uris(["https://example"])
    assert legacy.role is Role.ADMIN and legacy.legacy
    assert legacy.describe() == "admin (legacy: admin)"
    bad_grants = (
        ["dockyard:role:root"],
        ["dockyard:allow:exec"],
        ["dockyard:role:viewer", "dockyard:allow:read"],
    )
    for bad in bad_grants:
        with pytest.raises(errors.PermissionDenied):
            grant_from_uris(bad)


def test_scope_refusal_names_both_sides() -> None:
    alice = Caller("alice", "1", Grant(Role.ADMIN, scopes=((("site", "lab"),),)))
    authorize(alice, "/agent.api.v1.System/Info", HostIdentity({"site": "lab"}))
    with pytest.raises(errors.PermissionDenied) as info:
        authorize(alice, "/agent.api.v1.System/Info", HostIdentity({"site": "north"}))
    assert info.value.message == "certificate alice is scoped to site=lab; this host is site=north"
    with pytest.raises(errors.PermissionDenied) as info:
        authorize(alice, "/agent.api.v1.System/Info", HostIdentity({}))
    assert info.value.message == "certificate alice is scoped to site=lab; this host is site unset"


def test_local_caller_ignores_scope_and_is_admin() -> None:
    assert permissions.LOCAL.local
    authorize(permissions.LOCAL, "/agent.api.v1.Pki/InstallCrl", HostIdentity({"site": "x"}))


def _opts(**kw: object) -> RunOptions:
    return RunOptions(image="busybox", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("opts", "found"),
    [
        (_opts(mounts=(parse_volume("/:/host"),)), ["bind mount /"]),
        (_opts(mounts=(parse_mount("type=bind,source=/etc,target=/e"),)), ["bind mount /etc"]),
        (_opts(privileged=True), ["--privileged"]),
        (_opts(cap_add=("SYS_ADMIN",)), ["--cap-add SYS_ADMIN"]),
        (_opts(cap_add=("ALL",)), ["--cap-add ALL"]),
        (_opts(network="host"), ["--network host"]),
        (_opts(seccomp="unconfined"), ["--security-opt seccomp=unconfined"]),
    ],
)
def test_host_power_options(opts: RunOptions, found: list[str]) -> None:
    assert host_power(opts) == found


def test_volumes_tmpfs_default_caps_are_not_host_power() -> None:
    opts = _opts(
        mounts=(parse_volume("data:/data"), parse_tmpfs("/run:size=1m"), parse_volume("/anon")),
        cap_add=("NET_BIND_SERVICE", "CHOWN"),
        cap_drop=("ALL",),
        network="container:web",
    )
    assert host_power(opts) == []


def test_check_run_options_uses_the_bound_caller() -> None:
    opts = _opts(privileged=True)
    permissions.bind_caller(Caller("dee", "2", Grant(Role.DEPLOYER)))
    try:
        with pytest.raises(errors.PermissionDenied) as info:
            permissions.check_run_options(opts)
        assert info.value.message == (
            "role deployer may not use host-power options (--privileged): needs admin or --allow host"
        )
        permissions.bind_caller(Caller("dee", "2", Grant(Role.DEPLOYER, frozenset({Permission.HOST}))))
        permissions.check_run_options(opts)
    finally:
        permissions.bind_caller(permissions.LOCAL)
    permissions.check_run_options(opts)  # local: admin


def test_issued_certificate_carries_the_grant(tmp_path: Path) -> None:
    pki.init(tmp_path / "ctl")
    grant = Grant(Role.OPERATOR, frozenset({Permission.AUDIT}), ((("site", "lab"),),))
    pki.issue_client(tmp_path / "ctl", "olga", tmp_path / "olga", grant=grant)
    cert = x509.load_pem_x509_certificate((tmp_path / "olga" / "client.pem").read_bytes())
    assert permissions.grant_of(cert) == grant
    caller = permissions.caller_from_certificate((tmp_path / "olga" / "client.pem").read_bytes())
    assert caller.name == "olga" and caller.grant == grant
    info = pki.inspect_certificate(tmp_path / "olga" / "client.pem")
    assert info.grant == "operator +audit @site=lab"
    assert "dockyard:scope:site=lab" in info.sans
    pki.issue_client(tmp_path / "ctl", "old", tmp_path / "old")  # no grant: as issued before roles
    assert pki.inspect_certificate(tmp_path / "old" / "client.pem").grant == "admin (legacy: admin)"
    by_name = {i.common_name: i.grant for i in pki.issued(tmp_path / "ctl")}
    assert by_name == {
        "controller": "admin",
        "olga": "operator +audit @site=lab",
        "old": "admin (legacy: admin)",
    }


def test_allow_secrets_is_grantable_and_lets_the_controller_write_secrets(tmp_path: Path) -> None:
    from controller.commands import secret
    from controller.errors import ControllerError

    pki.init(tmp_path / "ctl")
    for name, grant in (
        ("dora", Grant(Role.DEPLOYER, frozenset({Permission.SECRETS}))),
        ("dan", Grant(Role.DEPLOYER)),
    ):
        pki.issue_client(tmp_path / "ctl", name, tmp_path / name, grant=grant)
        cert = x509.load_pem_x509_certificate((tmp_path / name / "client.pem").read_bytes())
        assert permissions.grant_of(cert) == grant
    secret.check_may_write(tmp_path / "dora")
    with pytest.raises(ControllerError, match="role deployer may not create secrets"):
        secret.check_may_write(tmp_path / "dan")
