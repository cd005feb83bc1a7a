"""`dockyard pki rotate`: renew agent certificates over mTLS; each agent makes its new key itself."""

from __future__ import annotations

from typing import Any

import click

from agent.api.v1 import pki_pb2, pki_pb2_grpc
from controller import pki
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import UsageError


@click.command()
@click.option("--days", type=click.IntRange(min=1), default=pki.CERT_DAYS, show_default=True)
@click.pass_obj
def rotate(app: App, days: int) -> None:
    """Renew the agents' certificates (new key on each host, CSR signed here) and hot-reload them."""
    unix = [t.name for t in app.targets if t.kind == "unix"]
    if unix:
        raise UsageError(f"rotate talks to agents over TCP (mTLS); not a TCP target: {', '.join(unix)}")
    ca = pki.load_ca(app.config_dir)

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        stub = client.stub(pki_pb2_grpc.PkiStub)
        names = list(dict.fromkeys([client.name, client.target.address]))
        ask = pki_pb2.CreateCsrRequest(common_name=client.name, names=names)
        csr = await client.call(stub.CreateCsr, ask)
        cert = pki.sign_csr(ca, csr.csr_pem, role=pki.ROLE_AGENT, sans=names, days=days)
        request = pki_pb2.InstallCertificateRequest(certificate_pem=pki.cert_pem(cert), ca_pem=ca.cert_pem)
        r = await client.call(stub.InstallCertificate, request)
        return {
            "subject": r.subject,
            "serial": f"{cert.serial_number:x}",
            "not_after": r.not_after.ToDatetime().isoformat() + "Z",
        }

    app.run(op, text=lambda d: f"rotated: {d['subject']} serial {d['serial']} valid until {d['not_after']}")
