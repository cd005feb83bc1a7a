"""`dockyard pki init|issue-agent|issue-client|revoke|ls`: the fleet CA and certificates, all local files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from cryptography.x509.oid import NameOID

from controller import output, pki
from controller.app import App
from controller.errors import UsageError


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


@pki_group.command()
@click.argument("name_or_serial")
@click.pass_obj
def revoke(app: App, name_or_serial: str) -> None:
    """Revoke the certificates issued to a CN (or one serial, hex) and publish the new crl.pem.

    Agents enforce it once they have it: `dockyard -H … pki push-crl` (also done by `pki rotate` and by
    every `bootstrap`). A revoked client is refused on its next call, with the reason.
    """
    if (app.config_dir / pki.ROTATION_DIR / pki.CA_KEY).exists():
        raise UsageError("a CA rotation is in progress: finish it first with `dockyard pki rotate-ca`")
    done = pki.revoke(app.config_dir, name_or_serial)
    if not done:
        click.echo(f"already revoked: {name_or_serial}")
    for item in done:
        click.echo(f"revoked: {item.serial_hex} (CN={item.common_name}, {item.role})")
    if done:
        click.echo(f"wrote {app.config_dir / pki.CRL_FILE}; push it with `dockyard pki push-crl`", err=True)


@pki_group.command("ls")
@click.pass_obj
def ls(app: App) -> None:
    """List the certificates this controller issued, with their status (valid, expired, revoked)."""
    ca = pki.load_ca(app.config_dir)
    revoked = pki.current_revocations(app.config_dir, ca)
    ca_name = ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    now = dt.datetime.now(dt.UTC)
    rows = []
    for item in pki.issued(app.config_dir):
        if item.serial in revoked:
            status = "revoked"
        elif item.issuer != ca_name:
            status = "retired CA"
        elif item.not_after < now:
            status = "expired"
        else:
            status = "valid"
        rows.append(
            {
                "serial": item.serial_hex,
                "name": item.common_name,
                "role": item.role,
                "not_after": item.not_after.isoformat(),
                "status": status,
            }
        )
    if app.json:
        output.print_json(rows)
        return
    table = output.Table(
        ("SERIAL", "NAME", "ROLE", "EXPIRES", "STATUS"),
        [
            (r["serial"], r["name"], r["role"], r["not_after"][:16].replace("T", " "), r["status"])
            for r in rows
        ],
    )
    output.print_table(table, app.console)
