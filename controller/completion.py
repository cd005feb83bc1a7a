"""Shell completion for bash, zsh and fish: click's protocol, plus container and image names from the agent.

`dockyard completion bash|zsh|fish` prints the script to source; the shell then calls `dockyard` with
`_DOCKYARD_COMPLETE=<shell>_complete` and COMP_WORDS/COMP_CWORD, and click answers with the commands
and flags. Arguments that name containers or images ask the agent(s) chosen by -H/--selector (or the
default one) for names, within a short deadline; any failure (no agent, no TLS identity, too slow) just
means no names are offered — a completion must never print an error or hang the shell.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from controller.client import AgentClient

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_DOCKYARD_COMPLETE"
DEADLINE_S = 1.5  # the whole lookup, over every host

# argument names that take container or image names, whatever the command
CONTAINER_ARGS = frozenset({"container", "containers"})
IMAGE_ARGS = frozenset({"image", "reference", "references"})


def script(cli: click.Command, shell: str) -> str:
    """The completion script for `shell` (what `source <(dockyard completion bash)` runs)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:
        raise click.UsageError(f"no completion for shell {shell!r}; use one of {', '.join(SHELLS)}")
    return cls(cli, {}, "dockyard", COMPLETE_VAR).source()


def attach(command: click.Command) -> None:
    """Give the command's container/image arguments name completion (unless they have their own)."""
    for param in command.params:
        if not isinstance(param, click.Argument) or param._custom_shell_complete is not None:
            continue
        if param.name in CONTAINER_ARGS:
            param._custom_shell_complete = complete_containers
        elif param.name in IMAGE_ARGS:
            param._custom_shell_complete = complete_images


def complete_containers(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _matching(_names(ctx, _container_names), incomplete)


def complete_images(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _matching(_names(ctx, _image_names), incomplete)


def _matching(names: set[str], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]


Lookup = Callable[["AgentClient"], Awaitable[list[str]]]


def _names(ctx: click.Context, lookup: Lookup) -> set[str]:
    """Names from every chosen host within DEADLINE_S; nothing at all on any trouble."""
    try:
        return asyncio.run(_gather(ctx, lookup))
    except Exception:  # a completion prints nothing rather than an error in the middle of a command line
        return set()


async def _gather(ctx: click.Context, lookup: Lookup) -> set[str]:
    from controller import config
    from controller.cli import resolve_targets
    from controller.client import AgentClient

    root = ctx.find_root().params
    cfg_dir: Path = root.get("config_dir") or config.config_dir()
    hosts, selectors = tuple(root.get("hosts") or ()), tuple(root.get("selectors") or ())
    targets = resolve_targets(hosts, cfg_dir, root.get("inventory_file"), selectors)
    clients = [AgentClient(t, cfg_dir) for t in targets]

    async def one(client: AgentClient) -> list[str]:
        try:
            return await lookup(client)
        except Exception:  # one host's trouble costs only its names
            return []

    try:
        async with asyncio.timeout(DEADLINE_S):
            found = await asyncio.gather(*(one(c) for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {name for names in found for name in names}


async def _container_names(client: AgentClient) -> list[str]:
    from controller.api.containers import ContainersApi

    return [c.name for c in await ContainersApi(client).ls(all=True) if c.name]


async def _image_names(client: AgentClient) -> list[str]:
    from controller.api.images import ImagesApi
    from controller.formatting import familiar

    names = []
    for image in await ImagesApi(client).list():
        for name in image.names:
            repo, tag = familiar(name)
            names.append(repo if tag == "<none>" else f"{repo}:{tag}")
    return names
