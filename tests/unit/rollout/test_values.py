"""Per-host values: inventory vars (host > group > defaults, file order among groups, labels), rendering of
a release per host (env, command, labels, volumes, $$), the undefined-value error naming host and key,
each host's own spec digest, secrets by name and version in the spec (never a value), the dry-run view."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from controller import inventory
from controller.rollout import engine as eng
from controller.rollout import spec, values
from controller.rollout.journal import SqliteJournal
from controller.rollout.secrets import SecretError, SecretStore
from controller.target import Target
from tests.unit.rollout.fake_agents import FakeFleet

INVENTORY = """
[vars]
upstream = "https://central.example"
tier = "default"
retries = 3

[hosts.edge-1]
address = "10.0.0.1"
labels = { site = "n-1" }
[hosts.edge-1.vars]
site_id = "n-17"
tier = "host"

[hosts.edge-2]
address = "10.0.0.2"
labels = { site = "s-2" }

[hosts.edge-3]
address = "10.0.0.3"

[groups]
north = ["edge-1", "edge-2"]
gold = ["edge-2"]

[groups.vars.north]
upstream = "https://north.example"
tier = "group"

[groups.vars.gold]
tier = "gold"
"""

RELEASE = """
name = "web"
[containers.app]
image = "registry.lab:5000/shop/web:2"
command = ["/bin/app", "--site=${host.labels.site}", "--id", "${vars.site_id}"]
env = { UPSTREAM = "${vars.upstream}", HOST = "${host.name}", PRICE = "$$5", RAW = "$HOME" }
labels = { "tier" = "${vars.tier}" }
volumes = ["data-${host.name}:/data"]
"""


def inv() -> inventory.Inventory:
    return inventory.parse(tomllib.loads(INVENTORY), "inventory.toml")


def selected() -> dict[str, inventory.Host]:
    return {h.name: h for h in inventory.select(inv(), ["all"])}


def test_values_precedence_host_over_group_over_defaults() -> None:
    hosts = selected()
    assert hosts["edge-1"].values == {
        "upstream": "https://north.example",
        "tier": "host",  # host beats its group
        "retries": "3",  # a number is taken as text
        "site_id": "n-17",
    }
    assert hosts["edge-2"].values["tier"] == "gold"  # the later group wins over the earlier one
    assert hosts["edge-2"].values["upstream"] == "https://north.example"
    assert hosts["edge-3"].values == {
        "upstream": "https://central.example",
        "tier": "default",
        "retries": "3",
    }
    assert hosts["edge-2"].groups == ("north", "gold")


def test_inventory_vars_survive_a_rewrite_and_bootstrap_recording(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(INVENTORY)
    again = inventory.parse(tomllib.loads(inventory.dumps(inv())))
    assert again == inv()
    # bootstrap records the host again without knowing its vars: they stay
    inventory.record(path, inventory.Host("edge-1", "10.0.0.9", labels={"site": "n-1"}))
    assert inventory.load(path).hosts["edge-1"].vars == {"site_id": "n-17", "tier": "host"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[groups.vars.nope]\nx = "1"\n', "unknown group(s): nope"),
        ('[vars]\n"bad key" = "1"\n', "invalid key 'bad key'"),
        ("[vars]\nx = [1]\n", "vars.x must be a string"),
    ],
)
def test_bad_vars_are_refused_naming_where(text: str, problem: str) -> None:
    with pytest.raises(inventory.InventoryError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        inventory.parse(tomllib.loads(text), "inv")


def host_values(name: str) -> values.HostValues:
    h = selected()[name]
    return values.HostValues(h.name, dict(h.labels), dict(h.values))


def test_render_per_host_env_command_labels_volumes_and_escapes() -> None:
    release = spec.parse(RELEASE, "web.toml")
    # edge-1 has every value; the others lack site_id (edge-3 also the site label)
    c = values.render(release, host_values("edge-1")).containers[0].config
    assert c.command == ("/bin/app", "--site=n-1", "--id", "n-17")
    assert dict(e.split("=", 1) for e in c.env) == {
        "UPSTREAM": "https://north.example",
        "HOST": "edge-1",
        "PRICE": "$5",  # $$ is a literal $
        "RAW": "$HOME",  # a $ not followed by { stays as written
    }
    assert c.labels == ("tier=host",)
    assert c.volumes == ("data-edge-1:/data",)


def test_an_undefined_value_stops_naming_the_host_and_the_key() -> None:
    release = spec.parse(RELEASE, "web.toml")
    with pytest.raises(values.ValuesError) as err:
        values.render_all(release, [host_values(n) for n in ("edge-1", "edge-2", "edge-3")])
    problems = err.value.problems
    assert "edge-2: containers.app.command[3]: ${vars.site_id} is not defined" in problems[0]
    assert any(p.startswith("edge-3: containers.app.command[1]") and "no label site" in p for p in problems)
    assert not any(p.startswith("edge-1") for p in problems)
    assert "\n" not in err.value.message  # one line for `error: …`


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${nope.x}", "unknown value"),
        ("${vars.x", "without its closing"),
        ("${host.labels}", "unknown value"),
    ],
)
def test_bad_expressions(text: str, problem: str) -> None:
    with pytest.raises(values.ValuesError, match=problem):
        values.render(
            spec.parse(f'name = "w"\n[containers.a]\nimage = "x:1"\ncommand = ["{text}"]\n'),
            values.HostValues("h"),
        )


def hostinfo(name: str) -> eng.HostInfo:
    h = selected()[name]
    target = Target(name, "tcp", h.address, 7443)
    return eng.HostInfo(name, target, dict(h.labels), dict(h.values), tuple(h.groups))


SECRET_RELEASE = """
name = "web"
[containers.app]
image = "registry.lab:5000/shop/web:2"
env = { SITE = "${host.name}" }
secrets = ["db_password"]
[[containers.sidecar.secrets]]
name = "api_key"
target = "key"
mode = 0o440
uid = 1000
[containers.sidecar]
image = "registry.lab:5000/shop/logship:1"
"""


async def test_each_host_gets_its_own_spec_with_secret_versions_never_values(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "rollouts.db")
    store = SecretStore(journal, tmp_path)
    await store.create("db_password", b"hunter2-default")  # v1
    await store.create("db_password", b"hunter2-north", "group:north")  # v2
    await store.create("db_password", b"hunter2-edge1", "host:edge-1")  # v3
    await store.create("api_key", b"k-123")  # v1
    release = spec.parse(SECRET_RELEASE)
    fleet = FakeFleet(["edge-1", "edge-2", "edge-3"])
    hosts = [hostinfo(n) for n in ("edge-1", "edge-2", "edge-3")]
    rollout = await eng.create(journal, fleet, release, hosts, eng.Options(), owner="t", secrets=store)
    specs = eng.specs_of(rollout)
    versions = {h: {f.name: f.version for c in s.containers for f in c.secrets} for h, s in specs.items()}
    assert versions == {
        "edge-1": {"db_password": "3", "api_key": "1"},
        "edge-2": {"db_password": "2", "api_key": "1"},
        "edge-3": {"db_password": "1", "api_key": "1"},
    }
    assert len({s.spec_digest for s in specs.values()}) == 3  # a digest per host
    sidecar = next(c for c in specs["edge-1"].containers if c.name == "sidecar")
    assert (sidecar.secrets[0].target, sidecar.secrets[0].mode, sidecar.secrets[0].uid) == (
        "key",
        0o440,
        1000,
    )
    # nothing of any value in the journal, in any form
    await journal.close()
    raw = (tmp_path / "rollouts.db").read_bytes()
    for wal in tmp_path.glob("rollouts.db-*"):
        raw += wal.read_bytes()
    for value in (b"hunter2", b"k-123"):
        assert value not in raw
    # the dry-run view masks the value
    lines = values.spec_lines(specs["edge-1"])
    assert any(
        "secret db_password (version 3) → /run/secrets/db_password mode 0400" in line for line in lines
    )
    assert not any("hunter2" in line for line in lines)


async def test_rotation_is_a_new_spec_digest_and_a_missing_value_names_the_host(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "rollouts.db")
    store = SecretStore(journal, tmp_path)
    release = spec.parse(SECRET_RELEASE)
    hosts = [hostinfo("edge-3")]
    await store.create("db_password", b"only-north", "group:north")
    await store.create("api_key", b"k")
    with pytest.raises(SecretError, match="edge-3: secret db_password has no value for this host"):
        await eng.host_specs(release, hosts, {r: "sha256:" + "ab" * 32 for r in release.images()}, store)
    await store.create("db_password", b"one")
    before = await eng.host_specs(release, hosts, {r: "sha256:" + "ab" * 32 for r in release.images()}, store)
    await store.create("db_password", b"two")
    after = await eng.host_specs(release, hosts, {r: "sha256:" + "ab" * 32 for r in release.images()}, store)
    assert before["edge-3"].spec_digest != after["edge-3"].spec_digest
    got = await store.materials([("db_password", "3")])
    assert got[0].value == b"two"
    assert "two" not in repr(got)
    key = tmp_path / "secrets.key"
    assert key.stat().st_mode & 0o777 == 0o600
    await journal.close()
