"""Reading client-streaming requests whose `msg` oneof carries a header first, then (maybe) data.

Shared by the servicers so that every such RPC rejects a missing or misplaced header the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agent.errors import InvalidArgument


async def first_message(requests: AsyncIterator[Any], kind: str) -> Any:
    """The first message's `kind` field; InvalidArgument if the stream is empty or starts otherwise."""
    try:
        req = await anext(aiter(requests))
    except StopAsyncIteration:
        raise InvalidArgument(f"the first message must be {kind!r}") from None
    if req.WhichOneof("msg") != kind:
        raise InvalidArgument(f"the first message must be {kind!r}")
    return getattr(req, kind)


async def data_chunks(requests: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The `data` of the remaining messages; InvalidArgument at a second header."""
    async for req in requests:
        if req.WhichOneof("msg") != "data":
            raise InvalidArgument("only the first message may be a header")
        yield req.data
