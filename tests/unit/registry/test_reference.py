"""Golden tests for Docker-style image references (agent/oci/reference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import InvalidArgument
from agent.oci.reference import Reference, parse, validate_digest

GOLDEN = json.loads((Path(__file__).parent / "golden" / "references.json").read_text())
DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(("text", "expected"), sorted(GOLDEN["valid"].items()))
def test_valid_references_normalize(text: str, expected: str) -> None:
    ref = parse(text)
    assert str(ref) == expected
    # Normalized output parses to itself.
    assert parse(str(ref)) == ref


@pytest.mark.parametrize(("text", "expected"), sorted(GOLDEN["familiar"].items()))
def test_familiar_form(text: str, expected: str) -> None:
    assert parse(text).familiar() == expected


@pytest.mark.parametrize(("text", "fragment"), sorted(GOLDEN["invalid"].items()))
def test_invalid_references_say_why(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(text)
    assert fragment in str(info.value)


def test_fields_of_a_full_reference() -> None:
    ref = Reference.parse(f"127.0.0.1:5000/ns/app:1.0@{DIGEST}")
    assert ref.registry == "127.0.0.1:5000"
    assert ref.repository == "ns/app"
    assert ref.tag == "1.0"
    assert ref.digest == DIGEST
    assert ref.identifier == DIGEST
    assert ref.name == "127.0.0.1:5000/ns/app"


def test_digest_only_has_no_tag_and_tag_is_identifier_otherwise() -> None:
    assert parse(f"busybox@{DIGEST}").tag is None
    ref = parse("busybox")
    assert (ref.registry, ref.repository) == ("docker.io", "library/busybox")
    assert (ref.tag, ref.digest) == ("latest", None)
    assert ref.identifier == "latest"
    assert ref.with_tag("2").identifier == "2"
    assert ref.with_digest(DIGEST).identifier == DIGEST


def test_name_length_limit() -> None:
    parse("h.example/" + "a" * 240)
    with pytest.raises(InvalidArgument, match="longer than 255"):
        parse("h.example/" + "a" * 250)


def test_validate_digest_sha512() -> None:
    assert validate_digest("sha512:" + "ab" * 64) == "sha512:" + "ab" * 64
