"""Container commands: start, attach, stop, restart, kill, pause, unpause, rm, container prune, ps,
inspect, logs, wait, top, and the `container` group. run/create/exec are in containers_run, stats in
containers_stats, cp in containers_cp.

Flags follow Docker's spelling. The agent parses and validates values such as sizes and -v specs;
commands are glue: flags in, a `controller.api.containers` call, output out.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import click

from controller import output, session
from controller.api.containers import Container, ContainersApi, Processes
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.commands.containers_common import INT32, exit_with, single
from controller.commands.containers_cp import cp
from controller.commands.containers_run import create, exec_, run
from controller.commands.containers_stats import stats
from controller.errors import ControllerError, UsageError
from controller.times import parse_time


def _ts(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def container_json(c: Container) -> dict[str, object]:
    """A container as `ps --format json` and `inspect` print it."""
    d: dict[str, object] = {
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "image_digest": c.image_digest,
        "command": list(c.command),
        "created": _ts(c.created),
        "status": c.status,
        "started_at": _ts(c.started_at),
        "finished_at": _ts(c.finished_at),
        "exit_code": c.exit_code,
        "oom_killed": c.oom_killed,
        "error": c.error,
        "pid": c.pid,
        "restart_count": c.restart_count,
        "restart_policy": c.restart_policy,
        "health": c.health,
        "labels": dict(c.labels),
        "hostname": c.hostname,
        "network": c.network,
        "ports": list(c.ports),
        "mounts": [
            {"type": m.type, "source": m.source, "destination": m.destination, "read_only": m.read_only}
            for m in c.mounts
        ],
        "log_path": c.log_path,
        "tty": c.tty,
        "auto_remove": c.auto_remove,
    }
    if c.health:
        d["health_failing_streak"] = c.health_failing_streak
        d["health_log"] = [
            {"start": _ts(h.start), "end": _ts(h.end), "exit_code": h.exit_code, "output": h.output}
            for h in c.health_log
        ]
    if c.config is not None:
        d["config"] = c.config
    if c.oci_spec is not None:
        d["oci_spec"] = c.oci_spec
    return d


def status_text(c: Container, now: datetime | None = None) -> str:
    """Docker's STATUS column: "Up 5 minutes (healthy)", "Exited (0) 2 seconds ago", "Created"."""
    now = now or datetime.now(UTC)

    def since(when: datetime | None) -> str:
        return output.human_ago(when, now).removesuffix(" ago") if when else ""

    if c.status in ("running", "paused"):
        text = f"Up {since(c.started_at)}"
        if c.status == "paused":
            text += " (Paused)"
        elif c.health:
            text += f" ({'health: starting' if c.health == 'starting' else c.health})"
        return text
    if c.status == "exited":
        return f"Exited ({c.exit_code}) {since(c.finished_at)} ago"
    if c.status == "restarting":
        return f"Restarting ({c.exit_code}) {since(c.finished_at)} ago"
    return c.status.capitalize()


def _command_text(cmd: tuple[str, ...], width: int = 20) -> str:
    text = " ".join(cmd)
    return str(json.dumps(text[: width - 1] + "…" if len(text) > width else text, ensure_ascii=False))


# ---- start / attach / stop / restart / kill / pause / rm --------------------------------------------


@click.command()
@click.option("-a", "--attach", is_flag=True, help="attach to output and exit with the container's code")
@click.option("-i", "--interactive", is_flag=True, help="attach stdin")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def start(app: App, attach: bool, interactive: bool, containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers."""
    if attach or interactive:
        if len(containers) != 1:
            raise UsageError("you cannot start and attach multiple containers at once")
        single(app, "start -a")

        async def attached(client: AgentClient, out: HostOutput) -> int | None:
            api = ContainersApi(client)
            tty = (await api.inspect(containers[0])).tty
            attaching = api.attach(containers[0], start=True, stdin=interactive, size=session.window(tty))
            return await session.drive(attaching, interactive=interactive, tty=tty)

        exit_with(app.run(attached))
        return

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        api = ContainersApi(client)
        for c in containers:
            await api.start(c)
        return list(containers)

    app.run(op, text="\n".join)


@click.command()
@click.option("--no-stdin", is_flag=True, help="do not attach stdin")
@click.argument("container")
@click.pass_obj
def attach(app: App, no_stdin: bool, container: str) -> None:
    """Attach to a running container's output (and stdin when it was started with -i)."""
    single(app, "attach")

    async def op(client: AgentClient, out: HostOutput) -> int | None:
        api = ContainersApi(client)
        c = await api.inspect(container)
        interactive = c.stdin_open and not no_stdin
        session.require_terminal(c.tty, interactive, "use --no-stdin, or run from a terminal")
        attaching = api.attach(container, start=False, stdin=interactive, size=session.window(c.tty))
        return await session.drive(attaching, interactive=interactive, tty=c.tty)

    exit_with(app.run(op))


def _each(
    app: App, containers: tuple[str, ...], call: Callable[[ContainersApi, str], Awaitable[None]]
) -> None:
    """Apply `call` to every container; like Docker, report each failure and go on, exit 1 at the end."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, list[object]]:
        api = ContainersApi(client)
        done: list[object] = []
        failed: list[object] = []
        for c in containers:
            try:
                await call(api, c)
                done.append(c)
            except ControllerError as exc:
                failed.append({"container": c, "error": exc.message})
                out.line(f"error: {exc.message}", err=True)
        return {"done": done, "failed": failed}

    result = app.run(op, text=lambda d: "\n".join(d["done"]))
    results = [result] if len(app.targets) == 1 else [r for r in result.values() if isinstance(r, dict)]
    if any(r["failed"] for r in results):
        sys.exit(1)


@click.command()
@click.option("-t", "--time", "timeout", type=INT32, default=None, help="seconds to wait before SIGKILL")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def stop(app: App, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Stop running containers: the stop signal, then SIGKILL after the timeout (default 10 s)."""
    _each(app, containers, lambda api, c: api.stop(c, timeout))


@click.command()
@click.option("-t", "--time", "timeout", type=INT32, default=None, help="seconds to wait before SIGKILL")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def restart(app: App, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Restart containers."""
    _each(app, containers, lambda api, c: api.restart(c, timeout))


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", help="signal name or number")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def kill(app: App, sig: str, containers: tuple[str, ...]) -> None:
    """Send a signal to running containers (default SIGKILL)."""
    _each(app, containers, lambda api, c: api.kill(c, sig))


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def pause(app: App, containers: tuple[str, ...]) -> None:
    """Freeze all processes of containers."""
    _each(app, containers, ContainersApi.pause)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def unpause(app: App, containers: tuple[str, ...]) -> None:
    """Thaw paused containers."""
    _each(app, containers, ContainersApi.unpause)


@click.command()
@click.option("-f", "--force", is_flag=True, help="kill a running container first")
@click.option("-v", "--volumes", is_flag=True, help="also remove its anonymous volumes")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def rm(app: App, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove containers."""
    _each(app, containers, lambda api, c: api.remove(c, force=force, volumes=volumes))


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="do not ask (accepted for Docker compatibility)")
@click.pass_obj
def prune(app: App, force: bool) -> None:
    """Remove all stopped containers."""

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        return await ContainersApi(client).prune()

    app.run(op, text=lambda ids: "\n".join(["Deleted Containers:", *ids]) if ids else "")


# ---- ps / inspect / wait / top / logs ---------------------------------------------------------------


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="include stopped containers")
@click.option("-q", "--quiet", is_flag=True, help="only IDs")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE", help="status, name, label, …")
@click.option("--no-trunc", is_flag=True, help="full IDs and commands")
@click.pass_obj
def ps(app: App, all_: bool, quiet: bool, filters: tuple[str, ...], no_trunc: bool) -> None:
    """List containers."""

    async def op(client: AgentClient, out: HostOutput) -> list[Container]:
        return await ContainersApi(client).ls(all=all_, filters=filters)

    def short(c: Container) -> str:
        return c.id if no_trunc else c.id[:12]

    def table(rows: list[Container]) -> output.Table:
        if quiet:
            return output.Table(["CONTAINER ID"], [[short(c)] for c in rows])
        return output.Table(
            ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
            [
                [
                    short(c),
                    c.image,
                    json.dumps(" ".join(c.command), ensure_ascii=False)
                    if no_trunc
                    else _command_text(c.command),
                    output.human_ago(c.created) if c.created else "",
                    status_text(c),
                    ", ".join(c.ports),
                    c.name,
                ]
                for c in rows
            ],
        )

    def to_json(rows: list[Container]) -> list[dict[str, object]]:
        return [container_json(c) for c in rows]

    if quiet and not app.json and len(app.targets) == 1:
        app.run(op, text=lambda rows: "\n".join(short(c) for c in rows), to_json=to_json)
        return
    app.run(op, table=table, idempotent=True, to_json=to_json)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def inspect(app: App, containers: tuple[str, ...]) -> None:
    """Show containers in detail (JSON)."""

    async def op(client: AgentClient, out: HostOutput) -> list[Container]:
        api = ContainersApi(client)
        return [await api.inspect(c) for c in containers]

    def to_json(found: list[Container]) -> list[dict[str, object]]:
        return [container_json(c) for c in found]

    app.run(op, text=lambda found: json.dumps(to_json(found), indent=2), idempotent=True, to_json=to_json)


@click.command()
@click.option(
    "--condition", default="not-running", type=click.Choice(["not-running", "next-exit", "removed"])
)
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def wait(app: App, condition: str, containers: tuple[str, ...]) -> None:
    """Block until containers stop, then print their exit codes."""

    async def op(client: AgentClient, out: HostOutput) -> list[int]:
        api = ContainersApi(client)
        return [(await api.wait(c, condition)).exit_code for c in containers]

    app.run(op, text=lambda codes: "\n".join(str(c) for c in codes))


@click.command()
@click.argument("container")
@click.pass_obj
def top(app: App, container: str) -> None:
    """Show the processes of a running container."""

    async def op(client: AgentClient, out: HostOutput) -> Processes:
        return await ContainersApi(client).top(container)

    app.run(
        op,
        table=lambda p: output.Table(p.titles, p.rows),
        idempotent=True,
        to_json=lambda p: {"titles": list(p.titles), "processes": [list(r) for r in p.rows]},
    )


@click.command()
@click.option("-f", "--follow", is_flag=True, help="keep streaming new output")
@click.option("-n", "--tail", default="all", help="lines from the end (number or all)")
@click.option("-t", "--timestamps", is_flag=True, help="show timestamps")
@click.option("--since", default="", help="RFC3339, unix time, or duration (10m)")
@click.option("--until", default="", help="RFC3339, unix time, or duration (10m)")
@click.argument("container")
@click.pass_obj
def logs(app: App, follow: bool, tail: str, timestamps: bool, since: str, until: str, container: str) -> None:
    """Show a container's output (stdout to stdout, stderr to stderr)."""
    if tail != "all" and not tail.lstrip("-").isdigit():
        raise UsageError(f"invalid --tail {tail!r}: a number or all")
    lines = -1 if tail == "all" else INT32.parse(tail, "--tail")
    since_ns = parse_time(since) if since else None
    until_ns = parse_time(until) if until else None
    multi = len(app.targets) > 1

    async def op(client: AgentClient, out: HostOutput) -> None:
        entries = ContainersApi(client).logs(
            container, follow=follow, tail=lines, since_ns=since_ns, until_ns=until_ns
        )
        async for e in entries:
            prefix = b""
            if timestamps:
                seconds, nanos = divmod(e.time_ns, 1_000_000_000)
                t = datetime.fromtimestamp(seconds, UTC)
                prefix = (t.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z ").encode()
            if multi:
                out.line((prefix + e.data).decode(errors="replace").rstrip("\n"), err=e.stderr)
                continue
            target = sys.stderr.buffer if e.stderr else sys.stdout.buffer
            target.write(prefix + e.data)
            target.flush()

    app.run(op, streaming=follow)


# ---- the `container` group ------------------------------------------------------------------------------


@click.group("container")
def container_group() -> None:
    """Manage containers (Docker's `container` subcommands)."""


container_group.add_command(prune)
for _cmd, _name in ((ps, "ls"), (inspect, "inspect"), (rm, "rm"), (start, "start"), (stop, "stop")):
    container_group.add_command(_cmd, _name)
for _cmd in (run, create, attach, restart, kill, pause, unpause, logs, exec_, wait, stats, top, cp):
    container_group.add_command(_cmd)

COMMANDS = [
    start, attach, stop, restart, kill, pause, unpause, rm, ps, inspect, logs, wait, top, container_group,
]  # fmt: skip
