"""AgentClient: one long-lived gRPC channel to one agent, with deadlines and error translation.

The only place that turns gRPC failures into ControllerErrors (`AgentClient.translating`, used by every
kind of call). Calls are typed: an `Rpc[Req, Resp]` names one method of the agent's API with its
request and response message classes (checked against the proto descriptor when declared), so
`await client.unary(rpc, request)` returns a `Resp` to mypy; the generated `*_grpc` stubs are untyped
and not used. The per-service modules under controller/api/ declare the RPCs and are the only callers.

Over TCP the channel is mutual TLS with the controller's config dir (`ca.pem`, `client.pem`,
`client-key.pem`); gRPC checks the agent's certificate against the dialled name. When a TCP connection
fails we ask `tlsdiag` why, so the user reads "name mismatch" or "expired" instead of "handshake failed".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from controller.config import CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE
from controller.errors import AgentCallError, ConnectError, ControllerError
from controller.target import Target

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
RespT_co = TypeVar("RespT_co", bound=Message, covariant=True)


@dataclass(frozen=True)
class Rpc(Generic[Req, RespT_co]):
    """One method of the agent's API with its message types; declare it with `rpc()`. (Covariant in the
    response: an Rpc answering `A` serves where any of `A | B` is expected.)"""

    path: str  # "/agent.api.v1.Images/List"
    request: type[Req]
    response: type[RespT_co]


def rpc(service: ServiceDescriptor, name: str, request: type[Req], response: type[Resp]) -> Rpc[Req, Resp]:
    """Declare `service`'s method `name`; a request/response pair that does not match the proto fails at
    import, so a typo can never reach the wire."""
    method = service.methods_by_name[name]
    if (method.input_type.full_name, method.output_type.full_name) != (
        request.DESCRIPTOR.full_name,
        response.DESCRIPTOR.full_name,
    ):
        raise TypeError(f"{service.full_name}.{name} takes {method.input_type.full_name}")
    return Rpc(f"/{service.full_name}/{name}", request, response)


@dataclass(frozen=True)
class ErrorExits:
    """The process exit code an agent error (AgentCallError) should carry for one call: `default`, or
    the code for its gRPC status name in `by_status` (e.g. exec: FAILED_PRECONDITION → 126)."""

    default: int = 1
    by_status: Mapping[str, int] = field(default_factory=dict)

    def __call__(self, status: str) -> int:
        return self.by_status.get(status, self.default)


DEFAULT_EXITS = ErrorExits()

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
        self._methods: dict[tuple[str, str], Any] = {}  # (kind, path) → grpc multi-callable

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

    @staticmethod
    def metadata() -> tuple[tuple[str, str], ...]:
        return (("x-request-id", uuid.uuid4().hex[:16]),)

    def _method(self, kind: str, call: Rpc[Req, Resp]) -> Any:
        """The channel's multi-callable of `kind` (unary_unary, unary_stream, ...) for `call`, made once."""
        key = (kind, call.path)
        method = self._methods.get(key)
        if method is None:
            method = getattr(self.channel, kind)(
                call.path,
                request_serializer=call.request.SerializeToString,
                response_deserializer=call.response.FromString,
                _registered_method=True,
            )
            self._methods[key] = method
        return method

    @contextlib.asynccontextmanager
    async def translating(self, exits: ErrorExits = DEFAULT_EXITS) -> AsyncIterator[None]:
        """Turn a gRPC failure inside the block into this host's ControllerError (the one place)."""
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            raise await self.translate(exc, exits) from None

    async def unary(
        self,
        call: Rpc[Req, Resp],
        request: Req,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        exits: ErrorExits = DEFAULT_EXITS,
    ) -> Resp:
        """One request, one response."""
        method = self._method("unary_unary", call)
        async with self.translating(exits):
            response = await method(request, timeout=timeout, metadata=self.metadata(), wait_for_ready=False)
        return cast(Resp, response)

    async def server_stream(
        self,
        call: Rpc[Req, Resp],
        request: Req,
        *,
        timeout: float | None = None,
        exits: ErrorExits = DEFAULT_EXITS,
    ) -> AsyncIterator[Resp]:
        """The responses of a server-streaming RPC; leaving the loop early cancels the call."""
        async for item in self._iterate(
            self._method("unary_stream", call)(request, timeout=timeout, metadata=self.metadata()), exits
        ):
            yield item

    async def bidi(
        self,
        call: Rpc[Req, Resp],
        requests: AsyncIterable[Req] | Iterable[Req],
        *,
        timeout: float | None = None,
        exits: ErrorExits = DEFAULT_EXITS,
    ) -> AsyncIterator[Resp]:
        """The responses of a bidirectional RPC fed by `requests` (build, attach, exec, run)."""
        async for item in self._iterate(
            self._method("stream_stream", call)(requests, timeout=timeout, metadata=self.metadata()), exits
        ):
            yield item

    async def client_stream(
        self,
        call: Rpc[Req, Resp],
        requests: AsyncIterable[Req] | Iterable[Req],
        *,
        timeout: float | None = None,
        exits: ErrorExits = DEFAULT_EXITS,
    ) -> Resp:
        """A client-streaming RPC: send every request, then read the one response."""
        pending = self._method("stream_unary", call)(requests, timeout=timeout, metadata=self.metadata())
        try:
            async with self.translating(exits):
                response = await pending
        finally:
            pending.cancel()
        return cast(Resp, response)

    async def _iterate(self, pending: Any, exits: ErrorExits) -> AsyncIterator[Any]:
        """The messages of a streaming call in flight; the call is cancelled however the loop ends."""
        try:
            async with self.translating(exits):
                async for item in pending:
                    yield item
        finally:
            pending.cancel()

    async def paged(
        self, stream_call: Rpc[Req, Resp], unary_call: Rpc[Req, Resp], request: Req
    ) -> AsyncIterator[Resp]:
        """The pages of a list: the `ListStream` RPC, or the unary `List` from an agent without it.

        A stream of pages cannot grow past a message limit, however many or large the records are."""
        started = False
        try:
            async for page in self.server_stream(stream_call, request):
                started = True
                yield page
        except AgentCallError as exc:
            if started or exc.code != grpc.StatusCode.UNIMPLEMENTED.name:
                raise
            yield await self.unary(unary_call, request, timeout=None)

    async def translate(
        self, exc: grpc.aio.AioRpcError, exits: ErrorExits = DEFAULT_EXITS
    ) -> ControllerError:
        code = exc.code()
        details = exc.details() or code.name.lower()
        if code == grpc.StatusCode.UNAVAILABLE and not self._connected():
            return ConnectError(await self._why_unreachable(details), self.name)
        # UNAVAILABLE on a live channel: the agent answered, something it depends on (a registry) is down
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            details = f"timed out waiting for the agent ({details})"
        return AgentCallError(details, code.name, self.name, exit_code=exits(code.name))

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
            self._methods.clear()  # they belong to the closed channel
