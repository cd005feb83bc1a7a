"""The wheelhouse: every wheel the agent needs, built once on the controller so hosts need no internet.

Built with `pip wheel` (the project plus its dependencies, plus pip itself so a host can install without
ensurepip) into `$DOCKYARD_CONFIG_DIR/wheelhouse/<key>/`, where the key covers the project's sources,
the Python version and the machine architecture. A host whose Python or architecture differs from the
controller's gets a wheelhouse of binary wheels for its platform (`pip download --platform`).
The digest over all wheels identifies an agent build: it is what a host records as installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from controller.errors import ControllerError

_SOURCE_DIRS = ("agent", "controller", "proto", "deploy")  # deploy/: data files of the wheel
_SOURCE_SUFFIXES = (".py", ".pyi", ".proto", ".toml", ".sh", ".service", ".json", ".typed")


class WheelhouseError(ControllerError):
    pass


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    digest: str

    @property
    def wheels(self) -> list[Path]:
        return sorted(self.path.glob("*.whl"))

    @property
    def pip_wheel(self) -> Path:
        found = [w for w in self.wheels if w.name.startswith("pip-")]
        if not found:
            raise WheelhouseError(f"wheelhouse {self.path} has no pip wheel")
        return found[0]


def project_root() -> Path:
    """The source tree the controller runs from (an editable install or a checkout)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").exists():
        raise WheelhouseError(f"no project source at {root}: give --wheelhouse DIR with prebuilt wheels")
    return root


def source_key(root: Path) -> str:
    """A hash of the project's sources: a change to any of them means a new agent build."""
    h = hashlib.sha256((root / "pyproject.toml").read_bytes())
    for top in _SOURCE_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def local_platform() -> tuple[str, str]:
    return f"{sys.version_info.major}.{sys.version_info.minor}", platform.machine()


def wheel_sha256(wheel: Path) -> str:
    """A wheel's content hash: the project's own wheel keeps its name (and version) across builds."""
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


def digest_of(path: Path) -> str:
    h = hashlib.sha256()
    for wheel in sorted(path.glob("*.whl")):
        h.update(wheel.name.encode() + b"\0")
        h.update(bytes.fromhex(wheel_sha256(wheel)))
    return h.hexdigest()


def existing(path: Path) -> Wheelhouse:
    """Use a prebuilt directory of wheels as is (`--wheelhouse DIR`)."""
    if not any(path.glob("dockyard-*.whl")):
        raise WheelhouseError(f"{path} holds no dockyard wheel")
    wh = Wheelhouse(path, digest_of(path))
    wh.pip_wheel  # noqa: B018 - validates early
    return wh


async def build(cache: Path, python: str, arch: str) -> Wheelhouse:
    """Return the cached wheelhouse for (sources, python, arch), building it first if needed."""
    root = project_root()
    key = f"{source_key(root)[:16]}-py{python}-{arch}"
    dest = cache / key
    if (dest / ".complete").exists():
        return Wheelhouse(dest, (dest / ".complete").read_text().strip())
    tmp = cache / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Build from a clean copy: setuptools would reuse (and ship stale files from) the tree's build/.
    source = cache / f".{key}.src-{os.getpid()}"
    shutil.rmtree(source, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, source / name)
    for top in _SOURCE_DIRS:
        shutil.copytree(root / top, source / top, ignore=skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    try:
        if (python, arch) == local_platform():
            await _run([*pip, "wheel", "--wheel-dir", str(tmp), str(source), "pip"])
        else:
            await _run([*pip, "wheel", "--no-deps", "--wheel-dir", str(tmp), str(source)])
            await _download_for(pip, tmp, python, arch)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    digest = digest_of(tmp)
    (tmp / ".complete").write_text(digest + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return Wheelhouse(dest, digest)


async def _download_for(pip: list[str], tmp: Path, python: str, arch: str) -> None:
    """Binary wheels of the dependencies for another Python version or architecture."""
    py_nodot = python.replace(".", "")
    await _run(
        [*pip, "download", "--dest", str(tmp), "--only-binary=:all:", "--implementation", "cp"]
        + ["--python-version", python, "--abi", f"cp{py_nodot}", "--abi", "abi3", "--abi", "none"]
        + ["--platform", f"manylinux2014_{arch}", "--platform", f"manylinux_2_28_{arch}"]
        + ["--platform", f"manylinux_2_34_{arch}", "--platform", "any"]
        + [str(w) for w in tmp.glob("dockyard-*.whl")]
        + ["pip"]
    )


async def _run(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        tail = "; ".join(err.decode(errors="replace").strip().splitlines()[-5:])
        raise WheelhouseError(f"building the wheelhouse failed ({' '.join(argv[3:6])}…): {tail}")
