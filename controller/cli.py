"""`dockyard`: parse flags, pick targets, hand over to a command module; print errors as one line.

No logic lives here: commands are in controller/commands/, targets in controller/target.py, the run
and output mechanics in controller/app.py.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

import click

from controller import config as controller_config
from controller import target as target_mod
from controller.config import ENV_HOST
from controller.errors import ControllerError
from controller.target import Target

# Command modules are imported only when one of their commands runs: start-up time is most of a short
# command's wall time (and of a fan-out to 50 hosts). Each module lists the top-level commands it defines;
# tests/unit/foundation/test_cli_registry.py checks this table against the modules themselves.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "controller.commands.system": ("info", "ping", "version"),
    "controller.commands.pki": ("pki",),
    "controller.commands.images": ("image", "images", "import", "load", "rmi", "save", "system", "tag"),
    "controller.commands.registry": ("login", "logout", "pull", "push"),
    "controller.commands.fleet": ("bootstrap", "hosts"),
    "controller.commands.networks": ("network", "port"),
    "controller.commands.containers": (
        "attach",
        "container",
        "inspect",
        "kill",
        "logs",
        "pause",
        "ps",
        "restart",
        "rm",
        "start",
        "stop",
        "top",
        "unpause",
        "wait",
    ),
    "controller.commands.containers_run": ("create", "exec", "run"),
    "controller.commands.containers_stats": ("stats",),
    "controller.commands.containers_cp": ("cp",),
    "controller.commands.volumes": ("volume",),
    "controller.commands.events": ("events",),
    "controller.commands.audit": ("audit",),
    "controller.commands.build": ("build", "builder"),
    "controller.commands.transfer": ("commit", "move"),
    "controller.commands.trust": ("trust",),
    "controller.commands.rollout": ("rollout",),
    "controller.commands.release": ("release",),
    "controller.commands.secret": ("secret",),
    "controller.commands.compose": ("compose",),
}
# Subcommands that one area adds to another area's group: group name -> (module, attribute) pairs, where
# the attribute is a command or a list of commands.
GROUP_EXTENSIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "image": (
        ("controller.commands.registry", "IMAGE_SUBCOMMANDS"),  # image pull|push
        ("controller.commands.transfer", "IMAGE_SUBCOMMANDS"),  # image send
        ("controller.commands.trust", "IMAGE_SUBCOMMANDS"),  # image sign|verify
    ),
    "pki": (("controller.commands.pki_rotate", "PKI_SUBCOMMANDS"),),  # rotate, rotate-ca, push-crl
}


def _module_commands(module_name: str) -> dict[str, click.Command]:
    module = importlib.import_module(module_name)
    found: dict[str, click.Command] = {}
    for value in vars(module).values():
        candidates = value if isinstance(value, list | tuple) else [value]
        for item in candidates:
            if isinstance(item, click.Command) and item.callback is not None:
                if item.callback.__module__ == module_name and item.name:
                    found.setdefault(item.name, item)
    return found


class LazyGroup(click.Group):
    """A click group whose commands are imported from COMMAND_MODULES on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *(n for names in COMMAND_MODULES.values() for n in names)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        for module_name, names in COMMAND_MODULES.items():
            if cmd_name in names:
                command = _module_commands(module_name).get(cmd_name)
                if command is None:
                    return None
                if isinstance(command, click.Group):
                    _extend(command)
                _dress(command)
                self.add_command(command)
                return command
        return None


def _dress(command: click.Command) -> None:
    """Give every leaf command `--format` after its name (unless it has a --format of its own, like
    `save`) and name completion for its container/image arguments; idempotent."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _dress(sub)
        return
    if not any(isinstance(p, click.Option) and "--format" in p.opts for p in command.params):
        command.params.append(_format_option())
    from controller import completion

    completion.attach(command)


def _format_option() -> click.Option:
    return click.Option(
        ["--format", "format_after"],
        expose_value=False,
        callback=_choose_format,
        metavar="FORMAT",
        help="table | json | a template like '{{.Names}}\\t{{.Status}}' (as before the command)",
    )


def _check_format(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from controller import formatting

    if value is None or ctx.resilient_parsing:
        return value
    try:
        return formatting.check(value)
    except formatting.TemplateError as exc:
        raise click.UsageError(str(exc)) from None


def _choose_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """`--format` after the command: the same as before it; two different values are an error. A template
    is bound to the command here, so a bad one fails before any agent is called."""
    app = ctx.obj
    if app is None or ctx.resilient_parsing:  # shell completion parses without running the group
        return
    from controller import formatting

    before = ctx.find_root().params.get("fmt")
    if value is not None:
        value = _check_format(ctx, param, value)
        if before is not None and value != before:
            raise click.UsageError("--format given twice with different values")
    chosen = value or before or "table"
    app.format = chosen
    if formatting.is_template(chosen):
        names = []
        node: click.Context | None = ctx
        while node is not None and node.parent is not None:
            names.append(node.info_name or "")
            node = node.parent
        try:
            app.renderer = formatting.renderer(chosen, " ".join(reversed(names)), ctx.params)
        except formatting.TemplateError as exc:
            raise click.UsageError(str(exc)) from None


def _extend(group: click.Group) -> None:
    for module_name, attribute in GROUP_EXTENSIONS.get(group.name or "", ()):
        value = getattr(importlib.import_module(module_name), attribute)
        for command in value if isinstance(value, list | tuple) else [value]:
            group.add_command(command)


def resolve_targets(
    hosts: tuple[str, ...],
    cfg_dir: Path,
    inventory_file: Path | None = None,
    selectors: tuple[str, ...] = (),
) -> list[Target]:
    """Turn -H values (or $DOCKYARD_HOST, or the local socket) into targets."""
    if not hosts and not selectors:
        return [target_mod.default()]
    # Names, @groups, all, NAME=ADDRESS, addresses and --selector: controller.inventory resolves them.
    from controller import inventory

    path = inventory_file or cfg_dir / inventory.INVENTORY_FILE
    chosen = inventory.select(inventory.load(path), hosts, selectors)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["dockyard.hosts"] = chosen
    return [inventory.to_target(h) for h in chosen]


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option(
    "-H",
    "--host",
    "hosts",
    multiple=True,
    metavar="TARGET",
    help=f"agent: unix:///path or HOST[:PORT] (repeatable; default ${ENV_HOST} or the local socket)",
)
@click.option(
    "--format",
    "fmt",
    callback=_check_format,
    metavar="FORMAT",
    help="table (default) | json | a template like '{{.Names}}' (ps, images, volume ls, network ls)",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="per-host seconds"
)
@click.option("--parallel", type=click.IntRange(min=1), default=256, show_default=True, help="hosts at once")
@click.option(
    "--config-dir", type=click.Path(path_type=Path), help="default $DOCKYARD_CONFIG_DIR or ~/.config/dockyard"
)
@click.option(
    "-i", "--inventory", "inventory_file", type=click.Path(path_type=Path), help="inventory TOML file"
)
@click.option(
    "--selector", "selectors", multiple=True, metavar="KEY=VALUE", help="only hosts with this label"
)
@click.option("--max-fail", metavar="N|P%", help="failed hosts tolerated before the exit code is non-zero")
@click.version_option(package_name="dockyard", prog_name="dockyard")
@click.pass_context
def cli(
    ctx: click.Context,
    hosts: tuple[str, ...],
    fmt: str | None,
    timeout: float,
    parallel: int,
    config_dir: Path | None,
    inventory_file: Path | None,
    selectors: tuple[str, ...],
    max_fail: str | None,
) -> None:
    """Dockyard: containers on one host or a whole fleet."""
    from controller import fanout
    from controller.app import App

    cfg_dir = config_dir or controller_config.config_dir()
    fanout.parse_max_fail(max_fail)  # a bad value is a usage error before anything runs
    ctx.obj = App(
        targets=resolve_targets(hosts, cfg_dir, inventory_file, selectors),
        config_dir=cfg_dir,
        format=fmt or "table",
        timeout=timeout,
        parallel=parallel,
        max_fail=max_fail,
    )


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell: str) -> None:
    """Print the shell completion script: `source <(dockyard completion bash)`; for zsh
    `source <(dockyard completion zsh)`; for fish `dockyard completion fish | source`."""
    from controller import completion

    click.echo(completion.script(cli, shell), nl=False)


def main(argv: list[str] | None = None) -> None:
    """Run one command, then leave at once: skipping the interpreter's teardown (grpc's threads, module
    cleanup) saves ~20 ms of every short command, as much as the agent needs to run a container."""
    _leave(run(argv))


def run(argv: list[str] | None) -> int:
    """Run one command; its exit code (also used by the warm server's workers)."""
    try:
        cli.main(args=argv, prog_name="dockyard", standalone_mode=False)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except ControllerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`dockyard ps | head`): not an error
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def _leave(code: int) -> None:
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
