"""AgentClient: one long-lived gRPC channel to one agent, with deadlines and error translation.

The only place that turns gRPC failures into ControllerErrors. Over TCP the channel is mutual TLS with
the controller's config dir (`ca.pem`, `client.pem`, `client-key.pem`); gRPC checks the agent's
certificate against the dialled name. When a TCP connection fails we ask `tlsdiag` why, so the user
reads "name mismatch" or "expired" instead of "handshake failed".
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from controller.config import CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE
from controller.errors import AgentCallError, ConnectError, ControllerError
from controller.target import Target

StubT = TypeVar("StubT")

DEFAULT_TIMEOUT = 30.0
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),
]

# One credentials object per config dir for the whole process (a fan-out opens one channel per host).
_CREDENTIALS: dict[Path, grpc.ChannelCredentials] = {}


class AgentClient:
    """A connection to one agent; `await close()` when done."""

    def __init__(self, target: Target, config_dir: Path) -> None:
        self.target = target
        self.config_dir = config_dir
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[object, Any] = {}

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = self._open()
        return self._channel

    def _tls_files(self) -> tuple[Path, Path, Path]:
        d = self.config_dir
        return d / CA_FILE, d / CLIENT_CERT_FILE, d / CLIENT_KEY_FILE

    def _open(self) -> grpc.aio.Channel:
        if self.target.kind == "unix":
            return grpc.aio.insecure_channel(self.target.grpc_target, options=_CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(self.target.grpc_target, self._credentials(), options=_CHANNEL_OPTIONS)

    def _credentials(self) -> grpc.ChannelCredentials:
        """The controller's mTLS identity, read once per process and shared by every channel."""
        cached = _CREDENTIALS.get(self.config_dir)
        if cached is not None:
            return cached
        ca, cert, key = self._tls_files()
        missing = [p for p in (ca, cert, key) if not p.exists()]
        if missing:
            raise ConnectError(
                f"no client TLS identity ({', '.join(str(p) for p in missing)} missing); "
                "run `dockyard pki init` or install a certificate from `dockyard pki issue-client`",
                self.name,
            )
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca.read_bytes(),
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )
        _CREDENTIALS[self.config_dir] = creds
        return creds

    def stub(self, stub_cls: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        cached = self._stubs.get(stub_cls)
        if cached is None:
            cached = stub_cls(self.channel)
            self._stubs[stub_cls] = cached
        return cached  # type: ignore[no-any-return]

    @staticmethod
    def metadata() -> tuple[tuple[str, str], ...]:
        return (("x-request-id", uuid.uuid4().hex[:16]),)

    async def call(self, method: Any, request: Any, *, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Invoke a unary RPC (a stub attribute) and translate its failure."""
        try:
            return await method(request, timeout=timeout, metadata=self.metadata(), wait_for_ready=False)
        except grpc.aio.AioRpcError as exc:
            raise await self.translate(exc) from None

    async def stream(self, method: Any, request: Any, *, timeout: float | None = None) -> AsyncIterator[Any]:
        """Iterate a server-streaming RPC, translating its failure."""
        call = method(request, timeout=timeout, metadata=self.metadata())
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise await self.translate(exc) from None
        finally:
            call.cancel()

    async def pages(self, stream_method: Any, unary_method: Any, request: Any) -> AsyncIterator[Any]:
        """The pages of a list: the `ListStream` RPC, or the unary `List` from an agent without it.

        A stream of pages cannot grow past a message limit, however many or large the records are."""
        started = False
        try:
            async for page in self.stream(stream_method, request):
                started = True
                yield page
        except AgentCallError as exc:
            if started or exc.code != grpc.StatusCode.UNIMPLEMENTED.name:
                raise
            yield await self.call(unary_method, request, timeout=None)

    async def translate(self, exc: grpc.aio.AioRpcError) -> ControllerError:
        code = exc.code()
        details = exc.details() or code.name.lower()
        if code == grpc.StatusCode.UNAVAILABLE:
            if self._connected():  # the agent answered: something it depends on (a registry) is unavailable
                return AgentCallError(details, code.name, self.name)
            return ConnectError(await self._why_unreachable(details), self.name)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return AgentCallError(f"timed out waiting for the agent ({details})", code.name, self.name)
        return AgentCallError(details, code.name, self.name)

    def _connected(self) -> bool:
        """Whether the channel is up: then an UNAVAILABLE status came from the agent, not from the transport
        (both look the same otherwise; only a failed connection is worth diagnosing)."""
        channel = self._channel
        return (
            channel is not None and channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY
        )

    async def _why_unreachable(self, details: str) -> str:
        if self.target.kind == "unix":
            path = Path(self.target.address)
            if not path.exists():
                return f"no agent socket at {path} (is dockyard-agent running?)"
            if not os.access(path, os.R_OK | os.W_OK):
                return f"permission denied on {path} (root or the socket's group only)"
            return f"cannot reach the agent at {path}: {details}"
        ca, cert, key = self._tls_files()
        from controller import tlsdiag  # cryptography is slow to import; only needed on failure

        reason = await asyncio.to_thread(
            tlsdiag.diagnose, self.target.address, self.target.port, ca, cert, key
        )
        if reason is None:
            return f"cannot reach the agent: {details}"
        if reason.startswith(("connection refused", "timed out", "cannot connect")):
            return reason
        return f"TLS failure: {reason}"

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
