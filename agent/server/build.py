"""The Build servicer: validate the options, hand the context stream to the BuildManager, stream progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from agent.api.v1 import build_pb2, build_pb2_grpc
from agent.build.builder import (
    ENTITLEMENTS,
    BuildEvent,
    BuildOptions,
    BuildResult,
    CachedEvent,
    LayerEvent,
    MessageEvent,
    OutputEvent,
    StepEvent,
)
from agent.build.manager import BuildManager
from agent.errors import InvalidArgument
from agent.images.store import normalize_name
from agent.oci.platform import Platform
from agent.registry.auth import Credentials

_DONE = object()


def _options(message: build_pb2.BuildOptions) -> BuildOptions:
    if not message.dockerfile.strip():
        raise InvalidArgument("the Dockerfile is empty")
    for tag in message.tags:
        normalize_name(tag)  # a bad -t fails before anything is uploaded or run
    if message.platform:
        Platform.parse(message.platform)
    for name in message.allow:
        if name not in ENTITLEMENTS:
            raise InvalidArgument(
                f"--allow {name}: unknown entitlement (this agent grants: {', '.join(sorted(ENTITLEMENTS))})"
            )
    return BuildOptions(
        dockerfile=message.dockerfile,
        dockerfile_name=message.dockerfile_name or "Dockerfile",
        tags=tuple(message.tags),
        build_args=dict(message.build_args),
        target=message.target or None,
        no_cache=message.no_cache,
        platform=message.platform or None,
        labels=dict(message.labels),
        registry_auth={
            host: Credentials(c.username, c.password)
            for host, c in message.registry_auth.items()
            if c.username
        },
        allow=frozenset(message.allow),
    )


def _event(event: BuildEvent) -> build_pb2.BuildResponse:
    if isinstance(event, StepEvent):
        step = build_pb2.BuildStep(number=event.number, total=event.total, instruction=event.text)
        return build_pb2.BuildResponse(step=step)
    if isinstance(event, OutputEvent):
        return build_pb2.BuildResponse(output=build_pb2.BuildOutput(line=event.line))
    if isinstance(event, CachedEvent):
        return build_pb2.BuildResponse(cached=build_pb2.BuildCached(number=event.number))
    if isinstance(event, LayerEvent):
        layer = build_pb2.BuildLayer(digest=event.digest, size=event.size, diff_size=event.diff_size)
        return build_pb2.BuildResponse(layer=layer)
    assert isinstance(event, MessageEvent)
    return build_pb2.BuildResponse(message=build_pb2.BuildMessage(text=event.text, warning=event.warning))


def _result(result: BuildResult) -> build_pb2.BuildResponse:
    return build_pb2.BuildResponse(
        result=build_pb2.BuildResult(
            image_id=result.image_id,
            manifest_digest=result.manifest_digest,
            tags=list(result.tags),
            layers=result.layers,
            cached_steps=result.cached_steps,
            run_steps=result.run_steps,
        )
    )


class BuildServicer(build_pb2_grpc.BuildServicer):
    def __init__(self, builds: BuildManager) -> None:
        self._builds = builds

    async def Build(
        self, request_iterator: AsyncIterator[build_pb2.BuildRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[build_pb2.BuildResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("options"):
            raise InvalidArgument("a build starts with its options (the Dockerfile), then the context")
        options = _options(first.options)

        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.HasField("options"):
                    raise InvalidArgument("build options were sent twice")
                yield message.context_chunk

        queue: asyncio.Queue[build_pb2.BuildResponse | object] = asyncio.Queue()
        task = asyncio.ensure_future(
            self._builds.build(options, chunks(), lambda e: queue.put_nowait(_event(e)))
        )
        task.add_done_callback(lambda _: queue.put_nowait(_DONE))
        try:
            while (item := await queue.get()) is not _DONE:
                assert isinstance(item, build_pb2.BuildResponse)
                yield item
            yield _result(task.result())
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def PruneBuildCache(
        self, request: build_pb2.PruneBuildCacheRequest, context: grpc.aio.ServicerContext
    ) -> build_pb2.PruneBuildCacheResponse:
        removed = await asyncio.to_thread(self._builds.prune_cache)
        return build_pb2.PruneBuildCacheResponse(entries_removed=removed)
