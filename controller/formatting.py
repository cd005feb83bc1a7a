"""`--format`: the words `table` and `json`, or a Go-template-like `{{.Field}}` form as Docker takes it.

Docker users type `dockyard ps --format '{{.Names}}\t{{.Status}}'`; this module is the small, pure engine
behind that: `parse` turns the text into a `Template` (literal text, `{{.Field}}`, `{{json .}}`,
`{{json .Field}}`, Go's `{{-`/`-}}` trimming), `\\t`/`\\n` escapes become tabs/newlines, and a `table `
prefix adds a header line and aligns the tab-separated cells as Docker's tabwriter does. Each list
command (ps, images, volume ls, network ls) maps the rows its JSON output holds to the fields Docker
documents (`LISTS`); an unknown field is an error naming it and the known ones, before the agent is
called. Several hosts keep the CLI's convention: a HOST column for a table, `host | ` before each line.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.output import human_ago, human_size

WORDS = ("table", "json")


class TemplateError(ValueError):
    """A --format template that cannot be used (bad syntax, unknown field, unsupported command)."""


def is_template(text: str) -> bool:
    """Anything but the plain words is a template (Docker prints literal text once per row too)."""
    return text not in WORDS


def check(text: str) -> str:
    """A --format value as given on the command line: a word, or text with at least one `{{ }}` action."""
    if text in WORDS or "{{" in text:
        return text
    raise TemplateError(
        f"invalid --format {text!r}: expected table, json or a template like '{{{{.Names}}}}'"
    )


# ---- the template ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """`{{.Name}}` (as_json False) or `{{json .Name}}`; name None is `.`, the whole row."""

    name: str | None
    as_json: bool = False


Part = str | Field


@dataclass(frozen=True)
class Template:
    parts: tuple[Part, ...]
    table: bool = False

    @property
    def fields(self) -> list[str]:
        return [p.name for p in self.parts if isinstance(p, Field) and p.name is not None]

    def render(self, row: Mapping[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else _value(p, row) for p in self.parts)

    def header(self, headers: Mapping[str, str]) -> str:
        """The header line of a `table` template: each field's column title, literal text kept."""
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            else:
                out.append(headers.get(p.name, p.name.upper()) if p.name is not None else "")
        return "".join(out)


def _value(part: Field, row: Mapping[str, Any]) -> str:
    value: Any = dict(row) if part.name is None else row[part.name]
    if part.as_json:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


def parse(text: str) -> Template:
    """Parse a --format template; raises TemplateError with what is wrong."""
    table = text.startswith("table")
    body = text[len("table") :] if table else text
    body = body.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    parts: list[Part] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(body):
        literal = body[pos : match.start()]
        if trim_next:
            literal = literal.lstrip()
        if match.group(1):
            literal = literal.rstrip()
        if literal:
            parts.append(literal)
        parts.append(_action(match.group(2).strip(), text))
        trim_next = bool(match.group(3))
        pos = match.end()
    rest = body[pos:]
    if trim_next:
        rest = rest.lstrip()
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"--format {text!r}: unbalanced '{{{{' or '}}}}'")
    if rest:
        parts.append(rest)
    return Template(tuple(parts), table)


def _action(action: str, text: str) -> Field:
    words = action.split()
    if words and words[0] == "json":
        if len(words) == 2 and words[1] == ".":
            return Field(None, as_json=True)
        if len(words) == 2 and _FIELD.fullmatch(words[1]):
            return Field(words[1][1:], as_json=True)
    elif len(words) == 1 and _FIELD.fullmatch(words[0]):
        return Field(words[0][1:])
    raise TemplateError(
        f"--format {text!r}: unsupported action '{{{{{action}}}}}' (use {{{{.Field}}}}, {{{{json .}}}} "
        "or {{json .Field}})"
    )


def align(lines: Sequence[str], *, minwidth: int = 10, padding: int = 3) -> list[str]:
    """Tab-separated cells in columns, as Go's tabwriter lays out Docker's tables (minwidth 10, padding 3):
    each tab-terminated cell is padded to its column's widest cell plus padding; the last cell is not."""
    split = [line.split("\t") for line in lines]
    widths: list[int] = []
    for cells in split:
        for i, cell in enumerate(cells[:-1]):
            w = max(minwidth, len(cell) + padding)
            if i == len(widths):
                widths.append(w)
            elif w > widths[i]:
                widths[i] = w
    return ["".join(c.ljust(widths[i]) for i, c in enumerate(cells[:-1])) + cells[-1] for cells in split]


# ---- the list commands' fields -----------------------------------------------------------------------

Rows = Callable[[Sequence[Mapping[str, Any]], bool], list[dict[str, Any]]]


@dataclass(frozen=True)
class ListFormat:
    """A list command's Docker fields: their column titles (in Docker's order) and how rows map to them."""

    headers: Mapping[str, str]
    rows: Rows  # (the command's JSON rows, full IDs and commands) -> one dict of fields per printed row
    full_flag: str | None = None  # the command's flag for untruncated values (`--no-trunc`)


def _created_at(iso: str | None) -> str:
    """Docker's CreatedAt: `2024-05-01 10:00:00 +0000 UTC`."""
    if not iso:
        return ""
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _ago(iso: str | None, now: dt.datetime | None = None) -> str:
    if not iso:
        return ""
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return human_ago(when if when.tzinfo else when.replace(tzinfo=dt.UTC), now)


def _labels(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def _command(cmd: Sequence[str], full: bool, width: int = 20) -> str:
    text = " ".join(cmd)
    if not full and len(text) > width:
        text = text[: width - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


def status_text(row: Mapping[str, Any], now: dt.datetime | None = None) -> str:
    """Docker's Status: "Up 5 minutes (healthy)", "Exited (0) 2 seconds ago", "Created"."""

    def since(iso: str | None) -> str:
        return _ago(iso, now).removesuffix(" ago")

    status = str(row.get("status", ""))
    if status in ("running", "paused"):
        text = f"Up {since(row.get('started_at'))}"
        if status == "paused":
            return text + " (Paused)"
        health = row.get("health")
        return text + (f" ({'health: starting' if health == 'starting' else health})" if health else "")
    if status in ("exited", "restarting"):
        return f"{status.capitalize()} ({row.get('exit_code', 0)}) {since(row.get('finished_at'))} ago"
    return status.capitalize()


def container_rows(
    rows: Sequence[Mapping[str, Any]], full: bool, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Docker's fields of `ps` rows; `now` (default: the clock) is what "5 minutes ago" counts from."""
    return [
        {
            "ID": r["id"] if full else str(r["id"])[:12],
            "Image": r.get("image", ""),
            "Command": _command(r.get("command") or [], full),
            "CreatedAt": _created_at(r.get("created")),
            "RunningFor": _ago(r.get("created"), now),
            "Ports": ", ".join(r.get("ports") or []),
            "State": r.get("status", ""),
            "Status": status_text(r, now),
            "Size": "",  # the agent does not report a container's size in lists
            "Names": r.get("name", ""),
            "Labels": _labels(r.get("labels")),
            "Mounts": ",".join(str(m.get("source", "")) for m in r.get("mounts") or []),
            "Networks": r.get("network", ""),
        }
        for r in rows
    ]


def familiar(name: str) -> tuple[str, str]:
    """("busybox", "latest") for "docker.io/library/busybox:latest"; "<none>" when there is no tag."""
    base = name.partition("@")[0]
    slash, colon = base.rfind("/"), base.rfind(":")
    repo, tag = (base[:colon], base[colon + 1 :]) if colon > slash else (base, "<none>")
    if repo.startswith("docker.io/library/") and repo.count("/") == 2:
        repo = repo[len("docker.io/library/") :]
    elif repo.startswith("docker.io/"):
        repo = repo[len("docker.io/") :]
    return repo, tag


def image_rows(images: Sequence[Mapping[str, Any]], full: bool) -> list[dict[str, Any]]:
    """One row per name of each image (one `<none>` row for an image without names), as `images` prints."""
    out = []
    for img in images:
        image_id = str(img["id"])
        for name in img.get("names") or [None]:
            repo, tag = familiar(name) if name else ("<none>", "<none>")
            out.append(
                {
                    "ID": image_id if full else image_id.split(":", 1)[-1][:12],
                    "Repository": repo,
                    "Tag": tag,
                    "Digest": img.get("index_digest") or img.get("digest") or "<none>",
                    "CreatedSince": _ago(img.get("created")),
                    "CreatedAt": _created_at(img.get("created")),
                    "Size": human_size(int(img.get("size") or 0)),
                }
            )
    return out


def volume_rows(volumes: Sequence[Mapping[str, Any]], full: bool) -> list[dict[str, Any]]:
    return [
        {
            "Name": v["name"],
            "Driver": v.get("driver", ""),
            "Scope": "local",
            "Mountpoint": v.get("mountpoint", ""),
            "Labels": _labels(v.get("labels")),
        }
        for v in volumes
    ]


def network_rows(networks: Sequence[Mapping[str, Any]], full: bool) -> list[dict[str, Any]]:
    return [
        {
            "ID": n["id"] if full else str(n["id"])[:12],
            "Name": n.get("name", ""),
            "Driver": n.get("driver", ""),
            "Scope": "local",
            "IPv6": "false",
            "Internal": "true" if n.get("internal") else "false",
            "Labels": _labels(n.get("labels")),
            "CreatedAt": _created_at(n.get("created")),
        }
        for n in networks
    ]


_CONTAINERS = ListFormat(
    {
        "ID": "CONTAINER ID",
        "Image": "IMAGE",
        "Command": "COMMAND",
        "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED",
        "Ports": "PORTS",
        "State": "STATE",
        "Status": "STATUS",
        "Size": "SIZE",
        "Names": "NAMES",
        "Labels": "LABELS",
        "Mounts": "MOUNTS",
        "Networks": "NETWORKS",
    },
    container_rows,
    "no_trunc",
)
_IMAGES = ListFormat(
    {
        "ID": "IMAGE ID",
        "Repository": "REPOSITORY",
        "Tag": "TAG",
        "Digest": "DIGEST",
        "CreatedSince": "CREATED",
        "CreatedAt": "CREATED AT",
        "Size": "SIZE",
    },
    image_rows,
)
_VOLUMES = ListFormat(
    {
        "Name": "VOLUME NAME",
        "Driver": "DRIVER",
        "Scope": "SCOPE",
        "Mountpoint": "MOUNTPOINT",
        "Labels": "LABELS",
    },
    volume_rows,
)
_NETWORKS = ListFormat(
    {
        "ID": "NETWORK ID",
        "Name": "NAME",
        "Driver": "DRIVER",
        "Scope": "SCOPE",
        "IPv6": "IPV6",
        "Internal": "INTERNAL",
        "Labels": "LABELS",
        "CreatedAt": "CREATED AT",
    },
    network_rows,
)

# command path (without `dockyard`) -> its fields; these commands' JSON output is a list of rows
LISTS: dict[str, ListFormat] = {
    "ps": _CONTAINERS,
    "container ls": _CONTAINERS,
    "images": _IMAGES,
    "image ls": _IMAGES,
    "volume ls": _VOLUMES,
    "network ls": _NETWORKS,
}


# ---- a template bound to a command -------------------------------------------------------------------


@dataclass
class Renderer:
    """A parsed template bound to one list command's fields (and its `--no-trunc`, read when printing)."""

    template: Template
    spec: ListFormat
    params: Mapping[str, Any] = field(default_factory=dict)  # the command's parsed flags

    def rows(self, result: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        full = bool(self.spec.full_flag and self.params.get(self.spec.full_flag))
        return self.spec.rows(result, full)

    def lines(self, result: Sequence[Mapping[str, Any]]) -> list[str]:
        """What one host prints: the rendered rows (a header and aligned columns for `table`)."""
        rendered = [self.template.render(row) for row in self.rows(result)]
        if not self.template.table:
            return rendered
        return align([self.template.header(self.spec.headers), *rendered])

    def lines_many(self, results: Mapping[str, Sequence[Mapping[str, Any]] | None]) -> list[str]:
        """Several hosts: a HOST column in front of a `table`, `host | ` in front of every other line."""
        if not self.template.table:
            return [
                f"{host} | {line}"
                for host, result in results.items()
                if result is not None
                for rendered in (self.template.render(row) for row in self.rows(result))
                for line in rendered.split("\n")
            ]
        lines = [f"HOST\t{self.template.header(self.spec.headers)}"]
        for host, result in results.items():
            if result is not None:
                lines += [f"{host}\t{self.template.render(row)}" for row in self.rows(result)]
        return align(lines)


def renderer(text: str, command: str, params: Mapping[str, Any] | None = None) -> Renderer:
    """Bind a --format template to `command` (e.g. "volume ls"); raises TemplateError if it cannot apply."""
    spec = LISTS.get(command)
    if spec is None:
        raise TemplateError(
            "--format templates work with ps, images, volume ls and network ls; "
            f"`{command}` takes table or json"
        )
    template = parse(text)
    for name in template.fields:
        if name not in spec.headers:
            raise TemplateError(
                f"--format: unknown field .{name} for `{command}`; known fields: {', '.join(spec.headers)}"
            )
    return Renderer(template, spec, {} if params is None else params)
