"""SQLite persistence of networks, endpoints and published ports (tables `network_*`).

This is the source of truth the kernel state (bridges, veths, nftables) is rebuilt from after a crash
or restart. Endpoint rows are written BEFORE their veth is created, so every veth the agent ever made is
named in the database and can be found again. Leases belong to `ipam.py`.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from agent.network.etcfiles import EtcPaths
from agent.network.models import Endpoint, Network, PortMapping, Protocol, PublishedPort
from agent.state.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS network_networks (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    bridge     TEXT NOT NULL UNIQUE,
    subnet     TEXT NOT NULL,
    gateway    TEXT NOT NULL,
    internal   INTEGER NOT NULL DEFAULT 0,
    is_default INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    labels     TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS network_endpoints (
    container_id   TEXT NOT NULL,
    network_id     TEXT NOT NULL REFERENCES network_networks(id),
    host_veth      TEXT NOT NULL UNIQUE,
    mac            TEXT NOT NULL,
    address        TEXT NOT NULL,
    container_name TEXT NOT NULL DEFAULT '',
    hostname       TEXT NOT NULL DEFAULT '',
    aliases        TEXT NOT NULL DEFAULT '[]',
    ifname         TEXT NOT NULL DEFAULT '',
    seq            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (container_id, network_id)
);
CREATE TABLE IF NOT EXISTS network_doomed (
    name TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS network_etc (
    container_id TEXT PRIMARY KEY,
    hosts        TEXT NOT NULL,
    hostname     TEXT NOT NULL,
    resolv_conf  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS network_ports (
    container_id   TEXT NOT NULL,
    network_id     TEXT NOT NULL REFERENCES network_networks(id),
    host_ip        TEXT NOT NULL,
    host_port      INTEGER NOT NULL,
    protocol       TEXT NOT NULL,
    container_port INTEGER NOT NULL,
    container_ip   TEXT NOT NULL,
    PRIMARY KEY (host_ip, host_port, protocol)
)
"""


def _network(row: sqlite3.Row) -> Network:
    return Network(
        id=row["id"],
        name=row["name"],
        bridge=row["bridge"],
        subnet=IPv4Network(row["subnet"]),
        gateway=IPv4Address(row["gateway"]),
        internal=bool(row["internal"]),
        default=bool(row["is_default"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        labels=json.loads(row["labels"]),
    )


def _endpoint(row: sqlite3.Row) -> Endpoint:
    return Endpoint(
        container_id=row["container_id"],
        network_id=row["network_id"],
        host_veth=row["host_veth"],
        mac=row["mac"],
        address=IPv4Interface(row["address"]),
        container_name=row["container_name"],
        hostname=row["hostname"],
        aliases=tuple(json.loads(row["aliases"])),
        ifname=row["ifname"],
    )


def _port(row: sqlite3.Row) -> PublishedPort:
    return PublishedPort(
        container_id=row["container_id"],
        network_id=row["network_id"],
        mapping=PortMapping(
            container_port=row["container_port"],
            protocol=Protocol(row["protocol"]),
            host_ip=IPv4Address(row["host_ip"]),
            host_port=row["host_port"],
        ),
        container_ip=IPv4Address(row["container_ip"]),
    )


class NetworkStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)

    # networks
    def add_network(self, net: Network) -> None:
        self._db.execute(
            "INSERT INTO network_networks"
            " (id, name, bridge, subnet, gateway, internal, is_default, created_at, labels)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                net.id,
                net.name,
                net.bridge,
                str(net.subnet),
                str(net.gateway),
                int(net.internal),
                int(net.default),
                (net.created_at or datetime.now(UTC)).isoformat(),
                json.dumps(net.labels, sort_keys=True),
            ),
        )

    def delete_network(self, network_id: str) -> None:
        self._db.execute("DELETE FROM network_networks WHERE id = ?", (network_id,))

    def networks(self) -> list[Network]:
        return [
            _network(r) for r in self._db.query("SELECT * FROM network_networks ORDER BY created_at, name")
        ]

    # endpoints
    def put_endpoint(self, ep: Endpoint, seq: int) -> None:
        """Insert or replace; `seq` orders a container's networks (0 = the one with the default route)."""
        self._db.execute(
            "INSERT OR REPLACE INTO network_endpoints (container_id, network_id, host_veth, mac, address,"
            " container_name, hostname, aliases, ifname, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ep.container_id,
                ep.network_id,
                ep.host_veth,
                ep.mac,
                str(ep.address),
                ep.container_name,
                ep.hostname,
                json.dumps(list(ep.aliases)),
                ep.ifname,
                seq,
            ),
        )

    def delete_endpoint(self, container_id: str, network_id: str) -> None:
        self._db.execute(
            "DELETE FROM network_endpoints WHERE container_id = ? AND network_id = ?",
            (container_id, network_id),
        )

    def endpoints(self, *, container_id: str | None = None, network_id: str | None = None) -> list[Endpoint]:
        sql, params = "SELECT * FROM network_endpoints WHERE 1=1", list[str]()
        if container_id is not None:
            sql, params = sql + " AND container_id = ?", [*params, container_id]
        if network_id is not None:
            sql, params = sql + " AND network_id = ?", [*params, network_id]
        return [_endpoint(r) for r in self._db.query(sql + " ORDER BY container_id, seq", params)]

    # ports
    def add_ports(self, ports: list[PublishedPort]) -> None:
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO network_ports (container_id, network_id, host_ip, host_port, protocol,"
                " container_port, container_ip) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        p.container_id,
                        p.network_id,
                        str(p.mapping.host_ip),
                        p.mapping.host_port,
                        str(p.mapping.protocol),
                        p.mapping.container_port,
                        str(p.container_ip),
                    )
                    for p in ports
                ],
            )

    def delete_ports(self, container_id: str) -> None:
        self._db.execute("DELETE FROM network_ports WHERE container_id = ?", (container_id,))

    def ports(self, container_id: str | None = None) -> list[PublishedPort]:
        if container_id is None:
            rows = self._db.query("SELECT * FROM network_ports ORDER BY container_id, rowid")
        else:
            rows = self._db.query(
                "SELECT * FROM network_ports WHERE container_id = ? ORDER BY rowid", (container_id,)
            )
        return [_port(r) for r in rows]

    # /etc files of attached containers (paths owned by the container manager)
    def put_etc(self, container_id: str, paths: EtcPaths) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO network_etc (container_id, hosts, hostname, resolv_conf)"
            " VALUES (?, ?, ?, ?)",
            (container_id, str(paths.hosts), str(paths.hostname), str(paths.resolv_conf)),
        )

    def etc(self, container_id: str) -> EtcPaths | None:
        row = self._db.query_one("SELECT * FROM network_etc WHERE container_id = ?", (container_id,))
        if row is None:
            return None
        return EtcPaths(Path(row["hosts"]), Path(row["hostname"]), Path(row["resolv_conf"]))

    def delete_etc(self, container_id: str) -> None:
        self._db.execute("DELETE FROM network_etc WHERE container_id = ?", (container_id,))

    # host veths whose deletion is under way (see NetworkManager._unplug_soon)
    def doom_link(self, name: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO network_doomed (name) VALUES (?)", (name,))

    def forget_doomed(self, name: str) -> None:
        self._db.execute("DELETE FROM network_doomed WHERE name = ?", (name,))

    def doomed_links(self) -> list[str]:
        return [r["name"] for r in self._db.query("SELECT name FROM network_doomed ORDER BY name")]

    def container_ids(self) -> set[str]:
        rows = self._db.query(
            "SELECT container_id FROM network_endpoints UNION SELECT container_id FROM network_ports"
            " UNION SELECT container_id FROM network_etc"
        )
        return {r["container_id"] for r in rows}
