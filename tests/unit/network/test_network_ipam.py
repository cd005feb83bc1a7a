"""IPAM: pure choice functions and persisted leases (no duplicates across a restart)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from agent.errors import AlreadyExists, InvalidArgument, ResourceExhausted
from agent.network import ipam
from agent.state.db import Database

NET = IPv4Network("10.232.7.0/29")  # hosts .1-.6; .1 is the gateway
GW = IPv4Address("10.232.7.1")


def test_first_free_skips_gateway_and_used() -> None:
    assert ipam.first_free(NET, GW, []) == IPv4Address("10.232.7.2")
    assert ipam.first_free(NET, GW, [IPv4Address("10.232.7.2")]) == IPv4Address("10.232.7.3")
    assert ipam.first_free(NET, GW, [IPv4Address(f"10.232.7.{i}") for i in range(2, 7)]) is None


@pytest.mark.parametrize(
    ("address", "error"),
    [("10.232.8.2", InvalidArgument), ("10.232.7.0", InvalidArgument), ("10.232.7.7", InvalidArgument),
     ("10.232.7.1", InvalidArgument), ("10.232.7.3", AlreadyExists)],
)  # fmt: skip
def test_check_requested_rejects(address: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        ipam.check_requested(NET, GW, IPv4Address(address), [IPv4Address("10.232.7.3")])


def test_next_subnet_avoids_overlap() -> None:
    pool = IPv4Network("10.232.0.0/22")
    taken = [IPv4Network("10.232.0.0/24"), IPv4Network("10.232.1.128/25")]
    assert ipam.next_subnet(pool, 24, taken) == IPv4Network("10.232.2.0/24")
    assert ipam.next_subnet(pool, 22, taken) is None


def test_mac_is_locally_administered_and_derived_from_ip() -> None:
    mac = ipam.mac_for(IPv4Address("10.232.7.2"))
    assert mac == "0a:dd:0a:e8:07:02"
    first = int(mac[:2], 16)
    assert first & 0b10 and not first & 0b1


def test_leases_survive_restart_and_never_duplicate(tmp_path: Path) -> None:
    db = Database(tmp_path / "d.db")
    pool = ipam.Ipam(db)
    a = pool.allocate("n1", NET, GW, "ctr-a")
    b = pool.allocate("n1", NET, GW, "ctr-b")
    assert a != b
    assert pool.allocate("n1", NET, GW, "ctr-a") == a  # idempotent per container
    db.close()

    db2 = Database(tmp_path / "d.db")
    pool2 = ipam.Ipam(db2)
    c = pool2.allocate("n1", NET, GW, "ctr-c")
    assert c not in (a, b)
    assert pool2.leases("n1") == {"ctr-a": a, "ctr-b": b, "ctr-c": c}
    assert pool2.release("n1", "ctr-b")
    assert not pool2.release("n1", "ctr-b")
    assert pool2.allocate("n1", NET, GW, "ctr-d") == b  # released addresses are reused


def test_exhaustion_and_requested_address(tmp_path: Path) -> None:
    pool = ipam.Ipam(Database(tmp_path / "d.db"))
    assert pool.allocate("n1", NET, GW, "want", IPv4Address("10.232.7.6")) == IPv4Address("10.232.7.6")
    with pytest.raises(AlreadyExists):
        pool.allocate("n1", NET, GW, "other", IPv4Address("10.232.7.6"))
    for i in range(4):
        pool.allocate("n1", NET, GW, f"c{i}")
    with pytest.raises(ResourceExhausted):
        pool.allocate("n1", NET, GW, "one-too-many")
    assert pool.count() == 5
