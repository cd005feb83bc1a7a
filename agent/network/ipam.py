"""IP address management: which address each container holds on each network, and which subnet a new
network gets.

The choice functions are pure (tested on their own); `Ipam` persists leases in the agent's SQLite
database (`network_leases`) so an agent restart never hands out an address twice. A lease is taken in the
same transaction that checks for conflicts, and it lives until the container is removed: a container
that is stopped and started again keeps its address. Allocation takes the lowest free host address
(skipping the network, broadcast and gateway addresses); the MAC address derived from it (see
`mac_for`) keeps neighbours' ARP caches right when an address is reused.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from agent.errors import AlreadyExists, InvalidArgument, ResourceExhausted
from agent.state.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS network_leases (
    network_id   TEXT NOT NULL,
    address      TEXT NOT NULL,
    container_id TEXT NOT NULL,
    PRIMARY KEY (network_id, address),
    UNIQUE (network_id, container_id)
)
"""


def usable(subnet: IPv4Network, gateway: IPv4Address, address: IPv4Address) -> bool:
    return address in subnet and address not in (subnet.network_address, subnet.broadcast_address, gateway)


def first_free(subnet: IPv4Network, gateway: IPv4Address, used: Iterable[IPv4Address]) -> IPv4Address | None:
    """The lowest usable address of `subnet` not in `used`, or None when the pool is full."""
    taken = set(used)
    for address in subnet.hosts():
        if address != gateway and address not in taken:
            return address
    return None


def check_requested(
    subnet: IPv4Network, gateway: IPv4Address, address: IPv4Address, used: Iterable[IPv4Address]
) -> None:
    """Raise unless `address` (from `--ip`) can be leased on `subnet`."""
    if address not in subnet:
        raise InvalidArgument(f"address {address} is not in the network's subnet {subnet}")
    if not usable(subnet, gateway, address):
        raise InvalidArgument(f"address {address} is reserved in {subnet} (network, broadcast or gateway)")
    if address in set(used):
        raise AlreadyExists(f"address {address} is already in use on this network")


def next_subnet(pool: IPv4Network, prefixlen: int, taken: Iterable[IPv4Network]) -> IPv4Network | None:
    """The first `/prefixlen` block of `pool` that overlaps none of `taken`, or None."""
    busy = list(taken)
    for candidate in pool.subnets(new_prefix=prefixlen):
        if not any(candidate.overlaps(other) for other in busy):
            return candidate
    return None


def default_gateway(subnet: IPv4Network) -> IPv4Address:
    """Docker's convention: the first host address of the subnet is the gateway on the bridge."""
    if subnet.prefixlen > 30:
        raise InvalidArgument(f"subnet {subnet} is too small: need at least a /30")
    return subnet.network_address + 1


def mac_for(address: IPv4Address) -> str:
    """A locally administered unicast MAC derived from the IPv4 address (02:42 is Docker's; 0a:dd is ours)."""
    return "0a:dd:" + ":".join(f"{b:02x}" for b in address.packed)


class Ipam:
    """Leases persisted in `network_leases`; every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)

    def allocate(
        self,
        network_id: str,
        subnet: IPv4Network,
        gateway: IPv4Address,
        container_id: str,
        requested: IPv4Address | None = None,
    ) -> IPv4Address:
        """Lease an address for `container_id` (its existing lease if it has one on this network)."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT address FROM network_leases WHERE network_id = ? AND container_id = ?",
                (network_id, container_id),
            ).fetchone()
            if row is not None:
                current = IPv4Address(row["address"])
                if requested is None or requested == current:
                    return current
                conn.execute(
                    "DELETE FROM network_leases WHERE network_id = ? AND container_id = ?",
                    (network_id, container_id),
                )
            used = [
                IPv4Address(r["address"])
                for r in conn.execute(
                    "SELECT address FROM network_leases WHERE network_id = ?", (network_id,)
                )
            ]
            if requested is not None:
                check_requested(subnet, gateway, requested, used)
                address = requested
            else:
                found = first_free(subnet, gateway, used)
                if found is None:
                    raise ResourceExhausted(f"no free address left in {subnet}")
                address = found
            conn.execute(
                "INSERT INTO network_leases (network_id, address, container_id) VALUES (?, ?, ?)",
                (network_id, str(address), container_id),
            )
            return address

    def release(self, network_id: str, container_id: str) -> bool:
        return (
            self._db.execute(
                "DELETE FROM network_leases WHERE network_id = ? AND container_id = ?",
                (network_id, container_id),
            )
            > 0
        )

    def release_network(self, network_id: str) -> None:
        self._db.execute("DELETE FROM network_leases WHERE network_id = ?", (network_id,))

    def leases(self, network_id: str) -> dict[str, IPv4Address]:
        """container_id → address on one network."""
        rows = self._db.query(
            "SELECT container_id, address FROM network_leases WHERE network_id = ?", (network_id,)
        )
        return {r["container_id"]: IPv4Address(r["address"]) for r in rows}

    def count(self) -> int:
        row = self._db.query_one("SELECT COUNT(*) AS n FROM network_leases")
        return int(row["n"]) if row else 0
