"""`dockyard pki init|issue-agent|issue-client`: the fleet CA and certificates, all local files."""

from __future__ import annotations

from pathlib import Path

import click

from controller import pki
from controller.app import App


@click.group(name="pki")
def pki_group() -> None:
    """Manage the fleet's certificate authority and certificates."""


@pki_group.command()
@click.option(
    "--name", default="controller", show_default=True, help="common name of the controller's client cert"
)
@click.option("--force", is_flag=True, help="replace an existing CA (every issued certificate stops working)")
@click.pass_obj
def init(app: App, name: str, force: bool) -> None:
    """Create the fleet CA and this controller's client certificate in the config dir."""
    for path in pki.init(app.config_dir, client_name=name, force=force):
        click.echo(f"wrote {path}")


@pki_group.command("issue-agent")
@click.argument("name")
@click.option(
    "--san", "sans", multiple=True, help="IP address or DNS name the agent is dialled by (repeatable)"
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="directory to write into")
@click.option("--days", type=click.IntRange(min=1), default=pki.CERT_DAYS, show_default=True)
@click.pass_obj
def issue_agent(app: App, name: str, sans: tuple[str, ...], out: Path, days: int) -> None:
    """Write ca.pem, agent.pem and agent-key.pem for an agent installed by hand."""
    for path in pki.issue_agent(app.config_dir, name, list(sans), out, days=days):
        click.echo(f"wrote {path}")


@pki_group.command("issue-client")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="directory to write into")
@click.option("--days", type=click.IntRange(min=1), default=pki.CERT_DAYS, show_default=True)
@click.pass_obj
def issue_client(app: App, name: str, out: Path, days: int) -> None:
    """Write ca.pem, client.pem and client-key.pem for another operator's config dir."""
    for path in pki.issue_client(app.config_dir, name, out, days=days):
        click.echo(f"wrote {path}")
