"""Variable interpolation in compose files: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
`${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` for a literal `$`, as docker compose
does. Defaults and alternatives may hold further variables (`${A:-${B}}`). Only values are interpolated,
never keys. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(Exception):
    """A missing required variable or a malformed `${…}`; `path` is where in the file (dotted)."""

    def __init__(self, problem: str, path: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path


def substitute(text: str, env: Mapping[str, str]) -> str:
    """`text` with every variable replaced from `env` (an unset variable without a default is "")."""
    return _scan(text, 0, env, stop=None)[0]


def _scan(text: str, pos: int, env: Mapping[str, str], stop: str | None) -> tuple[str, int]:
    """Expand from `pos` until the end (or an unbalanced `stop` character); (result, position after)."""
    out: list[str] = []
    n = len(text)
    depth = 0
    while pos < n:
        ch = text[pos]
        if stop is not None and ch == stop and depth == 0:
            return "".join(out), pos
        if stop is not None and ch == "{":
            depth += 1
        elif stop is not None and ch == "}":
            depth -= 1
        if ch != "$":
            out.append(ch)
            pos += 1
            continue
        nxt = text[pos + 1] if pos + 1 < n else ""
        if nxt == "$":
            out.append("$")
            pos += 2
        elif nxt == "{":
            value, pos = _braced(text, pos + 2, env)
            out.append(value)
        else:
            m = _NAME.match(text, pos + 1)
            if m is None:
                out.append("$")  # a lone `$` stays, as in docker compose
                pos += 1
            else:
                out.append(env.get(m.group(), ""))
                pos = m.end()
    if stop is not None:
        raise InterpolationError(f"invalid interpolation format for {text!r}: missing '}}'")
    return "".join(out), pos


def _braced(text: str, pos: int, env: Mapping[str, str]) -> tuple[str, int]:
    """`${…}` starting after the `{`."""
    m = _NAME.match(text, pos)
    if m is None:
        raise InterpolationError(
            f"invalid interpolation format for {text!r}: a variable name must follow '${{'"
        )
    name = m.group()
    pos = m.end()
    if pos >= len(text):
        raise InterpolationError(f"invalid interpolation format for {text!r}: missing '}}'")
    if text[pos] == "}":
        return env.get(name, ""), pos + 1
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if text.startswith(op, pos):
            break
    else:
        raise InterpolationError(
            f"invalid interpolation format for {text!r}: unexpected {text[pos]!r} after ${{{name}"
        )
    arg, end = _scan(text, pos + len(op), env, stop="}")
    value = env.get(name)
    empty_counts = op.startswith(":")
    missing = value is None or (empty_counts and value == "")
    kind = op[-1]
    if kind == "-":
        result = arg if missing else str(value)
    elif kind == "+":
        result = "" if missing else arg
    else:  # "?"
        if missing:
            reason = arg or ("empty or unset" if empty_counts else "unset")
            raise InterpolationError(f"required variable {name} is missing a value: {reason}")
        result = str(value)
    return result, end + 1


def interpolate(data: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Every string value of a parsed YAML tree substituted; InterpolationError carries `.path`."""
    if isinstance(data, str):
        try:
            return substitute(data, env)
        except InterpolationError as exc:
            raise InterpolationError(exc.problem, path) from None
    if isinstance(data, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env, f"{path}.{i}") for i, v in enumerate(data)]
    return data
