"""Revision specs (pure): validation, start order, names and labels, shared host ports."""

from __future__ import annotations

import pytest

from agent.errors import InvalidArgument
from agent.releases import spec as specs
from agent.runtime.options import RunOptions

IMAGE = "registry.lab:5000/shop/web@sha256:" + "a" * 64


def c(name: str, *deps: str, image: str = IMAGE, publish: tuple[str, ...] = ()) -> specs.ContainerSpec:
    return specs.ContainerSpec(name, RunOptions(image=image, publish=publish), deps)


def release(*containers: specs.ContainerSpec, name: str = "web") -> specs.ReleaseSpec:
    return specs.ReleaseSpec(name, containers, "sha256:" + "b" * 64)


def test_a_good_spec_passes() -> None:
    spec = release(c("app", "db"), c("db"))
    assert specs.validate(spec) is spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (release(c("app"), name="Web"), "invalid release name 'Web'"),
        (release(), "at least one container"),
        (release(c("app"), c("app")), "container app is listed twice"),
        (release(c("app", image="registry.lab:5000/shop/web:2")), "is not pinned by digest"),
        (release(c("app", "db")), "app depends on unknown container db"),
        (release(c("a", "b"), c("b", "a")), "depends_on has a cycle: a -> b -> a"),
        (release(c("bad name")), "invalid container name"),
    ],
)
def test_bad_specs_are_refused_with_what_is_wrong(spec: specs.ReleaseSpec, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        specs.validate(spec)


def test_start_order_puts_dependencies_first_and_keeps_the_given_order_otherwise() -> None:
    order = specs.start_order([c("web", "api"), c("api", "db"), c("db"), c("side")])
    assert [x.name for x in order] == ["db", "api", "web", "side"]


def test_containers_are_named_and_labelled_by_release_and_revision() -> None:
    opts = specs.run_options("web", 3, specs.ContainerSpec("app", RunOptions(image=IMAGE, labels={"x": "1"})))
    assert opts.name == "web-app-r3"
    assert opts.labels == {
        "x": "1",
        "dockyard.release": "web",
        "dockyard.revision": "3",
        "dockyard.release.container": "app",
    }


def test_shared_host_ports() -> None:
    old = [c("app", publish=("8080:80", "127.0.0.1:9000:9000/udp"))]
    assert specs.shared_host_ports(old, [c("app", publish=("8080:8080",))]) == ["8080/tcp"]
    assert specs.shared_host_ports(old, [c("app", publish=("8081:80", "80"))]) == []
    assert specs.shared_host_ports(old, [c("app", publish=("0.0.0.0:9000:1/udp",))]) == ["9000/udp"]
    assert specs.shared_host_ports(old, [c("app", publish=("10.0.0.1:9000:1/udp",))]) == []
