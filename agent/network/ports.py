"""Published ports: parsing `-p` (pure) and reserving host ports while a mapping exists.

Packets reach a published port through nftables DNAT (`nft.py`), not through a proxy process, so nothing
would otherwise stop a host program from binding the same port (and silently losing its traffic) or a
second container from publishing it. The agent therefore *binds* (never listens on) a socket for each
published host port and holds it: a conflict with anything else on the host is an EADDRINUSE at publish
time, turned into a clear `AlreadyExists`. Binding port 0 lets the kernel pick a free ephemeral port for
`-p CTR_PORT`, as Docker does. After an agent restart the reservations are taken again from the database.
"""

from __future__ import annotations

import errno
import socket
import threading
from ipaddress import IPv4Address

from agent.errors import AlreadyExists, InvalidArgument, NetworkSetup
from agent.network.models import ANY_IP, PortMapping, Protocol


def _port(text: str, what: str, spec: str, allow_zero: bool = False) -> int:
    value = int(text)
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise InvalidArgument(f"invalid -p {spec!r}: {what} {value} is outside 1-65535")
    return value


def parse_publish(spec: str) -> PortMapping:
    """Docker's `-p`: CTR, HOST:CTR, IP:HOST:CTR, IP::CTR, each optionally `/tcp` or `/udp`."""
    body, _, proto_text = spec.strip().partition("/")
    try:
        protocol = Protocol((proto_text or "tcp").lower())
    except ValueError:
        raise InvalidArgument(f"invalid -p {spec!r}: protocol must be tcp or udp") from None
    parts = body.split(":")
    if len(parts) > 3 or not all(p.isdigit() for p in parts[-2:] if p) or not parts[-1]:
        if "-" in body:
            raise InvalidArgument(f"invalid -p {spec!r}: port ranges are not supported")
        raise InvalidArgument(f"invalid -p {spec!r}: expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]")
    host_ip = ANY_IP
    if len(parts) == 3:
        try:
            host_ip = IPv4Address(parts[0])
        except ValueError:
            raise InvalidArgument(f"invalid -p {spec!r}: {parts[0]!r} is not an IPv4 address") from None
    host = parts[-2] if len(parts) >= 2 else ""
    if len(parts) == 2 and not host:
        raise InvalidArgument(f"invalid -p {spec!r}: empty host port")
    return PortMapping(
        container_port=_port(parts[-1], "container port", spec),
        protocol=protocol,
        host_ip=host_ip,
        host_port=_port(host, "host port", spec) if host else 0,
    )


def _kind(protocol: Protocol) -> socket.SocketKind:
    return socket.SOCK_STREAM if protocol is Protocol.TCP else socket.SOCK_DGRAM


class PortReservations:
    """Bound, non-listening sockets holding the host side of each published port."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, IPv4Address, int, Protocol], socket.socket] = {}
        self._lock = threading.Lock()

    def reserve(self, owner: str, mapping: PortMapping) -> PortMapping:
        """Bind the host port (a free one when host_port is 0); returns the mapping with the real port."""
        sock = socket.socket(socket.AF_INET, _kind(mapping.protocol))
        try:
            sock.bind((str(mapping.host_ip), mapping.host_port))
        except OSError as exc:
            sock.close()
            where = f"{mapping.host_ip}:{mapping.host_port}/{mapping.protocol}"
            if exc.errno == errno.EADDRINUSE:
                raise AlreadyExists(f"host port {where} is already in use") from exc
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidArgument(
                    f"cannot publish on {where}: {mapping.host_ip} is not a host address"
                ) from exc
            raise NetworkSetup(f"cannot reserve host port {where}: {exc.strerror}") from exc
        port = int(sock.getsockname()[1])
        key = (owner, mapping.host_ip, port, mapping.protocol)
        with self._lock:
            self._held[key] = sock
        return PortMapping(mapping.container_port, mapping.protocol, mapping.host_ip, port)

    def release(self, owner: str) -> None:
        """Close every reservation of `owner` (a container id)."""
        with self._lock:
            keys = [k for k in self._held if k[0] == owner]
            for key in keys:
                self._held.pop(key).close()

    def close(self) -> None:
        with self._lock:
            for sock in self._held.values():
                sock.close()
            self._held.clear()

    def held(self) -> int:
        with self._lock:
            return len(self._held)
