"""A revision's containers as the agent runs them (pure): validation, names, labels, start order, ports.

The servicer turns the API's `RevisionSpec` into a `ReleaseSpec` (each container's config through the same
`run_options` as `dockyard run`); everything here is a function of that value, so it is unit-tested alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agent.errors import InvalidArgument
from agent.network.ports import parse_publish
from agent.oci.reference import Reference
from agent.releases.secrets import SecretRef
from agent.runtime.options import RunOptions, options_from_dict, options_to_dict

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")
NAME_MAX = 63
LABEL_RELEASE = "dockyard.release"
LABEL_REVISION = "dockyard.revision"
LABEL_CONTAINER = "dockyard.release.container"


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a revision; `options.image` is pinned by digest, name and labels are set at switch."""

    name: str
    options: RunOptions
    depends_on: tuple[str, ...] = ()
    secrets: tuple[SecretRef, ...] = ()  # files at /run/secrets (agent/releases/secrets.py)
    update_lock: bool = False  # the release's lock directory bound at /run/dockyard/locks

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "options": options_to_dict(self.options),
            "depends_on": list(self.depends_on),
            "secrets": [s.to_dict() for s in self.secrets],
            "update_lock": self.update_lock,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerSpec:
        return cls(
            data["name"],
            options_from_dict(data["options"]),
            tuple(data.get("depends_on", ())),
            tuple(SecretRef.from_dict(s) for s in data.get("secrets", ())),
            bool(data.get("update_lock", False)),
        )


@dataclass(frozen=True)
class ReleaseSpec:
    release: str
    containers: tuple[ContainerSpec, ...]
    spec_digest: str
    raw: bytes = b""  # the serialized RevisionSpec as received (returned by Get)


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value) or len(value) > NAME_MAX:
        raise InvalidArgument(
            f"invalid {what} {value!r}: use [a-z0-9][a-z0-9_.-]* (at most {NAME_MAX} characters)"
        )
    return value


def validate(spec: ReleaseSpec) -> ReleaseSpec:
    """Names, unique containers, pinned images, known and acyclic depends_on; InvalidArgument otherwise."""
    check_name(spec.release, "release name")
    if not spec.containers:
        raise InvalidArgument(f"release {spec.release}: a revision needs at least one container")
    seen: set[str] = set()
    for c in spec.containers:
        check_name(c.name, "container name")
        if c.name in seen:
            raise InvalidArgument(f"release {spec.release}: container {c.name} is listed twice")
        seen.add(c.name)
        if Reference.parse(c.options.image).digest is None:
            raise InvalidArgument(
                f"release {spec.release}: container {c.name}: image {c.options.image} is not pinned by"
                " digest (NAME@sha256:…)"
            )
        if c.options.auto_remove:
            raise InvalidArgument(f"release {spec.release}: container {c.name}: --rm is not allowed")
    for c in spec.containers:
        for dep in c.depends_on:
            if dep not in seen:
                raise InvalidArgument(f"release {spec.release}: {c.name} depends on unknown container {dep}")
    start_order(spec.containers)  # raises on a cycle
    return spec


def start_order(containers: Sequence[ContainerSpec]) -> list[ContainerSpec]:
    """Dependencies first, otherwise the given order (deterministic); InvalidArgument on a cycle."""
    by_name = {c.name: c for c in containers}
    done: list[ContainerSpec] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def visit(c: ContainerSpec) -> None:
        if c.name in placed:
            return
        if c.name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(c.name) :], c.name])
            raise InvalidArgument(f"depends_on has a cycle: {cycle}")
        visiting.append(c.name)
        for dep in c.depends_on:
            if dep in by_name:
                visit(by_name[dep])
        visiting.pop()
        placed.add(c.name)
        done.append(c)

    for c in containers:
        visit(c)
    return done


def container_name(release: str, container: str, revision: int) -> str:
    return f"{release}-{container}-r{revision}"


def labels(release: str, container: str, revision: int) -> dict[str, str]:
    return {LABEL_RELEASE: release, LABEL_REVISION: str(revision), LABEL_CONTAINER: container}


def run_options(release: str, revision: int, c: ContainerSpec) -> RunOptions:
    """The container as created: the agent's name and the release labels over the user's labels."""
    return replace(
        c.options,
        name=container_name(release, c.name, revision),
        labels={**c.options.labels, **labels(release, c.name, revision)},
    )


def host_ports(containers: Iterable[ContainerSpec]) -> set[tuple[str, int, str]]:
    """(host IP, host port, protocol) of every fixed published port (`-p CTR` picks a free one: none)."""
    out: set[tuple[str, int, str]] = set()
    for c in containers:
        for spec in c.options.publish:
            m = parse_publish(spec)
            if m.host_port:
                out.add((str(m.host_ip), m.host_port, str(m.protocol)))
    return out


def shared_host_ports(a: Iterable[ContainerSpec], b: Iterable[ContainerSpec]) -> list[str]:
    """Host ports both sets publish (0.0.0.0 overlaps every address), as "PORT/PROTO", sorted."""
    left, right = host_ports(a), host_ports(b)
    shared = {
        f"{port}/{proto}"
        for ip1, port, proto in left
        for ip2, port2, proto2 in right
        if port == port2 and proto == proto2 and (ip1 == ip2 or "0.0.0.0" in (ip1, ip2))
    }
    return sorted(shared, key=lambda s: (int(s.split("/")[0]), s))
