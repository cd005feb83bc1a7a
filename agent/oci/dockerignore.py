"""`.dockerignore` patterns, matched the way Docker matches them (pure; the CLI and the agent share it).

File format: one pattern per line; a line starting with `#` in column 1 is a comment; lines are trimmed
and blank ones skipped; `!` makes an exception (re-includes). Each pattern is cleaned like Go's
`filepath.Clean` and a leading `/` dropped, so `/foo`, `./foo` and `foo/` all mean `foo`.

Globs are Go's `filepath.Match` plus `**`: `*` and `?` never cross `/`, `[...]` is a class (negated with
`^`), `\\` escapes the next character, `**` matches any number of directories (including none). A pattern
matches a path when it matches the path itself or one of its parent directories (so `node_modules`
excludes everything below it). The last matching pattern decides.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from agent.errors import InvalidArgument

IGNORE_FILE = ".dockerignore"


def clean(path: str) -> str:
    """Go's `filepath.Clean` for `/`-separated paths ("" becomes ".")."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob (Go `filepath.Match` syntax plus `**`) to an anchored regex; InvalidArgument if bad."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        i += 1
        if in_class:
            if ch == "]":
                in_class = False
                out.append("]")
            elif ch == "\\" and i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            elif ch == "[":
                out.append("\\[")
            else:
                out.append(ch)
            continue
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(?:.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append("\\\\")
        elif ch == "[":
            in_class = True
            out.append("[")
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # a leading ] is a member, as in Go
                out.append("\\]")
                i += 1
        else:
            out.append(re.escape(ch))
    if in_class:
        raise InvalidArgument(f"bad pattern {pattern!r}: unterminated character class '['")
    try:
        return re.compile("^" + "".join(out) + "$", re.DOTALL)
    except re.error as exc:
        raise InvalidArgument(f"bad pattern {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without the leading "!"
    exclusion: bool  # True for "!pattern" (an exception that re-includes)
    regex: re.Pattern[str]

    def matches(self, path: str, parents: list[str]) -> bool:
        if self.regex.match(path):
            return True
        return any(self.regex.match(p) for p in parents)


class IgnoreRules:
    """The parsed patterns of one `.dockerignore`; `excludes(path)` answers for context-relative paths."""

    def __init__(self, patterns: list[Pattern]) -> None:
        self.patterns = patterns

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        patterns: list[Pattern] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            if raw.startswith("#"):
                continue
            line = raw.strip()
            if not line:
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
                if not line:
                    raise InvalidArgument(f"{IGNORE_FILE} line {number}: illegal exclusion pattern: '!'")
            cleaned = clean(line)
            if len(cleaned) > 1 and cleaned.startswith("/"):
                cleaned = cleaned[1:]
            try:
                regex = glob_regex(cleaned)
            except InvalidArgument as exc:
                raise InvalidArgument(f"{IGNORE_FILE} line {number}: {exc}") from None
            patterns.append(Pattern(cleaned, exclusion, regex))
        return cls(patterns)

    @property
    def has_exceptions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def excludes(self, path: str) -> bool:
        """Whether `path` (relative to the context root, `/`-separated) is left out of the context."""
        path = clean(path)
        parts = path.split("/")
        parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        excluded = False
        for pattern in self.patterns:
            if pattern.exclusion != excluded:
                continue  # an exception only matters once excluded, an exclusion only while included
            if pattern.matches(path, parents):
                excluded = not pattern.exclusion
        return excluded

    def may_reinclude_below(self, directory: str) -> bool:
        """Whether an exception could bring back something under an excluded `directory` (walk into it)."""
        prefix = clean(directory) + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


def glob_match(pattern: str, path: str) -> bool:
    """One COPY/ADD source glob against a context-relative path (both cleaned)."""
    return glob_regex(pattern).match(path) is not None
