"""`dockyard info|version|ping`: the pattern for command modules (op → data, and how to show it)."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from controller import output
from controller.api.system import SystemApi
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.version import controller_version


@click.command()
@click.pass_obj
def info(app: App) -> None:
    """Show facts about the agent's host and state."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        return dataclasses.asdict(await SystemApi(client).info())

    def fields(d: dict[str, Any]) -> output.Fields:
        runtimes = [
            (
                b["name"],
                (f"{b['version']} ({b['path']})" if b["path"] else "not installed")
                + ("" if b["usable"] or not b["path"] else f" — unusable: {b['problem']}"),
            )
            for b in d["runtimes"]
        ]
        return output.Fields(
            items=[
                ("Hostname", d["hostname"]),
                ("Operating System", d["os"]),
                ("Kernel Version", d["kernel"]),
                ("Architecture", d["arch"]),
                ("CPUs", d["cpus"]),
                ("Total Memory", output.human_size(d["memory_bytes"])),
                ("Agent Version", d["agent_version"]),
                ("Default Runtime", d["default_runtime"]),
                ("Cgroup Layout", d["cgroup_layout"]),
                ("Data Root", d["data_root"]),
                ("Images", d["images"]),
                ("Containers", f"{d['containers']} ({d['containers_running']} running)"),
                ("Started", d["started_at"]),
            ],
            sections=[("Runtimes", runtimes)],
        )

    app.run(op, fields=fields, idempotent=True)


@click.command()
@click.pass_obj
def version(app: App) -> None:
    """Show the controller's and the agent's versions."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        agent = await SystemApi(client).version()
        return {"controller": {"version": controller_version()}, "agent": dataclasses.asdict(agent)}

    def fields(d: dict[str, Any]) -> output.Fields:
        a = d["agent"]
        return output.Fields(
            items=[],
            sections=[
                ("Controller", [("Version", d["controller"]["version"])]),
                (
                    "Agent",
                    [
                        ("Version", a["version"]),
                        ("API version", a["api_version"]),
                        ("Python", a["python"]),
                        ("gRPC", a["grpc"]),
                    ],
                ),
            ],
        )

    app.run(op, fields=fields, idempotent=True)


@click.command()
@click.pass_obj
def ping(app: App) -> None:
    """Check that the agent answers; prints the round-trip time."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        rtt = await SystemApi(client).ping()
        return {"ok": True, "rtt_ms": round(rtt * 1000, 2)}

    app.run(op, text=lambda d: f"pong ({d['rtt_ms']} ms)", idempotent=True)
