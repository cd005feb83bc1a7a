"""What the container command modules share: integer flags bounded like their proto fields, the
one-host rule of attached commands, exiting with a container's code, and `-e`/`--env-file` resolution.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from controller.app import App
from controller.errors import UsageError

NO_HELP_SHORTCUT = {"help_option_names": ["--help"], "max_content_width": 110}  # -h is --hostname


class ProtoInt(click.ParamType[int]):
    """An integer flag within the range of the proto field it fills (int32 or int64).

    Python's ints are unbounded and protobuf refuses what does not fit with a ValueError (a traceback), so
    the range is checked here, where the flag is parsed, as one line naming the flag and the bound. What
    the values mean (a pids limit above the kernel's, a negative timeout) is the agent's to check.
    """

    name = "integer"

    def __init__(self, bits: int) -> None:
        self.low, self.high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        return self.parse(
            str(value), max(param.opts, key=len) if param is not None and param.opts else "value"
        )

    def parse(self, value: str, flag: str) -> int:
        text = value.strip()
        try:
            number = int(text) if len(text) <= 40 else None
        except ValueError:
            raise UsageError(f"{flag}: {text[:40]!r} is not an integer") from None
        if number is None or number > self.high:
            raise UsageError(f"{flag}: {text[:40]} is out of range (max {self.high})")
        if number < self.low:
            raise UsageError(f"{flag}: {text[:40]} is out of range (min {self.low})")
        return number


INT32 = ProtoInt(32)
INT64 = ProtoInt(64)


def single(app: App, what: str) -> None:
    """Refuse `what` on several hosts (attached sessions, cp, live stats)."""
    if len(app.targets) != 1:
        raise UsageError(f"{what} works with one host at a time (got {len(app.targets)})")


def exit_with(code: int | None) -> None:
    """End the process with a container's non-zero exit code (as Docker's attached commands do)."""
    if code:
        sys.exit(code)


def resolve_env(values: tuple[str, ...], env_files: tuple[str, ...]) -> tuple[str, ...]:
    """-e and --env-file as K=V: a bare NAME takes this process's value (skipped by -e when unset)."""
    out: list[str] = []
    for path in env_files:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read --env-file {path}: {exc.strerror}") from None
        for line in text.splitlines():
            stripped = line.lstrip()
            if stripped and not stripped.startswith("#"):
                out.append(stripped if "=" in stripped else f"{stripped}={os.environ.get(stripped, '')}")
    for v in values:
        if "=" in v:
            out.append(v)
        elif v in os.environ:
            out.append(f"{v}={os.environ[v]}")
    return tuple(out)
