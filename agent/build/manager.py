"""BuildManager: the build facade the Build servicer calls; owns `<data_root>/build` and the build cache.

One build = a directory `<data_root>/build/<id>/` holding the received context and the step bundles;
it is removed when the build ends, however it ends (mounts under it are unmounted first). At agent start
anything a killed agent left there — directories, overlay mounts, runtime containers, network
namespaces — is cleaned up. The build holds the image store's operation lock for its whole duration so
garbage collection never takes layers it has written but not yet recorded in an image.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import agent.log
from agent.build import context as context_mod
from agent.build.builder import Builder, BuildOptions, BuildResult, Emit, MessageEvent
from agent.build.cache import BuildCache
from agent.build.runner import NetworkAttacher, StepRunner
from agent.errors import AgentError
from agent.images.manager import ImageManager
from agent.oci import dockerfile as df
from agent.runtime import bundle
from agent.runtime.host import probe
from agent.runtime.spec import HostFacts
from agent.state.db import Database

log = agent.log.get(__name__)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    out: list[str] = []
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            fields = line.split(b" ", 5)
            if len(fields) > 4:
                target = fields[4].decode(errors="replace").replace("\\040", " ")
                if target.startswith(prefix):
                    out.append(target)
    return sorted(out, key=len, reverse=True)


def remove_build_dir(path: Path) -> None:
    """Unmount whatever is still mounted below `path` (deepest first), then delete it. Blocking."""
    for target in _mounts_under(path):  # only step rootfs mounts live here: <step>/rootfs
        with contextlib.suppress(AgentError):
            bundle.unmount_rootfs(bundle.ContainerPaths(Path(target).parent))
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("build.cleanup_failed", path=str(path), error=str(exc))


class BuildManager:
    def __init__(
        self,
        data_root: Path,
        db: Database,
        images: ImageManager,
        *,
        runtime: str = "runc",
        exec_root: Path | None = None,
        cgroup_parent: str = "/dockyard",
        network: NetworkAttacher | None = None,
        host: HostFacts | None = None,
        layer_level: int = 6,
    ) -> None:
        self.root = data_root / "build"
        self.images = images
        self.cache = BuildCache(db)
        self.runner = StepRunner(
            runtime,
            (exec_root or data_root / "run") / "build-runc",
            host or probe(),
            cgroup_parent=cgroup_parent,
            network=network,
        )
        self.layer_level = layer_level
        self.active = 0

    async def start(self) -> None:
        """Reconcile: remove what builds of a previous agent process left behind."""
        await self.runner.reconcile()
        await asyncio.to_thread(self._sweep)

    def _sweep(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in list(self.root.iterdir()):
            remove_build_dir(entry)
            log.info("build.stale_dir_removed", path=str(entry))

    async def build(self, options: BuildOptions, context: AsyncIterator[bytes], emit: Emit) -> BuildResult:
        """Receive the context, run the build, record the image. Errors are AgentErrors naming the line."""
        df.parse(options.dockerfile, options.dockerfile_name)  # a bad Dockerfile fails before the upload
        build_id = secrets.token_hex(6)
        work = self.root / build_id
        self.active += 1
        try:
            work.mkdir(parents=True)
            stats = await context_mod.receive(context, work / "context")
            emit(MessageEvent(f"build context: {stats.files} files, {stats.bytes} bytes"))
            builder = Builder(
                images=self.images,
                cache=self.cache,
                runner=self.runner,
                work_dir=work,
                context_dir=work / "context",
                options=options,
                emit=emit,
                layer_level=self.layer_level,
            )
            async with self.images.operation():
                return await builder.run()
        finally:
            self.active -= 1
            await asyncio.shield(asyncio.to_thread(remove_build_dir, work))

    def prune_cache(self) -> int:
        return self.cache.prune()
