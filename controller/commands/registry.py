"""Registry commands: pull, push (also as `image pull|push`), login, logout.

Credentials live in the controller's config dir (controller/credentials.py); each pull/push sends the one
entry for the reference's registry inside the request. The agent does the registry traffic, so a
controller can stage images on hosts that reach a registry it cannot (and for platforms it is not).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

from controller import credentials, terminal
from controller.api.registry import Progress, Pulled, Pushed, RegistryApi, Resolved
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import ControllerError, UsageError
from controller.transfer_view import PULL_WORDS, PUSH_WORDS, TransferView, short


def _credentials(app: App, reference: str) -> credentials.Login | None:
    return credentials.CredentialStore(app.config_dir).get(credentials.registry_of(reference))


def _interactive(app: App) -> bool:
    return len(app.targets) == 1 and not app.json and app.console.is_terminal


def _view(app: App, out: HostOutput, words: dict[str, str], quiet: bool) -> TransferView:
    return TransferView(
        out, app.console, interactive=_interactive(app), words=words, silent=quiet or app.json
    )


# ---- pull ---------------------------------------------------------------------------------------------


def _pull(app: App, reference: str, platform: str | None, quiet: bool) -> None:
    login = _credentials(app, reference)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        result: dict[str, Any] = {}
        with _view(app, out, PULL_WORDS, quiet) as view:
            async for event in RegistryApi(client).pull(reference, platform=platform or "", login=login):
                if isinstance(event, Progress):
                    view.update(event.digest, event.state, event.current, event.total)
                elif isinstance(event, Resolved):
                    r = event
                    view.message(f"{r.reference}: pulling {r.platform} ({r.layers} layers) {r.digest}")
                elif isinstance(event, Pulled):
                    image = event.image
                    result = {
                        "reference": reference,
                        "id": image.id,
                        "digest": image.digest,
                        "index_digest": image.index_digest,
                        "platform": image.platform,
                        "names": list(image.names),
                        "downloaded_bytes": event.downloaded_bytes,
                    }
        if not result:
            raise ControllerError("the agent ended the pull without a result", client.name)
        return result

    def text(result: dict[str, Any]) -> str:
        if quiet:
            return str(result["names"][0] if result["names"] else result["id"])
        digest = result["index_digest"] or result["digest"]
        status = f"pulled {result['reference']} ({result['platform']}, id {short(result['id'])})"
        return f"Digest: {digest}\nStatus: {status}"

    app.run(op, text=text)


_PULL_OPTIONS = [
    click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="pull this platform (default: the agent's)"),
    click.option("-q", "--quiet", is_flag=True, help="print only the image name"),
]


def _with_pull_options(fn: Any) -> Any:
    for option in reversed(_PULL_OPTIONS):
        fn = option(fn)
    return fn


@click.command(name="pull")
@_with_pull_options
@click.argument("reference")
@click.pass_obj
def pull(app: App, reference: str, platform: str | None, quiet: bool) -> None:
    """Pull an image from a registry onto the agent(s), unpacked and ready to run."""
    _pull(app, reference, platform, quiet)


@click.command(name="pull")
@_with_pull_options
@click.argument("reference")
@click.pass_obj
def image_pull(app: App, reference: str, platform: str | None, quiet: bool) -> None:
    """Pull an image from a registry onto the agent(s), unpacked and ready to run."""
    _pull(app, reference, platform, quiet)


# ---- push ---------------------------------------------------------------------------------------------


def _push(app: App, reference: str, quiet: bool) -> None:
    login = _credentials(app, reference)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        result: dict[str, Any] = {}
        with _view(app, out, PUSH_WORDS, quiet) as view:
            async for event in RegistryApi(client).push(reference, login=login):
                if isinstance(event, Progress):
                    view.update(event.digest, event.state, event.current, event.total)
                elif isinstance(event, Pushed):
                    result = dataclasses.asdict(event)
        if not result:
            raise ControllerError("the agent ended the push without a result", client.name)
        return result

    def text(result: dict[str, Any]) -> str:
        return result["digest"] if quiet else f"{result['reference']}: digest: {result['digest']}"

    app.run(op, text=text)


@click.command(name="push")
@click.option("-q", "--quiet", is_flag=True, help="print only the digest")
@click.argument("reference")
@click.pass_obj
def push(app: App, reference: str, quiet: bool) -> None:
    """Push an image from the agent to the registry its name points at."""
    _push(app, reference, quiet)


@click.command(name="push")
@click.option("-q", "--quiet", is_flag=True, help="print only the digest")
@click.argument("reference")
@click.pass_obj
def image_push(app: App, reference: str, quiet: bool) -> None:
    """Push an image from the agent to the registry its name points at."""
    _push(app, reference, quiet)


# ---- login / logout -----------------------------------------------------------------------------------


@click.command(name="login")
@click.argument("registry", required=False, default=credentials.DOCKER_HUB)
@click.option("-u", "--username", required=True, help="user name")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin")
@click.option("--no-verify", is_flag=True, help="save without checking the credentials (through the agent)")
@click.pass_obj
def login(app: App, registry: str, username: str, password_stdin: bool, no_verify: bool) -> None:
    """Save credentials for a registry (checked by the first agent first); they stay on this machine."""
    host = credentials.normalize_registry(registry)
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = terminal.read_secret("Password: ")
    else:
        raise UsageError("give the password on stdin with --password-stdin")
    if not password:
        raise UsageError("empty password")
    if not no_verify:
        login = credentials.Login(username, password)

        async def op(client: AgentClient, out: HostOutput) -> None:
            await RegistryApi(client).check_login(host, login, timeout=app.timeout)

        dataclasses.replace(app, targets=app.targets[:1]).run(op)
    credentials.CredentialStore(app.config_dir).save(host, credentials.Login(username, password))
    click.echo("Login Succeeded")


@click.command(name="logout")
@click.argument("registry", required=False, default=credentials.DOCKER_HUB)
@click.pass_obj
def logout(app: App, registry: str) -> None:
    """Forget the saved credentials for a registry."""
    host = credentials.normalize_registry(registry)
    if credentials.CredentialStore(app.config_dir).remove(host):
        click.echo(f"Removing login credentials for {host}")
    else:
        click.echo(f"Not logged in to {host}")


COMMANDS = [pull, push, login, logout]
IMAGE_SUBCOMMANDS = [image_pull, image_push]
