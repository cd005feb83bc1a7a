"""WWW-Authenticate parsing, credential hygiene, endpoint choice (agent/registry/auth.py, transport.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import InvalidArgument
from agent.registry.auth import Challenge, Credentials, parse_challenges, repository_scope
from agent.registry.transport import Transport


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:samalba/my-app:pull,push"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:samalba/my-app:pull,push",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        # Two challenges in one header; a quoted comma; odd spacing and case; an escaped quote.
        (
            'Basic realm="a, b" , BEARER  Realm = "https://t/x?y=1" ,service=svc, error="insufficient_scope"',
            [
                Challenge("basic", {"realm": "a, b"}),
                Challenge(
                    "bearer", {"realm": "https://t/x?y=1", "service": "svc", "error": "insufficient_scope"}
                ),
            ],
        ),
        ('Bearer realm="say \\"hi\\""', [Challenge("bearer", {"realm": 'say "hi"'})]),
        ("Negotiate abc123==", [Challenge("negotiate", {})]),
        ("", []),
    ],
)
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges([header]) == expected


def test_several_headers_and_scopes() -> None:
    parsed = parse_challenges(['Basic realm="r"', 'Bearer realm="https://t",scope="a b"'])
    assert [c.scheme for c in parsed] == ["basic", "bearer"]
    assert parsed[1].params["scope"].split() == ["a", "b"]


def test_credentials_never_show_the_password() -> None:
    creds = Credentials("alice", "s3cret-pw")
    assert "s3cret-pw" not in repr(creds)
    assert creds.basic() == "Basic YWxpY2U6czNjcmV0LXB3"


def test_repository_scope() -> None:
    assert repository_scope("ns/app", "pull,push") == "repository:ns/app:pull,push"


def test_endpoints_follow_the_insecure_list_and_docker_hub(tmp_path: Path) -> None:
    transport = Transport(tmp_path, ["127.0.0.1:5000"])
    assert transport.endpoint("127.0.0.1:5000").url("/v2/") == "http://127.0.0.1:5000/v2/"
    assert transport.endpoint("registry.example").url("/v2/") == "https://registry.example/v2/"
    assert transport.endpoint("docker.io").url("/v2/") == "https://registry-1.docker.io/v2/"
    assert transport.endpoint("https://mirror.example:5000/prefix/").url("/v2/") == (
        "https://mirror.example:5000/prefix/v2/"
    )
    with pytest.raises(InvalidArgument, match="not an insecure registry"):
        transport.endpoint("http://mirror.example:5000")
