"""The --format template engine (controller/formatting.py): parsing, rendering, tables, fields, fan-out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller import formatting
from controller.formatting import Field, TemplateError, parse

NOW = datetime.now(UTC)


def _iso(ago: timedelta) -> str:
    return (NOW - ago).isoformat()


CONTAINER: dict[str, Any] = {
    "id": "0123456789abcdef0123456789abcdef",
    "name": "web",
    "image": "busybox:latest",
    "command": ["sh", "-c", "while true; do sleep 1; done"],
    "created": _iso(timedelta(minutes=5)),
    "status": "running",
    "started_at": _iso(timedelta(minutes=4)),
    "finished_at": None,
    "exit_code": 0,
    "health": None,
    "labels": {"tier": "front", "app": "shop"},
    "network": "bridge",
    "ports": ["0.0.0.0:8080->80/tcp"],
    "mounts": [{"type": "volume", "source": "data", "destination": "/data", "read_only": False}],
}
IMAGE: dict[str, Any] = {
    "id": "sha256:" + "ab" * 32,
    "digest": "sha256:" + "cd" * 32,
    "names": ["docker.io/library/busybox:latest", "registry.local:5000/team/busybox:1.36"],
    "size": 4_260_000,
    "created": "2024-05-01T10:00:00+00:00",
    "index_digest": None,
}


def test_parse_fields_literals_and_escapes() -> None:
    t = parse(r"{{.ID}}\t{{ .Names }}\n")
    assert t.parts == (Field("ID"), "\t", Field("Names"), "\n")
    assert not t.table
    assert t.render({"ID": "abc", "Names": "web"}) == "abc\tweb\n"


def test_parse_json_forms_and_trimming() -> None:
    t = parse("{{json .}} {{- json .Labels -}}  x")
    assert t.parts == (Field(None, as_json=True), Field("Labels", as_json=True), "x")
    row = {"Names": "web", "Labels": "a=1"}
    assert t.render(row) == '{"Labels":"a=1","Names":"web"}"a=1"x'


def test_json_is_compact_unescaped_and_sorted() -> None:
    assert parse("{{json .}}").render({"b": "<é>", "a": "1"}) == '{"a":"1","b":"<é>"}'


def test_table_prefix_header_and_alignment() -> None:
    t = parse(r"table {{.ID}}\t{{.Names}}")
    assert t.table
    assert t.header({"ID": "CONTAINER ID", "Names": "NAMES"}) == "CONTAINER ID\tNAMES"
    lines = formatting.align(["CONTAINER ID\tNAMES", "0123\tweb"])
    # Go's tabwriter as Docker sets it up: cell + 3 spaces, at least 10 wide; the last cell is not padded
    assert lines == ["CONTAINER ID   NAMES", "0123           web"]
    assert formatting.align(["a\tb", "c\td"]) == ["a         b", "c         d"]


@pytest.mark.parametrize(
    "text",
    ["{{upper .Names}}", "{{.Names", "{{.}}", "{{json}}", "{{json .A .B}}", "{{.Names}} }}", "{{.a-b}}"],
)
def test_unsupported_or_broken_templates_are_errors(text: str) -> None:
    with pytest.raises(TemplateError):
        parse(text)


def test_check_accepts_words_and_templates_only() -> None:
    assert formatting.check("json") == "json"
    assert formatting.check("table") == "table"
    assert formatting.check("{{.ID}}") == "{{.ID}}"
    with pytest.raises(TemplateError, match="invalid --format 'jsno'"):
        formatting.check("jsno")
    assert not formatting.is_template("table") and not formatting.is_template("json")
    assert formatting.is_template("table {{.ID}}")


def test_unknown_field_names_the_field_and_the_known_ones() -> None:
    with pytest.raises(TemplateError) as info:
        formatting.renderer("{{.Names}} {{.Nope}}", "ps")
    message = str(info.value)
    assert ".Nope" in message and "`ps`" in message
    assert "ID, Image, Command, CreatedAt, RunningFor, Ports, State, Status, Size, Names" in message
    assert "\n" not in message


def test_templates_only_for_the_list_commands() -> None:
    with pytest.raises(TemplateError, match="`info` takes table or json"):
        formatting.renderer("{{.Name}}", "info")
    for command in ("ps", "container ls", "images", "image ls", "volume ls", "network ls"):
        formatting.renderer("{{json .}}", command)


def test_every_documented_field_is_known() -> None:
    documented = {
        "ps": "ID Image Command CreatedAt RunningFor Ports State Status Size Names Labels Mounts Networks",
        "images": "ID Repository Tag Digest CreatedSince CreatedAt Size",
        "volume ls": "Name Driver Scope Mountpoint Labels",
        "network ls": "ID Name Driver Scope IPv6 Internal Labels CreatedAt",
    }
    for command, names in documented.items():
        assert list(formatting.LISTS[command].headers) == names.split()
        r = formatting.renderer(" ".join(f"{{{{.{n}}}}}" for n in names.split()), command)
        assert r.template.fields == names.split()


def test_container_fields() -> None:
    (row,) = formatting.container_rows([CONTAINER], full=False, now=NOW)
    assert row["ID"] == "0123456789ab"
    assert row["Names"] == "web" and row["Image"] == "busybox:latest" and row["State"] == "running"
    assert row["Status"] == "Up 4 minutes"
    assert row["RunningFor"] == "5 minutes ago"
    assert row["Command"] == '"sh -c while true; d…"'
    assert row["Labels"] == "app=shop,tier=front"
    assert row["Ports"] == "0.0.0.0:8080->80/tcp" and row["Mounts"] == "data" and row["Networks"] == "bridge"
    assert row["CreatedAt"].endswith("+0000 UTC") and len(row["CreatedAt"]) == len(
        "2024-05-01 10:00:00 +0000 UTC"
    )
    (full,) = formatting.container_rows([CONTAINER], full=True)
    assert full["ID"] == CONTAINER["id"] and full["Command"] == json.dumps(" ".join(CONTAINER["command"]))


def test_status_text_matches_docker() -> None:
    exited = {**CONTAINER, "status": "exited", "exit_code": 3, "finished_at": _iso(timedelta(seconds=30))}
    assert formatting.status_text(exited, NOW) == "Exited (3) 30 seconds ago"
    assert formatting.status_text({**CONTAINER, "status": "paused"}, NOW) == "Up 4 minutes (Paused)"
    assert (
        formatting.status_text({**CONTAINER, "health": "starting"}, NOW) == "Up 4 minutes (health: starting)"
    )
    assert formatting.status_text({**CONTAINER, "status": "created"}, NOW) == "Created"


def test_image_fields_one_row_per_name() -> None:
    rows = formatting.image_rows([IMAGE, {**IMAGE, "names": []}], full=False)
    assert [(r["Repository"], r["Tag"]) for r in rows] == [
        ("busybox", "latest"),
        ("registry.local:5000/team/busybox", "1.36"),
        ("<none>", "<none>"),
    ]
    assert rows[0]["ID"] == "ab" * 6
    assert rows[0]["Size"] == "4.26MB"
    assert rows[0]["Digest"] == IMAGE["digest"]
    assert rows[0]["CreatedAt"] == "2024-05-01 10:00:00 +0000 UTC"
    assert rows[0]["CreatedSince"].endswith(" ago")


def test_volume_and_network_fields() -> None:
    volume = {"name": "data", "driver": "local", "mountpoint": "/var/lib/v/data", "labels": {"a": "1"}}
    assert formatting.volume_rows([volume], False) == [
        {
            "Name": "data",
            "Driver": "local",
            "Scope": "local",
            "Mountpoint": "/var/lib/v/data",
            "Labels": "a=1",
        }
    ]
    network = {
        "id": "f" * 64,
        "name": "back",
        "driver": "bridge",
        "internal": True,
        "labels": {},
        "created": "2024-05-01T10:00:00Z",
    }
    (row,) = formatting.network_rows([network], False)
    assert row == {
        "ID": "f" * 12,
        "Name": "back",
        "Driver": "bridge",
        "Scope": "local",
        "IPv6": "false",
        "Internal": "true",
        "Labels": "",
        "CreatedAt": "2024-05-01 10:00:00 +0000 UTC",
    }


def test_renderer_one_host_plain_and_table() -> None:
    plain = formatting.renderer("{{.Names}} {{.State}}", "ps")
    assert plain.lines([CONTAINER, {**CONTAINER, "name": "db", "status": "exited"}]) == [
        "web running",
        "db exited",
    ]
    table = formatting.renderer(r"table {{.ID}}\t{{.Names}}", "ps", {"no_trunc": True})
    assert table.lines([CONTAINER]) == [
        "CONTAINER ID" + " " * 23 + "NAMES",  # the full ID (32 characters) is the widest cell
        f"{CONTAINER['id']}   web",
    ]


def test_renderer_fan_out_keeps_the_host_convention() -> None:
    results = {"h1": [CONTAINER], "h2": [{**CONTAINER, "name": "db"}]}
    plain = formatting.renderer("{{.Names}}", "ps")
    assert plain.lines_many(results) == ["h1 | web", "h2 | db"]
    table = formatting.renderer(r"table {{.Names}}\t{{.State}}", "ps")
    assert table.lines_many(results) == [
        "HOST      NAMES     STATE",
        "h1        web       running",
        "h2        db        running",
    ]
    as_json = formatting.renderer("{{json .Names}}", "ps")
    assert as_json.lines_many(results) == ['h1 | "web"', 'h2 | "db"']
