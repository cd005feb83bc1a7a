"""`dockyard`: parse flags, pick targets, hand over to a command module; print errors as one line.

No logic lives here: commands are in controller/commands/, targets in controller/target.py, the run
and output mechanics in controller/app.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from controller import config as controller_config
from controller import fanout, inventory
from controller import target as target_mod
from controller.app import App
from controller.commands import build as build_cmds
from controller.commands import containers as container_cmds
from controller.commands import events as event_cmds
from controller.commands import fleet as fleet_cmds
from controller.commands import images as images_cmds
from controller.commands import networks as network_cmds
from controller.commands import pki as pki_cmds
from controller.commands import pki_rotate
from controller.commands import registry as registry_cmds
from controller.commands import system as system_cmds
from controller.commands import transfer as transfer_cmds
from controller.commands import volumes as volume_cmds
from controller.config import ENV_HOST
from controller.errors import ControllerError, UsageError
from controller.target import Target


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
    path = inventory_file or cfg_dir / inventory.INVENTORY_FILE
    chosen = inventory.select(inventory.load(path), hosts, selectors)
    click.get_current_context().meta["dockyard.hosts"] = chosen
    return [inventory.to_target(h) for h in chosen]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "-H",
    "--host",
    "hosts",
    multiple=True,
    metavar="TARGET",
    help=f"agent: unix:///path or HOST[:PORT] (repeatable; default ${ENV_HOST} or the local socket)",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
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
    fmt: str,
    timeout: float,
    parallel: int,
    config_dir: Path | None,
    inventory_file: Path | None,
    selectors: tuple[str, ...],
    max_fail: str | None,
) -> None:
    """Dockyard: containers on one host or a whole fleet."""
    cfg_dir = config_dir or controller_config.config_dir()
    fanout.parse_max_fail(max_fail)  # a bad value is a usage error before anything runs
    ctx.obj = App(
        targets=resolve_targets(hosts, cfg_dir, inventory_file, selectors),
        config_dir=cfg_dir,
        format=fmt,
        timeout=timeout,
        parallel=parallel,
        max_fail=max_fail,
    )


cli.add_command(system_cmds.info)
cli.add_command(system_cmds.version)
cli.add_command(system_cmds.ping)
cli.add_command(pki_cmds.pki_group)
# >>> command modules: each area registers its commands here
for _command in images_cmds.COMMANDS:
    cli.add_command(_command)
for _command in registry_cmds.COMMANDS:  # pull, push, login, logout (+ `image pull|push`)
    cli.add_command(_command)
for _command in registry_cmds.IMAGE_SUBCOMMANDS:
    images_cmds.image_group.add_command(_command)
cli.add_command(fleet_cmds.hosts)
cli.add_command(fleet_cmds.bootstrap)
pki_cmds.pki_group.add_command(pki_rotate.rotate)
for _command in network_cmds.COMMANDS:
    cli.add_command(_command)
for _command in [*container_cmds.COMMANDS, *volume_cmds.COMMANDS, *event_cmds.COMMANDS]:
    cli.add_command(_command)
cli.add_command(build_cmds.build)
cli.add_command(build_cmds.builder_group)
for _command in transfer_cmds.COMMANDS:  # commit, move (+ `image send`)
    cli.add_command(_command)
for _command in transfer_cmds.IMAGE_SUBCOMMANDS:
    images_cmds.image_group.add_command(_command)
# <<< command modules


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="dockyard", standalone_mode=False)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except ControllerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os._exit(0)
    except SystemExit:
        raise
    except UsageError as exc:  # pragma: no cover - subclass of ControllerError, kept for clarity
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
