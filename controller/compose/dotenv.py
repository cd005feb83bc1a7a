"""`.env` and `env_file` files: `KEY=VALUE` lines as docker compose reads them.

`# comments`, blank lines, an optional `export ` prefix; values unquoted (trimmed, ` #…` cut, variables
expanded), 'single-quoted' (literal) or "double-quoted" (`\\n`, `\\t`, `\\"`, `\\\\` escapes and variables
expanded). Variables expand from the lines above, then `lookup`. A bare `KEY` takes its value from
`lookup` and is left out when `lookup` has none. Pure: the caller reads the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from controller.compose.interpolate import InterpolationError, substitute

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}


class DotenvError(Exception):
    """A line that is not `KEY=VALUE`: `line` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


def parse(text: str, lookup: Mapping[str, str]) -> dict[str, str]:
    """The variables of a .env text, in order."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, eq, raw = line.partition("=")
        key = key.strip()
        if not _KEY.match(key):
            raise DotenvError(number, f"invalid variable name {key!r}")
        if not eq:
            if key in lookup:
                out[key] = lookup[key]
            continue
        raw = raw.strip()
        env = {**lookup, **out}
        try:
            if raw[:1] in ("'", '"'):
                quote = raw[0]
                body = raw[1:]
                while not _closed(body, quote) and i < len(lines):  # a quoted value may span lines
                    body += "\n" + lines[i]
                    i += 1
                end = _closing(body, quote)
                if end < 0:
                    raise DotenvError(number, f"unterminated {quote} quote in the value of {key}")
                body = body[:end]
                out[key] = body if quote == "'" else substitute(_unescape(body), env)
            else:
                value = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
                out[key] = substitute(value, env)
        except InterpolationError as exc:
            raise DotenvError(number, f"{key}: {exc.problem}") from None
    return out


def _closing(body: str, quote: str) -> int:
    pos = 0
    while pos < len(body):
        if body[pos] == "\\" and quote == '"':
            pos += 2
            continue
        if body[pos] == quote:
            return pos
        pos += 1
    return -1


def _closed(body: str, quote: str) -> bool:
    return _closing(body, quote) >= 0


def _unescape(body: str) -> str:
    """Backslash escapes of a double-quoted value; `\\$` stays a literal `$` through interpolation."""
    out: list[str] = []
    pos = 0
    while pos < len(body):
        ch = body[pos]
        if ch == "\\" and pos + 1 < len(body) and body[pos + 1] in _ESCAPES:
            out.append(_ESCAPES[body[pos + 1]])
            pos += 2
        else:
            out.append(ch)
            pos += 1
    return "".join(out)
