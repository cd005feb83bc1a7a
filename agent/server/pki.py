"""The Pki servicer: certificate rotation over mTLS (key made here, CSR out, certificate in, hot reload).

The work is agent.enroll's (the same code bootstrap runs over SSH); this module only translates and, after
an install, asks the daemon to reload TLS the way an operator would: SIGHUP to this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import grpc
from cryptography import x509
from google.protobuf.timestamp_pb2 import Timestamp

from agent import enroll, errors, log
from agent.api.v1 import pki_pb2, pki_pb2_grpc

_log = log.get(__name__)


def _reload_by_signal() -> None:
    os.kill(os.getpid(), signal.SIGHUP)


class PkiServicer(pki_pb2_grpc.PkiServicer):
    def __init__(self, tls_dir: Path, reload: Callable[[], None] = _reload_by_signal) -> None:
        self._tls_dir = tls_dir
        self._reload = reload

    async def CreateCsr(
        self, request: pki_pb2.CreateCsrRequest, context: grpc.aio.ServicerContext
    ) -> pki_pb2.CreateCsrResponse:
        if not request.common_name:
            raise errors.InvalidArgument("common_name is required")
        csr = await asyncio.to_thread(
            enroll.make_csr, self._tls_dir, request.common_name, [request.common_name, *request.names]
        )
        _log.info("pki.csr_created", common_name=request.common_name)
        return pki_pb2.CreateCsrResponse(csr_pem=csr)

    async def InstallCertificate(
        self, request: pki_pb2.InstallCertificateRequest, context: grpc.aio.ServicerContext
    ) -> pki_pb2.InstallCertificateResponse:
        if not request.certificate_pem or not request.ca_pem:
            raise errors.InvalidArgument("certificate_pem and ca_pem are required")
        subject = await asyncio.to_thread(
            enroll.install, self._tls_dir, request.certificate_pem, request.ca_pem
        )
        cert = x509.load_pem_x509_certificate(request.certificate_pem)
        self._reload()
        not_after = cert.not_valid_after_utc
        _log.info("pki.certificate_installed", subject=subject, not_after=not_after.isoformat())
        return pki_pb2.InstallCertificateResponse(subject=subject, not_after=_ts(not_after))


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts
