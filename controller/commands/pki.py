"""`dockyard pki init|issue-agent|issue-client|revoke|ls|inspect`: the fleet CA and certificates, local files.

`issue-client --role R [--allow P] [--scope SEL]` puts what the holder may do into the certificate (SAN
URIs, see agent/server/permissions.py); `--scope @group` is resolved to the group's hosts (`host=NAME`
each) from the inventory now, at issue time.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from cryptography.x509.oid import NameOID

from agent import errors as agent_errors
from agent.server.permissions import GRANTABLE, Grant, Permission, Role, parse_scope
from controller import inventory, output, pki
from controller.app import App
from controller.commands.fleet import inventory_path
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


Scopes = tuple[tuple[tuple[str, str], ...], ...]


def resolve_scopes(app: App, ctx: click.Context, values: tuple[str, ...]) -> Scopes:
    """`site=lab[,k=v]` as given; `@group` → one `host=NAME` scope per member, from the inventory now."""
    scopes: list[tuple[tuple[str, str], ...]] = []
    for value in values:
        if value.startswith("@"):
            path = inventory_path(ctx, app)
            groups = inventory.load(path).groups
            group = value[1:]
            if group not in groups:
                raise UsageError(f"--scope {value}: no group {group!r} in {path}")
            scopes += [(("host", member),) for member in groups[group]]
            continue
        try:
            scopes.append(parse_scope(value))
        except agent_errors.InvalidArgument as exc:
            raise UsageError(f"--scope {value!r}: expected KEY=VALUE[,KEY=VALUE] or @group") from exc
    return tuple(dict.fromkeys(scopes))


@pki_group.command("issue-client")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="directory to write into")
@click.option("--days", type=click.IntRange(min=1), default=pki.CERT_DAYS, show_default=True)
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=None,
    help="what the holder may do: viewer (read), operator (+start/stop, pull), deployer (+run, images, "
    "releases, volumes, networks), admin (everything); omitted: admin, as before roles",
)
@click.option(
    "--allow",
    "allows",
    multiple=True,
    type=click.Choice(sorted(p.value for p in GRANTABLE)),
    help="an extra permission for any role: exec (exec/attach/cp), audit (read the audit log), host "
    "(host-power options), secrets (create and read secret values with this controller); repeatable",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="KEY=VALUE[,…]|@GROUP",
    help="hosts the certificate works on (labels; @group: its hosts now); repeatable, any one matches",
)
@click.pass_context
def issue_client(
    ctx: click.Context,
    name: str,
    out: Path,
    days: int,
    role: str | None,
    allows: tuple[str, ...],
    scopes: tuple[str, ...],
) -> None:
    """Write ca.pem, client.pem and client-key.pem for another operator's config dir."""
    app: App = ctx.obj
    grant = None
    if role is not None or allows or scopes:
        grant = Grant(
            Role(role or Role.ADMIN),
            frozenset(Permission(a) for a in allows),
            resolve_scopes(app, ctx, scopes),
        )
    for path in pki.issue_client(app.config_dir, name, out, days=days, grant=grant):
        click.echo(f"wrote {path}")
    if grant is not None:
        click.echo(f"grant: {grant.describe()}")


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
                "grant": item.grant,
                "not_after": item.not_after.isoformat(),
                "status": status,
            }
        )
    if app.json:
        output.print_json(rows)
        return
    table = output.Table(
        ("SERIAL", "NAME", "ROLE", "GRANT", "EXPIRES", "STATUS"),
        [
            (
                r["serial"],
                r["name"],
                r["role"],
                r["grant"] or "-",
                r["not_after"][:16].replace("T", " "),
                r["status"],
            )
            for r in rows
        ],
    )
    output.print_table(table, app.console)


@pki_group.command("inspect")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def inspect(app: App, file: Path) -> None:
    """Show a certificate file: subject, serial, issuer, validity, names, and a client's role/allow/scope."""
    info = pki.inspect_certificate(file)
    row = {
        "file": str(info.path),
        "name": info.common_name,
        "serial": info.serial,
        "kind": info.kind,
        "issuer": info.issuer,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "grant": info.grant,
        "sans": list(info.sans),
    }
    if app.json:
        output.print_json(row)
        return
    for key in ("name", "serial", "kind", "issuer", "not_before", "not_after", "grant"):
        if row[key]:
            click.echo(f"{key}: {row[key]}")
    if info.sans:
        click.echo(f"sans: {', '.join(info.sans)}")
