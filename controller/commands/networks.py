"""Network commands: network create|ls|inspect|rm|connect|disconnect, and `port CONTAINER`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from controller import output
from controller.api.networks import NetworksApi
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import UsageError


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, _, val = value.partition("=")
        if not key:
            raise UsageError(f"invalid --label {value!r}: expected KEY=VALUE")
        labels[key] = val
    return labels


@click.group(name="network")
def network_group() -> None:
    """Manage container networks."""


@network_group.command(name="create")
@click.option(
    "--subnet", default="", metavar="CIDR", help="e.g. 10.1.2.0/24 (default: next free in the pool)"
)
@click.option("--internal", is_flag=True, help="no traffic in or out of the network, only between members")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@click.argument("name")
@click.pass_obj
def network_create(app: App, subnet: str, internal: bool, labels: tuple[str, ...], name: str) -> None:
    """Create a user-defined bridge network; its containers resolve each other by name."""
    label_map = _labels(labels)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        network = await NetworksApi(client).create(name, subnet=subnet, internal=internal, labels=label_map)
        return asdict(network)

    app.run(op, text=lambda d: str(d["id"]))


@network_group.command(name="ls")
@click.option("-q", "--quiet", is_flag=True, help="only network IDs")
@click.pass_obj
def network_ls(app: App, quiet: bool) -> None:
    """List networks."""

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        return [asdict(n) for n in await NetworksApi(client).list()]

    def table(nets: list[dict[str, Any]]) -> output.Table:
        rows = [
            [
                n["id"][:12],
                n["name"],
                n["driver"],
                n["subnet"],
                "internal" if n["internal"] else "",
                n["containers"],
            ]
            for n in nets
        ]
        return output.Table(["NETWORK ID", "NAME", "DRIVER", "SUBNET", "SCOPE", "CONTAINERS"], rows)

    if quiet and not app.json:
        app.run(op, text=lambda nets: "\n".join(n["id"][:12] for n in nets), idempotent=True)
    else:
        app.run(op, table=table, idempotent=True)


@network_group.command(name="inspect")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def network_inspect(app: App, names: tuple[str, ...]) -> None:
    """Show networks in detail (JSON) with their endpoints."""

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        api = NetworksApi(client)
        found = []
        for name in names:
            details = await api.inspect(name)
            d = asdict(details.network)
            d["endpoints"] = [asdict(e) for e in details.endpoints]
            found.append(d)
        return found

    app.run(op, text=lambda d: json.dumps(d, indent=2), idempotent=True)


@network_group.command(name="rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def network_rm(app: App, names: tuple[str, ...]) -> None:
    """Remove networks (refused while containers are attached)."""

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        api = NetworksApi(client)
        removed = []
        for name in names:
            await api.remove(name)
            removed.append(name)
        return removed

    app.run(op, text=lambda removed: "\n".join(removed))


@network_group.command(name="connect")
@click.option("--ip", default="", help="IPv4 address on this network")
@click.option("--alias", "aliases", multiple=True, help="another name the container answers to here")
@click.argument("network")
@click.argument("container")
@click.pass_obj
def network_connect(app: App, ip: str, aliases: tuple[str, ...], network: str, container: str) -> None:
    """Connect a container to a further network."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        return asdict(await NetworksApi(client).connect(network, container, ip=ip, aliases=aliases))

    app.run(op, text=lambda d: "")


@network_group.command(name="disconnect")
@click.argument("network")
@click.argument("container")
@click.pass_obj
def network_disconnect(app: App, network: str, container: str) -> None:
    """Disconnect a container from a network."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        await NetworksApi(client).disconnect(network, container)
        return {}

    app.run(op, text=lambda d: "")


@click.command(name="port")
@click.argument("container")
@click.argument("private_port", required=False, metavar="[PRIVATE_PORT[/PROTO]]")
@click.pass_obj
def port(app: App, container: str, private_port: str | None) -> None:
    """List a container's published ports, like `docker port` (`80/tcp -> 0.0.0.0:32768`)."""
    want_port, _, want_proto = (private_port or "").partition("/")

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        ports = [asdict(p) for p in await NetworksApi(client).ports(container)]
        if want_port:
            ports = [
                p
                for p in ports
                if str(p["container_port"]) == want_port and (not want_proto or p["protocol"] == want_proto)
            ]
        return ports

    def text(ports: list[dict[str, Any]]) -> str:
        if want_port:
            return "\n".join(f"{p['host_ip']}:{p['host_port']}" for p in ports)
        return "\n".join(
            f"{p['container_port']}/{p['protocol']} -> {p['host_ip']}:{p['host_port']}" for p in ports
        )

    app.run(op, text=text, idempotent=True)


COMMANDS = [network_group, port]
