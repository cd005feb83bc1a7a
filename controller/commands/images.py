"""Image commands: images, image inspect|ls|rm|tag|prune|save|load|import, tag, rmi, save, load, import,
system df|prune. Archives stream in 1 MiB chunks between this process's files and the (possibly remote) agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from controller import output
from controller.api.build import BuildApi
from controller.api.containers import ContainersApi
from controller.api.images import ARCHIVE_FORMATS, ImagesApi
from controller.api.volumes import VolumesApi
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import UsageError

CHUNK = 1 << 20
F = TypeVar("F", bound=Callable[..., Any])


def _familiar(name: str) -> tuple[str, str]:
    """("busybox", "latest") for "docker.io/library/busybox:latest"; "<none>" when there is no tag."""
    base = name.partition("@")[0]
    slash, colon = base.rfind("/"), base.rfind(":")
    repo, tag = (base[:colon], base[colon + 1 :]) if colon > slash else (base, "<none>")
    if repo.startswith("docker.io/library/") and repo.count("/") == 2:
        repo = repo[len("docker.io/library/") :]
    elif repo.startswith("docker.io/"):
        repo = repo[len("docker.io/") :]
    return repo, tag


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _created(d: dict[str, Any]) -> datetime | None:
    return datetime.fromisoformat(d["created"]) if d.get("created") else None


# ---- images / image ls ------------------------------------------------------------------------------


def _list(app: App, digests: bool, quiet: bool) -> None:
    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        return [asdict(i) for i in await ImagesApi(client).list()]

    def table(images: list[dict[str, Any]]) -> output.Table:
        columns = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED", "SIZE"]
        rows = []
        for img in images:
            for name in img["names"] or ["<none>:<none>"]:
                repo, tag = _familiar(name) if img["names"] else ("<none>", "<none>")
                row = [repo, tag]
                if digests:
                    row.append(img["index_digest"] or img["digest"])
                row += [_short(img["id"]), output.human_ago(_created(img)), output.human_size(img["size"])]
                rows.append(row)
        return output.Table(columns, rows)

    def ids(images: list[dict[str, Any]]) -> str:
        seen: list[str] = []
        for img in images:
            if _short(img["id"]) not in seen:
                seen.append(_short(img["id"]))
        return "\n".join(seen)

    if quiet and not app.json:
        app.run(op, text=ids, idempotent=True)
    else:
        app.run(op, table=table, idempotent=True)


@click.command(name="images")
@click.option("--digests", is_flag=True, help="show manifest digests")
@click.option("-q", "--quiet", is_flag=True, help="only image IDs")
@click.pass_obj
def images(app: App, digests: bool, quiet: bool) -> None:
    """List images."""
    _list(app, digests, quiet)


@click.group(name="image")
def image_group() -> None:
    """Manage images."""


@image_group.command(name="ls")
@click.option("--digests", is_flag=True, help="show manifest digests")
@click.option("-q", "--quiet", is_flag=True, help="only image IDs")
@click.pass_obj
def image_ls(app: App, digests: bool, quiet: bool) -> None:
    """List images."""
    _list(app, digests, quiet)


# ---- inspect -----------------------------------------------------------------------------------------


@image_group.command(name="inspect")
@click.argument("references", nargs=-1, required=True)
@click.pass_obj
def image_inspect(app: App, references: tuple[str, ...]) -> None:
    """Show images in detail (JSON), with their config and manifest."""

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        api = ImagesApi(client)
        found = []
        for ref in references:
            details = await api.inspect(ref)
            d = asdict(details.image)
            d["config"] = details.config
            d["manifest"] = details.manifest
            found.append(d)
        return found

    # Like `docker inspect`: JSON whatever --format says.
    app.run(op, text=lambda d: json.dumps(d, indent=2), idempotent=True)


# ---- tag / rmi ---------------------------------------------------------------------------------------


def _tag(app: App, source: str, target: str) -> None:
    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        return asdict(await ImagesApi(client).tag(source, target))

    app.run(op, text=lambda d: "")


@click.command(name="tag")
@click.argument("source")
@click.argument("target")
@click.pass_obj
def tag(app: App, source: str, target: str) -> None:
    """Give image SOURCE the additional name TARGET."""
    _tag(app, source, target)


@image_group.command(name="tag")
@click.argument("source")
@click.argument("target")
@click.pass_obj
def image_tag(app: App, source: str, target: str) -> None:
    """Give image SOURCE the additional name TARGET."""
    _tag(app, source, target)


def _rmi(app: App, references: tuple[str, ...], force: bool) -> None:
    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        api = ImagesApi(client)
        untagged: list[str] = []
        deleted: list[str] = []
        reclaimed = 0
        for ref in references:
            r = await api.remove(ref, force=force)
            untagged += r.untagged
            deleted += r.deleted
            reclaimed += r.reclaimed_bytes
        return {"untagged": untagged, "deleted": deleted, "reclaimed_bytes": reclaimed}

    def text(d: dict[str, Any]) -> str:
        return "\n".join(
            [
                *(f"Untagged: {_join(_familiar(n))}" for n in d["untagged"]),
                *(f"Deleted: {x}" for x in d["deleted"]),
            ]
        )

    app.run(op, text=text)


def _join(parts: tuple[str, str]) -> str:
    repo, tag = parts
    return repo if tag == "<none>" else f"{repo}:{tag}"


@click.command(name="rmi")
@click.option("-f", "--force", is_flag=True, help="remove even if a container uses it / all names of an ID")
@click.argument("references", nargs=-1, required=True)
@click.pass_obj
def rmi(app: App, references: tuple[str, ...], force: bool) -> None:
    """Remove images (a name, or an image ID)."""
    _rmi(app, references, force)


@image_group.command(name="rm")
@click.option("-f", "--force", is_flag=True, help="remove even if a container uses it / all names of an ID")
@click.argument("references", nargs=-1, required=True)
@click.pass_obj
def image_rm(app: App, references: tuple[str, ...], force: bool) -> None:
    """Remove images (a name, or an image ID)."""
    _rmi(app, references, force)


# ---- prune / df ----------------------------------------------------------------------------------------


@image_group.command(name="prune")
@click.option(
    "-a", "--all", "all_unused", is_flag=True, help="every image no container uses, not just dangling"
)
@click.option("-f", "--force", is_flag=True, help="do not ask for confirmation")
@click.pass_obj
def image_prune(app: App, all_unused: bool, force: bool) -> None:
    """Remove unused images and the content nothing references."""
    if not force and sys.stdin.isatty():
        what = "all images without at least one container" if all_unused else "all dangling images"
        click.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?", abort=True)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        r = await ImagesApi(client).prune(all_unused=all_unused)
        return {
            "untagged": list(r.untagged),
            "deleted": list(r.deleted),
            "reclaimed_bytes": r.reclaimed_bytes,
        }

    def text(d: dict[str, Any]) -> str:
        lines = []
        if d["untagged"] or d["deleted"]:
            lines.append("Deleted Images:")
            lines += [f"untagged: {_join(_familiar(n))}" for n in d["untagged"]]
            lines += [f"deleted: {x}" for x in d["deleted"]]
            lines.append("")
        lines.append(f"Total reclaimed space: {output.human_size(d['reclaimed_bytes'])}")
        return "\n".join(lines)

    app.run(op, text=text)


@click.group(name="system")
def system_group() -> None:
    """Agent-wide views and clean-up (disk usage, prune)."""


@system_group.command(name="df")
@click.pass_obj
def system_df(app: App) -> None:
    """Show disk usage of images, snapshots and content."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        r = await ImagesApi(client).disk_usage()
        return {
            "images": {
                "total": r.images,
                "active": r.images_active,
                "size": r.images_size,
                "reclaimable": r.images_reclaimable,
            },
            "snapshots": {"total": r.snapshots, "size": r.snapshots_size},
            "content": {"blobs": r.content_blobs, "size": r.content_size, "partial_size": r.partial_size},
        }

    def table(d: dict[str, Any]) -> output.Table:
        i, s, c = d["images"], d["snapshots"], d["content"]
        pct = f" ({100 * i['reclaimable'] // i['size']}%)" if i["size"] else ""
        return output.Table(
            ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
            [
                [
                    "Images",
                    i["total"],
                    i["active"],
                    output.human_size(i["size"]),
                    output.human_size(i["reclaimable"]) + pct,
                ],
                ["Snapshots", s["total"], "", output.human_size(s["size"]), ""],
                ["Content", c["blobs"], "", output.human_size(c["size"]), ""],
                [  # partial downloads and temp files of loads, builds, commits: `image prune` takes them
                    "Partial data",
                    "",
                    "",
                    output.human_size(c["partial_size"]),
                    output.human_size(c["partial_size"]),
                ],
            ],
        )

    app.run(op, table=table, idempotent=True)


@system_group.command(name="prune")
@click.option(
    "-a", "--all", "all_unused", is_flag=True, help="every image no container uses, not just dangling"
)
@click.option("--volumes", is_flag=True, help="also volumes no container uses")
@click.option("-f", "--force", is_flag=True, help="do not ask for confirmation")
@click.pass_obj
def system_prune(app: App, all_unused: bool, volumes: bool, force: bool) -> None:
    """Remove stopped containers, unused images, the build cache, partial downloads and temp files."""
    if not force and sys.stdin.isatty():
        what = ["all stopped containers", "all build cache"]
        what.append("all images without at least one container" if all_unused else "all dangling images")
        if volumes:
            what.append("all volumes not used by at least one container")
        click.confirm(
            "WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in what) + "Are you sure you want "
            "to continue?",
            abort=True,
        )

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        containers = await ContainersApi(client).prune()
        removed_volumes = await VolumesApi(client).prune() if volumes else []
        cache_entries = await BuildApi(client).prune_cache()
        # last: it collects what the others left unreferenced
        images = await ImagesApi(client).prune(all_unused=all_unused)
        return {
            "containers": list(containers),
            "volumes": removed_volumes,
            "build_cache_entries": cache_entries,
            "untagged": list(images.untagged),
            "deleted": list(images.deleted),
            "reclaimed_bytes": images.reclaimed_bytes,
        }

    def text(d: dict[str, Any]) -> str:
        lines = []
        for title, key in (("Deleted Containers:", "containers"), ("Deleted Volumes:", "volumes")):
            if d[key]:
                lines += [title, *d[key], ""]
        if d["untagged"] or d["deleted"]:
            lines.append("Deleted Images:")
            lines += [f"untagged: {_join(_familiar(n))}" for n in d["untagged"]]
            lines += [f"deleted: {x}" for x in d["deleted"]]
            lines.append("")
        if d["build_cache_entries"]:
            lines += [f"Deleted build cache entries: {d['build_cache_entries']}", ""]
        lines.append(f"Total reclaimed space: {output.human_size(d['reclaimed_bytes'])}")
        return "\n".join(lines)

    app.run(op, text=text)


# ---- save / load / import --------------------------------------------------------------------------------


async def _read_chunks(path: Path | None) -> AsyncIterator[bytes]:
    """The file (or stdin) in chunks, read off the event loop."""
    fh: IO[bytes] = sys.stdin.buffer if path is None else await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk
    finally:
        if path is not None:
            fh.close()


def _input_path(value: str | None) -> Path | None:
    if value is None or value == "-":
        if sys.stdin.isatty():
            raise UsageError("no input: give a file or pipe one into stdin")
        return None
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"{value}: no such file")
    return path


def _save(app: App, references: tuple[str, ...], output_file: str | None, fmt: str) -> None:
    if len(app.targets) > 1:
        raise UsageError("save reads from one agent at a time: give a single -H")
    if output_file is None and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal: use -o FILE or redirect stdout")

    async def op(client: AgentClient, out: HostOutput) -> None:
        stream = ImagesApi(client).save(references, fmt)
        if output_file is None:
            async for chunk in stream:
                await asyncio.to_thread(sys.stdout.buffer.write, chunk)
            await asyncio.to_thread(sys.stdout.buffer.flush)
            return
        final = Path(output_file)
        part = final.with_name(f".{final.name}.part-{os.getpid()}")
        try:
            fh: IO[bytes] = await asyncio.to_thread(open, part, "wb")
            try:
                async for chunk in stream:
                    await asyncio.to_thread(fh.write, chunk)
            finally:
                fh.close()
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)

    app.run(op)


_SAVE_OPTIONS = [
    click.option("-o", "--output", "output_file", metavar="FILE", help="write here (default: stdout)"),
    click.option(
        "--format",
        "archive_format",
        type=click.Choice(sorted(ARCHIVE_FORMATS)),
        default="docker",
        show_default=True,
        help="docker-archive or OCI image-layout archive",
    ),
]


def _with(options: list[Any]) -> Callable[[F], F]:
    """Apply a shared list of click options (the `image X` and top-level `X` spellings share them)."""

    def deco(f: F) -> F:
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


@click.command(name="save")
@_with(_SAVE_OPTIONS)
@click.argument("references", nargs=-1, required=True)
@click.pass_obj
def save(app: App, references: tuple[str, ...], output_file: str | None, archive_format: str) -> None:
    """Write images to a tar archive (docker-archive, or OCI with --format oci)."""
    _save(app, references, output_file, archive_format)


@image_group.command(name="save")
@_with(_SAVE_OPTIONS)
@click.argument("references", nargs=-1, required=True)
@click.pass_obj
def image_save(app: App, references: tuple[str, ...], output_file: str | None, archive_format: str) -> None:
    """Write images to a tar archive (docker-archive, or OCI with --format oci)."""
    _save(app, references, output_file, archive_format)


def _load(app: App, input_file: str | None, quiet: bool) -> None:
    path = _input_path(input_file)
    if path is None and len(app.targets) > 1:
        raise UsageError("loading from stdin works with one agent only: use -i FILE for several")

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        r = await ImagesApi(client).load(_read_chunks(path))
        for warning in r.warnings:
            out.line(f"warning: {warning}", err=True)
        return [asdict(i) for i in r.images]

    def text(loaded: list[dict[str, Any]]) -> str:
        if quiet:
            return ""
        lines = []
        for img in loaded:
            if img["names"]:
                lines += [f"Loaded image: {_join(_familiar(n))}" for n in img["names"]]
            else:
                lines.append(f"Loaded image ID: {img['id']}")
        return "\n".join(lines)

    app.run(op, text=text)


_LOAD_OPTIONS = [
    click.option("-i", "--input", "input_file", metavar="FILE", help="archive to read (default: stdin)"),
    click.option("-q", "--quiet", is_flag=True, help="print nothing on success"),
]


@click.command(name="load")
@_with(_LOAD_OPTIONS)
@click.pass_obj
def load(app: App, input_file: str | None, quiet: bool) -> None:
    """Load images from a docker-archive or OCI archive (docker/podman save; may be compressed)."""
    _load(app, input_file, quiet)


@image_group.command(name="load")
@_with(_LOAD_OPTIONS)
@click.pass_obj
def image_load(app: App, input_file: str | None, quiet: bool) -> None:
    """Load images from a docker-archive or OCI archive (docker/podman save; may be compressed)."""
    _load(app, input_file, quiet)


def _import(app: App, source: str, reference: str | None, changes: tuple[str, ...], message: str) -> None:
    path = _input_path(source)
    if path is None and len(app.targets) > 1:
        raise UsageError("importing from stdin works with one agent only: give a file for several")

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        image = await ImagesApi(client).import_rootfs(
            _read_chunks(path), reference=reference or "", changes=changes, message=message
        )
        return asdict(image)

    app.run(op, text=lambda d: d["id"])


_IMPORT_OPTIONS = [
    click.option("-c", "--change", "changes", multiple=True, metavar="LINE", help="e.g. 'CMD [\"sh\"]'"),
    click.option("-m", "--message", default="", help="history comment"),
]


@click.command(name="import")
@_with(_IMPORT_OPTIONS)
@click.argument("source")
@click.argument("reference", required=False)
@click.pass_obj
def import_(app: App, source: str, reference: str | None, changes: tuple[str, ...], message: str) -> None:
    """Create an image from a root filesystem tarball (SOURCE: file or - for stdin)."""
    _import(app, source, reference, changes, message)


@image_group.command(name="import")
@_with(_IMPORT_OPTIONS)
@click.argument("source")
@click.argument("reference", required=False)
@click.pass_obj
def image_import(
    app: App, source: str, reference: str | None, changes: tuple[str, ...], message: str
) -> None:
    """Create an image from a root filesystem tarball (SOURCE: file or - for stdin)."""
    _import(app, source, reference, changes, message)


COMMANDS = [images, image_group, tag, rmi, save, load, import_, system_group]
