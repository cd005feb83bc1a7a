"""The CLI's lazy command table must name exactly the commands each module defines."""

from __future__ import annotations

import click

from controller import cli


def test_command_table_matches_modules() -> None:
    for module_name, names in cli.COMMAND_MODULES.items():
        defined = {
            name
            for name, command in cli._module_commands(module_name).items()
            if not any(command in _extension_commands(g) for g in cli.GROUP_EXTENSIONS)
        }
        top_level = {n for n in defined if _is_top_level(module_name, n)}
        assert set(names) <= set(defined), f"{module_name} lacks {set(names) - set(defined)}"
        assert top_level <= set(names), f"{module_name} defines unlisted commands {top_level - set(names)}"


def _extension_commands(group: str) -> list[click.Command]:
    found: list[click.Command] = []
    for module_name, attribute in cli.GROUP_EXTENSIONS[group]:
        value = getattr(__import__(module_name, fromlist=["_"]), attribute)
        found += list(value) if isinstance(value, list | tuple) else [value]
    return found


def _is_top_level(module_name: str, name: str) -> bool:
    """A command is top-level unless it was added to one of the module's own groups."""
    commands = cli._module_commands(module_name)
    groups = [c for c in commands.values() if isinstance(c, click.Group)]
    command = commands[name]
    return not any(command is sub for g in groups for sub in g.commands.values())


def test_every_listed_command_loads_with_its_extensions() -> None:
    ctx = click.Context(cli.cli)
    for name in cli.cli.list_commands(ctx):
        assert cli.cli.get_command(ctx, name) is not None, name
    image = cli.cli.get_command(ctx, "image")
    assert isinstance(image, click.Group)
    assert {"pull", "push", "send", "ls"} <= set(image.commands)
    pki_group = cli.cli.get_command(ctx, "pki")
    assert isinstance(pki_group, click.Group) and "rotate" in pki_group.commands
