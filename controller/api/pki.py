"""The Pki service: an agent makes its own key and CSR, installs what the controller signed, confirms a
CA rotation and takes revocation lists. No private key ever travels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.api.v1 import pki_pb2 as pb
from controller.client import DEFAULT_TIMEOUT, AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Pki"]
CREATE_CSR = rpc(_SERVICE, "CreateCsr", pb.CreateCsrRequest, pb.CreateCsrResponse)
INSTALL_CERTIFICATE = rpc(
    _SERVICE, "InstallCertificate", pb.InstallCertificateRequest, pb.InstallCertificateResponse
)
CONFIRM_CA_ROTATION = rpc(
    _SERVICE, "ConfirmCaRotation", pb.ConfirmCaRotationRequest, pb.ConfirmCaRotationResponse
)
INSTALL_CRL = rpc(_SERVICE, "InstallCrl", pb.InstallCrlRequest, pb.InstallCrlResponse)


@dataclass(frozen=True)
class InstalledCertificate:
    subject: str
    not_after: str  # ISO 8601, UTC, with a Z
    ca_rotation_pending: bool


@dataclass(frozen=True)
class InstalledCrl:
    crl_number: int
    revoked: int
    changed: bool


class PkiApi:
    """Typed calls to one agent's Pki service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def create_csr(self, common_name: str, names: Sequence[str]) -> bytes:
        """A CSR (PEM) for a key the agent makes and keeps."""
        r = await self.client.unary(CREATE_CSR, pb.CreateCsrRequest(common_name=common_name, names=names))
        return r.csr_pem

    async def install_certificate(
        self, certificate_pem: bytes, ca_pem: bytes, ca_cross_signed_pem: bytes = b""
    ) -> InstalledCertificate:
        request = pb.InstallCertificateRequest(
            certificate_pem=certificate_pem, ca_pem=ca_pem, ca_cross_signed_pem=ca_cross_signed_pem
        )
        r = await self.client.unary(INSTALL_CERTIFICATE, request)
        return InstalledCertificate(
            r.subject, r.not_after.ToDatetime().isoformat() + "Z", r.ca_rotation_pending
        )

    async def confirm_ca_rotation(self, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Tell the agent the new CA works (this call came with its client certificate); the CA's subject."""
        r = await self.client.unary(CONFIRM_CA_ROTATION, pb.ConfirmCaRotationRequest(), timeout=timeout)
        return r.ca_subject

    async def install_crl(self, crl_pem: bytes) -> InstalledCrl:
        r = await self.client.unary(INSTALL_CRL, pb.InstallCrlRequest(crl_pem=crl_pem))
        return InstalledCrl(r.crl_number, r.revoked, r.changed)
