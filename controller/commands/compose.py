"""`dockyard compose`: run a compose file's services on the agent (-H: on each agent, like every command).

The file is loaded once, here on the controller (controller.compose.load: YAML, interpolation, the
Compose Specification's schema, Dockyard's supported subset, merging, resolving); each verb is then an
operation on one agent (controller.compose.engine) that App.run fans out. `ps`, `logs`, `stop`, `start`,
`restart`, `down` and `images` find the project's containers by their labels, so they also work with only
`-p NAME` when the file is gone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from controller import session
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.commands.containers_common import NO_HELP_SHORTCUT, exit_with, resolve_env, single
from controller.commands.containers_run import exec_in
from controller.errors import UsageError

if TYPE_CHECKING:
    from controller.api.build import BuildOptions
    from controller.api.containers import Container
    from controller.compose.engine import Engine
    from controller.compose.load import Options
    from controller.compose.model import Project, Service

# controller.compose (PyYAML, jsonschema) is imported when a compose command runs, not when the CLI starts.
_META = "dockyard.compose"


def _options(ctx: click.Context) -> Options:
    options: Options = ctx.meta[_META]
    return options


def _project(ctx: click.Context, *, name_only: bool = False) -> Project:
    """The loaded project; with `name_only` (verbs that find containers by label) a project of just the
    `-p` name when there is no compose file."""
    from controller.compose import load, model

    options = _options(ctx)
    if name_only and options.project_name and not options.files:
        try:
            load.find_files(options.cwd)
        except UsageError:
            return model.Project(
                name=options.project_name,
                working_dir=options.cwd,
                files=(),
                services=(),
                volumes={},
                networks={},
                active=frozenset(),
                document={},
            )
    return load.load(options)


def _engine(
    app: App, project: Project, client: AgentClient, out: HostOutput, *, quiet: bool = False
) -> Engine:
    from controller import credentials
    from controller.compose.engine import Engine

    store = credentials.CredentialStore(app.config_dir)

    def login(reference: str) -> credentials.Login | None:
        return store.get(credentials.registry_of(reference))

    return Engine(client, project, out, login=login, build_source=_build_source(app), quiet=quiet)


def _build_source(app: App) -> Callable[[Service], tuple[BuildOptions, Callable[[], AsyncIterator[bytes]]]]:
    """How a `build:` service is built: as `dockyard build` builds (its context streamer, its Dockerfile
    credential lookup), tagged with the service's image name."""

    def source(service: Service) -> tuple[BuildOptions, Callable[[], AsyncIterator[bytes]]]:
        from controller import build_context
        from controller.api.build import BuildOptions
        from controller.commands.build import _base_images, _registry_auth

        build = service.build
        assert build is not None
        path = build.context / build.dockerfile
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise UsageError(f"service {service.name}: cannot find the Dockerfile {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"service {service.name}: cannot read the Dockerfile {path}: {exc}") from None
        args = dict(build.args)
        rules = build_context.load_rules(build.context)
        options = BuildOptions(
            dockerfile=text,
            dockerfile_name=build.dockerfile,
            tags=(service.image,),
            build_args=args,
            target=build.target,
            registry_auth=_registry_auth(app, _base_images(text, path.name, args)),
        )
        return options, lambda: build_context.stream(build.context, rules)

    return source


@click.group("compose")
@click.option(
    "-f", "--file", "files", multiple=True, metavar="FILE", help="compose file (repeatable, merged)"
)
@click.option("-p", "--project-name", metavar="NAME", help="project name (default: name:, or the directory)")
@click.option("--project-directory", type=click.Path(path_type=Path), help="default: the first file's")
@click.option("--env-file", "env_files", multiple=True, metavar="FILE", help="default: .env of the project")
@click.option("--profile", "profiles", multiple=True, metavar="NAME", help="enable a profile (repeatable)")
@click.pass_context
def compose(
    ctx: click.Context,
    files: tuple[str, ...],
    project_name: str | None,
    project_directory: Path | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...],
) -> None:
    """Run a multi-container app described by a compose file (docker compose's common subset)."""
    from controller.compose.load import Options

    ctx.meta[_META] = Options(
        files=files,
        project_name=project_name,
        project_dir=project_directory,
        env_files=env_files,
        profiles=profiles,
    )


@compose.command("config")
@click.option("--services", "services_only", is_flag=True, help="print the service names, one a line")
@click.option("--volumes", "volumes_only", is_flag=True, help="print the volume names, one a line")
@click.option("-q", "--quiet", is_flag=True, help="only check the file")
@click.pass_context
def config(ctx: click.Context, services_only: bool, volumes_only: bool, quiet: bool) -> None:
    """Check the file and print it resolved (variables, merged files, defaults, absolute paths)."""
    import json

    import yaml

    project = _project(ctx)
    app: App = ctx.obj
    if quiet:
        return
    if services_only:
        click.echo("\n".join(s.name for s in project.services if s.name in project.active))
    elif volumes_only:
        click.echo("\n".join(project.volumes))
    elif app.json:
        click.echo(json.dumps(project.document, indent=2))
    else:
        click.echo(
            yaml.safe_dump(dict(project.document), sort_keys=False, default_flow_style=False), nl=False
        )


@compose.command("up")
@click.option("-d", "--detach", is_flag=True, help="leave the containers running in the background")
@click.option(
    "--pull",
    type=click.Choice(["always", "missing", "never"]),
    default="missing",
    show_default=True,
    help="pull images",
)
@click.option("--build", is_flag=True, help="build images of services with build: even when present")
@click.option("--force-recreate", is_flag=True, help="recreate every container, changed or not")
@click.option("--no-recreate", is_flag=True, help="keep existing containers even when their config changed")
@click.option("--remove-orphans", is_flag=True, help="remove containers of services no longer in the file")
@click.argument("services", nargs=-1)
@click.pass_context
def up(
    ctx: click.Context,
    detach: bool,
    pull: str,
    build: bool,
    force_recreate: bool,
    no_recreate: bool,
    remove_orphans: bool,
    services: tuple[str, ...],
) -> None:
    """Create and start the services' containers (only what changed); attached: follow their logs,
    prefixed by container, until they exit or Ctrl-C stops them."""
    from controller.compose.engine import Action, PullPolicy, UpOptions, now_ns

    if force_recreate and no_recreate:
        raise UsageError("--force-recreate and --no-recreate exclude each other")
    app: App = ctx.obj
    project = _project(ctx)
    options = UpOptions(
        services=services,
        pull=cast("PullPolicy", pull),
        build=build,
        force_recreate=force_recreate,
        no_recreate=no_recreate,
        remove_orphans=remove_orphans,
    )

    async def op(client: AgentClient, out: HostOutput) -> list[Action]:
        engine = _engine(app, project, client, out)
        since = now_ns()
        actions = await engine.up(options)
        if not detach:
            await engine.attached(actions, since)
        return actions

    def to_json(actions: list[Action]) -> list[dict[str, str]]:
        return [dataclasses.asdict(a) for a in actions]

    app.run(op, to_json=to_json, streaming=not detach, text=lambda _: "")


@compose.command("down")
@click.option("-v", "--volumes", is_flag=True, help="also remove named volumes and anonymous ones")
@click.option("--rmi", type=click.Choice(["local", "all"]), help="also remove images: built ones, or all")
@click.option("-t", "--timeout", type=int, help="seconds to wait for a stop before killing")
@click.option("--remove-orphans", is_flag=True, help="(always done: every container of the project goes)")
@click.pass_context
def down(
    ctx: click.Context, volumes: bool, rmi: str | None, timeout: int | None, remove_orphans: bool
) -> None:
    """Stop and remove the project's containers and networks (-v: volumes; --rmi: images)."""
    app: App = ctx.obj
    project = _project(ctx, name_only=True)

    async def op(client: AgentClient, out: HostOutput) -> None:
        await _engine(app, project, client, out).down(volumes=volumes, rmi=rmi, timeout=timeout)

    app.run(op, streaming=True)


def _status(c: Container) -> str:
    if c.status == "exited":
        return f"exited ({c.exit_code})"
    return f"{c.status} ({c.health})" if c.health else c.status


def _row(project: Project, c: Container) -> dict[str, Any]:
    from controller.compose.model import SERVICE

    return {
        "name": c.name,
        "id": c.id,
        "image": c.image,
        "service": c.labels.get(SERVICE, ""),
        "status": c.status,
        "health": c.health or "",
        "exit_code": c.exit_code,
        "state": _status(c),
        "ports": list(c.ports),
        "project": project.name,
    }


@compose.command("ps")
@click.option("-a", "--all", "all_", is_flag=True, help="also stopped containers")
@click.option("-q", "--quiet", is_flag=True, help="only the container IDs")
@click.argument("services", nargs=-1)
@click.pass_context
def ps(ctx: click.Context, all_: bool, quiet: bool, services: tuple[str, ...]) -> None:
    """List the project's containers."""
    from controller import output

    app: App = ctx.obj
    project = _project(ctx, name_only=True)

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        containers = await _engine(app, project, client, out).containers(services=services)
        return [
            _row(project, c) for c in containers if all_ or c.status in ("running", "restarting", "paused")
        ]

    def table(rows: list[dict[str, Any]]) -> output.Table:
        if quiet:
            return output.Table(["ID"], [[r["id"]] for r in rows])
        return output.Table(
            ["NAME", "IMAGE", "SERVICE", "STATUS", "PORTS"],
            [[r["name"], r["image"], r["service"], r["state"], ", ".join(r["ports"])] for r in rows],
        )

    def text(rows: list[dict[str, Any]]) -> str:
        return "\n".join(r["id"] for r in rows)

    app.run(op, table=None if quiet else table, text=text if quiet else None, idempotent=True)


@compose.command("logs")
@click.option("-f", "--follow", is_flag=True, help="keep following new output")
@click.option("-n", "--tail", type=int, default=-1, help="only the last N lines of each container")
@click.argument("services", nargs=-1)
@click.pass_context
def logs(ctx: click.Context, follow: bool, tail: int, services: tuple[str, ...]) -> None:
    """The services' output, each line prefixed by its container (`web-1 | …`)."""
    app: App = ctx.obj
    project = _project(ctx, name_only=True)

    async def op(client: AgentClient, out: HostOutput) -> None:
        await _engine(app, project, client, out).logs(services, follow=follow, tail=tail)

    app.run(op, streaming=follow, idempotent=not follow)


@compose.command("pull")
@click.option("-q", "--quiet", is_flag=True, help="no progress lines")
@click.argument("services", nargs=-1)
@click.pass_context
def pull(ctx: click.Context, quiet: bool, services: tuple[str, ...]) -> None:
    """Pull the services' images (services that are only built are skipped)."""
    app: App = ctx.obj
    project = _project(ctx)
    chosen = [s for s in (project.select(services) if services else _active(project)) if not s.pull_never]

    async def op(client: AgentClient, out: HostOutput) -> None:
        engine = _engine(app, project, client, out, quiet=quiet)
        for service in chosen:
            await engine.pull(service)

    app.run(op, streaming=True)


def _active(project: Project) -> list[Service]:
    return [s for s in project.services if s.name in project.active]


@compose.command("build")
@click.argument("services", nargs=-1)
@click.pass_context
def build(ctx: click.Context, services: tuple[str, ...]) -> None:
    """Build the images of services with a build: section, on the agent."""
    app: App = ctx.obj
    project = _project(ctx)
    chosen = [s for s in (project.select(services) if services else _active(project)) if s.build is not None]

    async def op(client: AgentClient, out: HostOutput) -> None:
        engine = _engine(app, project, client, out)
        for service in chosen:
            await engine.build(service)

    app.run(op, streaming=True)


def _lifecycle(verb: str) -> click.Command:
    @click.command(verb)
    @click.option("-t", "--timeout", type=int, help="seconds to wait for a stop before killing")
    @click.argument("services", nargs=-1)
    @click.pass_context
    def command(ctx: click.Context, timeout: int | None, services: tuple[str, ...]) -> None:
        app: App = ctx.obj
        project = _project(ctx, name_only=True)

        async def op(client: AgentClient, out: HostOutput) -> list[str]:
            engine = _engine(app, project, client, out)
            if verb == "stop":
                return await engine.stop(services, timeout)
            if verb == "restart":
                return await engine.restart(services, timeout)
            return await engine.start(services)

        app.run(op, streaming=True, text=lambda _: "")

    command.help = {
        "stop": "Stop the project's running containers (dependents first).",
        "start": "Start the project's stopped containers (dependencies first).",
        "restart": "Restart the project's containers.",
    }[verb]
    return command


compose.add_command(_lifecycle("stop"))
compose.add_command(_lifecycle("start"))
compose.add_command(_lifecycle("restart"))


@compose.command("images")
@click.option("-q", "--quiet", is_flag=True, help="only the image IDs")
@click.argument("services", nargs=-1)
@click.pass_context
def images(ctx: click.Context, quiet: bool, services: tuple[str, ...]) -> None:
    """The images the project's containers run."""
    from controller import output
    from controller.api.images import ImagesApi

    app: App = ctx.obj
    project = _project(ctx, name_only=True)

    async def op(client: AgentClient, out: HostOutput) -> list[dict[str, Any]]:
        containers = await _engine(app, project, client, out).containers(services=services)
        by_digest = {i.digest: i for i in await ImagesApi(client).list()}
        rows = []
        for c in containers:
            image = by_digest.get(c.image_digest)
            repo, _, tag = c.image.rpartition(":") if ":" in c.image.rsplit("/", 1)[-1] else (c.image, "", "")
            rows.append(
                {
                    "container": c.name,
                    "repository": repo,
                    "tag": tag or "latest",
                    "image_id": image.id if image else c.image_digest,
                    "size": image.size if image else 0,
                }
            )
        return rows

    def table(rows: list[dict[str, Any]]) -> output.Table:
        return output.Table(
            ["CONTAINER", "REPOSITORY", "TAG", "IMAGE ID", "SIZE"],
            [
                [
                    r["container"],
                    r["repository"],
                    r["tag"],
                    _short_id(r["image_id"]),
                    output.human_size(r["size"]),
                ]
                for r in rows
            ],
        )

    def text(rows: list[dict[str, Any]]) -> str:
        return "\n".join(dict.fromkeys(_short_id(r["image_id"]) for r in rows))

    app.run(op, table=None if quiet else table, text=text if quiet else None, idempotent=True)


def _short_id(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


@compose.command("exec", context_settings={**NO_HELP_SHORTCUT, "allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="run in the background")
@click.option("-i", "--interactive", is_flag=True, help="keep stdin open")
@click.option("-t", "--tty", is_flag=True, help="allocate a pseudo-terminal")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V")
@click.option("-u", "--user", default="", help="user[:group]")
@click.option("-w", "--workdir", default="", help="working directory")
@click.option("--index", type=click.IntRange(min=1), default=1, help="which container of the service")
@click.argument("service")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(
    ctx: click.Context,
    detach: bool,
    interactive: bool,
    tty: bool,
    env: tuple[str, ...],
    user: str,
    workdir: str,
    index: int,
    service: str,
    command: tuple[str, ...],
) -> None:
    """Run a command in a service's running container; exits with the command's exit code."""

    app: App = ctx.obj
    project = _project(ctx, name_only=True)
    name = project.container_name(service, index)
    exec_in(app, name, command, env, user, workdir, tty, interactive, detach)


@compose.command("run", context_settings={**NO_HELP_SHORTCUT, "allow_interspersed_args": False})
@click.option("--rm", "remove", is_flag=True, help="remove the container when it exits")
@click.option("-d", "--detach", is_flag=True, help="run in the background, print the container name")
@click.option("-i", "--interactive", is_flag=True, help="keep stdin open")
@click.option("-t", "--tty", is_flag=True, help="allocate a pseudo-terminal")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="set an environment variable")
@click.option("-u", "--user", default=None, help="user[:group]")
@click.option("-w", "--workdir", default=None, help="working directory")
@click.option("--no-deps", is_flag=True, help="do not start the services it depends on")
@click.argument("service")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    remove: bool,
    detach: bool,
    interactive: bool,
    tty: bool,
    env: tuple[str, ...],
    user: str | None,
    workdir: str | None,
    no_deps: bool,
    service: str,
    command: tuple[str, ...],
) -> None:
    """Run a one-off command in a new container of a service (its dependencies started first; no ports
    published); exits with the command's exit code."""
    from controller.api.containers import ContainersApi
    from controller.compose.engine import UpOptions, refuse_secrets

    app: App = ctx.obj
    if not detach:
        single(app, "an attached compose run")
    session.require_terminal(tty, interactive)
    project = _project(ctx)
    svc = project.service(service)
    base = svc.with_command(command) if command else svc.config
    extra = resolve_env(env, ())
    keys = {e.partition("=")[0] for e in extra}
    config = dataclasses.replace(
        base,
        env=(*(e for e in base.env if e.partition("=")[0] not in keys), *extra),
        user=base.user if user is None else user,
        workdir=base.workdir if workdir is None else workdir,
        publish=(),
        network_aliases=(),
        auto_remove=remove,
        tty=tty,
        interactive=interactive,
        restart="no",
    )
    size = session.window(tty)
    deps = tuple(svc.depends_on)

    async def op(client: AgentClient, out: HostOutput) -> tuple[str, int | None]:
        engine = _engine(app, project, client, out)
        refuse_secrets([svc])
        if deps and not no_deps:
            await engine.up(UpOptions(services=deps))
        else:
            await engine.ensure_networks([svc])
            await engine.ensure_volumes([svc])
        await engine.ensure_image(svc, "missing", False)
        name = await engine.run_oneoff(svc, config)
        api = ContainersApi(client)
        if detach:
            await api.start(name)
            return name, None
        code = await session.drive(
            api.attach(name, start=True, stdin=interactive, size=size), interactive=interactive, tty=tty
        )
        return name, code

    result = app.run(op, text=lambda r: r[0] if detach else "", to_json=lambda r: {"name": r[0]})
    if not detach:
        exit_with(result[1])
