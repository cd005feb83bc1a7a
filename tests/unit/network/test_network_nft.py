"""The nftables ruleset builder (pure): what is DNATed, masqueraded and dropped, per network kind."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from agent.network.models import Network, PortMapping, Protocol, PublishedPort
from agent.network.nft import build_ruleset

OPEN = Network("n1", "open", "dyn-br1", IPv4Network("10.232.1.0/24"), IPv4Address("10.232.1.1"))
SEALED = Network(
    "n2", "sealed", "dyn-br2", IPv4Network("10.232.2.0/24"), IPv4Address("10.232.2.1"), internal=True
)


def _rules(commands: list[dict[str, Any]], chain: str) -> list[str]:
    return [
        json.dumps(c["add"]["rule"]["expr"])
        for c in commands
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain
    ]


def test_table_is_replaced_atomically() -> None:
    commands = build_ruleset("dyn-t", [OPEN], [])
    assert [next(iter(c)) for c in commands[:3]] == ["add", "delete", "add"]
    assert {c["add"]["chain"]["name"] for c in commands if "chain" in c.get("add", {})} == {
        "prerouting", "output", "postrouting", "forward",
    }  # fmt: skip


def test_internal_network_has_no_masquerade_and_drops_egress() -> None:
    commands = build_ruleset("dyn-t", [OPEN, SEALED], [])
    post = _rules(commands, "postrouting")
    assert sum('"!="' in r and "masquerade" in r for r in post) == 1  # only the open network egresses
    fwd = _rules(commands, "forward")
    assert any('"iifname"' in r and "dyn-br2" in r and '"drop"' in r and "oifname" not in r for r in fwd)
    assert not any("dyn-br2" in r and '"dnat"' in r and "accept" in r for r in fwd)


def test_published_ports() -> None:
    anyhost = PublishedPort(
        "c" * 64, "n1", PortMapping(80, Protocol.TCP, IPv4Address("0.0.0.0"), 8080), IPv4Address("10.232.1.2")
    )
    local = PublishedPort(
        "d" * 64,
        "n1",
        PortMapping(53, Protocol.UDP, IPv4Address("127.0.0.1"), 5353),
        IPv4Address("10.232.1.3"),
    )
    commands = build_ruleset("dyn-t", [OPEN], [anyhost, local])
    pre, out = _rules(commands, "prerouting"), _rules(commands, "output")
    assert len(pre) == 1 and "8080" in pre[0] and '"127.0.0.0"' in pre[0]  # never DNAT loopback from the wire
    assert len(out) == 2 and any("5353" in r and '"udp"' in r for r in out)
    comments = [c["add"]["rule"].get("comment", "") for c in commands if "rule" in c.get("add", {})]
    assert sum(c.startswith("c" * 12) for c in comments) == 2
