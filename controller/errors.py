"""The controller's one exception family. The CLI prints each as `error: [<host>: ]<message>`, exit 1.

ControllerError            anything the user should read as one line
├── UsageError             bad flags or arguments (exit 2)
├── ConnectError           the agent cannot be reached (down, refused, TLS failure with the reason)
└── AgentCallError         the agent answered with a gRPC error; carries the status code name
"""

from __future__ import annotations


class ControllerError(Exception):
    exit_code: int = 1  # the process's exit code when this error ends the command

    def __init__(self, message: str, host: str | None = None, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.host}: {self.message}" if self.host else self.message


class UsageError(ControllerError):
    exit_code = 2


class ConnectError(ControllerError):
    pass


class AgentCallError(ControllerError):
    """Its exit code is chosen where the call is made (controller.client.ErrorExits), never changed later."""

    def __init__(
        self, message: str, code: str, host: str | None = None, *, exit_code: int | None = None
    ) -> None:
        super().__init__(message, host, exit_code=exit_code)
        self.code = code
