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
