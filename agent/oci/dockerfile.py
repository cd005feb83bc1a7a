"""Dockerfile syntax: text → global ARGs and stages of typed instructions (pure; no I/O).

What is handled, as the Dockerfile reference defines it: parser directives at the very top (`# escape=`
with `\\` or `` ` ``; `# syntax=` and `# check=` accepted and ignored; an unknown directive ends the
directive block and counts as a comment), comments, line continuations with the escape character (comment
and blank lines inside a continuation are dropped), case-insensitive instruction names, `--flag[=value]`
options, JSON (exec) and shell forms, `ENV`/`LABEL` in both the `key value` and the `key=value ...` form.

Arguments are kept as written: variables are substituted later, per stage, with the environment in force
at that step (`Instruction.expand`), because it depends on the base image's ENV. Every problem is a
`DockerfileError` (InvalidArgument) whose message names the file and the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import limits
from agent.oci.expand import SubstitutionError, process_word, split_words
from agent.oci.instructions import (
    DEFAULT_ESCAPE,
    Add,
    Arg,
    Cmd,
    Command,
    Copy,
    DockerfileError,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_DURATION_UNITS["h"] = 3600 * 10**9


@dataclass(frozen=True)
class Stage:
    """One `FROM ...` and the instructions up to the next FROM; `name` is lower-cased, as Docker does."""

    index: int
    from_: From
    instructions: tuple[Instruction, ...]

    @property
    def name(self) -> str | None:
        return self.from_.name


@dataclass(frozen=True)
class Dockerfile:
    escape: str
    global_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    filename: str = "Dockerfile"

    def stage(self, ref: str) -> Stage | None:
        """The stage called `ref` (name, case-insensitive, or index); None if there is none."""
        lowered = ref.lower()
        for s in self.stages:
            if s.name == lowered:
                return s
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


# ---- the parser ------------------------------------------------------------------------------------------


@dataclass
class _Logical:
    line: int
    text: str


def _directives(lines: list[str], filename: str) -> tuple[dict[str, str], int]:
    """Parser directives at the top of the file; returns them and the index of the first other line."""
    found: dict[str, str] = {}
    for i, raw in enumerate(lines):
        m = _DIRECTIVE_RE.match(raw.strip()) if raw.lstrip().startswith("#") else None
        if m is None:
            return found, i
        key = m.group(1).lower()
        if key not in ("syntax", "escape", "check"):
            return found, i  # unknown directive: a comment, and the end of the directive block
        if key in found:
            raise DockerfileError(f"only one {key} parser directive can be used", i + 1, filename)
        found[key] = m.group(2)
    return found, len(lines)


def _continuation(escape: str) -> re.Pattern[str]:
    return re.compile(re.escape(escape) + r"[ \t]*$")


def _logical_lines(lines: list[str], start: int, escape: str) -> list[_Logical]:
    cont = _continuation(escape)
    out: list[_Logical] = []
    i = start
    while i < len(lines):
        first = lines[i].lstrip()
        lineno = i + 1
        i += 1
        if not first or first.startswith("#"):
            continue
        text, more = cont.subn("", first)
        while more and i < len(lines):
            nxt = lines[i]
            i += 1
            stripped = nxt.lstrip()
            if not stripped or stripped.startswith("#"):
                continue
            piece, more = cont.subn("", nxt)
            text += piece
        if text.strip():
            out.append(_Logical(lineno, text.strip()))
    return out


def _split_flags(rest: str, escape: str) -> tuple[dict[str, str | None], str]:
    """Leading `--name[=value]` words (quotes allowed in values) and the rest of the line."""
    flags: dict[str, str | None] = {}
    while True:
        rest = rest.lstrip()
        if not rest.startswith("--"):
            return flags, rest
        consumed = _raw_word_length(rest, escape)  # the word ends at whitespace outside quotes
        word, rest = rest[:consumed], rest[consumed:]
        name, eq, value = word[2:].partition("=")
        flags[name.lower()] = value if eq else None  # kept as written: some flags are expanded later


def _head(text: str) -> tuple[str, str]:
    """The first word and the rest (stripped)."""
    parts = text.strip().split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _raw_word_length(text: str, escape: str) -> int:
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                i += 1
        elif ch.isspace():
            return i
        elif ch in ("'", '"'):
            quote = ch
        elif ch == escape:
            i += 1
        i += 1
    return len(text)


def _json_list(rest: str) -> list[str] | None:
    """The exec form: a JSON array of strings; None when `rest` is not one (then it is shell form)."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def parse_duration(text: str) -> int:
    """A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds; ValueError if it is not one."""
    if text in ("0", ""):
        return 0
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(text)
    return int(total)


class _Parser:
    def __init__(self, filename: str, escape: str) -> None:
        self.filename = filename
        self.escape = escape

    def err(self, reason: str, line: int) -> DockerfileError:
        return DockerfileError(reason, line, self.filename)

    def instruction(self, logical: _Logical) -> Instruction:
        line = logical.line
        size = len(logical.text.encode("utf-8", "surrogatepass"))
        if size > limits.DOCKERFILE_LINE_BYTES:
            bound = limits.human(limits.DOCKERFILE_LINE_BYTES)
            raise self.err(f"the instruction is {size} bytes, over the limit of {bound}", line)
        keyword, rest = _head(logical.text)
        keyword = keyword.upper()
        parse = _PARSERS.get(keyword)
        if parse is None:
            raise self.err(f"unknown instruction: {keyword} (see the Dockerfile reference)", line)
        flags, rest = _split_flags(rest, self.escape)
        allowed = _FLAGS.get(keyword, ())
        for name in flags:
            if name not in allowed:
                hint = f" (allowed: {', '.join('--' + a for a in allowed)})" if allowed else ""
                raise self.err(f"{keyword}: unknown flag: --{name}{hint}", line)
        base: dict[str, Any] = {
            "line": line,
            "text": f"{keyword} {logical.text[len(keyword) :].strip()}".strip(),
            "escape": self.escape,
            "filename": self.filename,
        }
        return parse(self, keyword, rest, flags, base)

    # -- per instruction ----------------------------------------------------------------------------------

    def _from(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        words = rest.split()
        line = base["line"]
        if len(words) == 1:
            name = None
        elif len(words) == 3 and words[1].lower() == "as":
            name = words[2].lower()
            if not _STAGE_NAME_RE.match(name):
                raise self.err(
                    f"FROM: invalid stage name {words[2]!r}: use letters, digits, '-', '_' and '.', "
                    "starting with a letter",
                    line,
                )
        else:
            raise self.err("FROM requires either one argument, or three: FROM <image> [AS <name>]", line)
        return From(image=words[0], name=name, platform=self._flag_value(kw, flags, "platform", line), **base)

    def _flag_value(
        self, kw: str, flags: dict[str, str | None], name: str, line: int, *, literal: bool = False
    ) -> str | None:
        """A flag's value as written, or with quotes removed (`literal`) for flags never expanded."""
        if name not in flags:
            return None
        value = flags[name]
        if literal and value:
            try:
                value = process_word(value, {}, self.escape)
            except SubstitutionError as exc:
                raise self.err(f"{kw}: --{name}: {exc}", line) from None
        if value is None or value == "":
            raise self.err(f"{kw}: --{name} needs a value (--{name}=VALUE)", line)
        return value

    def _command(self, kw: str, rest: str, line: int) -> Command:
        argv = _json_list(rest)
        if argv is not None:
            return Command(exec_form=True, args=tuple(argv))
        if not rest:
            raise self.err(f"{kw} requires a command", line)
        return Command(exec_form=False, args=(rest,))

    def _run(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        line = base["line"]
        network = self._flag_value(kw, flags, "network", line, literal=True)
        if network is not None and network not in ("none", "host", "default"):
            raise self.err(f"RUN: --network={network} is not supported: use none, host or default", line)
        command = self._command(kw, rest, line)
        if command.exec_form and not command.args:
            raise self.err("RUN requires a command (the JSON array is empty)", line)
        return Run(command=command, network=None if network == "default" else network, **base)

    def _copy(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        line = base["line"]
        words = _json_list(rest)
        if words is None:
            words = split_words(rest, self.escape)  # quoted paths with spaces stay one word
        if len(words) < 2:
            raise self.err(f"{kw} requires at least two arguments: {kw} <src>... <dest>", line)
        cls = Add if kw == "ADD" else Copy
        return cls(
            sources=tuple(words[:-1]),
            dest=words[-1],
            from_stage=self._flag_value(kw, flags, "from", line),
            chown=self._flag_value(kw, flags, "chown", line),
            chmod=self._flag_value(kw, flags, "chmod", line),
            **base,
        )

    def _pairs(self, kw: str, rest: str, line: int) -> tuple[tuple[str, str], ...]:
        words = split_words(rest, self.escape)
        if not words:
            raise self.err(f"{kw} requires at least one argument", line)
        if "=" not in words[0]:
            parts = rest.split(None, 1)
            if len(parts) < 2:
                raise self.err(f"{kw} must have two arguments: {kw} <key>=<value> ...", line)
            return ((parts[0], parts[1]),)
        pairs: list[tuple[str, str]] = []
        for word in words:
            key, eq, value = word.partition("=")
            if not eq:
                raise self.err(f"{kw}: syntax error - can't find = in {word!r}; want <key>=<value>", line)
            if not key:
                raise self.err(f"{kw}: names can not be blank", line)
            pairs.append((key, value))
        return tuple(pairs)

    def _env(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        pairs = self._pairs(kw, rest, base["line"])
        return Label(pairs=pairs, **base) if kw == "LABEL" else Env(pairs=pairs, **base)

    def _arg(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        line = base["line"]
        words = split_words(rest, self.escape)
        if not words:
            raise self.err("ARG requires at least one argument: ARG <name>[=<default>]", line)
        pairs: list[tuple[str, str | None]] = []
        for word in words:
            key, eq, value = word.partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise self.err(f"ARG: invalid name {key!r}", line)
            pairs.append((key, value if eq else None))
        return Arg(pairs=tuple(pairs), **base)

    def _single(self, kw: str, rest: str, line: int) -> str:
        if not rest:
            raise self.err(f"{kw} requires exactly one argument", line)
        return rest

    def _workdir(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        return Workdir(path=self._single(kw, rest, base["line"]), **base)

    def _user(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        return User(user=self._single(kw, rest, base["line"]), **base)

    def _stopsignal(
        self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]
    ) -> Instruction:
        return StopSignal(signal=self._single(kw, rest, base["line"]), **base)

    def _maintainer(
        self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]
    ) -> Instruction:
        return Maintainer(name=self._single(kw, rest, base["line"]), **base)

    def _expose(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        words = rest.split()
        if not words:
            raise self.err("EXPOSE requires at least one argument", base["line"])
        return Expose(ports=tuple(words), **base)

    def _volume(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        words = _json_list(rest)
        if words is None:
            words = rest.split()
        if not words:
            raise self.err("VOLUME requires at least one argument", base["line"])
        return Volume(paths=tuple(words), **base)

    def _cmd(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        command = self._command(kw, rest, base["line"])
        return Cmd(command=command, **base) if kw == "CMD" else Entrypoint(command=command, **base)

    def _shell(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        argv = _json_list(rest)
        if not argv:
            raise self.err(
                'SHELL requires the arguments in JSON form: SHELL ["executable", "param"]', base["line"]
            )
        return Shell(argv=tuple(argv), **base)

    def _healthcheck(
        self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]
    ) -> Instruction:
        line = base["line"]
        kind, cmd = _head(rest)
        kind = kind.upper()
        if kind == "NONE":
            if cmd or flags:
                raise self.err("HEALTHCHECK NONE takes no other arguments", line)
            return Healthcheck(command=None, **base)
        if kind != "CMD":
            raise self.err(
                f"HEALTHCHECK: unknown type {kind or '(none)'!r}: want CMD <command> or NONE", line
            )
        command = self._command("HEALTHCHECK CMD", cmd, line)
        if command.exec_form and not command.args:
            raise self.err("HEALTHCHECK CMD requires a command", line)
        values: dict[str, Any] = {}
        for name in ("interval", "timeout", "start-period", "start-interval"):
            raw = self._flag_value(kw, flags, name, line, literal=True)
            if raw is None:
                continue
            try:
                ns = parse_duration(raw)
            except ValueError:
                raise self.err(
                    f"HEALTHCHECK: --{name}={raw} is not a duration (e.g. 30s, 1m30s)", line
                ) from None
            if ns and ns < 1_000_000:
                raise self.err(f"HEALTHCHECK: --{name} can not be less than 1ms", line)
            values[name.replace("-", "_")] = ns
        retries = self._flag_value(kw, flags, "retries", line, literal=True)
        if retries is not None:
            if not retries.isdigit():
                raise self.err(f"HEALTHCHECK: --retries={retries} is not a non-negative integer", line)
            values["retries"] = int(retries)
        return Healthcheck(command=command, **values, **base)

    def _onbuild(self, kw: str, rest: str, flags: dict[str, str | None], base: dict[str, Any]) -> Instruction:
        line = base["line"]
        if not rest:
            raise self.err("ONBUILD requires an instruction", line)
        inner = rest.split(None, 1)[0].upper()
        if inner in ("ONBUILD", "FROM", "MAINTAINER"):
            raise self.err(f"ONBUILD: {inner} isn't allowed as an ONBUILD trigger", line)
        self.instruction(_Logical(line, rest))  # validates the trigger now
        return Onbuild(trigger=rest, **base)


_Parse = Callable[[_Parser, str, str, dict[str, str | None], dict[str, Any]], Instruction]
_PARSERS: dict[str, _Parse] = {
    "FROM": _Parser._from,
    "RUN": _Parser._run,
    "COPY": _Parser._copy,
    "ADD": _Parser._copy,
    "ENV": _Parser._env,
    "LABEL": _Parser._env,
    "ARG": _Parser._arg,
    "WORKDIR": _Parser._workdir,
    "USER": _Parser._user,
    "EXPOSE": _Parser._expose,
    "VOLUME": _Parser._volume,
    "CMD": _Parser._cmd,
    "ENTRYPOINT": _Parser._cmd,
    "SHELL": _Parser._shell,
    "STOPSIGNAL": _Parser._stopsignal,
    "HEALTHCHECK": _Parser._healthcheck,
    "ONBUILD": _Parser._onbuild,
    "MAINTAINER": _Parser._maintainer,
}
_FLAGS: dict[str, tuple[str, ...]] = {
    "FROM": ("platform",),
    "RUN": ("network",),
    "COPY": ("from", "chown", "chmod", "link"),
    "ADD": ("chown", "chmod", "link"),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries"),
}


def parse_instruction(
    text: str, line: int, *, escape: str = DEFAULT_ESCAPE, filename: str = "Dockerfile"
) -> Instruction:
    """One instruction (an ONBUILD trigger when it runs in a child build)."""
    return _Parser(filename, escape).instruction(_Logical(line, text.strip()))


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile; DockerfileError names the line of the first problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.splitlines()
    directives, start = _directives(lines, filename)
    escape = directives.get("escape", DEFAULT_ESCAPE)
    if escape not in ("\\", "`"):
        raise DockerfileError(f"invalid escape token {escape!r}: it must be ` or \\", 1, filename)
    parser = _Parser(filename, escape)
    global_args: list[Arg] = []
    stages: list[tuple[From, list[Instruction]]] = []
    names: dict[str, int] = {}
    for logical in _logical_lines(lines, start, escape):
        instr = parser.instruction(logical)
        if isinstance(instr, From):
            if instr.name is not None:
                if instr.name in names:
                    raise parser.err(
                        f"duplicate stage name {instr.name!r} (first used on line {names[instr.name]})",
                        instr.line,
                    )
                names[instr.name] = instr.line
            stages.append((instr, []))
        elif not stages:
            if isinstance(instr, Arg):
                global_args.append(instr)
            else:
                raise parser.err(
                    f"{instr.keyword} before the first FROM: a Dockerfile must start with FROM "
                    "(only ARG may come before it)",
                    instr.line,
                )
        else:
            stages[-1][1].append(instr)
    if not stages:
        raise DockerfileError("no FROM instruction: the Dockerfile has no build stage", 0, filename)
    return Dockerfile(
        escape=escape,
        global_args=tuple(global_args),
        stages=tuple(Stage(i, f, tuple(body)) for i, (f, body) in enumerate(stages)),
        filename=filename,
    )
