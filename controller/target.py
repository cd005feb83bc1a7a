"""Where a command goes: a unix socket or HOST:PORT over mutual TLS.

Accepted forms: `unix:///path`, `tcp://HOST[:PORT]`, `HOST[:PORT]`, `[v6addr]:PORT`; nothing means
`$DOCKYARD_HOST`, else the local socket. Inventory names and groups are resolved before this layer.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from controller.config import DEFAULT_PORT, DEFAULT_SOCKET, ENV_HOST
from controller.errors import UsageError


@dataclass(frozen=True)
class Target:
    """One agent endpoint. `name` is what the user sees (inventory name or the address as typed)."""

    name: str
    kind: str  # "unix" | "tcp"
    address: str  # socket path for unix, host for tcp
    port: int = 0

    @property
    def grpc_target(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.address}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def parse(value: str, name: str | None = None) -> Target:
    text = value.strip()
    if not text:
        raise UsageError("empty host")
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path.startswith("/"):
            raise UsageError(f"{value!r}: unix socket path must be absolute (unix:///path)")
        return Target(name=name or text, kind="unix", address=path)
    if text.startswith("tcp://"):
        text = text[len("tcp://") :]
    host, port = _split(text)
    return Target(name=name or value, kind="tcp", address=host, port=port)


def _split(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
        if text.count(":") > 1:
            ipaddress.IPv6Address(text)  # bare IPv6 without port
    if port_text and not port_text.isdigit():
        raise UsageError(f"{text!r}: port must be a number")
    port = int(port_text) if port_text else DEFAULT_PORT
    if not 0 < port < 65536:
        raise UsageError(f"{text!r}: port out of range")
    if not host:
        raise UsageError(f"{text!r}: missing host")
    return host, port


def default() -> Target:
    env = os.environ.get(ENV_HOST)
    if env:
        return parse(env)
    return Target(name="local", kind="unix", address=DEFAULT_SOCKET)
