"""The one table from AgentError subclasses to gRPC status codes (the API edge's contract), and the
edge's safety net for a full disk: a write no adapter translated still answers RESOURCE_EXHAUSTED
`no space left on <data root>: … free`, never INTERNAL.
"""

from __future__ import annotations

import os

import grpc

from agent import errors, log

_log = log.get("agent.rpc")
_data_root: str | None = None

# Most specific first: lookup walks the exception's MRO, so subclasses may override their parent's code.
STATUS_BY_ERROR: dict[type[errors.AgentError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.RegistryAuth: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Integrity: grpc.StatusCode.DATA_LOSS,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


def code_for(exc: errors.AgentError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = STATUS_BY_ERROR.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def report_space_on(data_root: str | os.PathLike[str]) -> None:
    """Name this agent's data root in the full-disk errors made at the edge (set once at start)."""
    global _data_root
    _data_root = os.fspath(data_root)


def as_agent_error(exc: BaseException) -> BaseException:
    """`exc`, or NoSpace when it is a full disk however it surfaced (a raw ENOSPC/EDQUOT, SQLite's "disk
    full", or an error some wrapper raised from one) and not already RESOURCE_EXHAUSTED."""
    if not isinstance(exc, Exception) or isinstance(exc, errors.ResourceExhausted):
        return exc
    if not errors.is_no_space(exc):
        return exc
    _log.warning("rpc.no_space", error=repr(exc)[:300], translated_from=type(exc).__name__)
    return errors.no_space(_data_root or "the agent's data root")
