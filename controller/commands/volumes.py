"""`dockyard volume create|ls|inspect|rm|prune`: named volumes on an agent."""

from __future__ import annotations

import json
from typing import Any

import click

from agent.api.v1 import volumes_pb2 as pb
from agent.api.v1 import volumes_pb2_grpc
from controller import output
from controller.app import App, HostOutput
from controller.client import AgentClient


def _stub(client: AgentClient) -> volumes_pb2_grpc.VolumesStub:
    return client.stub(volumes_pb2_grpc.VolumesStub)


def volume_dict(v: pb.Volume) -> dict[str, Any]:
    return {
        "name": v.name,
        "driver": v.driver,
        "mountpoint": v.mountpoint,
        "created": v.created.ToDatetime().isoformat() + "Z",
        "labels": dict(v.labels),
        "anonymous": v.anonymous,
        "used_by": list(v.used_by),
    }


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
        r = await client.call(_stub(client).Create, pb.CreateVolumeRequest(name=name, labels=label_map))
        return volume_dict(r.volume)

    app.run(op, text=lambda d: d["name"])


@volume_group.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="only names")
@click.pass_obj
def ls(app: App, quiet: bool) -> None:
    """List volumes."""

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        stub = _stub(client)
        pages = client.pages(stub.ListStream, stub.List, pb.ListVolumesRequest())
        return [volume_dict(v) async for page in pages for v in page.volumes]

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
        found = []
        for n in names:
            r = await client.call(_stub(client).Inspect, pb.InspectVolumeRequest(name=n))
            found.append(volume_dict(r.volume))
        return found

    app.run(op, text=lambda d: json.dumps(d, indent=2), idempotent=True)


@volume_group.command("rm")
@click.option("-f", "--force", is_flag=True, help="no error when the volume does not exist")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def rm(app: App, force: bool, names: tuple[str, ...]) -> None:
    """Remove volumes (refused while a container uses one)."""

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        for n in names:
            await client.call(_stub(client).Remove, pb.RemoveVolumeRequest(name=n, force=force))
        return list(names)

    app.run(op, text="\n".join)


@volume_group.command("prune")
@click.option("-f", "--force", is_flag=True, help="do not ask (accepted for Docker compatibility)")
@click.pass_obj
def prune(app: App, force: bool) -> None:
    """Remove every volume no container uses."""

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        r = await client.call(_stub(client).Prune, pb.PruneVolumesRequest())
        return list(r.removed)

    app.run(op, text=lambda names: "\n".join(["Deleted Volumes:", *names]) if names else "")


COMMANDS = [volume_group]
