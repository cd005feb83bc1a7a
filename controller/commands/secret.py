"""`dockyard secret create|ls|rm`: secrets release containers read as files (controller/rollout/secrets.py).

    dockyard secret create NAME [-f FILE | < stdin] [--host H | --group G]
    dockyard secret ls
    dockyard secret rm NAME [--host H | --group G]

Values never leave the controller except with a Stage to a host whose release names them; nothing here
prints one. Creating values needs the controller's certificate to be an admin's (or carry `--allow
secrets`); anyone may `ls` names and versions, and a deployer's release refers to secrets by name.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from controller import config, output
from controller.app import App
from controller.errors import ControllerError
from controller.rollout import secrets as secrets_mod
from controller.rollout.journal import PostgresJournal, SqliteJournal, open_journal

SAN_ROLE = "dockyard:role:"
SAN_ALLOW_SECRETS = "dockyard:allow:secrets"


def store(app: App) -> secrets_mod.SecretStore:
    journal = open_journal(cfg_dir=app.config_dir)
    if not isinstance(journal, SqliteJournal | PostgresJournal):
        raise ControllerError(f"journal {journal.location} cannot keep secrets")
    return secrets_mod.SecretStore(journal, app.config_dir)


def check_may_write(config_dir: Path) -> None:
    """Secret values are admin business: the controller's certificate must say role admin or allow
    secrets (one without any dockyard: grant predates roles and acts as admin, as on the agents)."""
    try:
        cert = x509.load_pem_x509_certificate((config_dir / config.CLIENT_CERT_FILE).read_bytes())
    except (OSError, ValueError):
        return  # no identity yet: nothing to deliver with either; the agents check the rest
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    grants = [u for u in uris if u.startswith("dockyard:")]
    if not grants or f"{SAN_ROLE}admin" in grants or SAN_ALLOW_SECRETS in grants:
        return
    role = next((u[len(SAN_ROLE) :] for u in grants if u.startswith(SAN_ROLE)), "none")
    raise ControllerError(
        f"role {role} may not create secrets (needs role admin or --allow secrets)", exit_code=1
    )


@click.group()
def secret() -> None:
    """Secrets for releases: stored encrypted on the controller, delivered only to hosts that use them."""


@secret.command("create")
@click.argument("name")
@click.option("-f", "--file", "path", type=click.Path(path_type=Path), help="read the value from FILE")
@click.option("--host", help="the value for this host only")
@click.option("--group", help="the value for the hosts of this inventory group")
@click.pass_obj
def create(app: App, name: str, path: Path | None, host: str | None, group: str | None) -> None:
    """Store a new value of secret NAME (from FILE or stdin); a new version, so releases that use it
    get a new revision at their next rollout."""
    secrets_mod.check_name(name)
    scope = secrets_mod.scope_of(host, group)
    check_may_write(app.config_dir)
    if path is None and sys.stdin.isatty():
        print(f"value of {name} (end with Ctrl-D):", file=sys.stderr)
    value = secrets_mod.read_value(path, sys.stdin.buffer)
    version = asyncio.run(store(app).create(name, value, scope, by=secrets_mod.default_by()))
    where = f" for {scope}" if scope else ""
    if app.json:
        output.print_json({"name": name, "scope": scope, "version": version})
    else:
        print(f"secret {name}{where}: version {version}")


def _json(info: secrets_mod.SecretInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "scope": info.scope or "default",
        "version": info.version,
        "size": info.size,
        "created_at": info.created_at,
        "created_by": info.created_by,
    }


@secret.command("ls")
@click.pass_obj
def ls(app: App) -> None:
    """Secrets by name and scope: the newest version of each (never the value)."""
    found = asyncio.run(store(app).list())
    if app.json:
        output.print_json([_json(i) for i in found])
        return
    rows = [
        [
            i.name,
            i.scope or "default",
            i.version,
            i.size,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_at)),
            i.created_by,
        ]
        for i in found
    ]
    output.print_table(
        output.Table(["NAME", "SCOPE", "VERSION", "BYTES", "CREATED", "BY"], rows), app.console
    )


@secret.command("rm")
@click.argument("name")
@click.option("--host", help="only the value for this host")
@click.option("--group", help="only the value for this group")
@click.pass_obj
def rm(app: App, name: str, host: str | None, group: str | None) -> None:
    """Forget secret NAME (every version; of one scope with --host/--group). Hosts keep the values their
    revisions use until those revisions are gone."""
    scope = secrets_mod.scope_of(host, group) if host or group else None
    removed = asyncio.run(store(app).remove(name, scope))
    print(f"secret {name}{f' for {scope}' if scope else ''}: {removed} version(s) removed")
