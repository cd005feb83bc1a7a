"""Run options: the typed, validated form of what a user asks for in `dockyard run`/`create`.

Parsing lives here (pure, no I/O) so the servicer, the manager and the golden tests agree on one meaning
for `-v`, `--memory`, `--ulimit`, `--restart`, signals and friends, following Docker's syntax. Every
parse error is an `InvalidArgument` whose message names the offending flag and value.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import signal
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agent.errors import InvalidArgument
from agent.limits import INT32_MAX, INT64_MAX, UINT64_MAX, check_name_length

VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
CONTAINER_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
ENV_KEY_RE = re.compile(r"^[^=\s]+$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
MIN_MEMORY = 6 * 1024 * 1024
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

ULIMIT_NAMES = {
    "as": "RLIMIT_AS",
    "core": "RLIMIT_CORE",
    "cpu": "RLIMIT_CPU",
    "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS",
    "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
}
_PROPAGATIONS = {"private", "rprivate", "shared", "rshared", "slave", "rslave"}


class MountType(StrEnum):
    BIND = "bind"
    VOLUME = "volume"
    TMPFS = "tmpfs"


@dataclass(frozen=True)
class MountSpec:
    """One user mount. For volumes `source` is the volume name ("" = anonymous, named at create)."""

    type: MountType
    target: str
    source: str = ""
    read_only: bool = False
    propagation: str = ""
    tmpfs_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ulimit:
    name: str  # short Docker name: "nofile"
    soft: int
    hard: int


class RestartMode(StrEnum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"


@dataclass(frozen=True)
class RestartPolicy:
    mode: RestartMode = RestartMode.NO
    max_retries: int = 0  # only for on-failure; 0 = unlimited

    def __str__(self) -> str:
        if self.mode is RestartMode.ON_FAILURE and self.max_retries:
            return f"{self.mode}:{self.max_retries}"
        return str(self.mode)


@dataclass(frozen=True)
class HealthConfig:
    """A health check: `test` is the Docker form (["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"])."""

    test: tuple[str, ...] = ()
    interval_s: float = 30.0
    timeout_s: float = 30.0
    retries: int = 3
    start_period_s: float = 0.0

    @property
    def disabled(self) -> bool:
        return not self.test or self.test[0] == "NONE"


@dataclass(frozen=True)
class RunOptions:
    """Everything `create` accepts. None/empty means "take the image's value or Docker's default"."""

    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None  # () resets the image entrypoint (`--entrypoint ""`)
    name: str = ""
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    mounts: tuple[MountSpec, ...] = ()
    memory: int | None = None
    memory_swap: int | None = None  # -1 = unlimited swap
    cpus: float | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    ulimits: tuple[Ulimit, ...] = ()
    restart: RestartPolicy = RestartPolicy()
    health: HealthConfig | None = None  # None = use the image's HEALTHCHECK
    tty: bool = False
    stdin_open: bool = False
    network: str = "none"
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    read_only: bool = False
    no_new_privileges: bool = True
    seccomp: str = "default"  # or "unconfined"
    auto_remove: bool = False
    stop_signal: str = ""
    stop_timeout: int | None = None
    # networking: agent/network parses and checks these at attach
    publish: tuple[str, ...] = ()
    ip: str = ""
    network_aliases: tuple[str, ...] = ()


def parse_size(value: str, flag: str) -> int:
    """Docker's RAMInBytes: "512m", "1.5g", "100000" (bytes), binary multiples."""
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise InvalidArgument(f"invalid {flag} value {value!r}: expected a size such as 512m or 1g")
    whole, _, frac = m.group(1).partition(".")
    unit = _UNITS[m.group(2).lower()]
    frac = frac[:18]  # below a byte even in PiB; also keeps int() far from its digit limit
    size = -1 if len(whole) > 30 else int(whole) * unit + int(frac or 0) * unit // 10 ** len(frac)
    if not 0 <= size <= INT64_MAX:  # the OCI spec's fields are int64; runc would fail on the JSON
        raise InvalidArgument(f"invalid {flag} value {value!r}: out of range (max {INT64_MAX} bytes)")
    return size


def parse_memory(value: str) -> int:
    size = parse_size(value, "--memory")
    if size < MIN_MEMORY:
        raise InvalidArgument(f"invalid --memory value {value!r}: the minimum is 6m")
    return size


def parse_memory_swap(value: str) -> int:
    if value.strip() == "-1":
        return -1
    return parse_size(value, "--memory-swap")


def memory_from_bytes(size: int) -> int:
    """The typed --memory (bytes, from a controller that parsed "512m"): the bounds `parse_memory` keeps."""
    if size < MIN_MEMORY:
        raise InvalidArgument(f"invalid --memory value {size}: the minimum is 6m")
    return size


def memory_swap_from_bytes(size: int) -> int:
    """The typed --memory-swap: bytes, or -1 for unlimited swap (what `parse_memory_swap` gives)."""
    if size < -1:
        raise InvalidArgument(f"invalid --memory-swap value {size}: expected a size in bytes or -1")
    return size


def cpus_from_nano(nano_cpus: int) -> float:
    """The typed --cpus (billionths of a CPU, Docker's NanoCPUs) within `parse_cpus`'s bounds."""
    cpus = nano_cpus / 1e9
    if not 0.01 <= cpus <= 4096:
        raise InvalidArgument(f"invalid --cpus value {cpus:g}: must be from 0.01 to 4096")
    return cpus


def parse_cpus(value: str) -> float:
    try:
        cpus = float(value)
    except ValueError:
        raise InvalidArgument(f"invalid --cpus value {value!r}: expected a number such as 0.5") from None
    if not 0.01 <= cpus <= 4096:
        raise InvalidArgument(f"invalid --cpus value {value!r}: must be at least 0.01")
    return cpus


def parse_ulimit(value: str) -> Ulimit:
    """`name=soft[:hard]`; -1 means unlimited."""
    name, sep, limits = value.partition("=")
    if not sep or name not in ULIMIT_NAMES:
        raise InvalidArgument(
            f"invalid --ulimit {value!r}: expected NAME=SOFT[:HARD], NAME one of {', '.join(ULIMIT_NAMES)}"
        )
    soft_s, _, hard_s = limits.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError:
        raise InvalidArgument(f"invalid --ulimit {value!r}: limits must be integers") from None
    soft = (1 << 64) - 1 if soft == -1 else soft
    hard = (1 << 64) - 1 if hard == -1 else hard
    if soft < 0 or hard < 0:
        raise InvalidArgument(f"invalid --ulimit {value!r}: limits must not be negative")
    if max(soft, hard) > UINT64_MAX:
        raise InvalidArgument(f"invalid --ulimit {value!r}: out of range (max {UINT64_MAX} or -1)")
    if soft > hard:
        raise InvalidArgument(f"invalid --ulimit {value!r}: soft limit {soft} is above hard limit {hard}")
    return Ulimit(name, soft, hard)


def parse_restart(value: str) -> RestartPolicy:
    mode_s, _, count = value.partition(":")
    try:
        mode = RestartMode(mode_s or "no")
    except ValueError:
        raise InvalidArgument(
            f"invalid --restart {value!r}: expected no, on-failure[:N], always or unless-stopped"
        ) from None
    if count and mode is not RestartMode.ON_FAILURE:
        raise InvalidArgument(f"invalid --restart {value!r}: only on-failure takes a retry count")
    if count and not count.isdigit():
        raise InvalidArgument(f"invalid --restart {value!r}: the retry count must be a positive integer")
    if count and (len(count) > 10 or int(count) > INT32_MAX):
        raise InvalidArgument(f"invalid --restart {value!r}: out of range (max {INT32_MAX})")
    return RestartPolicy(mode, int(count) if count else 0)


def parse_signal(value: str) -> int:
    """ "SIGTERM", "TERM", "term" or "15" → 15; anything else is an InvalidArgument."""
    text = value.strip().upper()
    if text.isdigit():
        number = int(text)
        if 1 <= number <= 64:
            return number
        raise InvalidArgument(f"invalid signal {value!r}: numbers go from 1 to 64")
    if not text.startswith("SIG"):
        text = "SIG" + text
    if text.startswith("SIGRTMIN+") or text.startswith("SIGRTMAX-"):
        base = signal.SIGRTMIN if text.startswith("SIGRTMIN") else signal.SIGRTMAX
        offset = text[9:]
        if offset.isdigit():
            number = base + int(offset) if base == signal.SIGRTMIN else base - int(offset)
            if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                return int(number)
        raise InvalidArgument(f"invalid signal {value!r}")
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise InvalidArgument(f"invalid signal {value!r}: not a known signal name or number") from None


def parse_env_line(line: str, flag: str = "-e") -> str:
    """`K=V` as is; a bare `K` is kept as `K` (the caller fills it from its own environment)."""
    key = line.split("=", 1)[0]
    if not key or not ENV_KEY_RE.match(key):
        raise InvalidArgument(f"invalid {flag} {line!r}: the variable name must be non-empty without spaces")
    return line


def parse_env_file(text: str) -> tuple[str, ...]:
    """Docker's --env-file format: one K=V per line, `#` comments and blank lines skipped."""
    out: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(parse_env_line(line, "--env-file"))
        except InvalidArgument:
            raise InvalidArgument(f"invalid --env-file line {number}: {raw!r}") from None
    return tuple(out)


def parse_label(value: str) -> tuple[str, str]:
    key, _, val = value.partition("=")
    if not key:
        raise InvalidArgument(f"invalid --label {value!r}: the key must be non-empty")
    return key, val


def _clean_target(target: str, flag: str, value: str) -> str:
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid {flag} {value!r}: the container path {target!r} must be absolute")
    clean = posixpath.normpath(target)
    if clean == "/":
        raise InvalidArgument(f"invalid {flag} {value!r}: cannot mount over /")
    return clean


def parse_volume(value: str) -> MountSpec:
    """`-v`: `/host:/ctr[:opts]`, `name:/ctr[:opts]` or `/ctr` (anonymous volume)."""
    parts = value.split(":")
    if not value or any(p == "" for p in parts) or len(parts) > 3:
        raise InvalidArgument(f"invalid -v {value!r}: expected SOURCE:TARGET[:OPTIONS] or TARGET")
    if len(parts) == 1:
        return MountSpec(MountType.VOLUME, _clean_target(parts[0], "-v", value))
    source, target = parts[0], parts[1]
    read_only, propagation = False, ""
    if len(parts) == 3:
        for opt in parts[2].split(","):
            if opt in ("ro", "rw"):
                read_only = opt == "ro"
            elif opt in _PROPAGATIONS:
                propagation = opt
            elif opt in ("z", "Z", "nocopy", "copy"):
                continue
            else:
                raise InvalidArgument(f"invalid -v {value!r}: unknown option {opt!r}")
    target = _clean_target(target, "-v", value)
    if source.startswith("/"):
        return MountSpec(MountType.BIND, target, posixpath.normpath(source), read_only, propagation)
    check_name_length(source, "-v volume name")
    if not VOLUME_NAME_RE.match(source):
        raise InvalidArgument(
            f"invalid -v {value!r}: {source!r} is neither an absolute host path nor a volume name "
            "([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
        )
    if propagation:
        raise InvalidArgument(f"invalid -v {value!r}: propagation applies to bind mounts only")
    return MountSpec(MountType.VOLUME, target, source, read_only)


def parse_tmpfs(value: str) -> MountSpec:
    """`--tmpfs /path[:opt,opt]`, options passed to the kernel (size=64m, mode=1777, noexec…)."""
    target, _, opts = value.partition(":")
    options = tuple(o for o in opts.split(",") if o) if opts else ()
    for opt in options:
        if not re.match(r"^[a-z_]+(=[A-Za-z0-9.%]+)?$", opt):
            raise InvalidArgument(f"invalid --tmpfs {value!r}: bad option {opt!r}")
    return MountSpec(MountType.TMPFS, _clean_target(target, "--tmpfs", value), "tmpfs", tmpfs_options=options)


def parse_mount(value: str) -> MountSpec:
    """`--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…][,tmpfs-mode=…]`."""
    fields: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        key = key.strip().lower()
        if not key:
            raise InvalidArgument(f"invalid --mount {value!r}: empty field")
        fields[key] = val if sep else "true"
    known = {
        "type", "source", "src", "target", "destination", "dst", "readonly", "ro",
        "tmpfs-size", "tmpfs-mode", "bind-propagation", "volume-nocopy",
    }  # fmt: skip
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InvalidArgument(f"invalid --mount {value!r}: unknown field(s) {', '.join(unknown)}")
    try:
        kind = MountType(fields.get("type", "volume"))
    except ValueError:
        raise InvalidArgument(f"invalid --mount {value!r}: type must be bind, volume or tmpfs") from None
    target = fields.get("target") or fields.get("destination") or fields.get("dst") or ""
    if not target:
        raise InvalidArgument(f"invalid --mount {value!r}: target is required")
    target = _clean_target(target, "--mount", value)
    source = fields.get("source") or fields.get("src") or ""
    ro_text = fields.get("readonly", fields.get("ro", "false")).lower()
    if ro_text not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"invalid --mount {value!r}: readonly must be true or false")
    read_only = ro_text in ("true", "1")
    if kind is MountType.TMPFS:
        if source:
            raise InvalidArgument(f"invalid --mount {value!r}: tmpfs takes no source")
        opts: list[str] = []
        if "tmpfs-size" in fields:
            opts.append(f"size={parse_size(fields['tmpfs-size'], 'tmpfs-size')}")
        if "tmpfs-mode" in fields:
            mode = fields["tmpfs-mode"]
            if not re.match(r"^[0-7]{3,4}$", mode):
                raise InvalidArgument(f"invalid --mount {value!r}: tmpfs-mode must be octal")
            opts.append(f"mode={mode}")
        if read_only:
            opts.append("ro")
        return MountSpec(MountType.TMPFS, target, "tmpfs", tmpfs_options=tuple(opts))
    if kind is MountType.BIND:
        if not source.startswith("/"):
            raise InvalidArgument(f"invalid --mount {value!r}: a bind source must be an absolute host path")
        propagation = fields.get("bind-propagation", "")
        if propagation and propagation not in _PROPAGATIONS:
            raise InvalidArgument(f"invalid --mount {value!r}: unknown bind-propagation {propagation!r}")
        return MountSpec(MountType.BIND, target, posixpath.normpath(source), read_only, propagation)
    if source:
        check_name_length(source, "--mount volume name")
    if source and not VOLUME_NAME_RE.match(source):
        raise InvalidArgument(f"invalid --mount {value!r}: {source!r} is not a valid volume name")
    return MountSpec(MountType.VOLUME, target, source, read_only)


def parse_duration(value: str, flag: str) -> float:
    """Go-style durations as Docker's health flags take them: "30s", "1m30s", "500ms", "2h"."""
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidArgument(f"invalid {flag} {value!r}: expected a duration such as 30s or 1m30s")
    return total


def seconds_from_nanoseconds(ns: int, flag: str) -> float:
    """A typed duration (google.protobuf.Duration, from a controller that parsed "30s") in seconds, as
    `parse_duration` gives them; never negative."""
    if ns < 0:
        raise InvalidArgument(f"invalid {flag}: a duration must not be negative")
    return ns / 1e9


def whole_seconds_from_nanoseconds(ns: int) -> int:
    """A typed stop timeout in the whole seconds the runtime takes, rounded away from zero: a fraction
    of a second more waits the next whole second rather than less, and a negative one stays negative
    so that it is refused (or treated) as the integer field's negative would be."""
    seconds = -(-abs(ns) // 1_000_000_000)
    return seconds if ns >= 0 else -seconds


def check_name(name: str) -> str:
    """Docker's container-name rule; the leading "/" Docker shows is dropped."""
    check_name_length(name.lstrip("/"), "container name")
    if name and not CONTAINER_NAME_RE.match(name):
        raise InvalidArgument(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


def check_mounts(mounts: tuple[MountSpec, ...]) -> None:
    seen: set[str] = set()
    for m in mounts:
        if m.target in seen:
            raise InvalidArgument(f"duplicate mount point: {m.target}")
        seen.add(m.target)


def options_to_dict(opts: RunOptions) -> dict[str, Any]:
    """JSON-safe form for the container record (enums as strings, tuples as lists)."""
    return dataclasses.asdict(opts)


def options_from_dict(data: dict[str, Any]) -> RunOptions:
    """Inverse of `options_to_dict`; unknown keys (from a newer agent) are ignored."""
    d = dict(data)
    d["mounts"] = tuple(
        MountSpec(
            MountType(m["type"]),
            m["target"],
            m.get("source", ""),
            m.get("read_only", False),
            m.get("propagation", ""),
            tuple(m.get("tmpfs_options", ())),
        )
        for m in d.get("mounts", ())
    )
    d["ulimits"] = tuple(Ulimit(u["name"], u["soft"], u["hard"]) for u in d.get("ulimits", ()))
    r = d.get("restart") or {}
    d["restart"] = RestartPolicy(RestartMode(r.get("mode", "no")), int(r.get("max_retries", 0)))
    h = d.get("health")
    d["health"] = None if h is None else HealthConfig(**{**h, "test": tuple(h.get("test", ()))})
    for key in ("command", "entrypoint"):
        if d.get(key) is not None:
            d[key] = tuple(d[key])
    for key in ("env", "cap_add", "cap_drop", "publish", "network_aliases"):
        d[key] = tuple(d.get(key, ()))
    known = {f.name for f in dataclasses.fields(RunOptions)}
    return RunOptions(**{k: v for k, v in d.items() if k in known})
