"""Platform normalization and manifest selection (agent/oci/platform.py)."""

from __future__ import annotations

import pytest

from agent.errors import InvalidArgument
from agent.oci.platform import Platform, normalize, select

P = Platform.parse


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64", "")),
        ("linux/x86_64", Platform("linux", "amd64", "")),
        ("linux/amd64/v1", Platform("linux", "amd64", "")),
        ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
        ("linux/aarch64", Platform("linux", "arm64", "")),
        ("linux/arm64/v8", Platform("linux", "arm64", "")),
        ("linux/arm64/8", Platform("linux", "arm64", "")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/arm/6", Platform("linux", "arm", "v6")),
        ("Linux/ARMHF", Platform("linux", "arm", "v7")),
        ("linux/i386", Platform("linux", "386", "")),
    ],
)
def test_parse_normalizes(spec: str, expected: Platform) -> None:
    assert P(spec) == expected


@pytest.mark.parametrize("spec", ["amd64", "linux/", "/amd64", "linux/amd64/v2/x", "linux/am d64", ""])
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        P(spec)


def test_str_round_trip() -> None:
    assert str(P("linux/arm/v6")) == "linux/arm/v6"
    assert str(P("linux/arm64/v8")) == "linux/arm64"


INDEX = [
    normalize("linux", "amd64"),
    normalize("linux", "arm", "v6"),
    normalize("linux", "arm", "v7"),
    normalize("linux", "arm64", "v8"),
    None,  # an entry without platform (e.g. an attestation)
    normalize("windows", "amd64"),
]


@pytest.mark.parametrize(
    ("wanted", "index"),
    [
        ("linux/amd64", 0),
        ("linux/arm64", 3),
        ("linux/arm64/v8", 3),
        ("linux/arm/v7", 2),
        ("linux/arm/v6", 1),
        ("linux/arm/v5", None),
        ("windows/amd64", 5),
        ("linux/s390x", None),
    ],
)
def test_select(wanted: str, index: int | None) -> None:
    assert select(P(wanted), INDEX) == index


def test_compatible_fallbacks() -> None:
    only_arm = [normalize("linux", "arm", "v7")]
    # An arm64 host runs 32-bit arm images when nothing better is offered; an arm/v8 one takes v7.
    assert select(P("linux/arm64"), only_arm) == 0
    assert select(P("linux/arm/v8"), only_arm) == 0
    assert select(P("linux/amd64"), [normalize("linux", "386")]) == 0
    assert select(P("linux/amd64/v3"), [normalize("linux", "amd64", "v2"), normalize("linux", "amd64")]) == 0
    # Exact beats compatible, whatever the order in the index.
    assert select(P("linux/arm/v7"), [normalize("linux", "arm", "v6"), normalize("linux", "arm", "v7")]) == 1


def test_from_oci_ignores_junk() -> None:
    assert Platform.from_oci({"os": "linux", "architecture": "arm64", "variant": "v8"}) == P("linux/arm64")
    assert Platform.from_oci({"os": "linux"}) is None
    assert Platform.from_oci("linux/amd64") is None
