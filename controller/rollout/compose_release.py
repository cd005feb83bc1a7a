"""A compose file as a release: `dockyard rollout apply -f compose.yaml` ships a compose project.

The compose loader (controller/compose) reads, interpolates, validates and resolves the file exactly as
`dockyard compose` does; this module turns the resolved project into the `Release` the rollout engine
takes, or refuses — naming the file and the compose key — what a release cannot express:

- the release name is the project name; each active service (profiles as `compose up` picks them, plus
  what they depend on) is a container of the release, its `ContainerConfig` the one `compose up` runs,
  health check included (the rollout's verification);
- `depends_on` orders start within a host. The agent starts a dependency and waits until it runs and,
  when it has a health check, is healthy (agent/releases/switch.py): `service_healthy` is honoured,
  `service_started` is honoured (and also waits for health when the dependency has a check);
  `service_completed_successfully` is refused (the agent waits for a running dependency, not an exited one);
- `build:` is refused: images must be built and pushed first;
- networks: a release's containers run on one network of the host. The project's default network becomes
  the host's default network (no service-name aliases there); a network declared `external: true` is used
  by its name (it must exist on every host; aliases kept on a user-defined one); any other network, or a
  service on more than one network, is refused.
- a bind mount of a path in the project directory (`./data`) is refused: it names this machine's disk;
- secrets: a top-level secret names a dockyard secret (`external: true`, `name:` or `external.name`; the
  value comes from `dockyard secret create NAME`); a `file:` or `environment:` source is refused (a release
  never carries a value read on this machine). A service's `secrets:` (short form, or source, target, uid,
  gid, mode) become the container's secret files under /run/secrets (target: the source by default; an
  absolute target must be in /run/secrets); mode 0400, uid/gid 0 unless set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from controller.api.containers import ContainerConfig
from controller.compose import load as compose_load
from controller.compose.model import ComposeError, Condition, Project, Service
from controller.compose.resolve import DEFAULT_NETWORK
from controller.rollout import spec as spec_mod
from controller.rollout.spec import Release, ReleaseContainer

_COMPOSE_SUFFIXES = (".yaml", ".yml")
_SERVICES_LINE = re.compile(r"^services\s*:", re.MULTILINE)
# networks the agent owns: no aliases there (aliases need a user-defined network)
_HOST_NETWORKS = frozenset({"bridge", "host", "none", "default"})


def is_compose(path: Path) -> bool:
    """A compose file by its extension, or (any other name but .toml) by a top-level `services:` line."""
    if path.suffix.lower() in _COMPOSE_SUFFIXES:
        return True
    if path.suffix.lower() == ".toml":
        return False
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False  # spec.load says why it cannot be read
    return bool(_SERVICES_LINE.search(text))


def load(path: Path) -> Release:
    """The release in a release file: a compose file (see is_compose) or the TOML form."""
    return load_compose(path) if is_compose(path) else spec_mod.load(path)


def load_compose(path: Path, environ: dict[str, str] | None = None) -> Release:
    """Load a compose file and convert it; ComposeError/UsageError name the first problem."""
    options = compose_load.Options(
        files=(str(path),),
        environ=dict(os.environ) if environ is None else environ,
        cwd=Path.cwd(),
    )
    project = compose_load.load(options)
    return to_release(project, str(path))


def to_release(project: Project, source: str) -> Release:
    """The release of a loaded compose project (`source` names the file in errors)."""

    def fail(key: str, problem: str) -> ComposeError:
        return ComposeError(source, key, problem)

    if not spec_mod.NAME_RE.match(project.name):
        raise fail("name", f"project name {project.name!r} cannot name a release: at most 63 characters")
    containers: list[ReleaseContainer] = []
    for service in project.select():
        where = f"services.{service.name}"
        if not spec_mod.NAME_RE.match(service.name):
            raise fail(where, "a release's container names are [a-z0-9][a-z0-9_.-]*, at most 63 characters")
        if service.build is not None:
            raise fail(
                f"{where}.build", "images must be built and pushed before a rollout (dockyard build + push)"
            )
        for label in service.config.labels:
            key = label.partition("=")[0]
            if key in spec_mod.RESERVED_LABELS:
                raise fail(f"{where}.labels.{key}", "reserved: the agent labels a release's containers")
        for dep, condition in service.depends_on.items():
            if condition is Condition.COMPLETED:
                raise fail(
                    f"{where}.depends_on.{dep}.condition",
                    "service_completed_successfully is not supported in a rollout (a release's dependencies"
                    " must keep running); use service_started or service_healthy",
                )
        for mount in service.config.mounts:
            fields = dict(f.partition("=")[::2] for f in mount.split(","))
            host_path = Path(fields.get("source", "/"))
            if fields.get("type") == "bind" and host_path.is_relative_to(project.working_dir):
                raise fail(
                    f"{where}.volumes",
                    f"bind mount of {host_path}: a path in the project directory is on this machine, not the"
                    " hosts; bind an absolute host path or use a named volume",
                )
        config = _network(project, service, where, fail)
        secrets = _secrets(project, service, where, fail)
        containers.append(ReleaseContainer(service.name, config, tuple(service.depends_on), secrets))
    if not containers:
        raise fail("services", "no active service (check profiles)")
    _check_ports(containers, source)
    return Release(project.name, tuple(containers), source, key_prefix="services")


def _network(
    project: Project, service: Service, where: str, fail: Callable[[str, str], ComposeError]
) -> ContainerConfig:
    """The service's config on the network a release's container can use (see the module docstring)."""
    if len(service.networks) > 1:
        raise fail(f"{where}.networks", "a release's container is on one network; this service is on several")
    attachment = service.networks[0]
    network = project.networks[attachment.network]
    if network.external:
        aliases = () if network.name in _HOST_NETWORKS else service.config.network_aliases
        return replace(service.config, network=network.name, network_aliases=aliases)
    if attachment.network == DEFAULT_NETWORK and network.name == f"{project.name}_{DEFAULT_NETWORK}":
        return replace(service.config, network="", network_aliases=())
    raise fail(
        f"{where}.networks.{attachment.network}",
        "a rollout does not create networks: use the default network, or declare this one"
        " `external: true` (created on every host with dockyard network create)",
    )


def _secrets(
    project: Project, service: Service, where: str, fail: Callable[[str, str], ComposeError]
) -> tuple[spec_mod.SecretUse, ...]:
    """The service's secret files (see the module docstring)."""
    out: list[spec_mod.SecretUse] = []
    for i, ref in enumerate(service.secrets):
        at = f"{where}.secrets.{i}"
        secret = project.secrets[ref.source]
        if secret.local:
            raise fail(
                f"secrets.{secret.key}.{secret.local}",
                "a release never carries a value from this machine: create it with `dockyard secret create"
                f" {secret.name}` and declare the secret `external: true`",
            )
        target = ref.target
        if target.startswith("/"):
            parent, _, target = target.rpartition("/")
            if parent.rstrip("/") != "/run/secrets":
                raise fail(f"{at}.target", f"{ref.target}: dockyard mounts secrets in /run/secrets")
        for what, text in (("source", secret.name), ("target", target)):
            if not spec_mod.SECRET_NAME_RE.match(text):
                raise fail(
                    f"{at}.{what}", f"invalid secret {what} {text!r}: expected [A-Za-z0-9][A-Za-z0-9_.-]*"
                )
        default = spec_mod.SecretUse(secret.name, target)
        use = replace(
            default,
            mode=default.mode if ref.mode is None else ref.mode,
            uid=default.uid if ref.uid is None else ref.uid,
            gid=default.gid if ref.gid is None else ref.gid,
        )
        if any(u.target == use.target for u in out):
            raise fail(f"{at}.target", f"two secrets would be the file /run/secrets/{use.target}")
        out.append(use)
    return tuple(out)


def _check_ports(containers: list[ReleaseContainer], source: str) -> None:
    """Two services publishing the same host port could not both run on a host: refused before any host."""
    seen: list[tuple[spec_mod.PortSpec, str, str]] = []
    for c in containers:
        for text in c.config.publish:
            port = spec_mod.parse_port(text)
            for other, owner, other_text in seen:
                if port.clashes(other):
                    by = "this service" if owner == c.name else f"services.{owner}"
                    raise ComposeError(
                        source,
                        f"services.{c.name}.ports",
                        f"host port {port.host_port}/{port.protocol} of {text!r} is also published by {by}"
                        f" ({other_text!r})",
                    )
            seen.append((port, c.name, text))
