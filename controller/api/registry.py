"""The registry side of the Images service: pull, push, resolving a tag, and checking a login. The agent
talks to the registry; the credentials (from controller/credentials.py) travel inside each request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from agent.api.v1 import images_pb2 as pb
from controller.api.images import Image, image
from controller.client import AgentClient, rpc
from controller.credentials import Login

_SERVICE = pb.DESCRIPTOR.services_by_name["Images"]
PULL = rpc(_SERVICE, "Pull", pb.PullImageRequest, pb.PullImageResponse)
PUSH = rpc(_SERVICE, "Push", pb.PushImageRequest, pb.PushImageResponse)
CHECK_LOGIN = rpc(_SERVICE, "CheckLogin", pb.CheckLoginRequest, pb.CheckLoginResponse)
RESOLVE = rpc(_SERVICE, "Resolve", pb.ResolveImageRequest, pb.ResolveImageResponse)

_STATES = {
    pb.TRANSFER_STATE_WAITING: "waiting",
    pb.TRANSFER_STATE_DOWNLOADING: "downloading",
    pb.TRANSFER_STATE_EXTRACTING: "extracting",
    pb.TRANSFER_STATE_EXISTS: "exists",
    pb.TRANSFER_STATE_DONE: "done",
    pb.TRANSFER_STATE_UPLOADING: "uploading",
    pb.TRANSFER_STATE_MOUNTED: "mounted",
}


@dataclass(frozen=True)
class Progress:
    """One layer or blob moving: `current` of `total` bytes."""

    digest: str
    state: str  # waiting | downloading | extracting | exists | done | uploading | mounted
    current: int
    total: int


@dataclass(frozen=True)
class Resolved:
    """A pull's reference resolved to one platform's manifest."""

    reference: str
    digest: str
    platform: str
    layers: int


@dataclass(frozen=True)
class ResolvedImage:
    """A reference resolved in its registry by the agent, nothing pulled."""

    reference: str  # normalized
    digest: str  # the manifest for the agent's (or the asked) platform: `repository@digest` pulls it
    size: int  # its layers, compressed
    media_type: str
    index_digest: str | None
    platform: str  # the index entry's platform ("" without an index)


@dataclass(frozen=True)
class Pulled:
    image: Image
    downloaded_bytes: int


@dataclass(frozen=True)
class Pushed:
    reference: str
    digest: str
    uploaded_bytes: int


class RegistryApi:
    """Typed calls to one agent's registry operations."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def pull(
        self, reference: str, *, platform: str = "", login: Login | None = None
    ) -> AsyncIterator[Resolved | Progress | Pulled]:
        """The pull as it happens; it ends with Pulled (unless the agent ends it early)."""
        request = pb.PullImageRequest(reference=reference, platform=platform, credentials=_credentials(login))
        async for message in self.client.server_stream(PULL, request):
            kind = message.WhichOneof("event")
            if kind == "progress":
                yield _progress(message.progress)
            elif kind == "resolved":
                r = message.resolved
                yield Resolved(r.reference, r.digest, r.platform, len(r.layers))
            elif kind == "finished":
                yield Pulled(image(message.finished.image), message.finished.downloaded_bytes)

    async def push(self, reference: str, *, login: Login | None = None) -> AsyncIterator[Progress | Pushed]:
        """The push as it happens; it ends with Pushed (unless the agent ends it early)."""
        request = pb.PushImageRequest(reference=reference, credentials=_credentials(login))
        async for message in self.client.server_stream(PUSH, request):
            kind = message.WhichOneof("event")
            if kind == "progress":
                yield _progress(message.progress)
            elif kind == "finished":
                f = message.finished
                yield Pushed(f.reference, f.digest, f.uploaded_bytes)

    async def resolve(
        self, reference: str, *, platform: str = "", login: Login | None = None, timeout: float | None = 60.0
    ) -> ResolvedImage:
        """The digest a pull of `reference` would fetch on that agent, without pulling (rollouts pin tags)."""
        credentials = _credentials(login)
        request = pb.ResolveImageRequest(reference=reference, platform=platform, credentials=credentials)
        r = await self.client.unary(RESOLVE, request, timeout=timeout)
        return ResolvedImage(r.reference, r.digest, r.size, r.media_type, r.index_digest or None, r.platform)

    async def check_login(self, registry: str, login: Login, *, timeout: float) -> None:
        """Raises unless `registry` accepts `login` (the agent asks it)."""
        request = pb.CheckLoginRequest(registry=registry, credentials=_credentials(login))
        await self.client.unary(CHECK_LOGIN, request, timeout=timeout)


def _credentials(login: Login | None) -> pb.RegistryCredentials | None:
    return None if login is None else pb.RegistryCredentials(username=login.username, password=login.password)


def _progress(p: pb.TransferProgress) -> Progress:
    return Progress(p.digest, _STATES.get(p.state, "waiting"), p.current, p.total)
