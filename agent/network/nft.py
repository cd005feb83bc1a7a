"""Packet filtering and NAT for container networks, in one nftables table the agent owns.

The whole table is rebuilt from the manager's state on every change and loaded in ONE `nft -j -f -`
transaction (`add table; delete table; add table; chains; rules`): the kernel swaps it atomically, a
rebuild at start-up repairs whatever a crash left, and nothing outside our table is ever touched. Existing
connections survive a rebuild because NAT bindings live in conntrack, not in the rules.

Rules (family inet, IPv4 matches):
- postrouting: masquerade each non-internal subnet's traffic leaving by another interface (egress shows
  the host's address); masquerade 127.0.0.0/8 sources entering a bridge (published ports used through
  localhost, together with route_localnet on the bridge) and DNATed same-subnet traffic (a container
  using a sibling's published port through a host address; replies must come back through the host).
- prerouting/output: DNAT each published port. `HOST_IP` 0.0.0.0 matches any local address
  (`fib daddr type local`) — in output this includes 127.0.0.1 and the gateway, so the host itself can
  use the port; prerouting excludes 127.0.0.0/8 so forged packets to loopback from the wire are never
  DNATed (a known Docker weakness). A loopback HOST_IP is matched in output only.
- forward: per network X — same-network traffic passes; into X only replies and DNATed (published)
  connections; everything else into X is dropped, which isolates networks from each other and from
  routed outsiders; an internal network also drops everything leaving X (no egress).

Why kernel DNAT and not a userland proxy: no process or copy per connection, the client's address is
kept for connections from other hosts, and mappings keep working while the agent is down or restarting.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import shutil
import threading
from collections.abc import Iterable
from ipaddress import IPv4Network
from typing import Any

from agent.errors import NetworkSetup
from agent.network.models import ANY_IP, Network, PublishedPort

Json = dict[str, Any]
LOOPBACK = IPv4Network("127.0.0.0/8")
_CHAINS = (
    ("prerouting", "nat", "prerouting", -100),
    ("output", "nat", "output", -100),
    ("postrouting", "nat", "postrouting", 100),
    ("forward", "filter", "forward", 0),
)


def _eq(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _field(protocol: str, name: str) -> Json:
    return {"payload": {"protocol": protocol, "field": name}}


def _prefix(net: IPv4Network) -> Json:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


_LOCAL_DST = _eq({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
_MASQUERADE: Json = {"masquerade": None}
_ACCEPT: Json = {"accept": None}
_DROP: Json = {"drop": None}


def _network_rules(net: Network) -> list[tuple[str, list[Json], str]]:
    br = net.bridge
    subnet = _prefix(net.subnet)
    rules: list[tuple[str, list[Json], str]] = []
    if not net.internal:
        rules.append(
            (
                "postrouting",
                [_eq(_field("ip", "saddr"), subnet), _eq(_meta("oifname"), br, "!="), _MASQUERADE],
                "",
            )
        )
    rules += [
        (
            "postrouting",
            [_eq(_meta("oifname"), br), _eq(_field("ip", "saddr"), _prefix(LOOPBACK)), _MASQUERADE],
            "",
        ),
        (
            "postrouting",
            [
                _eq(_meta("oifname"), br),
                _eq({"ct": {"key": "status"}}, "dnat", "in"),
                _eq(_field("ip", "saddr"), subnet),
                _MASQUERADE,
            ],
            "",
        ),
        ("forward", [_eq(_meta("iifname"), br), _eq(_meta("oifname"), br), _ACCEPT], ""),
        (
            "forward",
            [
                _eq(_meta("oifname"), br),
                _eq({"ct": {"key": "state"}}, ["established", "related"], "in"),
                _ACCEPT,
            ],
            "",
        ),
    ]
    if not net.internal:
        rules.append(
            (
                "forward",
                [_eq(_meta("oifname"), br), _eq({"ct": {"key": "status"}}, "dnat", "in"), _ACCEPT],
                "",
            )
        )
    rules.append(("forward", [_eq(_meta("oifname"), br), _DROP], ""))
    if net.internal:
        rules.append(("forward", [_eq(_meta("iifname"), br), _DROP], ""))
    return rules


def _port_rules(port: PublishedPort) -> list[tuple[str, list[Json], str]]:
    m = port.mapping
    dport = _eq(_field(str(m.protocol), "dport"), m.host_port)
    dnat: Json = {"dnat": {"family": "ip", "addr": str(port.container_ip), "port": m.container_port}}
    comment = f"{port.container_id[:12]} {m}"
    if m.host_ip == ANY_IP:
        not_loopback = _eq(_field("ip", "daddr"), _prefix(LOOPBACK), "!=")
        return [
            ("prerouting", [_LOCAL_DST, not_loopback, dport, dnat], comment),
            ("output", [_LOCAL_DST, dport, dnat], comment),
        ]
    to_host_ip = _eq(_field("ip", "daddr"), str(m.host_ip))
    rules = [("output", [to_host_ip, dport, dnat], comment)]
    if m.host_ip not in LOOPBACK:
        rules.insert(0, ("prerouting", [to_host_ip, dport, dnat], comment))
    return rules


def build_ruleset(table: str, networks: Iterable[Network], ports: Iterable[PublishedPort]) -> list[Json]:
    """The nft JSON commands that replace `inet <table>` with the rules for this state (pure)."""
    ident = {"family": "inet", "name": table}
    commands: list[Json] = [
        {"add": {"table": ident}},
        {"delete": {"table": ident}},
        {"add": {"table": ident}},
    ]
    for name, kind, hook, prio in _CHAINS:
        chain = {"family": "inet", "table": table, "name": name, "type": kind, "hook": hook, "prio": prio}
        commands.append({"add": {"chain": {**chain, "policy": "accept"}}})
    rules: list[tuple[str, list[Json], str]] = []
    for port in sorted(
        ports, key=lambda p: (p.mapping.host_port, p.mapping.protocol, str(p.mapping.host_ip))
    ):
        rules += _port_rules(port)
    for net in sorted(networks, key=lambda n: n.bridge):
        rules += _network_rules(net)
    for chain_name, expr, comment in rules:
        rule: Json = {"family": "inet", "table": table, "chain": chain_name, "expr": expr}
        if comment:
            rule["comment"] = comment
        commands.append({"add": {"rule": rule}})
    return commands


class _LibNftables:
    """libnftables (the library behind `nft`) through ctypes: one context, serialised by a lock.

    Loading a ruleset this way takes ~0.2 ms instead of ~15 ms for spawning `nft`, which matters because
    publishing a port sits on the container start path. JSON in and out (NFT_CTX_OUTPUT_JSON).
    """

    OUTPUT_JSON = 1 << 4

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise OSError("nft_ctx_new failed")
        lib.nft_ctx_output_set_flags(self._ctx, lib.nft_ctx_output_get_flags(self._ctx) | self.OUTPUT_JSON)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)
        self._lock = threading.Lock()

    def run(self, command: bytes) -> tuple[int, bytes, bytes]:
        with self._lock:
            rc = int(self._lib.nft_run_cmd_from_buffer(self._ctx, command))
            out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
            return rc, bytes(out), bytes(err)


_lib_state: list[_LibNftables | None] = []


def _library() -> _LibNftables | None:
    """The library if it loads here, else None (then the `nft` binary is used)."""
    if not _lib_state:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            _lib_state.append(_LibNftables(ctypes.CDLL(name, use_errno=True)))
        except (OSError, AttributeError):
            _lib_state.append(None)
    return _lib_state[0]


def _nft_binary() -> str:
    return shutil.which("nft") or "/usr/sbin/nft"


def _failure(what: str, returncode: int, err: bytes) -> NetworkSetup:
    tail = "; ".join(line.strip() for line in err.decode(errors="replace").splitlines()[-3:] if line.strip())
    return NetworkSetup(f"nft {what} failed (exit {returncode}): {tail}")


async def _nft(what: str, command: bytes) -> bytes:
    """Run one nft command (text, or JSON when it starts with `{`); returns its JSON output."""
    lib = _library()
    if lib is not None:
        rc, out, err = await asyncio.to_thread(lib.run, command)
        if rc != 0:
            raise _failure(what, rc, err)
        return out
    args = ["-j", "-f", "-"] if command.startswith(b"{") else ["-j", *command.decode().split()]
    proc = await asyncio.create_subprocess_exec(
        _nft_binary(),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(command if command.startswith(b"{") else b"")
    if proc.returncode != 0:
        raise _failure(what, proc.returncode or 1, err)
    return out


async def apply(commands: list[Json]) -> None:
    """Load a ruleset built by `build_ruleset` in one atomic transaction."""
    await _nft("load ruleset", json.dumps({"nftables": commands}).encode())


async def delete_table(table: str) -> None:
    """Remove our table if present (used when the last network goes away and by tests)."""
    ident = {"family": "inet", "name": table}
    await apply([{"add": {"table": ident}}, {"delete": {"table": ident}}])


async def list_rules(table: str) -> list[Json]:
    """The rules currently loaded in our table (empty when it does not exist)."""
    try:
        out = await _nft("list table", f"list table inet {table}".encode())
    except NetworkSetup:
        return []
    return [item["rule"] for item in json.loads(out)["nftables"] if "rule" in item]


# --- the TCP listeners' connection caps (a table of its own: agent/server/connlimit.py owns it) ---------

SHED_PER_PEER = "shed_per_peer"
SHED_TOTAL = "shed_total"


def build_listener_guard(table: str, ports: Iterable[int], per_peer: int, total: int) -> list[Json]:
    """The nft JSON commands that (re)create `inet <table>`: new TCP connections to `ports` beyond
    `per_peer` open ones from one source address, or beyond `total` from all, are reset (pure).

    Connections are counted by conntrack (`ct count`, established ones only), so a refused SYN never
    reaches the agent and costs it no file descriptor; each refusal bumps a named counter.
    """
    ident = {"family": "inet", "name": table}
    commands: list[Json] = [
        {"add": {"table": ident}},
        {"delete": {"table": ident}},
        {"add": {"table": ident}},
        {"add": {"counter": {"family": "inet", "table": table, "name": SHED_PER_PEER}}},
        {"add": {"counter": {"family": "inet", "table": table, "name": SHED_TOTAL}}},
    ]
    chain = {"family": "inet", "table": table, "name": "input", "type": "filter", "hook": "input"}
    commands.append({"add": {"chain": {**chain, "prio": -10, "policy": "accept"}}})
    new_conn = [
        _eq(_field("tcp", "dport"), {"set": sorted(set(ports))}),
        _eq({"ct": {"key": "state"}}, "new", "in"),
    ]
    reset: Json = {"reject": {"type": "tcp reset"}}
    for family, addr_type in (("ip", "ipv4_addr"), ("ip6", "ipv6_addr")):
        peers = f"peers_{family}"
        commands.append(
            {
                "add": {
                    "set": {
                        "family": "inet",
                        "table": table,
                        "name": peers,
                        "type": addr_type,
                        "size": 65535,
                        "flags": "dynamic",  # nft 1.0.6 refuses the list form for this flag
                    }
                }
            }
        )
        per_source: Json = {
            "set": {
                "op": "add",
                "elem": _field(family, "saddr"),
                "set": f"@{peers}",
                "stmt": [{"ct count": {"val": per_peer, "inv": True}}],
            }
        }
        expr = [*new_conn, per_source, {"counter": SHED_PER_PEER}, reset]
        commands.append({"add": {"rule": {"family": "inet", "table": table, "chain": "input", "expr": expr}}})
    expr = [*new_conn, {"ct count": {"val": total, "inv": True}}, {"counter": SHED_TOTAL}, reset]
    commands.append({"add": {"rule": {"family": "inet", "table": table, "chain": "input", "expr": expr}}})
    return commands


async def read_counters(table: str) -> dict[str, int]:
    """Packets counted by each named counter of `inet <table>` (empty when the table is gone)."""
    try:
        out = await _nft("list counters", f"list counters table inet {table}".encode())
    except NetworkSetup:
        return {}
    return {
        item["counter"]["name"]: int(item["counter"]["packets"])
        for item in json.loads(out)["nftables"]
        if "counter" in item
    }
