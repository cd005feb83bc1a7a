"""Cutting a list reply into pages for the `ListStream` RPCs.

A unary list reply grows with every record and fails as a whole once it passes gRPC's message limit
(`Sent message larger than max`), for every caller. A stream of pages of about `limits.LIST_PAGE_BYTES`
each never does: a record bigger than a page simply travels alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from agent.limits import LIST_PAGE_BYTES


class Sized(Protocol):
    def ByteSize(self) -> int: ...


M = TypeVar("M", bound=Sized)

# Per-record overhead in the page (the repeated field's tag and length prefix).
_FIELD_OVERHEAD = 6


def pages(items: Iterable[M], budget: int = LIST_PAGE_BYTES) -> Iterator[list[M]]:
    """Consecutive groups of `items` whose encoded size stays within `budget` (a group is never empty;
    nothing is yielded for no items)."""
    page: list[M] = []
    used = 0
    for item in items:
        size = item.ByteSize() + _FIELD_OVERHEAD
        if page and used + size > budget:
            yield page
            page, used = [], 0
        page.append(item)
        used += size
    if page:
        yield page
