"""Per-host values in a release: `${host.name}`, `${host.labels.KEY}`, `${vars.KEY}`, rendered per host.

One release for the whole fleet, each host its own settings. The controller renders the release's typed
form (`spec.Release`, whatever file it came from) once per host at plan time, so every host is sent ITS
RevisionSpec (and spec digest). Where values may appear:

    env values (K=${vars.upstream}), command and entrypoint arguments, label values, volume specs,
    hostname

What they name:

    ${host.name}          the host's inventory name
    ${host.labels.KEY}    one of its inventory labels
    ${vars.KEY}           its values: inventory defaults < its groups' vars < its own vars
    $$                    a literal $ (a `$` not followed by `{` or `$` is kept as it is)

A name that is not defined for a host stops the plan with the host and the key named (never an empty
string); so does `${` without its `}` or a namespace other than host/vars.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from agent.api.v1 import releases_pb2 as pb
from controller.errors import ControllerError
from controller.rollout.spec import Release, ReleaseContainer

_TOKEN_RE = re.compile(r"\$(\$|\{([^}]*)\}|\{)")
MAX_SHOWN = 5


@dataclass(frozen=True)
class HostValues:
    """What a host's release may refer to."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    vars: Mapping[str, str] = field(default_factory=dict)


class ValuesError(ControllerError):
    """Values that do not render: the problems (`HOST: containers.C.KEY: problem`), on one line."""

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:MAX_SHOWN])
        more = f" (+{len(problems) - MAX_SHOWN} more)" if len(problems) > MAX_SHOWN else ""
        super().__init__(shown + more)
        self.problems = problems


class _Undefined(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def lookup(host: HostValues, expression: str) -> str:
    """The value of one `${…}` expression for `host`."""
    parts = expression.strip().split(".", 2)
    if parts == ["host", "name"]:
        return host.name
    if len(parts) == 3 and parts[:2] == ["host", "labels"]:
        if parts[2] not in host.labels:
            raise _Undefined(f"${{{expression}}} is not defined (host {host.name} has no label {parts[2]})")
        return host.labels[parts[2]]
    if len(parts) >= 2 and parts[0] == "vars":
        key = expression.strip()[len("vars.") :]
        if key not in host.vars:
            raise _Undefined(f"${{{expression}}} is not defined (no var {key} for host {host.name})")
        return host.vars[key]
    raise _Undefined(f"${{{expression}}}: unknown value (use host.name, host.labels.KEY or vars.KEY)")


def render_text(text: str, host: HostValues) -> str:
    """`text` with every `${…}` replaced by the host's value and `$$` by `$`."""

    def one(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        if m.group(2) is None:
            raise _Undefined("`${` without its closing `}` (write $$ for a literal $)")
        return lookup(host, m.group(2))

    return _TOKEN_RE.sub(one, text)


def uses_values(release: Release) -> bool:
    """Whether anything in the release would change when rendered (a `$` anywhere it is rendered)."""
    return any("$" in text for c in release.containers for _, text in _texts(c))


def _texts(c: ReleaseContainer) -> Iterable[tuple[str, str]]:
    """(key, text) of every rendered place of a container, for error messages."""
    cfg = c.config
    for item in cfg.env:
        yield f"env {item.partition('=')[0]}", item.partition("=")[2]
    for i, arg in enumerate(cfg.command):
        yield f"command[{i}]", arg
    if cfg.entrypoint:
        yield "entrypoint", cfg.entrypoint
    for item in cfg.labels:
        yield f"labels {item.partition('=')[0]}", item.partition("=")[2]
    for i, vol in enumerate(cfg.volumes):
        yield f"volumes[{i}]", vol
    if cfg.hostname:
        yield "hostname", cfg.hostname


def render(release: Release, host: HostValues) -> Release:
    """The release as `host` runs it; ValuesError naming the host and each key that does not render."""
    problems: list[str] = []

    def r(text: str, where: str) -> str:
        try:
            return render_text(text, host)
        except _Undefined as exc:
            problems.append(f"{host.name}: containers.{where}: {exc.problem}")
            return text

    def pairs(items: tuple[str, ...], cname: str, key: str) -> tuple[str, ...]:
        out = []
        for item in items:
            k, sep, v = item.partition("=")
            out.append(k + sep + r(v, f"{cname}.{key} {k}"))
        return tuple(out)

    containers = []
    for c in release.containers:
        cfg = c.config
        cfg = replace(
            cfg,
            env=pairs(cfg.env, c.name, "env"),
            command=tuple(r(a, f"{c.name}.command[{i}]") for i, a in enumerate(cfg.command)),
            entrypoint=r(cfg.entrypoint, f"{c.name}.entrypoint") if cfg.entrypoint else cfg.entrypoint,
            labels=pairs(cfg.labels, c.name, "labels"),
            volumes=tuple(r(v, f"{c.name}.volumes[{i}]") for i, v in enumerate(cfg.volumes)),
            hostname=r(cfg.hostname, f"{c.name}.hostname"),
        )
        containers.append(replace(c, config=cfg))
    if problems:
        raise ValuesError(problems)
    return replace(release, containers=tuple(containers))


def render_all(release: Release, hosts: Iterable[HostValues]) -> dict[str, Release]:
    """Each host's release; ValuesError listing the problems of every host (the first few)."""
    out: dict[str, Release] = {}
    problems: list[str] = []
    for host in hosts:
        try:
            out[host.name] = render(release, host)
        except ValuesError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ValuesError(problems)
    return out


# ---- showing a rendered spec (rollout apply --dry-run) -----------------------------------------------


def spec_json(spec: pb.RevisionSpec) -> dict[str, object]:
    """A host's spec for people and --format json: what each container gets (secrets by name, version
    and file: the values are never part of a spec)."""
    containers = []
    for c in spec.containers:
        cfg = c.config
        item: dict[str, object] = {"name": c.name, "image": cfg.image}
        if cfg.command.values:
            item["command"] = list(cfg.command.values)
        if cfg.entrypoint.values:
            item["entrypoint"] = list(cfg.entrypoint.values)
        for key, value in (
            ("env", list(cfg.env)),
            ("labels", dict(sorted(cfg.labels.items()))),
            ("volumes", list(cfg.volumes)),
            ("hostname", cfg.hostname),
            ("depends_on", list(c.depends_on)),
        ):
            if value:
                item[key] = value
        if c.secrets:
            item["secrets"] = [
                {
                    "name": f.name,
                    "version": f.version,
                    "file": f"/run/secrets/{f.target or f.name}",
                    "mode": f"{f.mode or 0o400:04o}",
                    "uid": f.uid,
                    "gid": f.gid,
                    "value": "********",
                }
                for f in c.secrets
            ]
        if c.update_lock:
            item["update_lock"] = True
        containers.append(item)
    return {"release": spec.release, "spec_digest": spec.spec_digest, "containers": containers}


def spec_lines(spec: pb.RevisionSpec) -> list[str]:
    """What `spec_json` says, as indented lines."""
    lines = []
    for c in spec.containers:
        cfg = c.config
        lines.append(f"{c.name}: {cfg.image}")
        if cfg.command.values:
            lines.append("  command: " + " ".join(cfg.command.values))
        if cfg.entrypoint.values:
            lines.append("  entrypoint: " + " ".join(cfg.entrypoint.values))
        for key, items in (("env", cfg.env), ("volumes", cfg.volumes), ("depends_on", c.depends_on)):
            if items:
                lines.append(f"  {key}: " + ", ".join(items))
        if cfg.labels:
            lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(cfg.labels.items())))
        if cfg.hostname:
            lines.append(f"  hostname: {cfg.hostname}")
        for f in c.secrets:
            lines.append(
                f"  secret {f.name} (version {f.version}) → /run/secrets/{f.target or f.name}"
                f" mode {f.mode or 0o400:04o} uid {f.uid} gid {f.gid}: ********"
            )
        if c.update_lock:
            lines.append("  update lock: /run/dockyard/locks mounted")
    return lines
