"""Cross-cutting RPC behaviour: request ids, peer identity, log context, error → status mapping.

Every RPC gets a request id (the caller's `x-request-id` metadata or a fresh one), its peer identity
(the client certificate's CN over TCP, `local` over the unix socket) bound into the structlog context,
and exactly one `rpc.finished` log line with code and duration. AgentErrors become their status code with
their message; anything else becomes INTERNAL "internal error (request_id=…)" and is logged once with its
traceback.

A call made with a client certificate that the fleet's revocation list names is refused before it runs
(PERMISSION_DENIED "certificate <serial> (CN=…) is revoked"): gRPC Python cannot load a CRL into its
TLS stack, so revocation is enforced here, after the handshake, on every call.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from agent import errors, limits, log
from agent.server.status import as_agent_error, code_for
from agent.server.tls import Revocations

_log = log.get("agent.rpc")

Handler = Callable[..., Any]


def peer_identity(context: grpc.aio.ServicerContext) -> str:
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    if names:
        return bytes(names[0]).decode(errors="replace")
    peer = context.peer() or ""
    return "local" if peer.startswith("unix:") or not peer else peer


def peer_certificate(context: grpc.aio.ServicerContext) -> bytes:
    """The caller's client certificate (PEM) as verified by the handshake; empty over the unix socket."""
    certs = context.auth_context().get("x509_pem_cert") or []
    return bytes(certs[0]) if certs else b""


def _check_revoked(revocations: Revocations | None, context: grpc.aio.ServicerContext) -> None:
    if revocations is not None:
        cert = peer_certificate(context)
        if cert:
            revocations.check(cert)


class _Call:
    """Per-call bookkeeping: context binding, the finished line, error translation."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex[:16])
        self.method = method
        self.context = context
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=self.request_id, rpc=method, peer=peer_identity(context)
        )

    async def fail(self, exc: BaseException) -> None:
        exc = as_agent_error(exc)  # a full disk no adapter translated: RESOURCE_EXHAUSTED, not INTERNAL
        if isinstance(exc, errors.AgentError):
            self.code = code_for(exc)
            await self.context.abort(self.code, limits.clip_message(exc.message))
        self.code = grpc.StatusCode.INTERNAL
        _log.error("rpc.internal_error", exc_info=exc)
        await self.context.abort(self.code, f"internal error (request_id={self.request_id})")

    def finish(self) -> None:
        elapsed_ms = round((time.perf_counter() - self.started) * 1000, 2)
        _log.info("rpc.finished", code=self.code.name, duration_ms=elapsed_ms)
        structlog.contextvars.clear_contextvars()


def _is_abort(exc: BaseException) -> bool:
    """context.abort() raises AbortError, which must propagate untouched."""
    return isinstance(exc, grpc.aio.AbortError)


def _aborted_code(context: grpc.aio.ServicerContext, known: grpc.StatusCode) -> grpc.StatusCode:
    if known != grpc.StatusCode.OK:
        return known
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


DRAIN_SECONDS = 60.0


async def _drain(requests: Any) -> None:
    """Read what the client is still uploading before we answer with an error.

    grpc's asyncio client reports INTERNAL "Internal error from Core" instead of our status when the
    server ends a client-streaming call while the client is still writing (grpc/grpc#36066). Consuming
    the rest of the upload first (bounded in time) lets the caller see the real error.
    """
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in requests:
                pass
    except Exception:  # the client went away or the stream broke: nothing left to protect
        return


def _wrap_unary(
    method: str, behavior: Handler, revocations: Revocations | None, *, client_streaming: bool = False
) -> Handler:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, context)
        try:
            _check_revoked(revocations, context)
            return await behavior(request, context)
        except BaseException as exc:
            if _is_abort(exc):
                call.code = _aborted_code(context, call.code)
                raise
            if isinstance(exc, Exception):
                if client_streaming:
                    await _drain(request)
                await call.fail(exc)
            call.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            call.finish()

    return wrapper


def _wrap_stream(method: str, behavior: Handler, revocations: Revocations | None) -> Handler:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method, context)
        try:
            _check_revoked(revocations, context)
            if inspect.isasyncgenfunction(behavior):
                async for item in behavior(request, context):
                    yield item
            else:  # a coroutine that writes with context.write()
                await behavior(request, context)
        except BaseException as exc:
            if _is_abort(exc):
                call.code = _aborted_code(context, call.code)
                raise
            if isinstance(exc, Exception):
                await call.fail(exc)
            call.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            call.finish()

    return wrapper


class AgentInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Request context, revocation, logging and error mapping for every RPC (health checks included)."""

    def __init__(self, revocations: Revocations | None = None) -> None:
        self._revocations = revocations

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, self._revocations),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(method, handler.stream_unary, self._revocations, client_streaming=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream, self._revocations),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(method, handler.stream_stream, self._revocations),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
