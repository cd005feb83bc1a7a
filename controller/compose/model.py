"""The typed, resolved compose project: what `dockyard compose` runs and what a release can be built from.

Every value here is final: variables interpolated, files merged, relative paths made absolute, short
forms expanded, and each service's run options mapped onto `ContainerConfig` — the same typed config
`dockyard run` sends through `controller.api.containers.config_message`. Only the per-container parts
(the container's name and Compose's bookkeeping labels) are added when a container is created.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from controller.api.containers import ContainerConfig
from controller.errors import ControllerError

# Labels docker compose puts on what it creates; `ps`/`down` find a project's objects by them and `up`
# compares the config hash to recreate only what changed.
PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
CONFIG_HASH = "com.docker.compose.config-hash"
ONEOFF = "com.docker.compose.oneoff"
IMAGE = "com.docker.compose.image"  # the image digest the container was created from
WORKING_DIR = "com.docker.compose.project.working_dir"
CONFIG_FILES = "com.docker.compose.project.config_files"
NETWORK = "com.docker.compose.network"
VOLUME = "com.docker.compose.volume"


class ComposeError(ControllerError):
    """A compose file that cannot be used: `FILE: PATH: what is wrong`, one line."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")
        self.source = source
        self.path = path
        self.problem = problem


class Condition(enum.StrEnum):
    """When a dependency counts as ready for the service that depends on it."""

    STARTED = "service_started"
    HEALTHY = "service_healthy"
    COMPLETED = "service_completed_successfully"


@dataclass(frozen=True)
class Build:
    """`build:` — built on the agent as `dockyard build` builds: the context is sent, the agent builds."""

    context: Path
    dockerfile: str = "Dockerfile"  # relative to the context
    args: Mapping[str, str] = field(default_factory=dict)
    target: str = ""


@dataclass(frozen=True)
class Attachment:
    """A service on one of the project's networks (`network` is a key of Project.networks)."""

    network: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Healthcheck:
    """The service's health check as written (Docker's test forms); also on the wire in `config`."""

    test: tuple[str, ...]  # ("CMD", ...), ("CMD-SHELL", "…") or ("NONE",)
    interval: str = ""
    timeout: str = ""
    retries: int = 0
    start_period: str = ""

    @property
    def disabled(self) -> bool:
        return not self.test or self.test[0] == "NONE"


@dataclass(frozen=True)
class SecretRef:
    """A service's use of a top-level secret (`secrets: [db_password]` or the long form); None = unset.
    Only a rollout mounts secrets (controller/rollout/compose_release.py); `compose up` refuses them."""

    source: str  # key of Project.secrets
    target: str  # as written; the source when unset
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None


@dataclass(frozen=True)
class SecretDef:
    """A top-level secret. `name` is the dockyard secret (`dockyard secret create NAME`): `name:`,
    `external.name` or the key; `local` names a `file`/`environment` source (read on this machine)."""

    key: str
    name: str
    local: str = ""  # "file" or "environment" when the value would come from this machine


@dataclass(frozen=True)
class Service:
    """One service, resolved. `config` is its container's run config: image, command, env, mounts, ports,
    limits, health, the first network with the service name as an alias; `networks` lists every
    attachment (the first is the one `config.network` names; the others are connected before start)."""

    name: str
    config: ContainerConfig
    build: Build | None = None
    depends_on: Mapping[str, Condition] = field(default_factory=dict)  # in file order
    networks: tuple[Attachment, ...] = ()
    healthcheck: Healthcheck | None = None  # None: the image's HEALTHCHECK applies
    profiles: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()  # keys of Project.volumes this service mounts
    pull_never: bool = False  # `build:` without `image:`: the image only ever comes from a build
    command: tuple[str, ...] | None = None  # as written (None: the image's CMD)
    entrypoint: tuple[str, ...] | None = None  # as written (None: the image's ENTRYPOINT)
    secrets: tuple[SecretRef, ...] = ()

    def with_command(self, command: tuple[str, ...]) -> ContainerConfig:
        """The config with `command` in place of the service's (`compose run SERVICE CMD…`)."""
        word, argv = argv_fields(self.entrypoint, command)
        return replace(self.config, entrypoint=word, command=argv)

    @property
    def image(self) -> str:
        return self.config.image

    @property
    def config_hash(self) -> str:
        """sha256 of the resolved config (run options + extra networks): `up` recreates a container whose
        label differs, and leaves the others running."""
        data: dict[str, Any] = asdict(self.config)
        data.pop("name", None)
        data["networks"] = [asdict(a) for a in self.networks]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def argv_fields(
    entrypoint: tuple[str, ...] | None, command: tuple[str, ...] | None
) -> tuple[str | None, tuple[str, ...]]:
    """(ContainerConfig.entrypoint, ContainerConfig.command) for a compose entrypoint and command.

    ContainerConfig carries one entrypoint word (as `--entrypoint` does); the rest of an entrypoint list
    goes before the command, so the process's argv (entrypoint + command) is the one the file asks for."""
    if entrypoint is None:
        return None, command or ()
    if not entrypoint:
        return "", command or ()
    return entrypoint[0], (*entrypoint[1:], *(command or ()))


@dataclass(frozen=True)
class VolumeDef:
    key: str  # as written under top-level `volumes:`
    name: str  # on the agent: `<project>_<key>` unless `name:` says otherwise
    external: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkDef:
    key: str
    name: str  # on the agent: `<project>_<key>` unless `name:` says otherwise
    external: bool = False
    internal: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Project:
    """A loaded compose project. `services` in file order (every service, whatever its profiles);
    `active` names the services the chosen profiles enable. `document` is the resolved file that
    `dockyard compose config` prints."""

    name: str
    working_dir: Path
    files: tuple[Path, ...]
    services: tuple[Service, ...]
    volumes: Mapping[str, VolumeDef]
    networks: Mapping[str, NetworkDef]
    active: frozenset[str]
    document: Mapping[str, Any]
    secrets: Mapping[str, SecretDef] = field(default_factory=dict)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise ControllerError(f"no such service: {name}")

    def select(self, names: Iterable[str] = ()) -> list[Service]:
        """The services named (all active ones when none) plus what they depend on, dependencies first.

        A service named explicitly runs whatever its profiles (as with docker compose)."""
        wanted = list(names) or [s.name for s in self.services if s.name in self.active]
        for name in wanted:
            self.service(name)  # unknown name → error
        chosen: list[str] = []

        def visit(name: str) -> None:
            if name in chosen:
                return
            for dep in self.service(name).depends_on:
                visit(dep)
            chosen.append(name)

        for name in wanted:
            visit(name)
        return [self.service(n) for n in chosen]

    def container_name(self, service: str, number: int = 1) -> str:
        return f"{self.name}-{service}-{number}"

    def labels(self, service: Service, number: int, *, oneoff: bool = False) -> dict[str, str]:
        return {
            PROJECT: self.name,
            SERVICE: service.name,
            NUMBER: str(number),
            ONEOFF: "True" if oneoff else "False",
            CONFIG_HASH: service.config_hash,
            WORKING_DIR: str(self.working_dir),
            CONFIG_FILES: ",".join(str(f) for f in self.files),
        }
