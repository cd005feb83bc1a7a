"""The agent reads the typed run fields (bytes, nano-CPUs, Durations, filter pairs, the mount type enum) and,
when a controller did not set them (an older one), the string forms: both give the same RunOptions."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration

from agent.api.v1 import containers_pb2 as pb
from agent.errors import InvalidArgument
from agent.runtime.options import MountType
from agent.server.containers import MOUNT_TYPES, _parse_filters, _request_timeout, run_options


def _ns(ns: int) -> Duration:
    d = Duration()
    d.FromNanoseconds(ns)
    return d


# (the string fields an older controller sends, the typed fields a newer one adds)
SAME = [
    ({"memory": "512m"}, {"memory_bytes": 512 << 20}),
    ({"memory": "1.5g"}, {"memory_bytes": 3 << 29}),
    ({"memory": "64m", "memory_swap": "-1"}, {"memory_bytes": 64 << 20, "memory_swap_bytes": -1}),
    ({"memory": "64m", "memory_swap": "128m"}, {"memory_bytes": 64 << 20, "memory_swap_bytes": 128 << 20}),
    ({"cpus": "1.5"}, {"nano_cpus": 1_500_000_000}),
    ({"cpus": "0.1"}, {"nano_cpus": 100_000_000}),
    ({"cpus": "0.01"}, {"nano_cpus": 10_000_000}),
    (
        {"health_cmd": "true", "health_interval": "0.3s", "health_timeout": "1m30s"},
        {
            "health_cmd": "true",
            "health_interval_duration": _ns(300_000_000),
            "health_timeout_duration": _ns(90_000_000_000),
        },
    ),
    (
        {"health_cmd": "true", "health_start_period": "250ms", "health_retries": 5},
        {"health_cmd": "true", "health_start_period_duration": _ns(250_000_000), "health_retries": 5},
    ),
    ({"health_cmd": "true"}, {"health_cmd": "true"}),
]


@pytest.mark.parametrize(("strings", "typed"), SAME, ids=[str(s) for s, _ in SAME])
def test_typed_fields_give_the_same_options_as_the_strings(
    strings: dict[str, object], typed: dict[str, object]
) -> None:
    old = run_options(pb.ContainerConfig(image="busybox", **strings))  # type: ignore[arg-type]
    new = run_options(pb.ContainerConfig(image="busybox", **typed))  # type: ignore[arg-type]
    assert new == old
    assert old.memory is not None or old.cpus is not None or old.health is not None


def test_the_typed_field_wins_over_the_string() -> None:
    cfg = pb.ContainerConfig(
        image="busybox",
        memory="garbage",
        memory_bytes=64 << 20,
        memory_swap="garbage",
        memory_swap_bytes=-1,
        cpus="many",
        nano_cpus=2_000_000_000,
        health_cmd="true",
        health_interval="soon",
        health_interval_duration=_ns(5_000_000_000),
    )
    opts = run_options(cfg)
    assert (opts.memory, opts.memory_swap, opts.cpus) == (64 << 20, -1, 2.0)
    assert opts.health is not None and opts.health.interval_s == 5.0


def test_without_either_form_the_defaults_hold() -> None:
    opts = run_options(pb.ContainerConfig(image="busybox"))
    assert (opts.memory, opts.memory_swap, opts.cpus, opts.health) == (None, None, None, None)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ({"memory_bytes": 1 << 20}, "invalid --memory value 1048576: the minimum is 6m"),
        ({"memory_bytes": 0}, "the minimum is 6m"),
        ({"memory_bytes": -5}, "the minimum is 6m"),
        ({"memory_swap_bytes": -2}, "invalid --memory-swap value -2"),
        ({"nano_cpus": 0}, "invalid --cpus value 0: must be from 0.01 to 4096"),
        ({"nano_cpus": 4097 * 10**9}, "invalid --cpus value 4097"),
        ({"nano_cpus": -1}, "invalid --cpus value"),
        (
            {"health_cmd": "true", "health_interval_duration": _ns(-1)},
            "invalid --health-interval: a duration must not be negative",
        ),
        (
            {"health_cmd": "true", "health_start_period_duration": _ns(-(10**9))},
            "invalid --health-start-period",
        ),
        (
            {"health_cmd": "true", "health_timeout_duration": _ns(0)},
            "--health-interval and --health-timeout must be positive",
        ),
        ({"health_interval_duration": _ns(10**9)}, "need --health-cmd"),
        ({"health_start_period_duration": _ns(0)}, "need --health-cmd"),
    ],
)
def test_typed_values_keep_the_agents_bounds(typed: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        run_options(pb.ContainerConfig(image="busybox", **typed))  # type: ignore[arg-type]


def test_no_healthcheck_ignores_the_duration_fields_as_it_ignores_the_strings() -> None:
    for cfg in (
        pb.ContainerConfig(image="b", no_healthcheck=True, health_interval="soon"),
        pb.ContainerConfig(image="b", no_healthcheck=True, health_interval_duration=_ns(-1)),
    ):
        health = run_options(cfg).health
        assert health is not None and health.disabled


def test_filter_pairs_and_strings_mean_the_same() -> None:
    strings = ["status=exited", "label=a=b", "label=c", "Name=web", "name=db"]
    pairs = [
        pb.ContainerFilter(key="status", value="exited"),
        pb.ContainerFilter(key="label", value="a=b"),
        pb.ContainerFilter(key="label", value="c"),
        pb.ContainerFilter(key="Name", value="web"),
        pb.ContainerFilter(key="name", value="db"),
    ]
    old = _parse_filters(pb.ListContainersRequest(filters=strings))
    new = _parse_filters(pb.ListContainersRequest(filter_pairs=pairs))
    assert new == old == {"status": ["exited"], "label": ["a=b", "c"], "name": ["web", "db"]}
    both = pb.ListContainersRequest(filters=["nonsense"], filter_pairs=pairs[:1])
    assert _parse_filters(both) == {"status": ["exited"]}


def test_bad_filters_get_the_same_message_in_either_form() -> None:
    with pytest.raises(InvalidArgument, match="invalid filter '=x': expected KEY=VALUE"):
        _parse_filters(pb.ListContainersRequest(filters=["=x"]))
    with pytest.raises(InvalidArgument, match="invalid filter '=x': expected KEY=VALUE"):
        _parse_filters(pb.ListContainersRequest(filter_pairs=[pb.ContainerFilter(key="", value="x")]))


def test_every_mount_type_has_its_enum_value() -> None:
    assert set(MOUNT_TYPES) == set(MountType)
    assert len(set(MOUNT_TYPES.values())) == len(MountType)
    assert pb.MOUNT_TYPE_UNSPECIFIED not in MOUNT_TYPES.values()
    for kind, value in MOUNT_TYPES.items():
        assert pb.MountType.Name(value) == f"MOUNT_TYPE_{kind.name}"


def _stop_timeout(cfg: pb.ContainerConfig) -> int | None:
    return run_options(cfg).stop_timeout


@pytest.mark.parametrize("seconds", [0, 1, 10, 2**31 - 1])
def test_a_stop_timeout_as_int_or_duration_gives_the_same_options(seconds: int) -> None:
    old = run_options(pb.ContainerConfig(image="busybox", stop_timeout=seconds))
    new = run_options(pb.ContainerConfig(image="busybox", stop_timeout_duration=_ns(seconds * 10**9)))
    both = pb.ContainerConfig(image="busybox", stop_timeout=seconds)
    both.stop_timeout_duration.FromSeconds(seconds)
    assert new == old == run_options(both)
    assert old.stop_timeout == seconds
    assert _stop_timeout(pb.ContainerConfig(image="busybox")) is None


@pytest.mark.parametrize(
    ("ns", "seconds"), [(1, 1), (500_000_000, 1), (1_000_000_000, 1), (1_000_000_001, 2), (2_500_000_000, 3)]
)
def test_a_fractional_stop_timeout_is_rounded_up_to_whole_seconds(ns: int, seconds: int) -> None:
    assert _stop_timeout(pb.ContainerConfig(image="busybox", stop_timeout_duration=_ns(ns))) == seconds
    assert _request_timeout(pb.StopContainerRequest(timeout_duration=_ns(ns))) == seconds
    assert _request_timeout(pb.RestartContainerRequest(timeout_duration=_ns(ns))) == seconds


def test_the_stop_timeout_duration_wins_over_the_int() -> None:
    cfg = pb.ContainerConfig(image="busybox", stop_timeout=-7, stop_timeout_duration=_ns(3 * 10**9))
    assert _stop_timeout(cfg) == 3
    request = pb.StopContainerRequest(timeout=-7, timeout_duration=_ns(3 * 10**9))
    assert _request_timeout(request) == 3
    assert _request_timeout(pb.StopContainerRequest(timeout=4)) == 4
    assert _request_timeout(pb.StopContainerRequest()) is None


@pytest.mark.parametrize(
    ("duration_ns", "int_seconds", "message"),
    [
        (-(10**9), -1, "--stop-timeout: -1 is out of range (min 0)"),
        (-1, -1, "--stop-timeout: -1 is out of range (min 0)"),
        (-5 * 10**9, -5, "--stop-timeout: -5 is out of range (min 0)"),
        (2**31 * 10**9, None, "--stop-timeout: 2147483648 is out of range (max 2147483647)"),
        ((2**31 - 1) * 10**9 + 1, None, "--stop-timeout: 2147483648 is out of range (max 2147483647)"),
    ],
)
def test_a_bad_stop_timeout_duration_gets_the_ints_message(
    duration_ns: int, int_seconds: int | None, message: str
) -> None:
    pattern = "^" + message.replace("(", r"\(").replace(")", r"\)") + "$"
    with pytest.raises(InvalidArgument, match=pattern):
        run_options(pb.ContainerConfig(image="busybox", stop_timeout_duration=_ns(duration_ns)))
    if int_seconds is not None:  # the same message an older controller's int gets
        with pytest.raises(InvalidArgument, match=pattern):
            run_options(pb.ContainerConfig(image="busybox", stop_timeout=int_seconds))


def test_a_request_timeout_duration_means_what_the_int_would() -> None:
    # negative stays negative (Stop refuses it as it refuses the int; Restart treats it as the int)
    assert _request_timeout(pb.StopContainerRequest(timeout_duration=_ns(-1))) == -1
    assert _request_timeout(pb.RestartContainerRequest(timeout_duration=_ns(-(10**9)))) == -1
    with pytest.raises(
        InvalidArgument, match=r"^the stop timeout: 2147483648 is out of range \(max 2147483647\)$"
    ):
        _request_timeout(pb.StopContainerRequest(timeout_duration=_ns(2**31 * 10**9)))
