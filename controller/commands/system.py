"""`dockyard info|version|ping`: the pattern for command modules (op → data, and how to show it)."""

from __future__ import annotations

import time
from typing import Any

import click

from agent.api.v1 import system_pb2, system_pb2_grpc
from controller import output
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.version import controller_version


@click.command()
@click.pass_obj
def info(app: App) -> None:
    """Show facts about the agent's host and state."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        stub = client.stub(system_pb2_grpc.SystemStub)
        r = await client.call(stub.Info, system_pb2.InfoRequest())
        return {
            "hostname": r.hostname,
            "os": r.os,
            "kernel": r.kernel,
            "arch": r.arch,
            "cpus": r.cpus,
            "memory_bytes": r.memory_bytes,
            "agent_version": r.agent_version,
            "default_runtime": r.default_runtime,
            "cgroup_layout": r.cgroup_layout,
            "data_root": r.data_root,
            "images": r.images,
            "containers": r.containers,
            "containers_running": r.containers_running,
            "started_at": r.started_at.ToDatetime().isoformat() + "Z",
            "runtimes": [
                {
                    "name": b.name,
                    "path": b.path,
                    "version": b.version,
                    "usable": b.usable,
                    "problem": b.problem,
                }
                for b in r.runtimes
            ],
        }

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
        stub = client.stub(system_pb2_grpc.SystemStub)
        r = await client.call(stub.Version, system_pb2.VersionRequest())
        return {
            "controller": {"version": controller_version()},
            "agent": {
                "version": r.agent_version,
                "api_version": r.api_version,
                "python": r.python_version,
                "grpc": r.grpc_version,
            },
        }

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
        stub = client.stub(system_pb2_grpc.SystemStub)
        start = time.perf_counter()
        await client.call(stub.Ping, system_pb2.PingRequest())
        return {"ok": True, "rtt_ms": round((time.perf_counter() - start) * 1000, 2)}

    app.run(op, text=lambda d: f"pong ({d['rtt_ms']} ms)", idempotent=True)
