"""Secrets of releases on the agent, and the update lock that holds a release's switch.

Secrets arrive with Stage (StageReleaseRequest.materials: name, version, value) over mTLS. They are kept
under the data root (`secrets/NAME@VERSION`, 0600) encrypted with AES-256-GCM under a per-agent key
(`secrets.key`, made 0600 at first use in the TLS dir, or the config dir of an agent without TCP
listeners); the associated data is NAME@VERSION, so a file renamed to another version does not open.

A container reads a secret as a file: the agent writes the value to a tmpfs of its own, mounted 0700 at
`/run/dockyard/secrets` (next to its socket, out of the data root), as `<container>/<target>` with the
mode and owner the release asks for, and binds that file read-only at `/run/secrets/<target>`. Nothing in
plain text touches a disk, and only the path appears in the container's config (inspect shows the mount,
never the value). The files are written again before a release's containers start (a reboot empties the
tmpfs). Values are never logged, put in events or errors; the audit log records the names and versions
of a Stage's materials only (their values are redacted).

The update lock: a file `<locks>/RELEASE.lock` (`/run/dockyard/locks/`, next to the agent's socket)
made by an operator, or by a container of the release that asked for `update_lock` (the release's own
directory `<locks>/RELEASE/` is bound at `/run/dockyard/locks` inside it, so it holds
`/run/dockyard/locks/RELEASE.lock` there). While one exists, Activate refuses to switch the release
(FAILED_PRECONDITION "release NAME is locked by …") unless forced; the agent's own revert is not held.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import agent.log
from agent.errors import FailedPrecondition, InvalidArgument
from agent.libc import LIBC
from agent.oci.files import write_atomic
from agent.runtime.options import MountSpec, MountType

log = agent.log.get(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
SECRETS_DIR = "/run/secrets"
LOCKS_IN_CONTAINER = "/run/dockyard/locks"
MAX_VALUE = 512 * 1024
TMPFS_SIZE = "16m"
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8


@dataclass(frozen=True)
class SecretRef:
    """A secret file of a container (ReleaseContainer.secrets)."""

    name: str
    version: str
    target: str
    mode: int = 0o400
    uid: int = 0
    gid: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "target": self.target,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SecretRef:
        def number(key: str, default: int) -> int:
            value = data.get(key, default)
            return value if isinstance(value, int) else default

        return cls(
            str(data["name"]),
            str(data["version"]),
            str(data.get("target") or data["name"]),
            number("mode", 0o400),
            number("uid", 0),
            number("gid", 0),
        )


def check_ref(ref: SecretRef, where: str) -> SecretRef:
    for what, value, pattern in (("name", ref.name, NAME_RE), ("version", ref.version, VERSION_RE)):
        if not pattern.match(value):
            raise InvalidArgument(f"{where}: invalid secret {what} {value!r}")
    if not NAME_RE.match(ref.target):
        raise InvalidArgument(f"{where}: invalid secret file name {ref.target!r} (no slashes)")
    if not 0 <= ref.mode <= 0o777:
        raise InvalidArgument(f"{where}: secret {ref.name}: mode {ref.mode:o} is not a file mode")
    return ref


class Vault:
    """Secret values at rest: encrypted files under the data root, the key in the TLS/config dir."""

    def __init__(self, root: Path, key_path: Path) -> None:
        self.root = root
        self.key_path = key_path
        self._aead: AESGCM | None = None

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            try:
                key = self.key_path.read_bytes()
            except FileNotFoundError:
                key = AESGCM.generate_key(bit_length=256)
                self.key_path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.key_path, key, mode=0o600)
                log.info("secrets.key_created", path=str(self.key_path))
            if len(key) != 32:
                raise FailedPrecondition(f"secrets key {self.key_path} is not a 256-bit key")
            self._aead = AESGCM(key)
        return self._aead

    def _path(self, name: str, version: str) -> Path:
        return self.root / f"{name}@{version}"

    def has(self, name: str, version: str) -> bool:
        return self._path(name, version).exists()

    def put(self, name: str, version: str, value: bytes) -> None:
        check_ref(SecretRef(name, version, name), "secret")
        if len(value) > MAX_VALUE:
            raise InvalidArgument(f"secret {name}: {len(value)} bytes, at most {MAX_VALUE}")
        nonce = os.urandom(12)
        sealed = nonce + self._cipher().encrypt(nonce, value, f"{name}@{version}".encode())
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self._path(name, version), sealed, mode=0o600)

    def get(self, name: str, version: str) -> bytes:
        try:
            sealed = self._path(name, version).read_bytes()
        except FileNotFoundError:
            raise FailedPrecondition(
                f"secret {name} version {version} was never delivered to this agent (stage it again)"
            ) from None
        try:
            return self._cipher().decrypt(sealed[:12], sealed[12:], f"{name}@{version}".encode())
        except InvalidTag:
            raise FailedPrecondition(
                f"secret {name} version {version} does not decrypt with {self.key_path}"
            ) from None

    def prune(self, keep: Iterable[tuple[str, str]]) -> list[str]:
        """Remove stored values no revision names any more; their file names."""
        wanted = {f"{n}@{v}" for n, v in keep}
        removed = []
        for path in self.root.glob("*@*") if self.root.exists() else []:
            if path.name not in wanted:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed


class SecretFiles:
    """The tmpfs the containers' secret files live on, and the bind mounts for them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _ensure_tmpfs(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.path.ismount(self.root):
            return
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        data = f"mode=0700,size={TMPFS_SIZE}".encode()
        if LIBC.mount(b"tmpfs", str(self.root).encode(), b"tmpfs", flags, data) != 0:
            err = ctypes.get_errno()
            raise FailedPrecondition(f"cannot mount a tmpfs for secrets at {self.root}: {os.strerror(err)}")
        log.info("secrets.tmpfs_mounted", path=str(self.root))

    def write(self, container: str, refs: Iterable[tuple[SecretRef, bytes]]) -> tuple[MountSpec, ...]:
        """Write a container's secret files (again); the read-only bind mounts that show them."""
        items = list(refs)
        if not items:
            return ()
        self._ensure_tmpfs()
        directory = self.root / container
        directory.mkdir(mode=0o755, exist_ok=True)
        mounts = []
        for ref, value in items:
            path = directory / ref.target
            tmp = directory / f".{ref.target}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, value)
                os.fchown(fd, ref.uid, ref.gid)
                os.fchmod(fd, ref.mode)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            mounts.append(MountSpec(MountType.BIND, f"{SECRETS_DIR}/{ref.target}", str(path), read_only=True))
        return tuple(mounts)

    def remove(self, container: str) -> None:
        directory = self.root / container
        if directory.is_dir():
            for path in directory.iterdir():
                path.unlink(missing_ok=True)
            directory.rmdir()


class Locks:
    """Update locks: `<root>/RELEASE.lock` on the host, `<root>/RELEASE/RELEASE.lock` from a container."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def holder(self, release: str) -> str:
        """'' when the release may switch, else who holds it (the lock file and its first line)."""
        for path in (self.root / f"{release}.lock", self.root / release / f"{release}.lock"):
            try:
                with open(path, "rb") as f:
                    first = f.read(200).decode(errors="replace").splitlines()
            except FileNotFoundError:
                continue
            except OSError as exc:
                return f"{path} ({exc.strerror})"
            return f"{path}" + (f" ({first[0].strip()})" if first and first[0].strip() else "")
        return ""

    def check(self, release: str) -> None:
        holder = self.holder(release)
        if holder:
            raise FailedPrecondition(f"release {release} is locked by {holder}")

    def mount(self, release: str) -> MountSpec:
        """The release's own lock directory, bound (writable) at /run/dockyard/locks in a container."""
        directory = self.root / release
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        return MountSpec(MountType.BIND, LOCKS_IN_CONTAINER, str(directory))
