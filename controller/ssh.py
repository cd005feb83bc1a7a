"""The controller's only asyncssh user: verified connections, remote commands and SFTP, mapped errors.

Host keys are always verified against the controller's own known_hosts file
(`$DOCKYARD_CONFIG_DIR/known_hosts`, OpenSSH format). An unknown key is refused unless the caller
accepts new keys, in which case it is recorded; a key that differs from a recorded one is always
refused, loudly, because that is what an attacker in the middle looks like.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.utils import CryptographyDeprecationWarning

# asyncssh still names cryptography's DSA types, which cryptography deprecates on access: five warnings
# on every bootstrap that no user can act on.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"asyncssh\.")
import asyncssh  # noqa: E402

from controller.errors import ControllerError  # noqa: E402

DEFAULT_CONNECT_TIMEOUT = 15.0
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SshError(ControllerError):
    """SSH to a host failed; the message says why in words a user can act on."""


class HostKeyUnknown(SshError):
    pass


class HostKeyChanged(SshError):
    pass


class SshAuthFailed(SshError):
    pass


class SshUnreachable(SshError):
    pass


class RemoteCommandFailed(SshError):
    """A command on the host exited non-zero; carries its exit status and stderr tail."""

    def __init__(self, command: str, exit_status: int, stderr: str) -> None:
        tail = "; ".join(line.strip() for line in stderr.strip().splitlines()[-5:] if line.strip())
        super().__init__(f"`{command}` failed (exit {exit_status})" + (f": {tail}" if tail else ""))
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr


@dataclass(frozen=True)
class SshTarget:
    address: str
    port: int = 22
    user: str = "root"
    key: Path | None = None


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class KnownHosts:
    """The controller's known_hosts file: lookup and append (the file is only ever appended to)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def pattern(address: str, port: int) -> str:
        return address if port == 22 else f"[{address}]:{port}"

    def load(self) -> asyncssh.SSHKnownHosts:
        try:
            return asyncssh.import_known_hosts(self.path.read_text())
        except FileNotFoundError:
            return asyncssh.import_known_hosts("")

    def keys_for(self, address: str, port: int) -> list[asyncssh.SSHKey]:
        """Keys recorded for exactly this address and port (plain `host` or `[host]:port` patterns)."""
        want = self.pattern(address, port)
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        keys = []
        for line in lines:
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#") and want in fields[0].split(","):
                try:
                    keys.append(asyncssh.import_public_key(" ".join(fields[1:3])))
                except asyncssh.KeyImportError:
                    continue
        return keys

    def add(self, address: str, port: int, key: asyncssh.SSHKey) -> None:
        line = f"{self.pattern(address, port)} {key.export_public_key().decode().strip()}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class _Verifier(asyncssh.SSHClient):
    """Called by asyncssh only for a key that is not already trusted: decides unknown vs changed."""

    def __init__(self, known: KnownHosts, accept_new: bool) -> None:
        self.known = known
        self.accept_new = accept_new
        self.verdict: str = ""
        self.new_key: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        if self.known.keys_for(host, port):
            self.verdict = "changed"
            return False
        if not self.accept_new:
            self.verdict = "unknown"
            return False
        self.verdict = "new"
        self.new_key = key
        return True


class Session:
    """One authenticated SSH connection to a host: run commands, move files over SFTP."""

    def __init__(self, conn: asyncssh.SSHClientConnection, target: SshTarget) -> None:
        self._conn = conn
        self.target = target

    async def run(
        self, command: str, *, input: str | None = None, check: bool = True, time_limit: float = 300
    ) -> CommandResult:
        """Run `command` under `sh` with a minimal environment (no profile); non-zero exit raises."""
        wrapped = f"env -i PATH={_PATH} LC_ALL=C.UTF-8 sh -c {shlex.quote(command)}"
        try:
            result = await self._conn.run(wrapped, input=input, check=False, timeout=time_limit)
        except TimeoutError as exc:  # asyncssh's TimeoutError is also a ProcessError: catch it first
            raise SshError(f"`{command}` timed out after {time_limit:g}s") from exc
        except asyncssh.ProcessError as exc:
            raise SshError(f"`{command}`: {exc.reason}") from exc
        except (asyncssh.Error, OSError) as exc:
            raise SshUnreachable(f"connection lost while running `{command}`: {exc}") from exc
        status = result.exit_status if result.exit_status is not None else -1
        out = _text(result.stdout)
        err = _text(result.stderr)
        if check and status != 0:
            raise RemoteCommandFailed(command, status, err)
        return CommandResult(status, out, err)

    async def put(self, files: list[Path], remote_dir: str) -> None:
        """Copy local files into `remote_dir` (which must exist) over one SFTP session."""
        try:
            async with self._conn.start_sftp_client() as sftp:
                await sftp.put([str(f) for f in files], remote_dir, preserve=False)
        except (asyncssh.Error, OSError) as exc:
            raise SshError(f"upload to {remote_dir} failed: {exc}") from exc

    async def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        """Write `remote` atomically: a temp file next to it, chmod, then rename over it."""
        tmp = f"{remote}.tmp-dockyard"
        try:
            async with self._conn.start_sftp_client() as sftp:
                async with sftp.open(tmp, "wb") as f:
                    await f.write(data)
                await sftp.chmod(tmp, mode)
                await sftp.posix_rename(tmp, remote)
        except (asyncssh.Error, OSError) as exc:
            raise SshError(f"writing {remote} failed: {exc}") from exc


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else ""


@asynccontextmanager
async def connect(
    target: SshTarget,
    known_hosts: KnownHosts,
    *,
    accept_new: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[Session]:
    """Open a verified connection (key authentication only); every failure becomes an SshError."""
    verifier = _Verifier(known_hosts, accept_new)
    where = f"{target.user}@{KnownHosts.pattern(target.address, target.port)}"
    try:
        conn = await asyncssh.connect(
            target.address,
            target.port,
            username=target.user,
            known_hosts=known_hosts.load(),
            client_factory=lambda: verifier,
            client_keys=[str(target.key)] if target.key else (),
            preferred_auth="publickey",
            agent_path=None,
            config=[],
            connect_timeout=connect_timeout,
            login_timeout=connect_timeout,
            keepalive_interval=30,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise _host_key_error(verifier.verdict, where, known_hosts) from exc
    except asyncssh.PermissionDenied as exc:
        raise SshAuthFailed(f"ssh {where}: authentication refused (key only): {exc.reason}") from exc
    except TimeoutError as exc:
        raise SshUnreachable(f"ssh {where}: timed out after {connect_timeout:g}s") from exc
    except (asyncssh.Error, OSError) as exc:
        raise SshUnreachable(f"ssh {where}: {exc}") from exc
    try:
        if verifier.verdict == "new" and verifier.new_key is not None:
            known_hosts.add(target.address, target.port, verifier.new_key)
        yield Session(conn, target)
    finally:
        conn.close()
        await asyncio.shield(conn.wait_closed())


def _host_key_error(verdict: str, where: str, known_hosts: KnownHosts) -> SshError:
    if verdict == "changed":
        return HostKeyChanged(
            f"ssh {where}: HOST KEY CHANGED: the key offered differs from the one recorded in "
            f"{known_hosts.path}; this may be an attack. Refusing to connect. If the host was "
            "reinstalled, remove its line from that file and connect again."
        )
    return HostKeyUnknown(
        f"ssh {where}: unknown host key (not in {known_hosts.path}); verify it and rerun with "
        "--accept-new-host-keys to record it"
    )
