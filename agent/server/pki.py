"""The Pki servicer: certificate rotation, CA rotation and revocation lists over mTLS.

The work and every trust decision are agent.enroll's (the same module bootstrap runs over SSH); this
module only translates and, after a change of certificate or trust anchors, asks the daemon to reload
TLS the way an operator would: SIGHUP to this process. A CRL needs no reload: the interceptor re-reads
it when the file changes.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent import enroll, errors, log
from agent.api.v1 import pki_pb2, pki_pb2_grpc
from agent.server.interceptors import peer_certificate

_log = log.get(__name__)


def _reload_by_signal() -> None:
    os.kill(os.getpid(), signal.SIGHUP)


class PkiServicer(pki_pb2_grpc.PkiServicer):
    def __init__(self, tls_dir: Path, reload: Callable[[], None] = _reload_by_signal) -> None:
        self._tls_dir = tls_dir
        self._reload = reload
        self._lock = asyncio.Lock()  # one change of the TLS dir at a time

    async def CreateCsr(
        self, request: pki_pb2.CreateCsrRequest, context: grpc.aio.ServicerContext
    ) -> pki_pb2.CreateCsrResponse:
        if not request.common_name:
            raise errors.InvalidArgument("common_name is required")
        async with self._lock:
            csr = await asyncio.to_thread(
                enroll.make_csr, self._tls_dir, request.common_name, [request.common_name, *request.names]
            )
        _log.info("pki.csr_created", common_name=request.common_name)
        return pki_pb2.CreateCsrResponse(csr_pem=csr)

    async def InstallCertificate(
        self, request: pki_pb2.InstallCertificateRequest, context: grpc.aio.ServicerContext
    ) -> pki_pb2.InstallCertificateResponse:
        if not request.certificate_pem:
            raise errors.InvalidArgument("certificate_pem is required")
        if request.ca_cross_signed_pem and not request.ca_pem:
            raise errors.InvalidArgument("ca_cross_signed_pem needs ca_pem (the new CA)")
        async with self._lock:
            done = await asyncio.to_thread(
                enroll.install_certificate,
                self._tls_dir,
                request.certificate_pem,
                request.ca_pem,
                request.ca_cross_signed_pem,
            )
            self._reload()
        _log.info(
            "pki.certificate_installed",
            subject=done.subject,
            not_after=done.not_after.isoformat(),
            ca_rotation_pending=done.rotation_pending,
        )
        return pki_pb2.InstallCertificateResponse(
            subject=done.subject, not_after=_ts(done.not_after), ca_rotation_pending=done.rotation_pending
        )

    async def ConfirmCaRotation(
        self, request: pki_pb2.ConfirmCaRotationRequest, context: grpc.aio.ServicerContext
    ) -> pki_pb2.ConfirmCaRotationResponse:
        async with self._lock:
            subject, changed = await asyncio.to_thread(
                enroll.confirm_ca_rotation, self._tls_dir, peer_certificate(context)
            )
            if changed:
                self._reload()
        _log.info("pki.ca_rotation_confirmed", ca_subject=subject, changed=changed)
        return pki_pb2.ConfirmCaRotationResponse(ca_subject=subject, changed=changed)

    async def InstallCrl(
        self, request: pki_pb2.InstallCrlRequest, context: grpc.aio.ServicerContext
    ) -> pki_pb2.InstallCrlResponse:
        if not request.crl_pem:
            raise errors.InvalidArgument("crl_pem is required")
        async with self._lock:
            done = await asyncio.to_thread(enroll.install_crl, self._tls_dir, request.crl_pem)
        _log.info("pki.crl_installed", crl_number=done.number, revoked=done.revoked, changed=done.changed)
        return pki_pb2.InstallCrlResponse(crl_number=done.number, revoked=done.revoked, changed=done.changed)


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts
