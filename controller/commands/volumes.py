"""`dockyard volume create|ls|inspect|rm|prune`: named volumes on an agent."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from controller import output
from controller.api.volumes import VolumesApi
from controller.app import App, HostOutput
from controller.client import AgentClient


@click.group("volume")
def volume_group() -> None:
    """Manage volumes."""


@volume_group.command("create")
@click.option("-l", "--label", "labels", multiple=True, metavar="K=V")
@click.argument("name", required=False, default="")
@click.pass_obj
def create(app: App, labels: tuple[str, ...], name: str) -> None:
    """Create a volume (a random name when none is given)."""
    label_map = dict(item.partition("=")[::2] for item in labels)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        return asdict(await VolumesApi(client).create(name, label_map))

    app.run(op, text=lambda d: d["name"])


@volume_group.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="only names")
@click.pass_obj
def ls(app: App, quiet: bool) -> None:
    """List volumes."""

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        return [asdict(v) for v in await VolumesApi(client).list()]

    def table(rows: list[dict[str, Any]]) -> output.Table:
        if quiet:
            return output.Table(["VOLUME NAME"], [[r["name"]] for r in rows])
        return output.Table(["DRIVER", "VOLUME NAME"], [[r["driver"], r["name"]] for r in rows])

    app.run(op, table=table, idempotent=True)


@volume_group.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def inspect(app: App, names: tuple[str, ...]) -> None:
    """Show volumes in detail (JSON)."""

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        api = VolumesApi(client)
        return [asdict(await api.inspect(n)) for n in names]

    app.run(op, text=lambda d: json.dumps(d, indent=2), idempotent=True)


@volume_group.command("rm")
@click.option("-f", "--force", is_flag=True, help="no error when the volume does not exist")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def rm(app: App, force: bool, names: tuple[str, ...]) -> None:
    """Remove volumes (refused while a container uses one)."""

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        api = VolumesApi(client)
        for n in names:
            await api.remove(n, force=force)
        return list(names)

    app.run(op, text="\n".join)


@volume_group.command("prune")
@click.option("-f", "--force", is_flag=True, help="do not ask (accepted for Docker compatibility)")
@click.pass_obj
def prune(app: App, force: bool) -> None:
    """Remove every volume no container uses."""

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        return await VolumesApi(client).prune()

    app.run(op, text=lambda names: "\n".join(["Deleted Volumes:", *names]) if names else "")


COMMANDS = [volume_group]
