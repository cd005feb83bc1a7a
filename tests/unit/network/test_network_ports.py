"""`-p` parsing and host port reservations (real sockets on 127.0.0.1)."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address

import pytest

from agent.errors import AlreadyExists, InvalidArgument
from agent.network.models import PortMapping, Protocol
from agent.network.ports import PortReservations, parse_publish


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", PortMapping(80)),
        ("8080:80", PortMapping(80, host_port=8080)),
        ("127.0.0.1:8080:80/udp", PortMapping(80, Protocol.UDP, IPv4Address("127.0.0.1"), 8080)),
        ("127.0.0.1::80", PortMapping(80, host_ip=IPv4Address("127.0.0.1"))),
        ("53/UDP", PortMapping(53, Protocol.UDP)),
    ],
)
def test_parse_publish(spec: str, expected: PortMapping) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "abc", "0", "70000", "80/sctp", "1.2.3:80:80", "8000-8010:80", "a:80:80"]
)
def test_parse_publish_rejects(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_publish(spec)


def test_reservation_picks_free_port_and_blocks_others() -> None:
    res = PortReservations()
    try:
        bound = res.reserve("c1", PortMapping(80, host_ip=IPv4Address("127.0.0.1")))
        assert bound.host_port > 0
        with socket.socket() as probe, pytest.raises(OSError):
            probe.bind(("127.0.0.1", bound.host_port))
        with pytest.raises(AlreadyExists, match="already in use"):
            res.reserve("c2", PortMapping(81, host_ip=IPv4Address("127.0.0.1"), host_port=bound.host_port))
        res.release("c1")
        assert res.held() == 0
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", bound.host_port))  # free again
    finally:
        res.close()


def test_reservation_conflicts_with_a_host_listener() -> None:
    res = PortReservations()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(AlreadyExists):
            res.reserve("c1", PortMapping(80, host_port=port))
    res.close()
