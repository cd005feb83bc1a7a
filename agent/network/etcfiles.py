"""The per-container /etc/hosts, /etc/hostname and /etc/resolv.conf: rendering (pure) and writing.

The container manager owns the files (it creates them with the bundle, bind-mounts them over the image's
and deletes them with the container) and hands their paths to `attach`; for a networked container the
network manager owns their content from then on.

Name resolution on user-defined networks is done by rewriting the hosts files of every container on a
network whenever a member joins or leaves, not by an embedded DNS responder: it needs no
listener reachable from containers (no port 53 on the gateway, no extra input rules), and resolution keeps
working while the agent is down or restarting. The cost is that DNS-only tools (nslookup, dig) don't see
container names; getaddrinfo — which wget, nc, curl and language runtimes use — reads the hosts file.

Because a bind mount pins the inode, the files are updated IN PLACE (write the new bytes at offset 0, then
truncate), never replaced by rename; a reader racing a rewrite sees the old or new entries of a line, and
the whole file is a few hundred bytes written with one pwrite.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from pathlib import Path

_HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


@dataclass(frozen=True)
class HostEntry:
    address: IPv4Address
    names: tuple[str, ...]


@dataclass(frozen=True)
class EtcPaths:
    hosts: Path
    hostname: Path
    resolv_conf: Path


def render_hosts(own: Iterable[HostEntry], peers: Iterable[HostEntry]) -> str:
    """The container's own names first, then every peer reachable by name; duplicate lines dropped."""
    lines = [_HOSTS_HEADER]
    seen: set[str] = set()
    for entry in (*own, *peers):
        names = " ".join(dict.fromkeys(n for n in entry.names if n))
        line = f"{entry.address}\t{names}\n"
        if names and line not in seen:
            seen.add(line)
            lines.append(line)
    return "".join(lines)


def render_resolv_conf(host_resolv_conf: str) -> str:
    """The host's resolver settings minus loopback nameservers, which mean nothing inside a container."""
    out: list[str] = []
    for raw in host_resolv_conf.splitlines():
        parts = raw.split()
        if parts and parts[0] == "nameserver" and len(parts) > 1:
            try:
                if ip_address(parts[1].split("%")[0]).is_loopback:
                    continue
            except ValueError:
                continue
        out.append(raw)
    return "\n".join(out).strip() + "\n" if out else ""


def write_in_place(path: Path, text: str) -> None:
    """Replace the content without replacing the inode (see the module docstring)."""
    data = text.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # any user in the container reads it, whatever the agent's umask (0077)
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def read_host_resolv_conf(path: Path = Path("/etc/resolv.conf")) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def write_all(paths: EtcPaths, hostname: str, hosts: str, resolv_conf: str) -> None:
    write_in_place(paths.hostname, hostname + "\n")
    write_in_place(paths.resolv_conf, resolv_conf)
    write_in_place(paths.hosts, hosts)


def update_hosts(path: Path, hosts: str) -> None:
    """Refresh a peer's hosts file; a file that is gone (container removed meanwhile) is skipped."""
    if path.exists():
        write_in_place(path, hosts)
