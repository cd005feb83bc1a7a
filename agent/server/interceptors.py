"""Cross-cutting RPC behaviour: request ids, peer identity, log context, error → status mapping.

Every RPC gets a request id (the caller's `x-request-id` metadata or a fresh one), its peer identity
(the client certificate's CN over TCP, `local` over the unix socket) bound into the structlog context,
and exactly one `rpc.finished` log line with code and duration. AgentErrors become their status code with
their message; anything else becomes INTERNAL "internal error (request_id=…)" and is logged once with its
traceback.

A call made with a client certificate that the fleet's revocation list names is refused before it runs
(PERMISSION_DENIED "certificate <serial> (CN=…) is revoked"): gRPC Python cannot load a CRL into its
TLS stack, so revocation is enforced here, after the handshake, on every call.

Then the caller's grant (agent/server/permissions.py: role, --allow, scope, from its certificate; the unix
socket is local admin) is checked against the RPC's permission, and the caller is bound for the handlers
(`permissions.current_caller()`, used by the host-power check of run/create). Every call that needs more
than `read`, and every refused call, goes to the audit log (agent/audit.py): a request entry before the
handler runs and a response entry with the result before the reply (a refusal: before the refusal).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog

from agent import errors, limits, log
from agent.audit import AuditLog, summarize
from agent.server import permissions
from agent.server.permissions import Caller, HostIdentity, Permission
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


@dataclass(frozen=True)
class Gate:
    """What every call passes: revocation, the caller's grant and scope, and the audit log (if any)."""

    revocations: Revocations | None = None
    host: HostIdentity = field(default_factory=HostIdentity)
    audit: AuditLog | None = None


_BACKGROUND: set[asyncio.Future[None]] = set()
_CALLERS: dict[bytes, Caller] = {}
_CALLERS_MAX = 1024


def _caller(context: grpc.aio.ServicerContext) -> Caller:
    """The caller of this call, from its verified certificate (parsed once per certificate)."""
    cert = peer_certificate(context)
    if not cert:
        return permissions.LOCAL
    found = _CALLERS.get(cert)
    if found is None:
        found = permissions.caller_from_certificate(cert)
        if len(_CALLERS) >= _CALLERS_MAX:
            _CALLERS.clear()
        _CALLERS[cert] = found
    return found


class _Call:
    """Per-call bookkeeping: context binding, admission, audit entries, the finished line, errors."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext, gate: Gate) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex[:16])
        self.method = method
        self.context = context
        self.gate = gate
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.caller = permissions.LOCAL
        self.permission = permissions.permission_for(method)
        self.audited = False
        self.target = ""
        self.args: dict[str, Any] = {}
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=self.request_id, rpc=method, peer=peer_identity(context)
        )

    def admit(self) -> None:
        """Revocation, then scope and permission; binds the caller. Raises PermissionDenied."""
        self.caller = _caller(self.context)
        permissions.bind_caller(self.caller)
        self.audited = self.gate.audit is not None and self.permission is not Permission.READ
        try:
            _check_revoked(self.gate.revocations, self.context)
            permissions.authorize(self.caller, self.method, self.gate.host)
        except errors.PermissionDenied:
            self.audited = self.gate.audit is not None
            raise

    def describe(self, request: Any) -> None:
        """Take the call's target and salient (redacted) arguments from its request message."""
        if self.audited and request is not None:
            self.target, self.args = summarize(request)

    async def record(self, stage: str, code: grpc.StatusCode | None, message: str = "") -> None:
        audit = self.gate.audit
        if audit is None or not self.audited:
            return
        await audit.record(self._entry(stage, code, message))

    def record_later(self, code: grpc.StatusCode) -> None:
        """A response entry for a call that was cancelled: written, but nobody waits for it."""
        audit = self.gate.audit
        if audit is not None and self.audited:
            task = asyncio.ensure_future(audit.record(self._entry("response", code, "")))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

    def _entry(self, stage: str, code: grpc.StatusCode | None, message: str) -> dict[str, Any]:
        return {
            "event": "rpc",
            "stage": stage,
            "caller": self.caller.audit_form(),
            "rpc": self.method,
            "permission": str(self.permission),
            "target": self.target,
            "args": self.args,
            "result": code.name if code is not None else "STARTED",
            "message": message,
            "request_id": self.request_id,
        }

    async def succeed(self) -> None:
        await self.record("response", grpc.StatusCode.OK)

    async def fail(self, exc: BaseException) -> None:
        exc = as_agent_error(exc)  # a full disk no adapter translated: RESOURCE_EXHAUSTED, not INTERNAL
        if isinstance(exc, errors.AgentError):
            code, message = code_for(exc), limits.clip_message(exc.message)
        else:
            _log.error("rpc.internal_error", exc_info=exc)
            code, message = grpc.StatusCode.INTERNAL, f"internal error (request_id={self.request_id})"
        try:
            await self.record("response", code, message)
        except errors.AgentError as audit_exc:  # audit_required and the log cannot be written
            code, message = code_for(audit_exc), audit_exc.message
        self.code = code
        await self.context.abort(code, message)

    async def aborted(self) -> None:
        """The handler aborted the call itself: record its code (best effort, the abort goes on)."""
        with contextlib.suppress(errors.AgentError):
            await self.record("response", self.code, self.context.details() or "")

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


PEEK_SECONDS = 5.0
REFUSED_PEEK_SECONDS = 1.0


async def _chain(first: Any, rest: Any) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


async def _peek(requests: Any, call: _Call, seconds: float = PEEK_SECONDS) -> Any:
    """Read a request stream's first message for the audit entry; hand the handler the whole stream."""
    if not call.audited:
        return requests
    try:
        async with asyncio.timeout(seconds):
            first = await anext(aiter(requests))
    except StopAsyncIteration:
        return requests
    except TimeoutError:  # a client that waits for us before it sends: no target in the entry
        return requests
    call.describe(first)
    return _chain(first, requests)


async def _admitted(call: _Call, request: Any, streaming_request: bool) -> Any:
    """Admit the call and write its request entry; returns the request (a stream: still whole)."""
    try:
        call.admit()
    except errors.PermissionDenied:
        if streaming_request:  # the refused exec/cp names its container too
            await _peek(request, call, REFUSED_PEEK_SECONDS)
        else:
            call.describe(request)
        raise
    if streaming_request:
        request = await _peek(request, call)
    else:
        call.describe(request)
    await call.record("request", None)
    return request


def _wrap_unary(method: str, behavior: Handler, gate: Gate, *, client_streaming: bool = False) -> Handler:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, context, gate)
        try:
            request = await _admitted(call, request, client_streaming)
            response = await behavior(request, context)
            await call.succeed()
            return response
        except BaseException as exc:
            if _is_abort(exc):
                call.code = _aborted_code(context, call.code)
                await call.aborted()
                raise
            if isinstance(exc, Exception):
                if client_streaming:
                    await _drain(request)
                await call.fail(exc)
            call.code = grpc.StatusCode.CANCELLED
            call.record_later(call.code)
            raise
        finally:
            call.finish()

    return wrapper


def _wrap_stream(method: str, behavior: Handler, gate: Gate, *, client_streaming: bool = False) -> Handler:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method, context, gate)
        try:
            request = await _admitted(call, request, client_streaming)
            if inspect.isasyncgenfunction(behavior):
                async for item in behavior(request, context):
                    yield item
            else:  # a coroutine that writes with context.write()
                await behavior(request, context)
            await call.succeed()
        except BaseException as exc:
            if _is_abort(exc):
                call.code = _aborted_code(context, call.code)
                await call.aborted()
                raise
            if isinstance(exc, Exception):
                await call.fail(exc)
            call.code = grpc.StatusCode.CANCELLED
            call.record_later(call.code)
            raise
        finally:
            call.finish()

    return wrapper


class AgentInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Request context, revocation, authorization, audit, logging and error mapping for every RPC."""

    def __init__(
        self,
        revocations: Revocations | None = None,
        *,
        host: HostIdentity | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._gate = Gate(revocations, host or HostIdentity(), audit)

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
                _wrap_unary(method, handler.unary_unary, self._gate),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(method, handler.stream_unary, self._gate, client_streaming=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream, self._gate),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(method, handler.stream_stream, self._gate, client_streaming=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
