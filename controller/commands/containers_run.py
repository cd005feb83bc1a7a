"""`run`, `create` and `exec`: the run flag table, and the attached sessions of run and exec.

A new run flag is one `click.option` in `run_options` whose parameter name is a field of
`controller.api.containers.ContainerConfig` (which puts it on the wire).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from controller import session
from controller.api.containers import RUN_ERROR_EXIT, ContainerConfig, ContainersApi, ExecSpec
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.commands.containers_common import (
    INT32,
    INT64,
    NO_HELP_SHORTCUT,
    exit_with,
    resolve_env,
    single,
)
from controller.errors import ControllerError

F = TypeVar("F", bound=Callable[..., Any])


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
        click.option(
            "-p",
            "--publish",
            multiple=True,
            metavar="[IP:][HOST_PORT:]CTR_PORT[/PROTO]",
            help="publish a port",
        ),
        click.option("--ip", default="", help="IPv4 address on the network"),
        click.option("--network-alias", "network_aliases", multiple=True, help="another name on the network"),
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


def container_config(image: str, command: tuple[str, ...], flags: dict[str, Any]) -> ContainerConfig:
    """The run flags as click parsed them (see `run_options`) → the typed config; local things resolved
    here: `--env-file` and `-e NAME` read this process's files and environment."""
    flags = dict(flags)
    env = resolve_env(flags.pop("env"), flags.pop("env_file"))
    return ContainerConfig(image=image, command=command, env=env, **flags)


@dataclass(frozen=True)
class RunOutcome:
    id: str
    exit_code: int | None  # None: detached, or the stream ended without an exit status


@click.command(context_settings={**NO_HELP_SHORTCUT, "allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="run in the background and print the ID")
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(app: App, /, detach: bool, image: str, command: tuple[str, ...], **flags: Any) -> None:
    """Create and start a container; attached runs stream output and exit with the container's code."""
    if not detach:
        single(app, "an attached run")
    session.require_terminal(flags["tty"], flags["interactive"])
    config = container_config(image, command, flags)
    size = session.window(config.tty)

    async def op(client: AgentClient, out: HostOutput) -> RunOutcome:
        ids: list[str] = []
        code = await session.drive(
            ContainersApi(client).run(config, detach=detach, size=size),
            interactive=config.interactive and not detach,
            tty=config.tty,
            on_id=ids.append,
        )
        return RunOutcome(ids[0] if ids else "", None if detach else code)

    def to_json(r: RunOutcome) -> dict[str, object]:
        return {"id": r.id} if detach else {"id": r.id, "exit_code": r.exit_code}

    result = app.run(op, text=lambda r: r.id if detach else "", to_json=to_json)
    if not detach and len(app.targets) == 1:
        exit_with(RUN_ERROR_EXIT if result.exit_code is None else result.exit_code)


@click.command(context_settings={**NO_HELP_SHORTCUT, "allow_interspersed_args": False})
@run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def create(app: App, /, image: str, command: tuple[str, ...], **flags: Any) -> None:
    """Create a container without starting it; prints its ID."""
    config = container_config(image, command, flags)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, str]:
        return dataclasses.asdict(await ContainersApi(client).create(config))

    app.run(op, text=lambda d: d["id"])


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
    exec_in(app, container, command, env, user, workdir, tty, interactive, detach)


def exec_in(
    app: App,
    container: str,
    command: tuple[str, ...],
    env: tuple[str, ...],
    user: str,
    workdir: str,
    tty: bool,
    interactive: bool,
    detach: bool,
) -> None:
    """`exec` on the selected hosts (also `compose exec`): one interactive session, or host-prefixed output
    where a non-zero exit code is that host's failure; exits with the command's code on one host."""
    multi = len(app.targets) > 1
    if multi and (interactive or tty):
        single(app, "an interactive exec")
    session.require_terminal(tty, interactive)
    spec = ExecSpec(container, command, resolve_env(env, ()), user, workdir, tty, interactive, detach)
    size = session.window(tty)

    async def op(client: AgentClient, out: HostOutput) -> int | None:
        code = await session.drive(
            ContainersApi(client).exec(spec, size=size),
            interactive=interactive and not detach,
            tty=tty,
            sink=out if multi else None,
        )
        if multi and code:
            raise ControllerError(f"command exited with code {code}", client.name)
        return code

    code = app.run(op)
    if not detach and not multi:
        exit_with(code)
