"""A container's directory under the data root: the OCI bundle, its overlayfs rootfs and its own files.

    <data_root>/containers/<id>/
        config.json        the OCI spec (written by `write_config`)
        rootfs/            overlay mount point: lowerdirs from the image, upper = diff/, work = work/
        diff/ work/        the container's writable layer (kept across stop/start, removed with it)
        hostname hosts resolv.conf   bind-mounted into /etc
        ctr.log[.N]        stdout/stderr in CRI (k8s-file) format, rotated
        run/               conmon's persist dir for the current run: `exit`, `oom`; pid files
        exec/<exec-id>/    one directory per exec session
        ctl winsz attach   conmon's control fifos and attach socket (created by conmon)

Mount calls go straight to mount(2)/umount2(2) (no helper processes on the hot path).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agent.log
from agent.errors import Internal, InvalidArgument
from agent.libc import LIBC

log = agent.log.get(__name__)

MNT_DETACH = 2
PAGE_LIMIT = 4096


@dataclass(frozen=True)
class ContainerPaths:
    root: Path

    @classmethod
    def of(cls, data_root: Path, container_id: str) -> ContainerPaths:
        return cls(data_root / "containers" / container_id)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def upper(self) -> Path:
        return self.root / "diff"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def log(self) -> Path:
        return self.root / "ctr.log"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def exit_file(self) -> Path:
        return self.run / "exit"

    @property
    def oom_file(self) -> Path:
        return self.run / "oom"

    @property
    def conmon_pidfile(self) -> Path:
        return self.run / "conmon.pid"

    @property
    def pidfile(self) -> Path:
        return self.run / "init.pid"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    def etc(self, name: str) -> Path:
        return self.root / name


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if LIBC.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def _umount(target: str, flags: int = 0) -> None:
    if LIBC.umount2(target.encode(), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def is_mounted(path: Path) -> bool:
    """True when `path` is a mount point in our mount namespace (checked in /proc/self/mountinfo)."""
    target = str(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ", 5)
            if len(fields) > 4 and fields[4].decode(errors="replace").replace("\\040", " ") == target:
                return True
    return False


def prepare(paths: ContainerPaths) -> None:
    for d in (paths.root, paths.rootfs, paths.upper, paths.work, paths.run, paths.exec_root):
        d.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o711)
    paths.upper.chmod(0o755)  # the container's "/" takes the upper dir's mode: not the agent's umask (0077)


def mount_rootfs(paths: ContainerPaths, lowerdirs: list[Path]) -> None:
    """Mount the overlay (idempotent: an existing mount is kept)."""
    if not lowerdirs:
        raise InvalidArgument("the image has no layers to run")
    if is_mounted(paths.rootfs):
        return
    data = f"lowerdir={':'.join(str(p) for p in lowerdirs)},upperdir={paths.upper},workdir={paths.work}"
    if len(data) >= PAGE_LIMIT:
        raise InvalidArgument(f"the image has too many layers ({len(lowerdirs)}) for one overlay mount")
    try:
        _mount("overlay", str(paths.rootfs), "overlay", 0, data)
    except OSError as exc:
        raise Internal(f"mounting the container's root filesystem failed: {exc.strerror}") from exc


def unmount_rootfs(paths: ContainerPaths) -> None:
    """Unmount the overlay if mounted; falls back to a lazy detach when it is busy."""
    while is_mounted(paths.rootfs):
        try:
            _umount(str(paths.rootfs))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return
            if exc.errno != errno.EBUSY:
                raise Internal(f"unmounting {paths.rootfs} failed: {exc.strerror}") from exc
            log.warning("rootfs.busy", path=str(paths.rootfs))
            _umount(str(paths.rootfs), MNT_DETACH)


def write_config(paths: ContainerPaths, spec: dict[str, Any]) -> None:
    """Written without fsync: a crash before the container is recorded as created discards the bundle."""
    tmp = paths.config.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(spec, indent=1))
    os.replace(tmp, paths.config)


def read_config(paths: ContainerPaths) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(paths.config.read_text())
    return data


def write_etc_files(paths: ContainerPaths, hostname: str, *, host_network: bool) -> dict[str, str]:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf for the container; returns target → host path.

    Made 0644 explicitly: any user in the container reads them, whatever the agent's umask (0077).
    """
    paths.etc("hostname").write_text(hostname + "\n")
    if host_network:
        hosts = _read_or("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    else:
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts += f"127.0.1.1\t{hostname}\n"
    paths.etc("hosts").write_text(hosts)
    resolv = _read_or("/etc/resolv.conf", "")
    if not host_network:
        # no network: keep search/options lines, nameservers would be unreachable anyway
        resolv = "".join(line + "\n" for line in resolv.splitlines() if not line.startswith("nameserver"))
    paths.etc("resolv.conf").write_text(resolv)
    for name in ("hostname", "hosts", "resolv.conf"):
        paths.etc(name).chmod(0o644)
    return {f"/etc/{n}": str(paths.etc(n)) for n in ("hostname", "hosts", "resolv.conf")}


def _read_or(path: str, default: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return default


def remove(paths: ContainerPaths) -> None:
    """Unmount and delete everything the container owns on disk."""
    unmount_rootfs(paths)
    shutil.rmtree(paths.root, ignore_errors=True)
    if paths.root.exists():
        shutil.rmtree(paths.root)

