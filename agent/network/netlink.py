"""Netlink adapter: the only module that imports pyroute2.

Everything here is a thin, typed wrapper over `pyroute2.IPRoute`. pyroute2's calls are synchronous, so each
public coroutine runs one short sync function in `asyncio.to_thread`. `NetlinkError`/`OSError` are
translated once, here, into `NetworkSetup` (or `NotFound` for a missing link).

Configuring the inside of a container's network namespace needs a netlink socket *in* that namespace.
pyroute2's own `netns=` support forks a helper process, which is slow and unsafe in a threaded gRPC
server; instead a fresh short-lived thread `setns()`s itself into the namespace (setns changes only the
calling thread), opens the socket and exits. The socket stays bound to that namespace; the thread pool
of the event loop is never moved out of the host namespace.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from agent.errors import NetworkSetup, NotFound

T = TypeVar("T")

IFNAMSIZ = 15  # the kernel's limit on interface names, without the NUL
NETLINK_ROUTE = 0


@dataclass(frozen=True)
class VethSpec:
    """One container endpoint: a veth pair from `bridge` into the namespace at `netns_path`."""

    host_name: str
    bridge: str
    netns_path: str
    mac: str
    address: IPv4Interface
    # The default route goes via this gateway; None leaves routing inside the namespace alone
    # (a second network joined with `connect` only gets its subnet route).
    gateway: IPv4Address | None
    mtu: int = 1500


async def _run(action: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one sync pyroute2 job off the loop; foreign errors become `NetworkSetup` naming `action`."""
    try:
        return await asyncio.to_thread(fn, *args)
    except (NetlinkError, OSError) as exc:
        raise _error(action, exc) from exc


def _error(action: str, exc: BaseException) -> NetworkSetup:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
    return NetworkSetup(f"{action}: {reason}")


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _socket_in_netns(path: str) -> socket.socket:
    """A NETLINK_ROUTE socket living in the namespace at `path` (see the module docstring)."""
    result: list[socket.socket | BaseException] = []

    def enter_and_open() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                pyroute2_netns.setns(fd, flags=0)
            finally:
                os.close(fd)
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    worker = threading.Thread(target=enter_and_open, name="netns-socket", daemon=True)
    worker.start()
    worker.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        if isinstance(outcome, FileNotFoundError):
            raise NotFound(f"network namespace {path} does not exist") from outcome
        raise _error(f"enter network namespace {path}", outcome) from outcome
    return outcome


# --- bridges -------------------------------------------------------------------------------------------


def _ensure_bridge(name: str, gateway: IPv4Interface, mtu: int) -> None:
    with IPRoute() as ipr:
        index = _index(ipr, name)
        if index is None:
            try:
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise _error(f"create bridge {name}", exc) from exc
            index = _index(ipr, name)
            if index is None:
                raise NetworkSetup(f"bridge {name} vanished right after creation")
        have = {
            (a.get("address"), a.get("prefixlen")) for a in ipr.get_addr(index=index, family=socket.AF_INET)
        }
        if (str(gateway.ip), gateway.network.prefixlen) not in have:
            try:
                ipr.addr("add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise _error(f"add {gateway} to bridge {name}", exc) from exc
        ipr.link("set", index=index, state="up")


async def ensure_bridge(name: str, gateway: IPv4Interface, mtu: int = 1500) -> None:
    """Create bridge `name` if missing, give it the gateway address, bring it up. Idempotent."""
    await _run(f"set up bridge {name}", _ensure_bridge, name, gateway, mtu)


def _delete_link(name: str) -> bool:
    with IPRoute() as ipr:
        index = _index(ipr, name)
        if index is None:
            return False
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise _error(f"delete link {name}", exc) from exc
        return True


async def delete_link(name: str) -> bool:
    """Delete a link (bridge or veth, which takes its peer along); False when it did not exist."""
    return await _run(f"delete link {name}", _delete_link, name)


def _link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return _index(ipr, name) is not None


async def link_exists(name: str) -> bool:
    return await _run(f"look up link {name}", _link_exists, name)


# --- endpoints -----------------------------------------------------------------------------------------


def _free_ifname(ns: IPRoute) -> str:
    taken = {str(link.get("ifname")) for link in ns.get_links()}
    n = 0
    while f"eth{n}" in taken:
        n += 1
    return f"eth{n}"


def _attach_veth(spec: VethSpec) -> str:
    sock = _socket_in_netns(spec.netns_path)
    with IPRoute(use_socket=sock) as ns:
        ifname = _free_ifname(ns)
        with IPRoute() as ipr:
            bridge = _index(ipr, spec.bridge)
            if bridge is None:
                raise NetworkSetup(f"bridge {spec.bridge} does not exist")
            ns_fd = os.open(spec.netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link(
                    "add",
                    ifname=spec.host_name,
                    kind="veth",
                    mtu=spec.mtu,
                    peer={"ifname": ifname, "net_ns_fd": ns_fd, "address": spec.mac, "mtu": spec.mtu},
                )
            except NetlinkError as exc:
                raise _error(f"create veth {spec.host_name}", exc) from exc
            finally:
                os.close(ns_fd)
            host = _index(ipr, spec.host_name)
            if host is None:
                raise NetworkSetup(f"veth {spec.host_name} vanished right after creation")
            try:
                ipr.link("set", index=host, master=bridge)
                # hairpin: a container reaching its own published port through a host address gets the
                # DNATed packet back out of the port it came in by
                ipr.brport("set", index=host, mode=1)
                ipr.link("set", index=host, state="up")
            except NetlinkError as exc:
                ipr.link("del", index=host)
                raise _error(f"plug {spec.host_name} into {spec.bridge}", exc) from exc
        try:
            inner = _index(ns, ifname)
            if inner is None:
                raise NetworkSetup(f"{ifname} did not appear in {spec.netns_path}")
            ip, plen = str(spec.address.ip), spec.address.network.prefixlen
            ns.addr("add", index=inner, address=ip, prefixlen=plen)
            ns.link("set", index=inner, state="up")
            lo = _index(ns, "lo")
            if lo is not None:
                ns.link("set", index=lo, state="up")
            if spec.gateway is not None:
                ns.route("replace", dst="0.0.0.0/0", gateway=str(spec.gateway), oif=inner)
        except NetlinkError as exc:
            _delete_link(spec.host_name)
            raise _error(f"configure {ifname} in {spec.netns_path}", exc) from exc
    return ifname


async def attach_veth(spec: VethSpec) -> str:
    """Create the veth pair, plug the host end into the bridge and configure the namespace end.

    Returns the interface name inside the namespace (eth0, eth1, ...). On failure nothing is left behind.
    """
    return await _run(f"attach {spec.host_name}", _attach_veth, spec)
