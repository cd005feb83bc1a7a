"""Stage: make every image of a revision present, touching nothing that runs.

Each image is pinned by digest; one already stored is taken as it is, any other is pulled by digest
through ImageManager (the same path as `dockyard pull`) with its space check on: the data root's free
space is compared with what the missing layers need and the pull is refused (RESOURCE_EXHAUSTED, with
the numbers) before a byte is downloaded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from agent.errors import NotFound
from agent.images.manager import ImageManager
from agent.images.pull import LayerProgress, PullFinished, PullResolved
from agent.releases.spec import ReleaseSpec


@dataclass(frozen=True)
class StageProgress:
    message: str
    bytes_done: int = 0
    bytes_total: int = 0
    revision: int = 0
    done: bool = False


@dataclass
class Staged:
    """Filled while staging: container name → the manifest digest it will run."""

    digests: dict[str, str]


async def pull_images(
    images: ImageManager, spec: ReleaseSpec, staged: Staged
) -> AsyncIterator[StageProgress]:
    """Make each distinct image present, in the spec's order; progress for people on the way."""
    by_image: dict[str, list[str]] = {}
    for c in spec.containers:
        by_image.setdefault(c.options.image, []).append(c.name)
    for ref, names in by_image.items():
        try:
            digest = images.get(ref).digest
            yield StageProgress(f"{ref}: present")
        except NotFound:
            digest = ""
            async for progress in _pull(images, ref):
                if isinstance(progress, str):
                    digest = progress
                else:
                    yield progress
        for name in names:
            staged.digests[name] = digest


async def _pull(images: ImageManager, ref: str) -> AsyncIterator[StageProgress | str]:
    """Progress of one pull, then the stored image's digest (a str) last."""
    layers: dict[str, tuple[int, int]] = {}
    yield StageProgress(f"pulling {ref}")
    async for event in images.pull(ref, check_space=True):
        if isinstance(event, PullResolved):
            layers = {layer.digest: (0, layer.size) for layer in event.layers}
        elif isinstance(event, LayerProgress):
            layers[event.digest] = (event.current, event.total)
            done = sum(c for c, _ in layers.values())
            total = sum(t for _, t in layers.values())
            yield StageProgress(f"pulling {ref}", done, total)
        elif isinstance(event, PullFinished):
            total = sum(t for _, t in layers.values())
            yield StageProgress(f"{ref}: pulled", total, total)
            yield event.record.digest
