"""The release file: a TOML document naming a release and the containers it runs on every host.

    name = "web"
    [containers.app]
    image = "registry.lab:5000/shop/web:2"
    ports = ["8080:8080"]
    memory = "256m"
    [containers.app.health]
    cmd = ["wget", "-q", "-O-", "http://127.0.0.1:8080/"]
    interval = "2s"

A container takes the run options of `dockyard run` under the names of its flags (`memory_swap` or
`memory-swap`; the plural `labels`/`volumes`/`mounts`/`ulimits`/`ports` or the flag's `label`/`volume`/
`mount`/`ulimit`/`publish`), a `[health]` table, and `depends_on`. Everything is checked here, before any
host is asked to do anything, and the first problem is ONE line naming the file, the line and the key:
`web.toml:7: containers.app.memroy: unknown key (did you mean memory?)`. tomllib keeps no positions, so
`_KeyLines` finds each key's line in the text itself.

A container's options become a `controller.api.containers.ContainerConfig` and go on the wire through
`config_message`, the mapping `dockyard run` uses. The wire form of a release is a `RevisionSpec` whose
`spec_digest` is the sha256 of its deterministic serialization: equal digests are the same revision.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shlex
import signal
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from agent.api.v1 import releases_pb2 as pb
from agent.oci import reference
from agent.oci.errors import InvalidArgument
from controller import units
from controller.api.containers import ContainerConfig, config_message
from controller.commands.containers_common import resolve_env
from controller.errors import ControllerError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
# Labels the agent puts on a release's containers (agent/releases/spec.py); a release file may not set them.
RESERVED_LABELS = ("dockyard.release", "dockyard.revision", "dockyard.release.container")


class SpecError(ControllerError):
    """A release file that cannot be used: `FILE:LINE: KEY: what is wrong`."""

    def __init__(self, source: str, line: int, key: str, problem: str) -> None:
        where = f"{source}:{line}: {key}: " if key else f"{source}:{line}: "
        super().__init__(where + problem)
        self.source = source
        self.line = line
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class SecretUse:
    """A secret a container reads as the file /run/secrets/TARGET (controller/rollout/secrets.py stores
    the values; `version` is filled per host at plan time and is part of the spec digest)."""

    name: str
    target: str = ""  # "" = name
    mode: int = 0o400
    uid: int = 0
    gid: int = 0
    version: str = ""


@dataclass(frozen=True)
class ReleaseContainer:
    name: str
    config: ContainerConfig
    depends_on: tuple[str, ...] = ()
    secrets: tuple[SecretUse, ...] = ()
    update_lock: bool = False  # the container may hold /run/dockyard/locks/RELEASE.lock


@dataclass(frozen=True)
class Release:
    """A validated release file; `containers` in file order."""

    name: str
    containers: tuple[ReleaseContainer, ...]
    source: str = ""
    # where each key is in the file (errors found later, e.g. an image the registry lacks, name it)
    key_lines: _KeyLines | None = dataclass_field(default=None, compare=False, repr=False)
    # what errors call the containers' table: `services` for a compose file (rollout/compose_release.py)
    key_prefix: str = dataclass_field(default="containers", compare=False, repr=False)

    def error(self, container: str, key: str, problem: str) -> ControllerError:
        """`FILE:LINE: containers.C.KEY: problem` for a problem found after parsing (the key as the file
        spells it: `ports` or `publish`)."""
        if self.key_lines is None:
            where = f"{self.key_prefix}.{container}.{key}"
            return ControllerError(f"{self.source or 'release'}: {where}: {problem}")
        written = _written_key(self.key_lines, container, _ALIASES.get(key, key))
        path = ("containers", container, written)
        return SpecError(self.source, self.key_lines.line(path), ".".join(path), problem)

    def images(self) -> tuple[str, ...]:
        """Each image reference once, as written, in file order (what the controller resolves to digests)."""
        return tuple(dict.fromkeys(c.config.image for c in self.containers))

    def pinned(self, digests: Mapping[str, str]) -> Release:
        """Every image as `repository@digest`; `digests` maps each reference of `images()` to its digest."""
        containers = tuple(
            replace(c, config=replace(c.config, image=pin_image(c.config.image, digests[c.config.image])))
            for c in self.containers
        )
        return replace(self, containers=containers)

    def start_order(self) -> tuple[str, ...]:
        """Container names with every dependency before its dependents (file order among equals)."""
        order: list[str] = []
        placed: set[str] = set()
        pending = list(self.containers)
        while pending:
            ready = next(c for c in pending if placed.issuperset(c.depends_on))  # no cycles: parse checked
            pending.remove(ready)
            order.append(ready.name)
            placed.add(ready.name)
        return tuple(order)


def pin_image(image: str, digest: str) -> str:
    """`registry/repository@digest` for a reference (normalized as the agent normalizes it)."""
    ref = reference.parse(image)
    if ref.digest is not None and ref.digest != digest:
        raise ControllerError(f"{image} names digest {ref.digest}, but it resolved to {digest}")
    return str(reference.Reference(ref.registry, ref.repository, None, reference.validate_digest(digest)))


def revision_spec(release: Release) -> pb.RevisionSpec:
    """The release on the wire, in canonical form (containers by name, dependencies sorted), digest set."""
    spec = pb.RevisionSpec(release=release.name)
    for c in sorted(release.containers, key=lambda c: c.name):
        files = [
            pb.SecretFile(
                name=u.name, version=u.version, target=u.target or u.name, mode=u.mode, uid=u.uid, gid=u.gid
            )
            for u in sorted(c.secrets, key=lambda u: u.target or u.name)
        ]
        spec.containers.append(
            pb.ReleaseContainer(
                name=c.name,
                config=config_message(c.config),
                depends_on=sorted(c.depends_on),
                secrets=files,
                update_lock=c.update_lock,
            )
        )
    spec.spec_digest = spec_digest(spec)
    return spec


def spec_digest(spec: pb.RevisionSpec) -> str:
    """sha256 of the deterministic serialization of `spec` without its own spec_digest field."""
    bare = pb.RevisionSpec()
    bare.CopyFrom(spec)
    bare.spec_digest = ""
    return "sha256:" + hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


def load(path: Path) -> Release:
    """Read and validate a release file; relative `env_file` paths are taken from the file's directory."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ControllerError(f"cannot read release file {path}: {exc.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), data.count(b"\n", 0, exc.start) + 1, "", "not UTF-8 text") from None
    return parse(text, str(path), base_dir=path.parent)


def parse(text: str, source: str = "release.toml", *, base_dir: Path | None = None) -> Release:
    """Validate a release file's text; SpecError names the first problem."""
    lines = _KeyLines(text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
        line = int(m.group(1)) if m else max(1, text.count("\n"))
        raise SpecError(source, line, "", message[: m.start()] if m else message) from None
    return _Parser(source, lines, base_dir or Path.cwd()).release(raw)


# ---- ports -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """One `-p` / `ports` entry; host_port 0 = the agent picks a free one."""

    container_port: int
    protocol: str
    host_ip: IPv4Address
    host_port: int

    def clashes(self, other: PortSpec) -> bool:
        """Both need the same host port (on the same address, or one of them on every address)."""
        any_ip = IPv4Address(0)
        return (
            self.host_port != 0
            and (self.host_port, self.protocol) == (other.host_port, other.protocol)
            and (self.host_ip == other.host_ip or any_ip in (self.host_ip, other.host_ip))
        )


def parse_port(spec: str) -> PortSpec:
    """Docker's `-p` syntax as the agent reads it (agent.network.ports.parse_publish; a unit test keeps
    the two in step): CTR, HOST:CTR, IP:HOST:CTR, IP::CTR, each optionally /tcp or /udp."""
    body, _, proto_text = spec.strip().partition("/")
    protocol = (proto_text or "tcp").lower()
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"invalid port {spec!r}: protocol must be tcp or udp")
    parts = body.split(":")
    if len(parts) > 3 or not all(p.isdigit() for p in parts[-2:] if p) or not parts[-1]:
        if "-" in body:
            raise ValueError(f"invalid port {spec!r}: port ranges are not supported")
        raise ValueError(f"invalid port {spec!r}: expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]")
    host_ip = IPv4Address(0)
    if len(parts) == 3:
        try:
            host_ip = IPv4Address(parts[0])
        except ValueError:
            raise ValueError(f"invalid port {spec!r}: {parts[0]!r} is not an IPv4 address") from None
    host = parts[-2] if len(parts) >= 2 else ""
    if len(parts) == 2 and not host:
        raise ValueError(f"invalid port {spec!r}: empty host port")

    def number(text: str, what: str) -> int:
        value = int(text)
        if not 1 <= value <= 65535:
            raise ValueError(f"invalid port {spec!r}: {what} {value} is outside 1-65535")
        return value

    return PortSpec(
        container_port=number(parts[-1], "container port"),
        protocol=protocol,
        host_ip=host_ip,
        host_port=number(host, "host port") if host else 0,
    )


# ---- where keys are --------------------------------------------------------------------------------

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?")
_ASSIGN_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART_RE = re.compile(_KEY_PART)


def _key_parts(dotted: str) -> tuple[str, ...]:
    out = []
    for m in _PART_RE.finditer(dotted):
        part = m.group(0)
        if part[0] == '"':
            part = part[1:-1].encode().decode("unicode_escape")
        elif part[0] == "'":
            part = part[1:-1]
        out.append(part)
    return tuple(out)


class _KeyLines:
    """The line of each key path in a TOML text (table headers and `key =` lines; a key inside an inline
    table or array answers with the line of the nearest enclosing key)."""

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_string = ""
        for number, line in enumerate(text.splitlines(), 1):
            if in_string:
                if line.count(in_string) % 2 == 1:
                    in_string = ""
                continue
            header = _HEADER_RE.match(line)
            if header:
                table = _key_parts(header.group(1))
                for i in range(1, len(table) + 1):
                    self._lines.setdefault(table[:i], number)
                continue
            assign = _ASSIGN_RE.match(line)
            if assign:
                path = table + _key_parts(assign.group(1))
                for i in range(len(table) + 1, len(path) + 1):
                    self._lines.setdefault(path[:i], number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_string = quote

    def has(self, path: tuple[str, ...]) -> bool:
        return path in self._lines

    def line(self, path: tuple[str, ...]) -> int:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return 1


# ---- validation ------------------------------------------------------------------------------------


class _Bad(Exception):
    """A value's problem, before it is placed (file, line, key) by the parser."""


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "a table" if isinstance(value, dict) else "a date/time")


def _expect(value: object, kind: type, what: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Bad(f"expected {what}, got {_type_name(value)}")


def _string(value: object) -> str:
    _expect(value, str, "a string")
    assert isinstance(value, str)
    return value


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        got = _type_name(value) if not isinstance(value, list) else "an array with a non-string element"
        raise _Bad(f"expected an array of strings, got {got}")
    return tuple(value)


def _argv(value: object) -> tuple[str, ...]:
    """A command: an array of strings (exec form), or one string split as a shell would split it."""
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise _Bad(f"cannot split {value!r}: {exc}") from None
    return _strings(value)


def _scalar_text(value: object, what: str) -> str:
    """A size, a CPU count or a duration: a string, or a bare number as the flag would take it."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(f"expected {what}, got {_type_name(value)}")
    return value if isinstance(value, str) else str(value)


def _units(parse: Callable[[str], object], what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _scalar_text(value, what)
        try:
            parse(text)
        except units.InvalidValue as exc:
            raise _Bad(exc.message) from None
        return text

    return check


def _duration(value: object) -> str:
    text = _scalar_text(value, "a duration such as 2s")
    try:
        units.parse_duration(text, "duration")
    except units.InvalidValue as exc:
        raise _Bad(exc.message) from None
    return text


def _integer(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        _expect(value, int, "an integer")
        assert isinstance(value, int)
        if not low <= value <= high:
            raise _Bad(f"{value} is out of range ({low} to {high})")
        return value

    return check


def _boolean(value: object) -> bool:
    _expect(value, bool, "true or false")
    assert isinstance(value, bool)
    return value


def _pairs(value: object, what: str) -> tuple[str, ...]:
    """A table {K = "V"} or an array ["K=V"]: as K=V strings, in order."""
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise _Bad(f"{key}: expected a string, got {_type_name(item)}")
            out.append(f"{key}={item}")
        items = tuple(out)
    elif isinstance(value, list):
        items = _strings(value)
    else:
        raise _Bad(f"expected a table of {what} or an array of K=V strings, got {_type_name(value)}")
    for item in items:
        key = item.partition("=")[0]
        if not key or key != key.strip() or " " in key:
            raise _Bad(f"invalid {what} {item!r}: the name must be non-empty without spaces")
    return items


def _labels(value: object) -> tuple[str, ...]:
    items = _pairs(value, "labels")
    for item in items:
        if "=" not in item:
            raise _Bad(f"invalid label {item!r}: expected K=V")
        if item.partition("=")[0] in RESERVED_LABELS:
            raise _Bad(f"{item.partition('=')[0]}: the agent sets this label on a release's containers")
    return items


def _ports(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(f'expected an array of port specs such as "8080:80", got {_type_name(value)}')
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise _Bad(f'expected a port spec such as "8080:80", got {_type_name(item)}')
        text = str(item)
        try:
            parse_port(text)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        out.append(text)
    return tuple(out)


def _restart(value: object) -> str:
    text = _string(value)
    mode, _, count = text.partition(":")
    if mode not in ("no", "on-failure", "always", "unless-stopped"):
        raise _Bad(f"invalid restart policy {text!r}: expected no, on-failure[:N], always or unless-stopped")
    if count and (mode != "on-failure" or not count.isdigit() or int(count) > INT32_MAX):
        raise _Bad(f"invalid restart policy {text!r}: only on-failure takes a count (a positive integer)")
    return text


def _signal(value: object) -> str:
    """A signal name (SIGTERM, TERM, SIGRTMIN+3) or number, as the agent takes --stop-signal."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _string(value)
    name = text.strip().upper()
    if name.isdigit():
        if not 1 <= int(name) <= 64:
            raise _Bad(f"invalid signal {text!r}: numbers go from 1 to 64")
        return text
    full = name if name.startswith("SIG") else "SIG" + name
    if not (full in signal.Signals.__members__ or re.fullmatch(r"SIGRTM(IN\+|AX-)\d+", full)):
        raise _Bad(f"invalid signal {text!r}: not a known signal name or number")
    return text


def _file_mode(value: object) -> int:
    """A file mode: an integer written in octal (0o400) or a string of octal digits ("0400")."""
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{1,3}", value):
        return int(value, 8)
    value = _integer(0, 0o777)(value)
    return int(value)


def _image(value: object) -> str:
    text = _string(value)
    try:
        reference.parse(text)
    except InvalidArgument as exc:
        raise _Bad(str(exc)) from None
    return text


# key in the file → (ContainerConfig field, check)
_OPTIONS: dict[str, tuple[str, Callable[[object], Any]]] = {
    "image": ("image", _image),
    "command": ("command", _argv),
    "entrypoint": ("entrypoint", _string),
    "env": ("env", lambda v: _pairs(v, "environment variables")),
    "env_file": ("env_file", lambda v: (v,) if isinstance(v, str) else _strings(v)),
    "workdir": ("workdir", _string),
    "user": ("user", _string),
    "hostname": ("hostname", _string),
    "labels": ("labels", _labels),
    "volumes": ("volumes", _strings),
    "mounts": ("mounts", _strings),
    "tmpfs": ("tmpfs", _strings),
    "memory": ("memory", _units(units.parse_memory, "a size such as 256m")),
    "memory_swap": ("memory_swap", _units(units.parse_memory_swap, "a size such as 512m")),
    "cpus": ("cpus", _units(units.parse_cpus, "a number of CPUs such as 0.5")),
    "cpu_shares": ("cpu_shares", _integer(0, INT64_MAX)),
    "pids_limit": ("pids_limit", _integer(-1, INT64_MAX)),
    "ulimits": ("ulimits", _strings),
    "restart": ("restart", _restart),
    "no_healthcheck": ("no_healthcheck", _boolean),
    "interactive": ("interactive", _boolean),
    "tty": ("tty", _boolean),
    "network": ("network", _string),
    "ports": ("publish", _ports),
    "ip": ("ip", _string),
    "network_aliases": ("network_aliases", _strings),
    "privileged": ("privileged", _boolean),
    "cap_add": ("cap_add", _strings),
    "cap_drop": ("cap_drop", _strings),
    "read_only": ("read_only", _boolean),
    "security_opt": ("security_opt", _strings),
    "stop_signal": ("stop_signal", _signal),
    "stop_timeout": ("stop_timeout", _integer(0, INT32_MAX)),
}
# the run flags' own spellings
_ALIASES = {
    "label": "labels",
    "volume": "volumes",
    "mount": "mounts",
    "ulimit": "ulimits",
    "publish": "ports",
    "network_alias": "network_aliases",
    "net": "network",
}
_HEALTH: dict[str, tuple[str, Callable[[object], Any]]] = {
    "cmd": ("health_cmd", _argv),
    "interval": ("health_interval", _duration),
    "timeout": ("health_timeout", _duration),
    "retries": ("health_retries", _integer(0, INT32_MAX)),
    "start_period": ("health_start_period", _duration),
}
_REFUSED = {
    "name": "the agent names a release's containers RELEASE-CONTAINER-rREVISION",
    "rm": "a release keeps its containers to go back to (no --rm)",
    "auto_remove": "a release keeps its containers to go back to (no --rm)",
    "detach": "a release's containers always run detached",
}
_CONTAINER_KEYS = sorted({*_OPTIONS, *_ALIASES, "health", "depends_on", "secrets", "update_lock"})
_SECRET_KEYS = ("name", "target", "mode", "uid", "gid")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if key.startswith("health_") and key[7:] in _HEALTH:
        return f" (write it as {key[7:]} in the container's [health] table)"
    return f" (did you mean {close[0]}?)" if close else ""


class _Parser:
    def __init__(self, source: str, lines: _KeyLines, base_dir: Path) -> None:
        self.source = source
        self.lines = lines
        self.base_dir = base_dir

    def error(self, path: tuple[str, ...], problem: str) -> SpecError:
        return SpecError(self.source, self.lines.line(path), ".".join(path), problem)

    def release(self, raw: dict[str, Any]) -> Release:
        for key in raw:
            if key not in ("name", "containers"):
                raise self.error((key,), "unknown key" + _did_you_mean(key, ["name", "containers"]))
        if "name" not in raw:
            raise self.error(("name",), 'missing (the release name, e.g. name = "web")')
        name = self.checked(("name",), raw["name"], _string)
        if not NAME_RE.match(name):
            raise self.error(("name",), f"invalid release name {name!r}: expected [a-z0-9][a-z0-9_.-]*, 1-63")
        tables = raw.get("containers", {})
        if not isinstance(tables, dict):
            raise self.error(("containers",), f"expected a table, got {_type_name(tables)}")
        if not tables:
            raise self.error(("containers",), "the release has no containers (add a [containers.NAME] table)")
        containers = tuple(self.container(cname, spec) for cname, spec in tables.items())
        self.check_dependencies(containers)
        self.check_ports(containers)
        return Release(name, containers, self.source, self.lines)

    def checked(self, path: tuple[str, ...], value: object, check: Callable[[object], Any]) -> Any:
        try:
            return check(value)
        except _Bad as exc:
            raise self.error(path, str(exc)) from None

    def container(self, name: str, spec: object) -> ReleaseContainer:
        where = ("containers", name)
        if not NAME_RE.match(name):
            raise self.error(where, f"invalid container name {name!r}: expected [a-z0-9][a-z0-9_.-]*, 1-63")
        if not isinstance(spec, dict):
            raise self.error(where, f"expected a table, got {_type_name(spec)}")
        fields: dict[str, Any] = {}
        written: dict[str, str] = {}  # canonical key → as written
        depends_on: tuple[str, ...] = ()
        secrets: tuple[SecretUse, ...] = ()
        update_lock = False
        for key, value in spec.items():
            path = (*where, key)
            canonical = _ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
            if canonical in written:
                raise self.error(path, f"set twice (also as {written[canonical]})")
            written[canonical] = key
            if canonical in _REFUSED:
                raise self.error(path, f"not allowed in a release: {_REFUSED[canonical]}")
            if canonical == "health":
                fields.update(self.health(path, value))
            elif canonical == "depends_on":
                depends_on = self.checked(path, value, _strings)
            elif canonical == "secrets":
                secrets = self.secrets(path, value)
            elif canonical == "update_lock":
                update_lock = self.checked(path, value, _boolean)
            elif canonical in _OPTIONS:
                field, check = _OPTIONS[canonical]
                fields[field] = self.checked(path, value, check)
            else:
                raise self.error(path, "unknown key" + _did_you_mean(key, _CONTAINER_KEYS))
        if "image" not in fields:
            raise self.error((*where, "image"), "missing (every container needs an image)")
        if fields.get("no_healthcheck") and "health_cmd" in fields:
            raise self.error((*where, written["no_healthcheck"]), "conflicts with the [health] table")
        env_files = fields.pop("env_file", ())
        env = fields.pop("env", ())
        if env_files or env:
            try:
                fields["env"] = resolve_env(env, tuple(str(self.base_dir / f) for f in env_files))
            except ControllerError as exc:
                raise self.error((*where, written.get("env_file", "env")), exc.message) from None
        image = fields.pop("image")
        command = fields.pop("command", ())
        config = ContainerConfig(image, command, **fields)
        return ReleaseContainer(name, config, depends_on, secrets, update_lock)

    def secrets(self, path: tuple[str, ...], value: object) -> tuple[SecretUse, ...]:
        """`secrets = ["db_password"]` or `[[containers.C.secrets]]` tables (name, target, mode, uid, gid)."""
        if not isinstance(value, list):
            raise self.error(path, f"expected an array of secret names or tables, got {_type_name(value)}")
        out: list[SecretUse] = []
        for item in value:
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict):
                raise self.error(path, f"expected a secret name or a table, got {_type_name(item)}")
            for key in item:
                if key not in _SECRET_KEYS:
                    raise self.error((*path, key), "unknown key" + _did_you_mean(key, list(_SECRET_KEYS)))
            if "name" not in item:
                raise self.error((*path, "name"), "missing (the secret's name)")
            name = self.checked((*path, "name"), item["name"], _string)
            target = self.checked((*path, "target"), item.get("target", name), _string)
            for what, text in (("name", name), ("target", target)):
                if not SECRET_NAME_RE.match(text):
                    raise self.error(
                        (*path, what), f"invalid secret {what} {text!r}: expected [A-Za-z0-9][A-Za-z0-9_.-]*"
                    )
            use = SecretUse(
                name,
                target,
                self.checked((*path, "mode"), item.get("mode", 0o400), _file_mode),
                self.checked((*path, "uid"), item.get("uid", 0), _integer(0, (1 << 32) - 2)),
                self.checked((*path, "gid"), item.get("gid", 0), _integer(0, (1 << 32) - 2)),
            )
            if any(u.target == use.target for u in out):
                raise self.error(path, f"two secrets would be the file /run/secrets/{use.target}")
            out.append(use)
        return tuple(out)

    def health(self, path: tuple[str, ...], value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(
                path,
                f"expected a table (cmd, interval, timeout, retries, start_period), got {_type_name(value)}",
            )
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key not in _HEALTH:
                raise self.error((*path, key), "unknown key" + _did_you_mean(key, sorted(_HEALTH)))
            field, check = _HEALTH[key]
            out[field] = self.checked((*path, key), item, check)
        cmd: tuple[str, ...] | None = out.pop("health_cmd", None)
        if not cmd:
            raise self.error((*path, "cmd"), "missing (a health check needs a command)")
        # Docker's forms: ["CMD", argv...], ["CMD-SHELL", "line"], ["NONE"]; else an argv (exec form).
        # The wire carries a shell line (the agent runs CMD-SHELL), so an argv is quoted into one.
        if cmd[0] == "NONE":
            return {"no_healthcheck": True}
        if cmd[0] == "CMD-SHELL":
            out["health_cmd"] = " ".join(cmd[1:])
        else:
            out["health_cmd"] = shlex.join(cmd[1:] if cmd[0] == "CMD" else cmd)
        if not out["health_cmd"]:
            raise self.error((*path, "cmd"), "empty command")
        return out

    def check_dependencies(self, containers: tuple[ReleaseContainer, ...]) -> None:
        names = {c.name for c in containers}
        deps = {c.name: c.depends_on for c in containers}
        for c in containers:
            path = ("containers", c.name, "depends_on")
            for dep in c.depends_on:
                if dep not in names:
                    hint = _did_you_mean(dep, sorted(names))
                    raise self.error(path, f"unknown container {dep!r}{hint}")
        cycle = _find_cycle(deps)
        if cycle:
            raise self.error(("containers", cycle[0], "depends_on"), "dependency cycle " + " → ".join(cycle))

    def check_ports(self, containers: tuple[ReleaseContainer, ...]) -> None:
        seen: list[tuple[PortSpec, str, str]] = []
        for c in containers:
            for text in c.config.publish:
                port = parse_port(text)
                for other, owner, other_text in seen:
                    if port.clashes(other):
                        path = ("containers", c.name, _written_key(self.lines, c.name, "ports"))
                        by = "this container" if owner == c.name else f"containers.{owner}"
                        raise self.error(
                            path,
                            f"host port {port.host_port}/{port.protocol} of {text!r} is also "
                            f"published by {by} ({other_text!r})",
                        )
                seen.append((port, c.name, text))


def _written_key(lines: _KeyLines, container: str, canonical: str) -> str:
    """`ports` or `publish`, whichever the file used (for the error's key and line)."""
    for key in [canonical, *(k for k, v in _ALIASES.items() if v == canonical)]:
        if lines.has(("containers", container, key)):
            return key
    return canonical


def _find_cycle(deps: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The first dependency cycle (depth first, in file order) as a path a → … → a; [] when none."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(name: str) -> list[str]:
        stack.append(name)
        for dep in deps[name]:
            if dep in stack:
                return [*stack[stack.index(dep) :], dep]
            if dep not in done and (found := visit(dep)):
                return found
        stack.pop()
        done.add(name)
        return []

    for name in deps:
        if name not in done and (found := visit(name)):
            return found
    return []
