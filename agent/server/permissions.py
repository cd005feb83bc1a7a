"""Who may do what: the one RPC → permission table, roles, grants carried in client certificates, scopes.

A client certificate says what its holder may do in Subject Alternative Name URIs, signed by the fleet CA
with the rest of the certificate (so an agent needs no online lookup, and `openssl x509 -text` shows them):

    dockyard:role:deployer            exactly one: viewer | operator | deployer | admin
    dockyard:allow:exec               any number: exec | audit | host | secrets (extra, for any role)
    dockyard:scope:site=lab           any number; the certificate works on a host matching ANY of them;
    dockyard:scope:site=lab,arch=arm64  one scope is a comma list of KEY=VALUE that must ALL match

Values are percent-encoded (RFC 3986) where they hold reserved characters. A client certificate without any
`dockyard:` URI (issued before roles existed) acts as `admin` everywhere. The unix socket is local root:
`admin`. A host's labels are `labels` in its agent.toml (written by `dockyard bootstrap` from the
inventory); `host` is the agent's own name (its certificate CN) unless the labels set it.

Every RPC is in `RPC_PERMISSIONS`; a method that is not is refused (fail closed) and a unit test fails
when a service of agent/api/v1 gains an RPC without an entry.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.x509.oid import NameOID

from agent import errors
from agent.runtime.options import MountType, RunOptions
from agent.runtime.spec import DEFAULT_CAPABILITIES, normalize_capability


class Permission(StrEnum):
    READ = "read"  # look: info, ps, images, inspect, logs, events, stats, top, release ls, system df
    OPERATE = "operate"  # start/stop/restart/kill/pause/unpause, pull
    DEPLOY = "deploy"  # run/create/rm, image ops, releases, volumes, networks, transfers, builds
    ADMIN = "admin"  # PKI and agent-level operations
    EXEC = "exec"  # exec, attach, cp into and out of containers
    AUDIT = "audit"  # read and verify the audit log
    HOST = "host"  # host-power options in run/create (see `host_power`)
    # create and read secret values: checked by the controller that holds the secret store (`dockyard
    # secret`), against its own certificate; no agent RPC needs it (agents get values with Stage)
    SECRETS = "secrets"


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    DEPLOYER = "deployer"
    ADMIN = "admin"


_P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({_P.READ}),
    Role.OPERATOR: frozenset({_P.READ, _P.OPERATE}),
    Role.DEPLOYER: frozenset({_P.READ, _P.OPERATE, _P.DEPLOY}),
    Role.ADMIN: frozenset(Permission),
}
# Permissions that `--allow` adds to any role.
GRANTABLE: frozenset[Permission] = frozenset({_P.EXEC, _P.AUDIT, _P.HOST, _P.SECRETS})

_V1 = "/agent.api.v1."
RPC_PERMISSIONS: dict[str, Permission] = {
    # System
    f"{_V1}System/Ping": _P.READ,
    f"{_V1}System/Version": _P.READ,
    f"{_V1}System/Info": _P.READ,
    "/grpc.health.v1.Health/Check": _P.READ,
    "/grpc.health.v1.Health/Watch": _P.READ,
    # Containers
    f"{_V1}Containers/Create": _P.DEPLOY,
    f"{_V1}Containers/Run": _P.DEPLOY,
    f"{_V1}Containers/Start": _P.OPERATE,
    f"{_V1}Containers/Attach": _P.EXEC,
    f"{_V1}Containers/Stop": _P.OPERATE,
    f"{_V1}Containers/Restart": _P.OPERATE,
    f"{_V1}Containers/Kill": _P.OPERATE,
    f"{_V1}Containers/Pause": _P.OPERATE,
    f"{_V1}Containers/Unpause": _P.OPERATE,
    f"{_V1}Containers/Remove": _P.DEPLOY,
    f"{_V1}Containers/Prune": _P.DEPLOY,
    f"{_V1}Containers/Wait": _P.READ,
    f"{_V1}Containers/List": _P.READ,
    f"{_V1}Containers/ListStream": _P.READ,
    f"{_V1}Containers/Inspect": _P.READ,
    f"{_V1}Containers/Logs": _P.READ,
    f"{_V1}Containers/Exec": _P.EXEC,
    f"{_V1}Containers/Top": _P.READ,
    f"{_V1}Containers/Stats": _P.READ,
    f"{_V1}Containers/CopyTo": _P.EXEC,
    f"{_V1}Containers/CopyFrom": _P.EXEC,
    # Images (Save hands out image content: an image op, like send's source side)
    f"{_V1}Images/List": _P.READ,
    f"{_V1}Images/ListStream": _P.READ,
    f"{_V1}Images/Inspect": _P.READ,
    f"{_V1}Images/DiskUsage": _P.READ,
    f"{_V1}Images/Resolve": _P.READ,
    f"{_V1}Images/Pull": _P.OPERATE,
    f"{_V1}Images/CheckLogin": _P.OPERATE,
    f"{_V1}Images/Tag": _P.DEPLOY,
    f"{_V1}Images/Remove": _P.DEPLOY,
    f"{_V1}Images/Prune": _P.DEPLOY,
    f"{_V1}Images/Save": _P.DEPLOY,
    f"{_V1}Images/Load": _P.DEPLOY,
    f"{_V1}Images/Import": _P.DEPLOY,
    f"{_V1}Images/Push": _P.DEPLOY,
    # Build
    f"{_V1}Build/Build": _P.DEPLOY,
    f"{_V1}Build/PruneBuildCache": _P.DEPLOY,
    # Networks
    f"{_V1}Networks/List": _P.READ,
    f"{_V1}Networks/ListStream": _P.READ,
    f"{_V1}Networks/Inspect": _P.READ,
    f"{_V1}Networks/ListPorts": _P.READ,
    f"{_V1}Networks/Create": _P.DEPLOY,
    f"{_V1}Networks/Remove": _P.DEPLOY,
    f"{_V1}Networks/Connect": _P.DEPLOY,
    f"{_V1}Networks/Disconnect": _P.DEPLOY,
    # Volumes
    f"{_V1}Volumes/List": _P.READ,
    f"{_V1}Volumes/ListStream": _P.READ,
    f"{_V1}Volumes/Inspect": _P.READ,
    f"{_V1}Volumes/Create": _P.DEPLOY,
    f"{_V1}Volumes/Remove": _P.DEPLOY,
    f"{_V1}Volumes/Prune": _P.DEPLOY,
    # Events
    f"{_V1}Events/Stream": _P.READ,
    # Transfer (image send, commit, move: both ends are deploy operations)
    f"{_V1}Transfer/DescribeImage": _P.DEPLOY,
    f"{_V1}Transfer/CheckBlobs": _P.DEPLOY,
    f"{_V1}Transfer/ReadBlob": _P.DEPLOY,
    f"{_V1}Transfer/WriteBlob": _P.DEPLOY,
    f"{_V1}Transfer/RegisterImage": _P.DEPLOY,
    f"{_V1}Transfer/Commit": _P.DEPLOY,
    f"{_V1}Transfer/ExportVolume": _P.DEPLOY,
    f"{_V1}Transfer/ImportVolume": _P.DEPLOY,
    f"{_V1}Transfer/Recreate": _P.DEPLOY,
    # Releases (rollouts)
    f"{_V1}Releases/List": _P.READ,
    f"{_V1}Releases/Get": _P.READ,
    f"{_V1}Releases/Watch": _P.READ,
    f"{_V1}Releases/Lease": _P.DEPLOY,
    f"{_V1}Releases/Unlease": _P.DEPLOY,
    f"{_V1}Releases/Stage": _P.DEPLOY,
    f"{_V1}Releases/Activate": _P.DEPLOY,
    f"{_V1}Releases/Commit": _P.DEPLOY,
    f"{_V1}Releases/Rollback": _P.DEPLOY,
    # Pki: what the agent trusts (certificate rotation, CA rotation, revocation list)
    f"{_V1}Pki/CreateCsr": _P.ADMIN,
    f"{_V1}Pki/InstallCertificate": _P.ADMIN,
    f"{_V1}Pki/ConfirmCaRotation": _P.ADMIN,
    f"{_V1}Pki/InstallCrl": _P.ADMIN,
    # Trust (image signatures and the policy; the policy decides what may run: admin)
    f"{_V1}Trust/GetPolicy": _P.READ,
    f"{_V1}Trust/Verify": _P.READ,
    f"{_V1}Trust/SetPolicy": _P.ADMIN,
    f"{_V1}Trust/PushSignature": _P.DEPLOY,
    f"{_V1}Trust/ExportSignatures": _P.DEPLOY,
    f"{_V1}Trust/ImportSignatures": _P.DEPLOY,
    # Audit
    f"{_V1}Audit/Read": _P.AUDIT,
    f"{_V1}Audit/Verify": _P.AUDIT,
}

# What a refusal calls the permission ("role operator may not exec", "... may not deploy").
_NEEDS_HINT: dict[Permission, str] = {
    _P.EXEC: "needs --allow exec",
    _P.AUDIT: "needs --allow audit",
    _P.HOST: "needs admin or --allow host",
    _P.SECRETS: "needs admin or --allow secrets",
    _P.OPERATE: "needs role operator",
    _P.DEPLOY: "needs role deployer",
    _P.ADMIN: "needs role admin",
}


def permission_for(method: str) -> Permission:
    """The permission an RPC needs; an RPC missing from the table needs admin (fail closed)."""
    return RPC_PERMISSIONS.get(method, _P.ADMIN)


# --- grants in certificates ---------------------------------------------------------------------------

URI_PREFIX = "dockyard:"
LEGACY = "(legacy: admin)"


@dataclass(frozen=True)
class Grant:
    """What a certificate may do: a role, extra permissions, and the hosts it works on (empty = all)."""

    role: Role = Role.ADMIN
    allow: frozenset[Permission] = frozenset()
    scopes: tuple[tuple[tuple[str, str], ...], ...] = ()
    legacy: bool = False  # no dockyard: URIs at all: issued before roles (acts as admin)

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self.role] | self.allow

    def describe(self) -> str:
        """`deployer +exec @site=lab` or `admin (legacy: admin)`, as `pki ls`/`inspect` show it."""
        if self.legacy:
            return f"{self.role} {LEGACY}"
        parts = [str(self.role), *(f"+{a}" for a in sorted(self.allow))]
        parts += [f"@{format_scope(s)}" for s in self.scopes]
        return " ".join(parts)


LOCAL_GRANT = Grant(Role.ADMIN)


def parse_scope(text: str) -> tuple[tuple[str, str], ...]:
    """`site=lab,arch=arm64` → (("arch", "arm64"), ("site", "lab")); InvalidArgument if malformed."""
    pairs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise errors.InvalidArgument(f"invalid scope {text!r}: expected KEY=VALUE[,KEY=VALUE]")
        pairs[key] = value
    return tuple(sorted(pairs.items()))


def format_scope(scope: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{k}={v}" for k, v in scope)


def grant_uris(grant: Grant) -> list[str]:
    """The SAN URIs that carry `grant` in a certificate."""
    uris = [f"{URI_PREFIX}role:{grant.role}"]
    uris += [f"{URI_PREFIX}allow:{a}" for a in sorted(grant.allow)]
    for scope in grant.scopes:
        text = ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in scope)
        uris.append(f"{URI_PREFIX}scope:{text}")
    return uris


def grant_from_uris(uris: Iterable[str]) -> Grant:
    """Read a grant back from SAN URIs; no dockyard: URI at all → the legacy admin grant.

    A certificate whose dockyard: URIs are malformed (unknown role/permission, two roles, a scope without a
    role) grants nothing usable: PermissionDenied, never a silent fallback to admin.
    """
    ours = [u[len(URI_PREFIX) :] for u in uris if u.startswith(URI_PREFIX)]
    if not ours:
        return Grant(Role.ADMIN, legacy=True)
    roles: list[Role] = []
    allow: set[Permission] = set()
    scopes: list[tuple[tuple[str, str], ...]] = []
    for item in ours:
        kind, _, value = item.partition(":")
        try:
            if kind == "role":
                roles.append(Role(value))
            elif kind == "allow":
                permission = Permission(value)
                if permission not in GRANTABLE:
                    raise ValueError(value)
                allow.add(permission)
            elif kind == "scope":
                scopes.append(tuple(sorted((unquote(k), unquote(v)) for k, v in parse_scope(value))))
            else:
                raise ValueError(kind)
        except (ValueError, errors.InvalidArgument):
            raise errors.PermissionDenied(
                f"certificate carries an unknown grant {URI_PREFIX}{item}"
            ) from None
    if len(roles) != 1:
        raise errors.PermissionDenied(f"certificate carries {len(roles)} roles (exactly one is needed)")
    return Grant(roles[0], frozenset(allow), tuple(scopes))


def certificate_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def grant_of(cert: x509.Certificate) -> Grant:
    return grant_from_uris(certificate_uris(cert))


# --- the caller of the current RPC --------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who is calling: `local` (unix socket, root) or a client certificate's CN, serial and grant."""

    name: str = "local"
    serial: str = ""  # hex, as `dockyard pki ls` shows it; empty for local
    grant: Grant = LOCAL_GRANT

    @property
    def local(self) -> bool:
        return not self.serial

    def audit_form(self) -> str | dict[str, str]:
        if self.local:
            return "local"
        return {"cn": self.name, "serial": self.serial, "role": str(self.grant.role)}


LOCAL = Caller()
_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("dockyard_caller", default=LOCAL)


def current_caller() -> Caller:
    """The caller of the RPC being served (bound by the interceptor); `local` outside an RPC."""
    return _current.get()


def bind_caller(caller: Caller) -> None:
    _current.set(caller)


def caller_from_certificate(cert_pem: bytes) -> Caller:
    """The caller a verified client certificate names (PermissionDenied if its grant is malformed)."""
    if not cert_pem:
        return LOCAL
    cert = x509.load_pem_x509_certificate(cert_pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else cert.subject.rfc4514_string()
    return Caller(name, f"{cert.serial_number:x}", grant_of(cert))


# --- the checks -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostIdentity:
    """This agent's labels (agent.toml `labels`, plus `host` = its own name unless set there)."""

    labels: Mapping[str, str] = field(default_factory=dict)


def check_scope(caller: Caller, host: HostIdentity) -> None:
    scopes = caller.grant.scopes
    if not scopes or any(all(host.labels.get(k) == v for k, v in s) for s in scopes):
        return
    keys = sorted({k for s in scopes for k, _ in s})
    here = ",".join(f"{k}={host.labels[k]}" if k in host.labels else f"{k} unset" for k in keys)
    wanted = " or ".join(format_scope(s) for s in scopes)
    raise errors.PermissionDenied(f"certificate {caller.name} is scoped to {wanted}; this host is {here}")


def check_permission(caller: Caller, permission: Permission) -> None:
    if permission in caller.grant.permissions:
        return
    raise errors.PermissionDenied(
        f"role {caller.grant.role} may not {permission} ({_NEEDS_HINT.get(permission, 'not granted')})"
    )


def authorize(caller: Caller, method: str, host: HostIdentity) -> Permission:
    """Scope first (a certificate for other hosts learns nothing here), then the RPC's permission."""
    permission = permission_for(method)
    if not caller.local:
        check_scope(caller, host)
    check_permission(caller, permission)
    return permission


def host_power(opts: RunOptions) -> list[str]:
    """The options of a container that give it power over the host (root-equivalent in Docker terms).

    Bind mounts of host paths, --privileged, capabilities beyond Docker's default set, the host's network
    namespace, seccomp off. Named volumes, tmpfs, --cap-drop, container:OTHER networking do not count.
    """
    found: list[str] = []
    if opts.privileged:
        found.append("--privileged")
    for m in opts.mounts:
        if m.type is MountType.BIND:
            found.append(f"bind mount {m.source}")
    for cap in opts.cap_add:
        norm = normalize_capability(cap)
        if norm not in DEFAULT_CAPABILITIES:
            found.append(f"--cap-add {cap}")
    if opts.network == "host":
        found.append("--network host")
    if opts.seccomp != "default":
        found.append(f"--security-opt seccomp={opts.seccomp}")
    return found


def check_run_options(opts: RunOptions) -> None:
    """Refuse host-power options to the current caller unless its grant holds `host` (admin or --allow)."""
    caller = current_caller()
    if _P.HOST in caller.grant.permissions:
        return
    found = host_power(opts)
    if found:
        raise errors.PermissionDenied(
            f"role {caller.grant.role} may not use host-power options ({', '.join(found)}): "
            "needs admin or --allow host"
        )
