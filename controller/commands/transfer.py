"""Commands that move things between hosts: `commit`, `image send`, `move`.

`commit` runs like any command (on each -H target). `image send` and `move` involve several agents at
once in one operation, so they pick their source (`--from`) and targets (`-H` after the command, or the
global -H; `--to` for move) themselves and drive the agents through `controller.send` and
`controller.move`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from controller import fanout, inventory, output
from controller.api.transfer import TransferApi
from controller.app import App, HostOutput
from controller.archive_source import ArchiveSource
from controller.client import AgentClient
from controller.commands.fleet import HOSTS_KEY, inventory_path
from controller.errors import UsageError
from controller.move import Mover
from controller.send import AgentSource, Blob, BlobSource, Sender, no_progress
from controller.target import Target
from controller.transfer_view import SEND_WORDS, TransferView

# ---- commit -----------------------------------------------------------------------------------------------


@click.command(name="commit")
@click.option("-m", "--message", default="", help="history comment")
@click.option("-a", "--author", default="", help='author, e.g. "Jane <jane@example.com>"')
@click.option("-c", "--change", "changes", multiple=True, metavar="LINE", help="e.g. 'CMD [\"sh\"]'")
@click.option(
    "-p",
    "--pause",
    type=click.BOOL,
    default=True,
    show_default=True,
    help="pause a running container meanwhile",
)
@click.argument("container")
@click.argument("reference", required=False)
@click.pass_obj
def commit(
    app: App,
    message: str,
    author: str,
    changes: tuple[str, ...],
    pause: bool,
    container: str,
    reference: str | None,
) -> None:
    """Create an image from a container's changes (its writable layer on top of its image)."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        r = await TransferApi(client).commit(
            container, reference=reference or "", message=message, author=author, changes=changes, pause=pause
        )
        return {
            "id": r.image.id,
            "digest": r.image.digest,
            "names": list(r.image.names),
            "layer": {"digest": r.layer_digest, "size": r.layer_size},
        }

    app.run(op, text=lambda d: d["id"])


# ---- targets -----------------------------------------------------------------------------------------------


def _resolve(ctx: click.Context, app: App, values: tuple[str, ...]) -> list[Target]:
    hosts = inventory.select(inventory.load(inventory_path(ctx, app)), values)
    return [inventory.to_target(h) for h in hosts]


def _send_targets(ctx: click.Context, app: App, hosts: tuple[str, ...]) -> list[Target]:
    if hosts:
        return _resolve(ctx, app, hosts)
    if ctx.meta.get(HOSTS_KEY) is not None:  # the global -H
        return app.targets
    raise UsageError("say where to send: -H TARGET (repeatable: names, @group, all, addresses)")


# ---- image send -------------------------------------------------------------------------------------------


@click.command(name="send")
@click.argument("reference")
@click.argument("archive", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--from", "source", required=True, metavar="HOST|local", help="where the image is")
@click.option("-H", "--host", "hosts", multiple=True, metavar="TARGET", help="where to send it (repeatable)")
@click.option("-q", "--quiet", is_flag=True, help="no progress, only the summary")
@click.pass_context
def image_send(
    ctx: click.Context, reference: str, archive: Path | None, source: str, hosts: tuple[str, ...], quiet: bool
) -> None:
    """Copy an image from one host (or a local archive: --from local FILE) to others, each blob read once.

    Only the blobs a target lacks are sent; every blob is verified on arrival, and an interrupted or
    corrupted transfer is resumed or retried. Works without any registry.
    """
    app: App = ctx.obj
    targets = _send_targets(ctx, app, hosts)
    if source == "local":
        if archive is None:
            raise UsageError("--from local needs the archive: image send REF --from local FILE")
        if not archive.is_file():
            raise UsageError(f"{archive}: no such file")
        origin: Path | Target = archive
    else:
        if archive is not None:
            raise UsageError(f"unexpected argument {archive} (an archive goes with --from local)")
        found = _resolve(ctx, app, (source,))
        if len(found) != 1:
            raise UsageError("--from names one host")
        origin = found[0]
    prefix = len(targets) > 1
    interactive = not prefix and not app.json and app.console.is_terminal
    view = TransferView(
        HostOutput(None), app.console, interactive=interactive, words=SEND_WORDS, silent=quiet or app.json
    )

    def progress(host: str, blob: Blob, state: str, done: int, total: int) -> None:
        view.update(blob.digest, state, done, total, host=host if prefix else None)

    async def run() -> tuple[dict[str, Any], int, int]:
        pool = fanout.Pool(app.config_dir)
        try:
            src: BlobSource = (
                AgentSource(pool.client(origin), reference)
                if isinstance(origin, Target)
                else ArchiveSource(origin, reference)
            )
            plan = await src.plan()
            clients = [pool.client(t) for t in targets]
            with view:
                reports = await Sender(src, clients, progress=progress).run(plan)
            return dict(reports), src.bytes_read, plan.size
        finally:
            await pool.close()

    reports, bytes_read, image_size = asyncio.run(run())
    _show_send(app, reports, bytes_read, image_size, view)


def _show_send(
    app: App, reports: dict[str, Any], bytes_read: int, image_size: int, view: TransferView
) -> None:
    failed = {h: r.error for h, r in reports.items() if r.error is not None}
    if app.json:
        output.print_json(
            {
                "bytes_read": bytes_read,
                "image_size": image_size,
                "hosts": {
                    h: ({"error": r.error.message} if r.error else r.as_dict()) for h, r in reports.items()
                },
            }
        )
    else:
        for host, r in reports.items():
            if r.error is not None:
                continue
            parts = [f"sent {r.blobs_sent} blobs ({output.human_size(r.sent_bytes)})"]
            if r.blobs_present:
                parts.append(f"{r.blobs_present} already there")
            if r.resumed_bytes:
                parts.append(f"resumed after {output.human_size(r.resumed_bytes)}")
            if r.retries:
                parts.append(f"{r.retries} retries")
            name = ", ".join(r.names) or r.image_id
            view.message(f"{host} | {name}: {'; '.join(parts)}")
        view.message(
            f"read {output.human_size(bytes_read)} from the source "
            f"for a {output.human_size(image_size)} image"
        )
    if len(reports) > 1:
        app.err_console.print(f"{len(reports) - len(failed)} ok, {len(failed)} failed", markup=False)
    for error in failed.values():
        app.err_console.print(f"error: {error}", markup=False)
    if len(failed) > fanout.parse_max_fail(app.max_fail).allowed(len(reports)):
        raise SystemExit(1)


# ---- move ---------------------------------------------------------------------------------------------


@click.command(name="move")
@click.argument("container")
@click.option("--from", "source", required=True, metavar="HOST", help="where the container is")
@click.option("--to", "target", required=True, metavar="HOST", help="where it goes")
@click.option("--keep-source", is_flag=True, help="leave the (stopped) source container in place")
@click.option(
    "-t", "--time", "stop_timeout", type=click.IntRange(min=0), help="seconds to wait for it to stop"
)
@click.pass_context
def move(
    ctx: click.Context, container: str, source: str, target: str, keep_source: bool, stop_timeout: int | None
) -> None:
    """Move a container to another host: stop, commit, send, copy volumes, recreate, start, remove.

    Until the container runs on the target, a failure leaves it on the source as it was (started again
    if it was running).
    """
    app: App = ctx.obj
    found = [_resolve(ctx, app, (value,)) for value in (source, target)]
    if any(len(f) != 1 for f in found):
        raise UsageError("--from and --to name one host each")
    src_target, dst_target = found[0][0], found[1][0]
    if src_target.grpc_target == dst_target.grpc_target:
        raise UsageError("--from and --to are the same host")

    def say(text: str) -> None:
        if not app.json:
            app.console.print(text, markup=False, highlight=False)

    async def run() -> dict[str, Any]:
        pool = fanout.Pool(app.config_dir)
        try:
            mover = Mover(
                pool.client(src_target),
                pool.client(dst_target),
                say=say,
                progress=no_progress,
                stop_timeout=stop_timeout,
            )
            return (await mover.move(container, keep_source=keep_source)).as_dict()
        finally:
            await pool.close()

    result = asyncio.run(run())
    if app.json:
        output.print_json(result)
        return
    short = result["id"][:12]
    if result["running"]:
        say(
            f"{result['name']} now runs on {result['target']} (id {short}); "
            f"downtime {result['downtime_seconds']:.2f}s"
        )
    else:
        say(f"{result['name']} is now on {result['target']} (id {short}), not started: it was not running")


COMMANDS = [commit, move]
IMAGE_SUBCOMMANDS = [image_send]
