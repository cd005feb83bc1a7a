"""Inventory parsing, target selection and round-tripping of the TOML file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from controller import inventory as inv
from controller.inventory import Host, Inventory, InventoryError

DOC = """
[hosts.edge-1]
address = "10.0.0.5"
labels = { arch = "arm64", site = "lab" }

[hosts.edge-2]
address = "10.0.0.6"
port = 7500
ssh_user = "admin"
ssh_port = 2222
labels = { arch = "amd64", site = "lab" }

[hosts.core]
address = "10.0.0.7"
labels = { arch = "amd64", site = "dc" }

[groups]
edge = ["edge-1", "edge-2"]
"""


@pytest.fixture
def fleet() -> Inventory:
    return inv.parse(tomllib.loads(DOC))


def names(hosts: list[Host]) -> list[str]:
    return [h.name for h in hosts]


def test_defaults_and_fields(fleet: Inventory) -> None:
    edge1, edge2 = fleet.hosts["edge-1"], fleet.hosts["edge-2"]
    assert (edge1.port, edge1.ssh_user, edge1.ssh_port) == (7443, "root", 22)
    assert edge1.target == "10.0.0.5:7443"
    assert (edge2.port, edge2.ssh_user, edge2.ssh_port) == (7500, "admin", 2222)
    assert edge2.target == "10.0.0.6:7500"


@pytest.mark.parametrize(
    ("targets", "selectors", "expected"),
    [
        (["all"], [], ["edge-1", "edge-2", "core"]),
        (["@edge"], [], ["edge-1", "edge-2"]),
        (["core,edge-1"], [], ["core", "edge-1"]),
        (["core", "@edge", "core"], [], ["core", "edge-1", "edge-2"]),
        (["all"], ["arch=amd64"], ["edge-2", "core"]),
        ([], ["site=lab", "arch=amd64"], ["edge-2"]),
        ([], ["site=lab,arch=arm64"], ["edge-1"]),
        (["10.0.0.7"], [], ["core"]),
        (["10.0.0.6:7500"], [], ["edge-2"]),
    ],
)
def test_select(fleet: Inventory, targets: list[str], selectors: list[str], expected: list[str]) -> None:
    assert names(inv.select(fleet, targets, selectors)) == expected


def test_ad_hoc_addresses(fleet: Inventory) -> None:
    [h] = inv.select(fleet, ["192.0.2.9:9000"])
    assert (h.name, h.address, h.port, h.target) == ("192.0.2.9:9000", "192.0.2.9", 9000, "192.0.2.9:9000")
    [h] = inv.select(Inventory(), ["127.0.0.1"])
    assert h.target == "127.0.0.1:7443"
    [h] = inv.select(Inventory(), ["[::1]:7000"])
    assert h.target == "[::1]:7000"
    [h] = inv.select(Inventory(), ["unix:///run/dockyard/agent.sock"])
    assert h.target == "unix:///run/dockyard/agent.sock"
    [h] = inv.select(Inventory(), ["web-1=192.0.2.7"])
    assert (h.name, h.target) == ("web-1", "192.0.2.7:7443")
    [h] = inv.select(fleet, ["core=10.9.9.9:7000"])
    assert (h.name, h.target, h.labels) == ("core", "10.9.9.9:7000", {"arch": "amd64", "site": "dc"})
    # A known address on another port is a different (ad hoc) host.
    [h] = inv.select(fleet, ["10.0.0.7:9999"])
    assert h.name == "10.0.0.7:9999"


@pytest.mark.parametrize(
    ("targets", "selectors", "message"),
    [
        (["@nope"], [], "unknown group 'nope'"),
        (["all"], ["arch=sparc"], "no hosts match all with arch=sparc"),
        (["a,,b"], [], "empty host"),
        (["all"], ["arch"], "invalid selector"),
        (["h:99999"], [], "invalid port"),
        (["bad name=1.2.3.4"], [], "expected NAME=ADDRESS"),
    ],
)
def test_select_errors(fleet: Inventory, targets: list[str], selectors: list[str], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        inv.select(fleet, targets, selectors)


def test_all_on_empty_inventory_is_an_error() -> None:
    with pytest.raises(InventoryError, match="no hosts"):
        inv.select(Inventory(), ["all"])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("[hosts.a]\nport = 1\n", "hosts.a: address is required"),
        ('[hosts.a]\naddress = "x"\nport = 0\n', r"hosts.a.port must be a port"),
        ('[hosts.a]\naddress = "x"\ncolour = "red"\n', "unknown key"),
        ('[hosts.a]\naddress = "x"\nlabels = { n = 1 }\n', "labels must be a table of strings"),
        ('[groups]\ng = ["zz"]\n', "unknown host"),
        ("[extra]\n", "unknown table"),
        ('[hosts.all]\naddress = "x"\n', "invalid host name"),
    ],
)
def test_parse_errors(doc: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        inv.parse(tomllib.loads(doc), source="f.toml")


def test_round_trip_and_record(tmp_path: Path, fleet: Inventory) -> None:
    path = tmp_path / "inventory.toml"
    inv.save(fleet, path)
    assert inv.load(path) == fleet
    new = Host("h-1", "10.1.0.2", labels={"role": "db x"}, ssh_key="/k")
    assert inv.record(path, new) is True
    assert inv.record(path, new) is False
    loaded = inv.load(path)
    assert loaded.hosts["h-1"] == new
    assert loaded.groups == fleet.groups


def test_missing_file_is_empty_and_bad_file_is_clear(tmp_path: Path) -> None:
    assert inv.load(tmp_path / "none.toml") == Inventory()
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts\n")
    with pytest.raises(InventoryError, match=r"bad\.toml"):
        inv.load(bad)
