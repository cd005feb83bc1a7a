"""The typed instructions of a Dockerfile and how each substitutes its variables (pure; no I/O).

An instruction keeps its arguments as written (quotes, escapes, `$VAR`); `expand(env)` returns a copy with
Docker's word processing applied (`agent.oci.expand`) for the instructions that support it (ADD, COPY,
ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, and ARG defaults) and validates the result
(ports, signals, users, modes). RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and ONBUILD are left to the shell
(or the child build). Every problem is a `DockerfileError` naming the file and the line.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from agent.errors import InvalidArgument
from agent.oci.expand import SubstitutionError, process_word

DEFAULT_ESCAPE = "\\"
DEFAULT_SHELL = ("/bin/sh", "-c")
# ARGs every build may set without declaring them; kept out of history and the cache key (Docker's rule).
PROXY_ARGS = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
)
_PORT_RE = re.compile(r"^(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$", re.IGNORECASE)


class DockerfileError(InvalidArgument):
    """A Dockerfile problem; `line` is the 1-based line of the instruction (0 when not tied to one)."""

    def __init__(self, reason: str, line: int = 0, filename: str = "Dockerfile") -> None:
        where = f"{filename} line {line}" if line else filename
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.line = line
        self.filename = filename


# ---- instructions ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A command in exec form (`["a", "b"]`: argv as is) or shell form (one string run by the SHELL)."""

    exec_form: bool
    args: tuple[str, ...]

    def argv(self, shell: tuple[str, ...] | list[str]) -> list[str]:
        return list(self.args) if self.exec_form else [*shell, self.args[0]]

    def __str__(self) -> str:
        return json.dumps(list(self.args)) if self.exec_form else self.args[0]


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """One instruction: where it is, how it was written, and its parsed arguments (unexpanded)."""

    keyword: ClassVar[str] = ""
    line: int
    text: str  # the instruction as written, continuations joined (for progress, history and errors)
    escape: str = DEFAULT_ESCAPE
    filename: str = "Dockerfile"

    def error(self, reason: str) -> DockerfileError:
        return DockerfileError(reason, self.line, self.filename)

    def expand(self, env: Mapping[str, str]) -> Self:
        """A copy with variables substituted from `env` (instructions without substitution return self)."""
        return self

    def _word(self, word: str, env: Mapping[str, str]) -> str:
        try:
            return process_word(word, env, self.escape)
        except SubstitutionError as exc:
            raise self.error(f"{self.keyword}: {exc}") from None

    def _words(self, words: tuple[str, ...], env: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(self._word(w, env) for w in words)


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    keyword: ClassVar[str] = "FROM"
    image: str
    name: str | None = None
    platform: str | None = None

    def expand(self, env: Mapping[str, str]) -> Self:
        image = self._word(self.image, env)
        if not image:
            raise self.error(f"FROM: base name ({self.image}) should not be blank")
        platform = self._word(self.platform, env) if self.platform is not None else None
        return dataclasses.replace(self, image=image, platform=platform or None)


@dataclass(frozen=True, kw_only=True)
class Run(Instruction):
    keyword: ClassVar[str] = "RUN"
    command: Command
    network: str | None = None  # None: the default (bridge when available); "none" or "host"


@dataclass(frozen=True, kw_only=True)
class Copy(Instruction):
    """COPY, and the base of ADD (which also extracts local tar archives)."""

    keyword: ClassVar[str] = "COPY"
    sources: tuple[str, ...]
    dest: str
    from_stage: str | None = None
    chown: str | None = None
    chmod: str | None = None

    def expand(self, env: Mapping[str, str]) -> Self:
        chmod = self._word(self.chmod, env) if self.chmod is not None else None
        if chmod is not None and not re.fullmatch(r"[0-7]{1,4}", chmod):
            raise self.error(f"{self.keyword}: invalid --chmod={chmod}: want an octal mode such as 0755")
        return dataclasses.replace(
            self,
            sources=self._words(self.sources, env),
            dest=self._word(self.dest, env),
            from_stage=self._word(self.from_stage, env) if self.from_stage is not None else None,
            chown=self._word(self.chown, env) if self.chown is not None else None,
            chmod=chmod,
        )


@dataclass(frozen=True, kw_only=True)
class Add(Copy):
    keyword: ClassVar[str] = "ADD"


@dataclass(frozen=True, kw_only=True)
class KeyValues(Instruction):
    """ENV and LABEL: `key=value` pairs; every value is expanded with the environment *before* the step."""

    pairs: tuple[tuple[str, str], ...]

    def expand(self, env: Mapping[str, str]) -> Self:
        pairs = tuple((self._word(k, env), self._word(v, env)) for k, v in self.pairs)
        for key, _ in pairs:
            if not key:
                raise self.error(f"{self.keyword}: names can not be blank")
        return dataclasses.replace(self, pairs=pairs)


@dataclass(frozen=True, kw_only=True)
class Env(KeyValues):
    keyword: ClassVar[str] = "ENV"


@dataclass(frozen=True, kw_only=True)
class Label(KeyValues):
    keyword: ClassVar[str] = "LABEL"


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    keyword: ClassVar[str] = "ARG"
    pairs: tuple[tuple[str, str | None], ...]  # (name, default or None)

    def expand(self, env: Mapping[str, str]) -> Self:
        return dataclasses.replace(
            self, pairs=tuple((k, self._word(v, env) if v is not None else None) for k, v in self.pairs)
        )


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    keyword: ClassVar[str] = "WORKDIR"
    path: str

    def expand(self, env: Mapping[str, str]) -> Self:
        path = self._word(self.path, env)
        if not path:
            raise self.error("WORKDIR: the path can not be empty")
        return dataclasses.replace(self, path=path)


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    keyword: ClassVar[str] = "USER"
    user: str

    def expand(self, env: Mapping[str, str]) -> Self:
        user = self._word(self.user, env)
        if not user or user.startswith(":") or user.endswith(":"):
            raise self.error(f"USER: invalid user {user!r}: want USER[:GROUP]")
        return dataclasses.replace(self, user=user)


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    keyword: ClassVar[str] = "EXPOSE"
    ports: tuple[str, ...]

    def expand(self, env: Mapping[str, str]) -> Self:
        out: list[str] = []
        for word in self._words(self.ports, env):
            for part in word.split():
                out.extend(self._port_keys(part))
        return dataclasses.replace(self, ports=tuple(out))

    def _port_keys(self, spec: str) -> list[str]:
        m = _PORT_RE.match(spec)
        if m is None:
            raise self.error(f"EXPOSE: invalid port {spec!r}: want PORT[-PORT][/tcp|udp|sctp]")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) else low
        proto = (m.group(3) or "tcp").lower()
        if not 0 < low <= high <= 65535:
            raise self.error(f"EXPOSE: invalid port range {spec!r}")
        return [f"{p}/{proto}" for p in range(low, high + 1)]


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    keyword: ClassVar[str] = "VOLUME"
    paths: tuple[str, ...]

    def expand(self, env: Mapping[str, str]) -> Self:
        paths = self._words(self.paths, env)
        if any(not p.strip() for p in paths):
            raise self.error("VOLUME: a volume path can not be an empty string")
        return dataclasses.replace(self, paths=paths)


@dataclass(frozen=True, kw_only=True)
class Cmd(Instruction):
    keyword: ClassVar[str] = "CMD"
    command: Command


@dataclass(frozen=True, kw_only=True)
class Entrypoint(Instruction):
    keyword: ClassVar[str] = "ENTRYPOINT"
    command: Command


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    keyword: ClassVar[str] = "SHELL"
    argv: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StopSignal(Instruction):
    keyword: ClassVar[str] = "STOPSIGNAL"
    signal: str

    def expand(self, env: Mapping[str, str]) -> Self:
        value = self._word(self.signal, env)
        if not valid_signal(value):
            raise self.error(f"STOPSIGNAL: invalid signal {value!r}")
        return dataclasses.replace(self, signal=value)


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    """`HEALTHCHECK NONE` has `command=None`; durations are nanoseconds, 0 = the runtime's default."""

    keyword: ClassVar[str] = "HEALTHCHECK"
    command: Command | None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    keyword: ClassVar[str] = "ONBUILD"
    trigger: str


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    keyword: ClassVar[str] = "MAINTAINER"
    name: str

    def expand(self, env: Mapping[str, str]) -> Self:
        return self


def valid_signal(value: str) -> bool:
    """SIGTERM, TERM, 15, SIGRTMIN+3: names this host knows or numbers in range."""
    if value.isdigit():
        return 0 < int(value) < 65
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    m = re.fullmatch(r"SIGRT(MIN|MAX)([+-]\d+)?", name)
    if m:
        return True
    return name in signal.Signals.__members__
