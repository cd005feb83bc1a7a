"""Container commands: run, create, start, stop, restart, kill, pause, unpause, rm, ps, inspect, logs, exec,
wait, stats, top, cp, container prune (and the `container` group).

Flags follow Docker's spelling. The agent parses and validates values such as sizes and -v specs; this
module only reads local things (--env-file, `-e NAME` from the environment, files for `cp`) and drives
attached sessions: output goes to this process's stdout/stderr, the exit code is the container's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api.v1 import containers_pb2 as pb
from agent.api.v1 import containers_pb2_grpc
from controller import output, terminal
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import AgentCallError, ControllerError, UsageError

F = TypeVar("F", bound=Callable[..., Any])
CHUNK = 1 << 20
RUN_ERROR_EXIT = 125  # Docker's exit code when the container could not be run at all
STATUS_NAMES = {
    pb.CONTAINER_STATUS_CREATING: "creating",
    pb.CONTAINER_STATUS_CREATED: "created",
    pb.CONTAINER_STATUS_RUNNING: "running",
    pb.CONTAINER_STATUS_PAUSED: "paused",
    pb.CONTAINER_STATUS_RESTARTING: "restarting",
    pb.CONTAINER_STATUS_EXITED: "exited",
    pb.CONTAINER_STATUS_REMOVING: "removing",
    pb.CONTAINER_STATUS_DEAD: "dead",
}
NO_HELP_SHORTCUT = {"help_option_names": ["--help"], "max_content_width": 110}


class ProtoInt(click.ParamType[int]):
    """An integer flag within the range of the proto field it fills (int32 or int64).

    Python's ints are unbounded and protobuf refuses what does not fit with a ValueError (a traceback), so
    the range is checked here, where the flag is parsed, as one line naming the flag and the bound. What
    the values mean (a pids limit above the kernel's, a negative timeout) is the agent's to check.
    """

    name = "integer"

    def __init__(self, bits: int) -> None:
        self.low, self.high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        return self.parse(
            str(value), max(param.opts, key=len) if param is not None and param.opts else "value"
        )

    def parse(self, value: str, flag: str) -> int:
        text = value.strip()
        try:
            number = int(text) if len(text) <= 40 else None
        except ValueError:
            raise UsageError(f"{flag}: {text[:40]!r} is not an integer") from None
        if number is None or number > self.high:
            raise UsageError(f"{flag}: {text[:40]} is out of range (max {self.high})")
        if number < self.low:
            raise UsageError(f"{flag}: {text[:40]} is out of range (min {self.low})")
        return number


INT32 = ProtoInt(32)
INT64 = ProtoInt(64)


def _stub(client: AgentClient) -> containers_pb2_grpc.ContainersStub:
    return client.stub(containers_pb2_grpc.ContainersStub)


def _single(app: App, what: str) -> None:
    if len(app.targets) != 1:
        raise UsageError(f"{what} works with one host at a time (got {len(app.targets)})")


def _ts(ts: Timestamp | None) -> str | None:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=UTC).isoformat()


def container_dict(c: pb.Container) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "image_digest": c.image_digest,
        "command": list(c.command),
        "created": _ts(c.created),
        "status": STATUS_NAMES.get(c.status, "unknown"),
        "started_at": _ts(c.started_at),
        "finished_at": _ts(c.finished_at),
        "exit_code": c.exit_code,
        "oom_killed": c.oom_killed,
        "error": c.error,
        "pid": c.pid,
        "restart_count": c.restart_count,
        "restart_policy": c.restart_policy,
        "health": c.health_status or None,
        "labels": dict(c.labels),
        "hostname": c.hostname,
        "network": c.network,
        "ports": list(c.ports),  # network (agent/network)
        "mounts": [
            {"type": m.type, "source": m.source, "destination": m.destination, "read_only": m.read_only}
            for m in c.mounts
        ],
        "log_path": c.log_path,
        "tty": c.tty,
        "auto_remove": c.auto_remove,
    }
    if c.health_status:
        d["health_failing_streak"] = c.health_failing_streak
        d["health_log"] = [
            {"start": _ts(h.start), "end": _ts(h.end), "exit_code": h.exit_code, "output": h.output}
            for h in c.health_log
        ]
    if c.config_json:
        d["config"] = json.loads(c.config_json)
    if c.spec_json:
        d["oci_spec"] = json.loads(c.spec_json)
    return d


def status_text(d: dict[str, Any], now: datetime | None = None) -> str:
    """Docker's STATUS column: "Up 5 minutes (healthy)", "Exited (0) 2 seconds ago", "Created"."""
    now = now or datetime.now(UTC)

    def since(when: str | None) -> str:
        return output.human_ago(datetime.fromisoformat(when), now).removesuffix(" ago") if when else ""

    status = str(d["status"])
    if status in ("running", "paused"):
        text = f"Up {since(d['started_at'])}"
        if status == "paused":
            text += " (Paused)"
        elif d.get("health"):
            text += f" ({'health: starting' if d['health'] == 'starting' else d['health']})"
        return text
    if status == "exited":
        return f"Exited ({d['exit_code']}) {since(d['finished_at'])} ago"
    if status == "restarting":
        return f"Restarting ({d['exit_code']}) {since(d['finished_at'])} ago"
    return status.capitalize()


def _command_text(cmd: list[str], width: int = 20) -> str:
    text = " ".join(cmd)
    return str(json.dumps(text[: width - 1] + "…" if len(text) > width else text, ensure_ascii=False))


# ---- run / create ------------------------------------------------------------------------------------


def run_options(f: F) -> F:
    """The flags `run` and `create` share."""
    options = [
        click.option("--name", default="", help="assign a name"),
        click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="set an environment variable"),
        click.option("--env-file", multiple=True, type=click.Path(dir_okay=False), help="read K=V lines"),
        click.option("-w", "--workdir", default="", help="working directory inside the container"),
        click.option("--entrypoint", default=None, help="override the image's entrypoint"),
        click.option("-u", "--user", default="", help="user[:group] name or id"),
        click.option("-h", "--hostname", default="", help="container host name"),
        click.option("-l", "--label", "labels", multiple=True, metavar="K=V", help="set a label"),
        click.option(
            "-v", "--volume", "volumes", multiple=True, metavar="SRC:DST[:ro]", help="bind or volume"
        ),
        click.option("--mount", "mounts", multiple=True, metavar="type=…,source=…,target=…"),
        click.option("--tmpfs", multiple=True, metavar="PATH[:OPTS]", help="mount a tmpfs"),
        click.option("-m", "--memory", default="", help="memory limit, e.g. 512m"),
        click.option("--memory-swap", default="", help="memory+swap limit; -1 = unlimited swap"),
        click.option("--cpus", default="", help="number of CPUs, e.g. 0.5"),
        click.option("-c", "--cpu-shares", type=INT64, default=0, help="relative CPU weight"),
        click.option("--pids-limit", type=INT64, default=0, help="maximum number of processes"),
        click.option("--ulimit", "ulimits", multiple=True, metavar="NAME=SOFT[:HARD]"),
        click.option("--restart", default="no", help="no | on-failure[:N] | always | unless-stopped"),
        click.option("--health-cmd", default="", help="command to check health"),
        click.option("--health-interval", default="", help="time between checks (e.g. 30s)"),
        click.option("--health-timeout", default="", help="maximum time for one check"),
        click.option("--health-retries", type=INT32, default=0, help="failures before unhealthy"),
        click.option("--health-start-period", default="", help="grace period before failures count"),
        click.option("--no-healthcheck", is_flag=True, help="disable the image's HEALTHCHECK"),
        click.option("-i", "--interactive", is_flag=True, help="keep stdin open"),
        click.option("-t", "--tty", is_flag=True, help="allocate a pseudo-terminal"),
        click.option("--network", "--net", "network", default="", help="bridge | NETWORK | none | host"),
        # >>> network (agent/network)
        click.option(
            "-p",
            "--publish",
            multiple=True,
            metavar="[IP:][HOST_PORT:]CTR_PORT[/PROTO]",
            help="publish a port",
        ),
        click.option("--ip", default="", help="IPv4 address on the network"),
        click.option("--network-alias", "network_aliases", multiple=True, help="another name on the network"),
        # <<< network
        click.option("--privileged", is_flag=True, help="all capabilities, no seccomp, no masked paths"),
        click.option("--cap-add", multiple=True, help="add a capability"),
        click.option("--cap-drop", multiple=True, help="drop a capability"),
        click.option("--read-only", is_flag=True, help="mount the root filesystem read-only"),
        click.option("--security-opt", multiple=True, help="no-new-privileges=false, seccomp=unconfined"),
        click.option("--stop-signal", default="", help="signal to stop the container"),
        click.option("--stop-timeout", type=INT32, default=None, help="seconds before SIGKILL on stop"),
        click.option("--rm", "auto_remove", is_flag=True, help="remove the container when it exits"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _env(values: tuple[str, ...], env_files: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for path in env_files:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read --env-file {path}: {exc.strerror}") from None
        for line in text.splitlines():
            stripped = line.lstrip()
            if stripped and not stripped.startswith("#"):
                out.append(stripped if "=" in stripped else f"{stripped}={os.environ.get(stripped, '')}")
    for v in values:
        if "=" in v:
            out.append(v)
        elif v in os.environ:
            out.append(f"{v}={os.environ[v]}")
    return out


def build_config(image: str, command: tuple[str, ...], kw: dict[str, Any]) -> pb.ContainerConfig:
    labels: dict[str, str] = {}
    for item in kw["labels"]:
        key, _, value = item.partition("=")
        labels[key] = value
    cfg = pb.ContainerConfig(
        image=image,
        name=kw["name"],
        env=_env(kw["env"], kw["env_file"]),
        workdir=kw["workdir"],
        user=kw["user"],
        hostname=kw["hostname"],
        labels=labels,
        volumes=list(kw["volumes"]),
        mounts=list(kw["mounts"]),
        tmpfs=list(kw["tmpfs"]),
        memory=kw["memory"],
        memory_swap=kw["memory_swap"],
        cpus=kw["cpus"],
        cpu_shares=kw["cpu_shares"],
        pids_limit=kw["pids_limit"],
        ulimits=list(kw["ulimits"]),
        restart=kw["restart"],
        tty=kw["tty"],
        stdin_open=kw["interactive"],
        network=kw["network"],
        publish=list(kw["publish"]),  # network (agent/network)
        ip=kw["ip"],
        network_aliases=list(kw["network_aliases"]),
        privileged=kw["privileged"],
        cap_add=list(kw["cap_add"]),
        cap_drop=list(kw["cap_drop"]),
        read_only=kw["read_only"],
        security_opt=list(kw["security_opt"]),
        auto_remove=kw["auto_remove"],
        stop_signal=kw["stop_signal"],
        health_cmd=kw["health_cmd"],
        health_interval=kw["health_interval"],
        health_timeout=kw["health_timeout"],
        health_retries=kw["health_retries"],
        health_start_period=kw["health_start_period"],
        no_healthcheck=kw["no_healthcheck"],
    )
    if command:
        cfg.command.values.extend(command)
    if kw["entrypoint"] is not None:
        cfg.entrypoint.values.extend([kw["entrypoint"]] if kw["entrypoint"] else [])
    if kw["stop_timeout"] is not None:
        cfg.stop_timeout = kw["stop_timeout"]
    return cfg


async def drive_session(
    client: AgentClient,
    method: Any,
    first: Any,
    request_cls: Any,
    *,
    interactive: bool,
    tty: bool,
    on_id: Callable[[str], None] | None = None,
    sink: HostOutput | None = None,
) -> int | None:
    """Run one attached session: send stdin/resizes, write output, return the exit code (None if none).

    With a `sink` (fan-out to several hosts) output goes out as whole lines prefixed by the host instead
    of raw bytes, so lines of different hosts never interleave mid-line.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    pending = {False: b"", True: b""}  # partial line per stream (stderr?) when writing to a sink

    def to_sink(data: bytes, is_err: bool) -> None:
        assert sink is not None
        *lines, pending[is_err] = (pending[is_err] + data).split(b"\n")
        for line in lines:
            sink.line(line.decode(errors="replace"), err=is_err)

    async def requests() -> AsyncIterator[Any]:
        yield first
        while (item := await queue.get()) is not None:
            yield item

    async def feed() -> None:
        try:
            async for chunk in terminal.read_stdin():
                queue.put_nowait(request_cls(stdin=chunk))
        finally:  # end of input also when stdin cannot be read: the process must not wait forever
            queue.put_nowait(request_cls(close_stdin=True))

    def resized() -> None:
        s = terminal.size()
        queue.put_nowait(request_cls(resize=pb.WindowSize(rows=s.rows, cols=s.cols)))

    call = method(requests(), metadata=client.metadata())
    feeder = asyncio.create_task(feed()) if interactive else None
    out, err = sys.stdout.buffer, sys.stderr.buffer
    code: int | None = None
    raw = contextlib.nullcontext() if not (tty and interactive) else terminal.raw_mode(sys.stdin.fileno())
    resize_ctx = terminal.on_resize(resized) if tty and terminal.is_tty(sys.stdout.fileno()) else None
    try:
        with raw, resize_ctx or contextlib.nullcontext():
            async for resp in call:
                kind = resp.WhichOneof("msg")
                if kind in ("id", "exec_id"):
                    if on_id is not None:
                        on_id(getattr(resp, kind))
                elif kind == "output" and sink is not None:
                    to_sink(resp.output.data, resp.output.stream == pb.OUTPUT_STREAM_STDERR)
                elif kind == "output":
                    target = err if resp.output.stream == pb.OUTPUT_STREAM_STDERR else out
                    target.write(resp.output.data)
                    target.flush()
                elif kind == "exit":
                    code = resp.exit.code
                    if resp.exit.error:
                        sys.stderr.write(f"error: {resp.exit.error}\n")
                        sys.stderr.flush()
    except grpc.aio.AioRpcError as exc:
        raise await client.translate(exc) from None
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        queue.put_nowait(None)
        call.cancel()
        for is_err, rest in pending.items():
            if rest and sink is not None:
                sink.line(rest.decode(errors="replace"), err=is_err)
    return code


def _exit_with(code: int | None) -> None:
    if code:
        sys.exit(code)


@click.command(context_settings={**NO_HELP_SHORTCUT, "allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="run in the background and print the ID")
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(app: App, /, detach: bool, image: str, command: tuple[str, ...], **kw: Any) -> None:
    """Create and start a container; attached runs stream output and exit with the container's code."""
    if not detach:
        _single(app, "an attached run")
    if kw["tty"] and kw["interactive"] and not terminal.is_tty(sys.stdin.fileno()):
        raise UsageError("the input device is not a TTY (drop -t, or run from a terminal)")
    config = build_config(image, command, kw)
    size = terminal.size() if kw["tty"] else terminal.Size(0, 0)
    first = pb.RunContainerRequest(
        start=pb.RunStart(config=config, detach=detach, size=pb.WindowSize(rows=size.rows, cols=size.cols))
    )

    async def op(client: AgentClient, out: HostOutput) -> Any:
        ids: list[str] = []
        try:
            code = await drive_session(
                client,
                _stub(client).Run,
                first,
                pb.RunContainerRequest,
                interactive=kw["interactive"] and not detach,
                tty=kw["tty"],
                on_id=ids.append,
            )
        except AgentCallError as exc:
            exc.exit_code = RUN_ERROR_EXIT  # type: ignore[misc]
            raise
        if detach:
            return {"id": ids[0] if ids else ""}
        return {"id": ids[0] if ids else "", "exit_code": code}

    result = app.run(op, text=lambda d: d["id"] if detach else "")
    if not detach and len(app.targets) == 1:
        code = result.get("exit_code")
        _exit_with(RUN_ERROR_EXIT if code is None else code)


@click.command(context_settings={**NO_HELP_SHORTCUT, "allow_interspersed_args": False})
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def create(app: App, /, image: str, command: tuple[str, ...], **kw: Any) -> None:
    """Create a container without starting it; prints its ID."""
    config = build_config(image, command, kw)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, str]:
        r = await client.call(_stub(client).Create, pb.CreateContainerRequest(config=config))
        return {"id": r.id, "name": r.name}

    app.run(op, text=lambda d: d["id"])


# ---- start / stop / restart / kill / pause / rm ------------------------------------------------------


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
        _single(app, "start -a")

        async def attached(client: AgentClient, out: HostOutput) -> int | None:
            inspect = await client.call(
                _stub(client).Inspect, pb.InspectContainerRequest(container=containers[0])
            )
            tty = inspect.container.tty
            size = terminal.size() if tty else terminal.Size(0, 0)
            first = pb.AttachContainerRequest(
                start=pb.AttachStart(
                    container=containers[0],
                    start=True,
                    stdin=interactive,
                    size=pb.WindowSize(rows=size.rows, cols=size.cols),
                )
            )
            return await drive_session(
                client,
                _stub(client).Attach,
                first,
                pb.AttachContainerRequest,
                interactive=interactive,
                tty=tty,
            )

        _exit_with(app.run(attached))
        return

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        for c in containers:
            await client.call(_stub(client).Start, pb.StartContainerRequest(container=c))
        return list(containers)

    app.run(op, text="\n".join)


@click.command()
@click.option("--no-stdin", is_flag=True, help="do not attach stdin")
@click.argument("container")
@click.pass_obj
def attach(app: App, no_stdin: bool, container: str) -> None:
    """Attach to a running container's output (and stdin when it was started with -i)."""
    _single(app, "attach")

    async def op(client: AgentClient, out: HostOutput) -> int | None:
        inspect = await client.call(_stub(client).Inspect, pb.InspectContainerRequest(container=container))
        c = inspect.container
        interactive = c.stdin_open and not no_stdin
        if c.tty and interactive and not terminal.is_tty(sys.stdin.fileno()):
            raise UsageError("the input device is not a TTY (use --no-stdin, or run from a terminal)")
        size = terminal.size() if c.tty else terminal.Size(0, 0)
        first = pb.AttachContainerRequest(
            start=pb.AttachStart(
                container=container, stdin=interactive, size=pb.WindowSize(rows=size.rows, cols=size.cols)
            )
        )
        return await drive_session(
            client, _stub(client).Attach, first, pb.AttachContainerRequest, interactive=interactive, tty=c.tty
        )

    _exit_with(app.run(op))


def _each(app: App, containers: tuple[str, ...], call: Callable[[AgentClient, str], Any]) -> None:
    """Apply `call` to every container; like Docker, report each failure and go on, exit 1 at the end."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        done, failed = [], []
        for c in containers:
            try:
                await call(client, c)
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

    async def call(client: AgentClient, c: str) -> None:
        req = pb.StopContainerRequest(container=c)
        if timeout is not None:
            req.timeout = timeout
        await client.call(_stub(client).Stop, req, timeout=None)

    _each(app, containers, call)


@click.command()
@click.option("-t", "--time", "timeout", type=INT32, default=None, help="seconds to wait before SIGKILL")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def restart(app: App, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Restart containers."""

    async def call(client: AgentClient, c: str) -> None:
        req = pb.RestartContainerRequest(container=c)
        if timeout is not None:
            req.timeout = timeout
        await client.call(_stub(client).Restart, req, timeout=None)

    _each(app, containers, call)


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", help="signal name or number")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def kill(app: App, sig: str, containers: tuple[str, ...]) -> None:
    """Send a signal to running containers (default SIGKILL)."""

    async def call(client: AgentClient, c: str) -> None:
        await client.call(_stub(client).Kill, pb.KillContainerRequest(container=c, signal=sig))

    _each(app, containers, call)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def pause(app: App, containers: tuple[str, ...]) -> None:
    """Freeze all processes of containers."""

    async def call(client: AgentClient, c: str) -> None:
        await client.call(_stub(client).Pause, pb.PauseContainerRequest(container=c))

    _each(app, containers, call)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def unpause(app: App, containers: tuple[str, ...]) -> None:
    """Thaw paused containers."""

    async def call(client: AgentClient, c: str) -> None:
        await client.call(_stub(client).Unpause, pb.UnpauseContainerRequest(container=c))

    _each(app, containers, call)


@click.command()
@click.option("-f", "--force", is_flag=True, help="kill a running container first")
@click.option("-v", "--volumes", is_flag=True, help="also remove its anonymous volumes")
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def rm(app: App, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove containers."""

    async def call(client: AgentClient, c: str) -> None:
        req = pb.RemoveContainerRequest(container=c, force=force, volumes=volumes)
        await client.call(_stub(client).Remove, req, timeout=None)

    _each(app, containers, call)


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="do not ask (accepted for Docker compatibility)")
@click.pass_obj
def prune(app: App, force: bool) -> None:
    """Remove all stopped containers."""

    async def op(client: AgentClient, out: HostOutput) -> list[str]:
        r = await client.call(_stub(client).Prune, pb.PruneContainersRequest(), timeout=None)
        return list(r.removed)

    app.run(op, text=lambda ids: "\n".join(["Deleted Containers:", *ids]) if ids else "")


# ---- ps / inspect / wait / top -----------------------------------------------------------------------


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="include stopped containers")
@click.option("-q", "--quiet", is_flag=True, help="only IDs")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE", help="status, name, label, …")
@click.option("--no-trunc", is_flag=True, help="full IDs and commands")
@click.pass_obj
def ps(app: App, all_: bool, quiet: bool, filters: tuple[str, ...], no_trunc: bool) -> None:
    """List containers."""

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        stub = _stub(client)
        pages = client.pages(
            stub.ListStream, stub.List, pb.ListContainersRequest(all=all_, filters=list(filters))
        )
        return [container_dict(c) async for page in pages for c in page.containers]

    def table(rows: list[dict[str, Any]]) -> output.Table:
        if quiet:
            return output.Table(["CONTAINER ID"], [[r["id"] if no_trunc else r["id"][:12]] for r in rows])
        return output.Table(
            ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
            [
                [
                    r["id"] if no_trunc else r["id"][:12],
                    r["image"],
                    json.dumps(" ".join(r["command"]), ensure_ascii=False)
                    if no_trunc
                    else _command_text(r["command"]),
                    output.human_ago(datetime.fromisoformat(r["created"])) if r["created"] else "",
                    status_text(r),
                    ", ".join(r.get("ports", [])),  # network (agent/network)
                    r["name"],
                ]
                for r in rows
            ],
        )

    if quiet and not app.json and len(app.targets) == 1:
        rows = app.run(op, text=lambda rows: "\n".join(r["id"] if no_trunc else r["id"][:12] for r in rows))
        del rows
        return
    app.run(op, table=table, idempotent=True)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def inspect(app: App, containers: tuple[str, ...]) -> None:
    """Show containers in detail (JSON)."""

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        found = []
        for c in containers:
            r = await client.call(_stub(client).Inspect, pb.InspectContainerRequest(container=c))
            found.append(container_dict(r.container))
        return found

    app.run(op, text=lambda d: json.dumps(d, indent=2), idempotent=True)


@click.command()
@click.option(
    "--condition", default="not-running", type=click.Choice(["not-running", "next-exit", "removed"])
)
@click.argument("containers", nargs=-1, required=True)
@click.pass_obj
def wait(app: App, condition: str, containers: tuple[str, ...]) -> None:
    """Block until containers stop, then print their exit codes."""

    async def op(client: AgentClient, out: HostOutput) -> list[int]:
        codes = []
        for c in containers:
            r = await client.call(
                _stub(client).Wait, pb.WaitContainerRequest(container=c, condition=condition), timeout=None
            )
            codes.append(r.exit_code)
        return codes

    app.run(op, text=lambda codes: "\n".join(str(c) for c in codes))


@click.command()
@click.argument("container")
@click.pass_obj
def top(app: App, container: str) -> None:
    """Show the processes of a running container."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        r = await client.call(_stub(client).Top, pb.TopContainerRequest(container=container))
        return {"titles": list(r.titles), "processes": [list(p.cells) for p in r.processes]}

    app.run(op, table=lambda d: output.Table(d["titles"], d["processes"]), idempotent=True)


# ---- logs --------------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_time(value: str, now: datetime | None = None) -> Timestamp:
    """--since/--until: RFC3339, a unix timestamp, or a relative duration such as 10m, 2h."""
    now = now or datetime.now(UTC)
    ts = Timestamp()
    m = _DURATION.match(value)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        ts.FromDatetime(now - timedelta(seconds=seconds))
        return ts
    try:
        ts.FromNanoseconds(int(float(value) * 1e9))
        return ts
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"invalid time {value!r}: use RFC3339, a unix timestamp or a duration like 10m"
        ) from None
    ts.FromDatetime(when if when.tzinfo else when.replace(tzinfo=UTC))
    return ts


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
    req = pb.ContainerLogsRequest(container=container, follow=follow, tail=lines)
    if since:
        req.since.CopyFrom(parse_time(since))
    if until:
        req.until.CopyFrom(parse_time(until))
    multi = len(app.targets) > 1

    async def op(client: AgentClient, out: HostOutput) -> None:
        async for r in client.stream(_stub(client).Logs, req):
            for e in r.entries:
                prefix = b""
                if timestamps:
                    t = e.time.ToDatetime(tzinfo=UTC)
                    prefix = (t.strftime("%Y-%m-%dT%H:%M:%S") + f".{e.time.nanos:09d}Z ").encode()
                if multi:
                    out.line((prefix + e.data).decode(errors="replace").rstrip("\n"), err=e.stream == 2)
                    continue
                target = sys.stderr.buffer if e.stream == pb.OUTPUT_STREAM_STDERR else sys.stdout.buffer
                target.write(prefix + e.data)
                target.flush()
        return None

    app.run(op, streaming=follow)


# ---- exec --------------------------------------------------------------------------------------------


@click.command("exec", context_settings={**NO_HELP_SHORTCUT, "allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="run in the background")
@click.option("-i", "--interactive", is_flag=True, help="keep stdin open")
@click.option("-t", "--tty", is_flag=True, help="allocate a pseudo-terminal")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V")
@click.option("-u", "--user", default="", help="user[:group]")
@click.option("-w", "--workdir", default="", help="working directory")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec_(
    app: App,
    detach: bool,
    interactive: bool,
    tty: bool,
    env: tuple[str, ...],
    user: str,
    workdir: str,
    container: str,
    command: tuple[str, ...],
) -> None:
    """Run a command in a running container; exits with the command's exit code.

    On several hosts (no -i/-t) the output lines are prefixed by host and a non-zero exit code counts as
    that host's failure.
    """
    multi = len(app.targets) > 1
    if multi and (interactive or tty):
        _single(app, "an interactive exec")
    if tty and interactive and not terminal.is_tty(sys.stdin.fileno()):
        raise UsageError("the input device is not a TTY (drop -t, or run from a terminal)")
    size = terminal.size() if tty else terminal.Size(0, 0)
    first = pb.ExecContainerRequest(
        start=pb.ExecStart(
            container=container,
            command=list(command),
            env=_env(env, ()),
            user=user,
            workdir=workdir,
            tty=tty,
            interactive=interactive,
            detach=detach,
            size=pb.WindowSize(rows=size.rows, cols=size.cols),
        )
    )

    async def op(client: AgentClient, out: HostOutput) -> int | None:
        try:
            code = await drive_session(
                client,
                _stub(client).Exec,
                first,
                pb.ExecContainerRequest,
                interactive=interactive and not detach,
                tty=tty,
                sink=out if multi else None,
            )
        except AgentCallError as exc:
            exc.exit_code = 126 if exc.code == "FAILED_PRECONDITION" else 1  # type: ignore[misc]
            raise
        if multi and code:
            raise ControllerError(f"command exited with code {code}", client.name)
        return code

    code = app.run(op)
    if not detach and not multi:
        _exit_with(code)


# ---- stats -------------------------------------------------------------------------------------------


def _stats_table(rows: list[dict[str, Any]]) -> output.Table:
    return output.Table(
        ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"],
        [
            [
                r["id"][:12],
                r["name"],
                f"{r['cpu_percent']:.2f}%",
                f"{_iec(r['memory_usage'])} / {_iec(r['memory_limit'])}",
                f"{100 * r['memory_usage'] / r['memory_limit']:.2f}%" if r["memory_limit"] else "--",
                f"{output.human_size(r['net_rx'])} / {output.human_size(r['net_tx'])}",
                f"{output.human_size(r['block_read'])} / {output.human_size(r['block_write'])}",
                r["pids"],
            ]
            for r in rows
        ],
    )


def _iec(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.4g}{unit}"
        value /= 1024
    return f"{value:.4g}PiB"


@click.command()
@click.option("--no-stream", is_flag=True, help="print one sample and exit")
@click.argument("containers", nargs=-1)
@click.pass_obj
def stats(app: App, no_stream: bool, containers: tuple[str, ...]) -> None:
    """Live resource usage of running containers (CPU, memory, network, block I/O, PIDs)."""

    def rows_of(r: pb.ContainerStatsResponse) -> list[dict[str, Any]]:
        return [
            {
                "id": s.id,
                "name": s.name,
                "cpu_percent": s.cpu_percent,
                "memory_usage": s.memory_usage,
                "memory_limit": s.memory_limit,
                "pids": s.pids,
                "net_rx": s.net_rx_bytes,
                "net_tx": s.net_tx_bytes,
                "block_read": s.block_read_bytes,
                "block_write": s.block_write_bytes,
            }
            for s in r.stats
        ]

    req = pb.ContainerStatsRequest(containers=list(containers), stream=not no_stream)

    if no_stream:

        async def once(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            async for r in client.stream(_stub(client).Stats, req):
                rows = rows_of(r)
            return rows

        app.run(once, table=_stats_table, idempotent=True)
        return
    _single(app, "streaming stats")

    async def live(client: AgentClient, out: HostOutput) -> None:
        async for r in client.stream(_stub(client).Stats, req):
            rows = rows_of(r)
            if app.json:
                output.print_json(rows)
                continue
            if terminal.is_tty(sys.stdout.fileno()):
                sys.stdout.write("\x1b[2J\x1b[H")
            output.print_table(_stats_table(rows), app.console)
            sys.stdout.flush()

    app.run(live)


# ---- cp ----------------------------------------------------------------------------------------------


def _split_target(arg: str) -> tuple[str | None, str]:
    """`CTR:/path` → ("CTR", "/path"); a local path (absolute, ./relative, or without a colon) → (None, p)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    ctr, _, path = arg.partition(":")
    return ctr, path


def _local_tar(src: str) -> IO[bytes]:
    spool: IO[bytes] = tempfile.TemporaryFile()
    with tarfile.open(fileobj=spool, mode="w") as tar:
        tar.add(src, arcname=os.path.basename(os.path.normpath(src)) or ".")
    spool.seek(0)
    return spool


def _extract_local(spool: IO[bytes], dest: str) -> None:
    """Docker's rule: into DEST when it is a directory, else as DEST (its parent must exist)."""
    with tarfile.open(fileobj=spool, mode="r") as tar:
        if os.path.isdir(dest):
            tar.extractall(dest, filter="tar")
            return
        parent = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise UsageError(f"the destination directory {parent} does not exist")
        rename = os.path.basename(dest)
        for member in tar.getmembers():
            _, sep, rest = member.name.lstrip("./").partition("/")
            member.name = rename + (sep + rest if sep else "")
            tar.extract(member, parent, filter="tar")


@click.command()
@click.argument("source")
@click.argument("destination")
@click.pass_obj
def cp(app: App, source: str, destination: str) -> None:
    """Copy files between a container and the local filesystem (CTR:PATH on one side; - for a tar stream)."""
    _single(app, "cp")
    src_ctr, src_path = _split_target(source)
    dst_ctr, dst_path = _split_target(destination)
    if (src_ctr is None) == (dst_ctr is None):
        raise UsageError("exactly one of SOURCE and DESTINATION must be CONTAINER:PATH")
    if dst_ctr is not None:
        if not dst_path.startswith("/"):
            dst_path = "/" + dst_path
        if src_path != "-" and not os.path.lexists(src_path):
            raise UsageError(f"no such local file or directory: {src_path}")

        async def upload(client: AgentClient, out: HostOutput) -> None:
            spool = sys.stdin.buffer if src_path == "-" else await asyncio.to_thread(_local_tar, src_path)

            async def requests() -> AsyncIterator[pb.CopyToContainerRequest]:
                yield pb.CopyToContainerRequest(target=pb.CopyTarget(container=dst_ctr, path=dst_path))
                while chunk := await asyncio.to_thread(spool.read, CHUNK):
                    yield pb.CopyToContainerRequest(data=chunk)

            try:
                await _stub(client).CopyTo(requests(), metadata=client.metadata())
            except grpc.aio.AioRpcError as exc:
                raise await client.translate(exc) from None
            finally:
                if spool is not sys.stdin.buffer:
                    spool.close()

        app.run(upload)
        return
    assert src_ctr is not None
    path = src_path if src_path.startswith("/") else "/" + src_path

    async def download(client: AgentClient, out: HostOutput) -> None:
        req = pb.CopyFromContainerRequest(container=src_ctr, path=path)
        if dst_path == "-":
            async for r in client.stream(_stub(client).CopyFrom, req):
                sys.stdout.buffer.write(r.data)
            sys.stdout.buffer.flush()
            return
        with tempfile.TemporaryFile() as spool:
            async for r in client.stream(_stub(client).CopyFrom, req):
                spool.write(r.data)
            spool.seek(0)
            await asyncio.to_thread(_extract_local, spool, dst_path)

    app.run(download)


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
    run, create, start, attach, stop, restart, kill, pause, unpause, rm, ps, inspect, logs, exec_, wait,
    stats, top, cp, container_group,
]  # fmt: skip
