"""The fleet inventory: hosts, groups and labels in one TOML file, and the selection of targets from `-H`.

Example `$DOCKYARD_CONFIG_DIR/inventory.toml`:

    [hosts.edge-1]
    address = "192.0.2.5"          # agent port defaults to 7443
    port = 7443
    ssh_user = "root"
    ssh_port = 22
    ssh_key = "~/.ssh/id_ed25519"
    labels = { arch = "arm64", site = "lab" }

    [hosts.edge-1.vars]             # per-host values for release files: ${vars.site_id}
    site_id = "n-17"

    [groups]
    edge = ["edge-1", "edge-2"]

    [groups.vars.edge]              # values of every host of group edge (`vars` is not a group name)
    upstream = "https://north.example"
    apply_window = "Sat 02:00-04:00"

    [vars]                          # defaults for every host
    upstream = "https://central.example"

A target (`-H`) is a host name, `@group`, `all`, an address (`HOST`, `HOST:PORT`, `unix:///path`),
`NAME=ADDRESS[:PORT]` (a named host not yet in the inventory, as bootstrap takes it), or a comma list;
`--selector key=value` keeps only hosts whose labels match. The file is rewritten atomically when
bootstrap records a host (keeping its vars).

A host's values (`Host.values`, what `${vars.KEY}` renders to in a release file) are the defaults, then
the vars of each group it belongs to in the order the groups are written (a later group wins), then the
host's own vars: host > group > defaults. Values are strings (integers and booleans are taken as text).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.oci.files import write_atomic
from controller.config import DEFAULT_PORT
from controller.errors import ControllerError
from controller.target import Target

INVENTORY_FILE = "inventory.toml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOST_KEYS = {"address", "port", "ssh_user", "ssh_port", "ssh_key", "labels", "vars"}
_VAR_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class InventoryError(ControllerError):
    """The inventory file or a target expression is invalid."""


@dataclass(frozen=True)
class Host:
    """One managed (or ad hoc) host; `target` is what the gRPC client dials."""

    name: str
    address: str
    port: int = DEFAULT_PORT
    ssh_user: str = "root"
    ssh_port: int = 22
    ssh_key: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    vars: Mapping[str, str] = field(default_factory=dict)  # its own `[hosts.NAME.vars]`
    # the effective values (defaults < groups < own vars), filled by `select`; not part of equality
    values: Mapping[str, str] = field(default_factory=dict, compare=False)
    groups: tuple[str, ...] = field(default=(), compare=False)  # its groups in file order, by `select`

    @property
    def target(self) -> str:
        if self.address.startswith("unix:"):
            return self.address
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Inventory:
    hosts: Mapping[str, Host] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    group_vars: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # `[groups.vars.NAME]`
    defaults: Mapping[str, str] = field(default_factory=dict)  # `[vars]`

    def values_of(self, host: Host) -> dict[str, str]:
        """The host's values: defaults, then its groups' vars in file order, then its own vars."""
        out = dict(self.defaults)
        for group, members in self.groups.items():
            if host.name in members:
                out.update(self.group_vars.get(group, {}))
        out.update(host.vars)
        return out

    def with_host(self, host: Host) -> Inventory:
        """A copy in which `host` is added or replaced (by name)."""
        hosts = dict(self.hosts)
        hosts[host.name] = host
        return replace(self, hosts=hosts)


def default_path() -> Path:
    base = os.environ.get("DOCKYARD_CONFIG_DIR")
    return (Path(base) if base else Path.home() / ".config" / "dockyard") / INVENTORY_FILE


def load(path: Path) -> Inventory:
    """Read the inventory; a missing file is an empty inventory (ad hoc addresses still work)."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Inventory()
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InventoryError(f"inventory {path}: {exc}") from exc
    return parse(raw, source=str(path))


def parse(raw: Mapping[str, Any], source: str = "inventory") -> Inventory:
    """Validate a decoded TOML document into an Inventory; every problem names where it is."""
    unknown = sorted(set(raw) - {"hosts", "groups", "vars"})
    if unknown:
        raise InventoryError(f"{source}: unknown table(s): {', '.join(unknown)}")
    hosts: dict[str, Host] = {}
    for name, spec in _table(raw.get("hosts", {}), f"{source}: hosts").items():
        hosts[name] = _parse_host(name, _table(spec, f"{source}: hosts.{name}"), source)
    groups: dict[str, tuple[str, ...]] = {}
    group_vars: dict[str, dict[str, str]] = {}
    for name, members in _table(raw.get("groups", {}), f"{source}: groups").items():
        where = f"{source}: groups.{name}"
        if name == "vars":
            for group, values in _table(members, where).items():
                group_vars[group] = _vars(values, f"{where}.{group}")
            continue
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise InventoryError(f"{where} must be a list of host names")
        missing = [m for m in members if m not in hosts]
        if missing:
            raise InventoryError(f"{where}: unknown host(s): {', '.join(missing)}")
        if name == "all":
            raise InventoryError(f"{where}: 'all' is reserved")
        groups[name] = tuple(members)
    unknown = sorted(set(group_vars) - set(groups))
    if unknown:
        raise InventoryError(f"{source}: groups.vars: unknown group(s): {', '.join(unknown)}")
    defaults = _vars(raw.get("vars", {}), f"{source}: vars")
    return Inventory(hosts=hosts, groups=groups, group_vars=group_vars, defaults=defaults)


def _vars(value: Any, where: str) -> dict[str, str]:
    """A vars table: KEY = string (integers and booleans as their TOML text)."""
    out: dict[str, str] = {}
    for key, item in _table(value, where).items():
        if not _VAR_KEY_RE.match(key):
            raise InventoryError(f"{where}: invalid key {key!r}: expected [A-Za-z_][A-Za-z0-9_.-]*")
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            out[key] = str(item)
        else:
            raise InventoryError(f"{where}.{key} must be a string, a number or a boolean")
    return out


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InventoryError(f"{where} must be a table")
    return value


def _parse_host(name: str, spec: Mapping[str, Any], source: str) -> Host:
    where = f"{source}: hosts.{name}"
    if not _NAME_RE.match(name) or name == "all":
        raise InventoryError(f"{where}: invalid host name")
    unknown = sorted(set(spec) - _HOST_KEYS)
    if unknown:
        raise InventoryError(f"{where}: unknown key(s): {', '.join(unknown)}")
    address = spec.get("address")
    if not isinstance(address, str) or not address:
        raise InventoryError(f"{where}: address is required")
    port = _port(spec.get("port", DEFAULT_PORT), f"{where}.port")
    ssh_port = _port(spec.get("ssh_port", 22), f"{where}.ssh_port")
    ssh_user = spec.get("ssh_user", "root")
    ssh_key = spec.get("ssh_key")
    if not isinstance(ssh_user, str) or (ssh_key is not None and not isinstance(ssh_key, str)):
        raise InventoryError(f"{where}: ssh_user and ssh_key must be strings")
    labels = spec.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InventoryError(f"{where}.labels must be a table of strings")
    own = _vars(spec.get("vars", {}), f"{where}.vars")
    return Host(name, address, port, ssh_user, ssh_port, ssh_key, dict(labels), own)


def _port(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise InventoryError(f"{where} must be a port number (1-65535)")
    return value


def select(inventory: Inventory, targets: Sequence[str], selectors: Sequence[str] = ()) -> list[Host]:
    """Resolve `-H` values and `--selector key=value` filters into hosts, in order, without duplicates.

    With selectors but no targets, selection starts from every host. An expression that names nothing
    known is taken as an address, so one agent can be reached without an inventory.
    """
    wanted = _parse_selectors(selectors)
    tokens = [t.strip() for value in targets for t in value.split(",")]
    if any(not t for t in tokens):
        raise InventoryError("empty host in target list")
    if not tokens and wanted:
        tokens = ["all"]
    chosen: dict[str, Host] = {}
    for token in tokens:
        for host in _resolve(inventory, token):
            chosen.setdefault(host.name, host)
    hosts = [
        replace(
            h,
            values=inventory.values_of(h),
            groups=tuple(g for g, members in inventory.groups.items() if h.name in members),
        )
        for h in chosen.values()
        if all(h.labels.get(k) == v for k, v in wanted.items())
    ]
    if not hosts:
        what = ", ".join(tokens) + (f" with {', '.join(selectors)}" if selectors else "")
        raise InventoryError(f"no hosts match {what}")
    return hosts


def to_target(host: Host) -> Target:
    """The endpoint the gRPC client dials for `host`, named as the user knows it."""
    if host.address.startswith("unix://"):
        return Target(name=host.name, kind="unix", address=host.address[len("unix://") :])
    return Target(name=host.name, kind="tcp", address=host.address, port=host.port)


def _parse_selectors(selectors: Iterable[str]) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for item in selectors:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise InventoryError(f"invalid selector {part!r}: expected key=value")
            wanted[key.strip()] = value.strip()
    return wanted


def _resolve(inventory: Inventory, token: str) -> list[Host]:
    token = token.removeprefix("tcp://")
    if token == "all":
        if not inventory.hosts:
            raise InventoryError("'all' selects nothing: the inventory has no hosts")
        return list(inventory.hosts.values())
    if token.startswith("@"):
        group = token[1:]
        if group == "all":
            return list(inventory.hosts.values())
        if group not in inventory.groups:
            raise InventoryError(f"unknown group {group!r}")
        return [inventory.hosts[m] for m in inventory.groups[group]]
    if token in inventory.hosts:
        return [inventory.hosts[token]]
    name, sep, address = token.partition("=")
    if sep:  # NAME=ADDRESS[:PORT]: an ad hoc host with a name (how bootstrap names new hosts)
        if not _NAME_RE.match(name) or name == "all" or not address:
            raise InventoryError(f"invalid host {token!r}: expected NAME=ADDRESS[:PORT]")
        known = inventory.hosts.get(name)
        host, port = split_address(address)
        if known is not None:
            return [replace(known, address=host, port=port or known.port)]
        return [Host(name=name, address=host, port=port or DEFAULT_PORT)]
    return [_by_address(inventory, token)]


def _by_address(inventory: Inventory, token: str) -> Host:
    """A known host when the address (and port, if given) matches one; else an ad hoc host."""
    if token.startswith("unix:"):
        return Host(name=token, address=token)
    address, port = split_address(token)
    for host in inventory.hosts.values():
        if host.address == address and (port is None or host.port == port):
            return host
    return Host(name=token, address=address, port=port or DEFAULT_PORT)


def split_address(token: str) -> tuple[str, int | None]:
    """`HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address → (host, port or None)."""
    if token.startswith("["):
        host, sep, rest = token[1:].partition("]")
        if not sep:
            raise InventoryError(f"invalid address {token!r}")
        return host, _port_text(rest[1:], token) if rest.startswith(":") else None
    if token.count(":") == 1:
        host, _, port_text = token.partition(":")
        return host, _port_text(port_text, token)
    return token, None


def _port_text(text: str, token: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InventoryError(f"invalid port in {token!r}")
    return int(text)


def dumps(inventory: Inventory) -> str:
    """Serialize to TOML (the subset this module reads); stable order so diffs stay small."""
    lines: list[str] = []
    for host in inventory.hosts.values():
        lines.append(f"[hosts.{_key(host.name)}]")
        lines.append(f"address = {_str(host.address)}")
        lines.append(f"port = {host.port}")
        lines.append(f"ssh_user = {_str(host.ssh_user)}")
        lines.append(f"ssh_port = {host.ssh_port}")
        if host.ssh_key:
            lines.append(f"ssh_key = {_str(host.ssh_key)}")
        if host.labels:
            pairs = ", ".join(f"{_key(k)} = {_str(v)}" for k, v in sorted(host.labels.items()))
            lines.append(f"labels = {{ {pairs} }}")
        lines.append("")
        if host.vars:
            lines.append(f"[hosts.{_key(host.name)}.vars]")
            lines.extend(f"{_key(k)} = {_str(v)}" for k, v in host.vars.items())
            lines.append("")
    if inventory.groups:
        lines.append("[groups]")
        for name, members in inventory.groups.items():
            lines.append(f"{_key(name)} = [{', '.join(_str(m) for m in members)}]")
        lines.append("")
    for name, values in inventory.group_vars.items():
        lines.append(f"[groups.vars.{_key(name)}]")
        lines.extend(f"{_key(k)} = {_str(v)}" for k, v in values.items())
        lines.append("")
    if inventory.defaults:
        lines.append("[vars]")
        lines.extend(f"{_key(k)} = {_str(v)}" for k, v in inventory.defaults.items())
        lines.append("")
    return "\n".join(lines)


def save(inventory: Inventory, path: Path) -> None:
    write_atomic(path, dumps(inventory).encode(), mode=0o600)


def record(path: Path, host: Host) -> bool:
    """Add or update one host in the file at `path`; False when it was already recorded as is."""
    inventory = load(path)
    known = inventory.hosts.get(host.name)
    if known is not None and not host.vars:
        host = replace(host, vars=known.vars)  # bootstrap knows nothing of vars: keep the file's
    if known == host:
        return False
    save(inventory.with_host(host), path)
    return True


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _str(key)


def _str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
