"""Both ways of talking to nftables (libnftables and the `nft` binary) load, list and drop our table."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.errors import NetworkSetup
from agent.network import nft
from agent.network.models import Network, PortMapping, PublishedPort
from tests.integration.network.conftest import Lab

pytestmark = pytest.mark.root


@pytest.fixture(params=["library", "binary"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    saved = list(nft._lib_state)  # choosing the backend is what this test is about
    if request.param == "binary":
        nft._lib_state[:] = [None]
    try:
        yield str(request.param)
    finally:
        nft._lib_state[:] = saved


async def test_load_list_replace_delete(lab: Lab, backend: str) -> None:
    net = Network("n", "n", lab.bridge, IPv4Network("10.232.250.0/24"), IPv4Address("10.232.250.1"))
    port = PublishedPort("c" * 64, "n", PortMapping(80, host_port=18080), IPv4Address("10.232.250.2"))
    await nft.apply(nft.build_ruleset(lab.table, [net], [port]))
    first = await nft.list_rules(lab.table)
    assert sum(1 for r in first if r.get("comment", "").startswith("c" * 12)) == 2
    await nft.apply(nft.build_ruleset(lab.table, [net], []))  # replaced, not appended
    assert not [r for r in await nft.list_rules(lab.table) if "comment" in r]
    await nft.delete_table(lab.table)
    await nft.delete_table(lab.table)
    assert await nft.list_rules(lab.table) == []
    with pytest.raises(NetworkSetup, match="nft"):
        await nft.apply(
            [{"add": {"rule": {"family": "inet", "table": lab.table, "chain": "nope", "expr": []}}}]
        )
