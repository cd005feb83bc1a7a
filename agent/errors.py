"""The agent's one exception family.

Everything the agent raises on purpose is an `AgentError`; the API edge maps each subclass to one gRPC
status code (`agent.server.status`). Adapters translate foreign exceptions (OSError, HTTP errors,
subprocess failures) into these once, with `raise ... from`. This module must not import grpc.

    AgentError
    ├── InvalidArgument        bad input from the caller
    ├── NotFound               a named thing does not exist
    ├── AlreadyExists          a name or ID is taken
    ├── FailedPrecondition     the system is not in a state that allows the call
    ├── Conflict               the call races with another change (ABORTED)
    ├── ResourceExhausted      a pool or quota is used up
    │   └── NoSpace            the data root's filesystem is full (ENOSPC/EDQUOT, see `translate_no_space`)
    ├── Unavailable            a dependency (registry, runtime) cannot be reached right now
    ├── RegistryAuth           a registry refused our credentials (UNAUTHENTICATED)
    ├── PermissionDenied       the caller or the agent may not do this
    ├── Integrity              content does not match its digest or size (DATA_LOSS)
    ├── DeadlineExceeded       an operation ran out of time
    └── Internal               a bug or an unexpected system failure
        ├── RuntimeCommand     the OCI runtime or conmon failed; carries the stderr tail
        └── NetworkSetup       netlink/nftables failed
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator


class AgentError(Exception):
    """Base of every error the agent raises deliberately; the message is shown to users as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(AgentError):
    pass


class NotFound(AgentError):
    pass


class AlreadyExists(AgentError):
    pass


class FailedPrecondition(AgentError):
    pass


class Conflict(AgentError):
    pass


class ResourceExhausted(AgentError):
    pass


class NoSpace(ResourceExhausted):
    """A write did not fit: `no space left on <data root>: needs X, Y free` (made by `no_space`)."""


class Unavailable(AgentError):
    pass


class RegistryAuth(AgentError):
    pass


class PermissionDenied(AgentError):
    pass


class Integrity(AgentError):
    pass


class DeadlineExceeded(AgentError):
    pass


class Internal(AgentError):
    pass


class RuntimeCommand(Internal):
    """A runtime binary (runc, crun, conmon) failed; the message ends with the tail of its stderr."""

    def __init__(self, command: str, returncode: int, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-5:]
        detail = "; ".join(line.strip() for line in tail if line.strip())
        super().__init__(f"{command} failed (exit {returncode})" + (f": {detail}" if detail else ""))
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


class NetworkSetup(Internal):
    pass


# ---- a full disk: the one translation of ENOSPC/EDQUOT ------------------------------------------------

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException | None) -> bool:
    """Whether `exc` or an error it was raised from (or while handling) is a full disk or quota.

    That is an OSError with ENOSPC/EDQUOT, or SQLite's "database or disk is full". The chain matters
    because wrappers (a decompressor's "corrupt data", a tar reader) may have turned one into another error.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            return True
        if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def human_size(n: int) -> str:
    """Decimal units, as docker and the CLI print sizes (1 kB = 1000 B)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}PB"


def no_space(root: str | os.PathLike[str], needs: int | None = None) -> NoSpace:
    """The error for a write that did not fit under `root` (the data root): what it needed, when known,
    and what is free now."""
    details = [f"needs {human_size(needs)}"] if needs else []
    try:
        details.append(f"{human_size(shutil.disk_usage(root).free)} free")
    except OSError:
        pass
    return NoSpace(f"no space left on {os.fspath(root)}" + (f": {', '.join(details)}" if details else ""))


@contextlib.contextmanager
def translate_no_space(root: str | os.PathLike[str], needs: int | None = None) -> Iterator[None]:
    """Raise `no_space(root, needs)` (from the original) for a full disk inside the block; the rest passes.

    Used where data-root writes happen (content store, unpacking, staging) so the caller sees
    RESOURCE_EXHAUSTED naming the data root, not an INTERNAL or a wrapped "corrupt data" error.
    """
    try:
        yield
    except NoSpace:
        raise
    except Exception as exc:
        if not is_no_space(exc):
            raise
        raise no_space(root, needs) from exc
