"""`dockyard pki rotate|rotate-ca|push-crl`: certificates, the fleet CA and revocations, over mTLS.

Each agent makes its new key itself; nothing here sends a private key. The trust decisions are the
agent's (agent/enroll.py): these commands only bring it what it needs to check.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click
from cryptography import x509

from controller import pki
from controller.api.pki import InstalledCertificate, PkiApi
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import ConnectError, ControllerError, UsageError

CONFIRM_DEADLINE_S = 10.0


def _tcp_only(app: App, what: str) -> None:
    unix = [t.name for t in app.targets if t.kind == "unix"]
    if unix:
        raise UsageError(f"{what} talks to agents over TCP (mTLS); not a TCP target: {', '.join(unix)}")


def _no_rotation(app: App) -> None:
    if (app.config_dir / pki.ROTATION_DIR / pki.CA_KEY).exists():
        raise UsageError("a CA rotation is in progress: finish it first with `dockyard pki rotate-ca`")


async def _push_crl(client: AgentClient, crl: bytes | None) -> dict[str, Any]:
    if crl is None:
        return {}
    r = await PkiApi(client).install_crl(crl)
    return {"crl_number": r.crl_number, "revoked": r.revoked}


async def _renew(
    client: AgentClient, ca: pki.CertificateAuthority, days: int, cross: bytes = b""
) -> tuple[InstalledCertificate, x509.Certificate]:
    """CreateCsr on the agent, sign it here with `ca`, install it (with the cross-certificate, if any)."""
    api = PkiApi(client)
    names = list(dict.fromkeys([client.name, client.target.address]))
    csr = await api.create_csr(client.name, names)
    cert = pki.sign_csr(ca, csr, role=pki.ROLE_AGENT, sans=names, days=days)
    return await api.install_certificate(pki.cert_pem(cert), ca.cert_pem, cross), cert


@click.command()
@click.option("--days", type=click.IntRange(min=1), default=pki.CERT_DAYS, show_default=True)
@click.pass_obj
def rotate(app: App, days: int) -> None:
    """Renew the agents' certificates (new key on each host, CSR signed here), hot-reload them and push
    the revocation list."""
    _tcp_only(app, "rotate")
    _no_rotation(app)
    ca = pki.load_ca(app.config_dir)
    crl = pki.crl_for_push(app.config_dir, ca)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        r, cert = await _renew(client, ca, days)
        return {
            "subject": r.subject,
            "serial": f"{cert.serial_number:x}",
            "not_after": r.not_after,
            **await _push_crl(client, crl),
        }

    app.run(op, text=lambda d: f"rotated: {d['subject']} serial {d['serial']} valid until {d['not_after']}")


@click.command("push-crl")
@click.pass_obj
def push_crl(app: App) -> None:
    """Send the fleet's revocation list (from `dockyard pki revoke`) to the agents."""
    _tcp_only(app, "push-crl")
    _no_rotation(app)
    crl = pki.crl_for_push(app.config_dir, pki.load_ca(app.config_dir))
    if crl is None:
        raise UsageError("nothing to push: no certificate was ever revoked (`dockyard pki revoke`)")

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        return await _push_crl(client, crl)

    app.run(op, text=lambda d: f"crl {d['crl_number']} in force: {d['revoked']} revoked")


async def _confirm(client: AgentClient, rotation: pki.Rotation, crl: bytes | None) -> str:
    """ConfirmCaRotation on a new connection made with the new CA's client certificate, then the new
    CA's revocation list (not before: until the confirmation, the old CA's list must stay in force).

    The agent reloads its TLS files asynchronously after InstallCertificate, so the first handshakes may
    still be judged by the old anchors: retry connection failures until a deadline.
    """
    deadline = time.monotonic() + CONFIRM_DEADLINE_S
    while True:
        fresh = AgentClient(client.target, rotation.dir)
        try:
            ca_subject = await PkiApi(fresh).confirm_ca_rotation(timeout=5)
            await _push_crl(fresh, crl)
            return ca_subject
        except ConnectError:
            if time.monotonic() > deadline:
                raise
        finally:
            await fresh.close()
        await asyncio.sleep(0.1)


@click.command("rotate-ca")
@click.option("--days", type=click.IntRange(min=1), default=pki.CERT_DAYS, show_default=True)
@click.pass_obj
def rotate_ca(app: App, days: int) -> None:
    """Replace the fleet CA on every target agent without ever leaving one unreachable.

    A new CA is made and cross-signed by the current one; each agent gets a certificate of the new CA and
    trusts both CAs until this controller, using a client certificate of the new CA, confirms that the new
    one works; then the agent drops the old CA. When every target confirmed, the new CA replaces the old
    one here (kept in retired-ca/). Interrupted or partly failed: run it again, it resumes.
    Name every agent of the fleet: one left out keeps trusting only the old CA.
    """
    _tcp_only(app, "rotate-ca")
    rotation = pki.begin_ca_rotation(app.config_dir)
    confirmed = rotation.confirmed()
    crl = pki.staged_crl(app.config_dir, rotation)
    cross = pki.cert_pem(rotation.cross)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        if client.name in confirmed:
            return {"state": "already rotated"}
        # The current client certificate, but trusting either CA: an agent that installed its new
        # certificate in an interrupted run answers with the new CA's.
        old = AgentClient(client.target, rotation.old_identity)
        try:
            r, cert = await _renew(old, rotation.new, days, cross)
        finally:
            await old.close()
        ca_subject = await _confirm(client, rotation, crl)
        confirmed.add(client.name)
        rotation.record_confirmed(confirmed)
        return {
            "state": "rotated",
            "ca": ca_subject,
            "serial": f"{cert.serial_number:x}",
            "subject": r.subject,
        }

    def missing() -> list[str]:
        return [t.name for t in app.targets if t.name not in confirmed]

    try:
        app.run(op, text=lambda d: f"{d['state']}" + (f": trusts only {d['ca']}" if "ca" in d else ""))
    finally:  # the run exits non-zero when a host failed: say what that means for the rotation first
        if missing():
            click.echo(
                f"CA rotation incomplete (not confirmed: {', '.join(missing())}); the new CA waits in "
                f"{rotation.dir}: run `dockyard pki rotate-ca` again once they are reachable",
                err=True,
            )
    if missing():
        raise ControllerError("CA rotation incomplete")
    for path in pki.finish_ca_rotation(app.config_dir, rotation):
        click.echo(f"wrote {path}", err=True)


PKI_SUBCOMMANDS = [rotate, rotate_ca, push_crl]
