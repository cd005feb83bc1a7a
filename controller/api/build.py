"""The Build service: a Dockerfile build fed by the context's tar stream, and the build cache."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field

from agent.api.v1 import build_pb2 as pb
from agent.api.v1 import images_pb2
from controller.client import AgentClient, rpc
from controller.credentials import Login

_SERVICE = pb.DESCRIPTOR.services_by_name["Build"]
BUILD = rpc(_SERVICE, "Build", pb.BuildRequest, pb.BuildResponse)
PRUNE_BUILD_CACHE = rpc(_SERVICE, "PruneBuildCache", pb.PruneBuildCacheRequest, pb.PruneBuildCacheResponse)


@dataclass(frozen=True)
class BuildOptions:
    dockerfile: str  # the text
    dockerfile_name: str  # for messages: "Dockerfile", "app/Containerfile"
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    platform: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    registry_auth: Mapping[str, Login] = field(default_factory=dict)  # registry host → login
    allow: tuple[str, ...] = ()  # entitlements (network.host)


@dataclass(frozen=True)
class Step:
    number: int
    total: int
    instruction: str


@dataclass(frozen=True)
class OutputLine:
    line: str


@dataclass(frozen=True)
class Cached:
    number: int


@dataclass(frozen=True)
class LayerMade:
    digest: str  # "" when the step changed nothing
    size: int
    diff_size: int


@dataclass(frozen=True)
class Message:
    text: str
    warning: bool


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    manifest_digest: str
    tags: tuple[str, ...]
    layers: int
    cached_steps: int
    run_steps: int


BuildEvent = Step | OutputLine | Cached | LayerMade | Message | BuildResult


class BuildApi:
    """Typed calls to one agent's Build service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def build(self, options: BuildOptions, context: AsyncIterable[bytes]) -> AsyncIterator[BuildEvent]:
        """Run a build with `context` (a tar stream); its events, the last one a BuildResult."""

        async def requests() -> AsyncIterator[pb.BuildRequest]:
            yield pb.BuildRequest(options=_options(options))
            async for chunk in context:
                yield pb.BuildRequest(context_chunk=chunk)

        async for msg in self.client.bidi(BUILD, requests(), timeout=None):
            kind = msg.WhichOneof("event")
            if kind == "result":
                r = msg.result
                yield BuildResult(
                    r.image_id, r.manifest_digest, tuple(r.tags), r.layers, r.cached_steps, r.run_steps
                )
            elif kind == "step":
                yield Step(msg.step.number, msg.step.total, msg.step.instruction)
            elif kind == "output":
                yield OutputLine(msg.output.line)
            elif kind == "cached":
                yield Cached(msg.cached.number)
            elif kind == "layer":
                yield LayerMade(msg.layer.digest, msg.layer.size, msg.layer.diff_size)
            elif kind == "message":
                yield Message(msg.message.text, msg.message.warning)

    async def prune_cache(self) -> int:
        """Forget every build cache entry; how many there were."""
        r = await self.client.unary(PRUNE_BUILD_CACHE, pb.PruneBuildCacheRequest())
        return r.entries_removed


def _options(o: BuildOptions) -> pb.BuildOptions:
    return pb.BuildOptions(
        dockerfile=o.dockerfile,
        dockerfile_name=o.dockerfile_name,
        tags=list(o.tags),
        build_args=dict(o.build_args),
        target=o.target,
        no_cache=o.no_cache,
        platform=o.platform,
        labels=dict(o.labels),
        registry_auth={
            host: images_pb2.RegistryCredentials(username=login.username, password=login.password)
            for host, login in o.registry_auth.items()
        },
        allow=list(o.allow),
    )
