"""The agent's typed configuration: embedded defaults, overridden by a TOML file, overridden by flags.

Example `/etc/dockyard/agent.toml` (every key optional):

    listen = ["0.0.0.0:7443"]
    tls_dir = "/etc/dockyard/tls"
    socket = "/run/dockyard/agent.sock"
    data_root = "/var/lib/dockyard"
    log_level = "info"
    runtime = "runc"                      # or "crun"
    insecure_registries = ["127.0.0.1:5000"]
    [registry_mirrors]
    "docker.io" = ["https://mirror.example:5000"]
    network_bridge = "dockyard0"          # the default network's bridge
    network_subnet = "10.210.0.0/16"      # the default network's subnet
    network_pool = "10.211.0.0/16"        # user-defined networks get a /24 of this unless --subnet
    network_name_prefix = "dy-"           # prefix of the bridges and veths the agent creates (max 5)
    network_nft_table = "dockyard"        # our nftables table (family inet)
    handshake_timeout = 5.0               # seconds a TCP peer has to finish the TLS handshake
    max_connections = 4096                # TCP connections at once, all peers (at most RLIMIT_NOFILE/4)
    max_connections_per_peer = 256        # TCP connections at once from one source address
    audit = true                          # keep the audit log (agent/audit.py) in audit_dir
    audit_dir = "/var/lib/dockyard/audit" # default <data_root>/audit
    audit_required = false                # true: refuse a call whose audit entry cannot be written
    audit_max_size = 10485760             # rotate audit.log at this size (bytes) ...
    audit_max_files = 5                   # ... keeping this many older files
    labels = { site = "lab" }             # this host's labels, for certificate scopes (bootstrap writes them)
    policy_file = "/etc/dockyard/policy.toml"  # image trust policy (default <config_dir>/policy.toml)
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import InvalidArgument

DEFAULT_PORT = 7443
DEFAULT_CONFIG_DIR = Path("/etc/dockyard")
DEFAULT_SOCKET = Path("/run/dockyard/agent.sock")
DEFAULT_DATA_ROOT = Path("/var/lib/dockyard")


@dataclass(frozen=True)
class AgentConfig:
    listen: tuple[str, ...] = ()
    tls_dir: Path = DEFAULT_CONFIG_DIR / "tls"
    socket: Path | None = DEFAULT_SOCKET
    data_root: Path = DEFAULT_DATA_ROOT
    config_dir: Path = DEFAULT_CONFIG_DIR
    log_level: str = "info"
    runtime: str = "runc"
    insecure_registries: tuple[str, ...] = ()
    registry_mirrors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    max_concurrent_downloads: int = 3  # layers fetched at once by one pull
    # network (agent/network): see the example above
    network_bridge: str = "dockyard0"
    network_subnet: str = "10.210.0.0/16"
    network_pool: str = "10.211.0.0/16"
    network_name_prefix: str = "dy-"
    network_nft_table: str = "dockyard"
    # containers (agent/containers): runtime state + conmon sockets live under exec_root
    # (default <data_root>/run); container cgroups under cgroup_parent; logs rotate at the size limit
    exec_root: Path | None = None
    cgroup_parent: str = "/dockyard"
    container_log_max_size: int = 10 * 1024 * 1024
    container_log_max_files: int = 3
    stop_timeout: int = 10
    # TCP listeners (agent/server/connlimit.py): a peer that has not finished its TLS handshake in
    # handshake_timeout seconds is dropped; connections beyond the caps are refused (unix socket: no cap)
    handshake_timeout: float = 5.0
    max_connections: int = 4096
    max_connections_per_peer: int = 256
    # audit log (agent/audit.py) and certificate scopes (agent/server/permissions.py)
    audit: bool = True
    audit_dir: Path | None = None
    audit_required: bool = False
    audit_max_size: int = 10 * 1024 * 1024
    audit_max_files: int = 5
    labels: dict[str, str] = field(default_factory=dict)
    # image trust policy (agent/trust/policy.py); None: <config_dir>/policy.toml. No file: accept everything
    policy_file: Path | None = None

    def with_overrides(self, **overrides: Any) -> AgentConfig:
        """Return a copy with every non-None override applied (flags beat the file)."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **values)


_PATH_KEYS = {"tls_dir", "socket", "data_root", "config_dir", "exec_root", "audit_dir", "policy_file"}
_TUPLE_KEYS = {"listen", "insecure_registries"}


def load(path: Path | None) -> AgentConfig:
    """Read a TOML config file; None gives the embedded defaults. Unknown keys are an error."""
    if path is None:
        return AgentConfig()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InvalidArgument(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"config file {path}: {exc}") from exc
    return from_mapping(raw, source=str(path))


def from_mapping(raw: dict[str, Any], source: str = "config") -> AgentConfig:
    known = {f.name for f in dataclasses.fields(AgentConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidArgument(f"{source}: unknown key(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _PATH_KEYS:
            values[key] = Path(value) if value else None
        elif key in _TUPLE_KEYS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidArgument(f"{source}: {key} must be a list of strings")
            values[key] = tuple(value)
        elif key == "registry_mirrors":
            if not isinstance(value, dict):
                raise InvalidArgument(f"{source}: registry_mirrors must be a table")
            values[key] = {str(k): tuple(v) for k, v in value.items()}
        elif key == "labels":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise InvalidArgument(f"{source}: labels must be a table of strings")
            values[key] = dict(value)
        else:
            values[key] = value
    return AgentConfig(**values)
