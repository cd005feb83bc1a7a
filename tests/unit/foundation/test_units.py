"""controller.units: the human forms of run flags → typed wire values, with the agent's own messages.

The agent still parses the string forms an older controller sends (agent.runtime.options); the parity
tests below keep the two in step: the same inputs are accepted with the same meaning, and refused with
the same message, on either side.
"""

from __future__ import annotations

import pytest

from agent.errors import InvalidArgument
from agent.runtime import options
from controller import units
from controller.errors import ControllerError

SIZES = ["512m", "1.5g", "100000", "6m", "1m", "64MiB", "2 GB", "0.5k", "lots", "", "12x", "-5m", "1e3",
         "9" * 40, "8388608t", "8388607.99999t", "1.0000000000000000000001g"]  # fmt: skip
CPUS = ["1.5", "0.5", "0.01", "0.001", "4096", "4097", "999", "many", "", "nan", "inf", "-1", "1e1"]
DURATIONS = ["30s", "1m30s", "500ms", "2h", "0.3s", "250ms", "10", "1.5", "1us", "3ns", "soon", "", "1m30",
             "s", "1h1h", "-1s", " 5s ", "1.25m"]  # fmt: skip


def _agent(parse: object, *args: str) -> object:
    try:
        return parse(*args)  # type: ignore[operator]
    except InvalidArgument as exc:
        return ("error", str(exc))


def _controller(parse: object, *args: str) -> object:
    try:
        return parse(*args)  # type: ignore[operator]
    except units.InvalidValue as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("text", SIZES)
def test_sizes_parse_as_the_agent_parses_them(text: str) -> None:
    assert _controller(units.parse_size, text, "--memory") == _agent(options.parse_size, text, "--memory")
    assert _controller(units.parse_memory, text) == _agent(options.parse_memory, text)
    assert _controller(units.parse_memory_swap, text) == _agent(options.parse_memory_swap, text)


def test_memory_values_and_messages() -> None:
    assert units.parse_memory("512m") == 512 << 20
    assert units.parse_memory_swap("-1") == -1
    with pytest.raises(units.InvalidValue, match=r"^invalid --memory value 'lots': expected a size"):
        units.parse_memory("lots")
    with pytest.raises(units.InvalidValue, match=r"^invalid --memory value '1m': the minimum is 6m$"):
        units.parse_memory("1m")
    with pytest.raises(units.InvalidValue, match=r"out of range \(max 9223372036854775807 bytes\)"):
        units.parse_memory("8388608t")


@pytest.mark.parametrize("text", CPUS)
def test_cpus_parse_as_the_agent_parses_them(text: str) -> None:
    ours, theirs = _controller(units.parse_cpus, text), _agent(options.parse_cpus, text)
    if isinstance(theirs, float):
        assert isinstance(ours, int) and ours / 1e9 == theirs
    else:
        assert ours == theirs


def test_cpus_are_nano_cpus() -> None:
    assert units.parse_cpus("1.5") == 1_500_000_000
    assert units.parse_cpus("0.1") == 100_000_000
    with pytest.raises(units.InvalidValue, match=r"^invalid --cpus value 'many': expected a number"):
        units.parse_cpus("many")


@pytest.mark.parametrize("text", DURATIONS)
def test_durations_parse_as_the_agent_parses_them(text: str) -> None:
    ours = _controller(units.parse_duration, text, "--health-interval")
    theirs = _agent(options.parse_duration, text, "--health-interval")
    if isinstance(theirs, float):
        assert isinstance(ours, int) and ours / 1e9 == pytest.approx(theirs, rel=1e-12, abs=1e-9)
    else:
        assert ours == theirs


def test_durations_are_nanoseconds_within_the_proto_range() -> None:
    assert units.parse_duration("1m30s", "--health-interval") == 90 * 10**9
    assert units.parse_duration("0.3s", "--health-interval") == 300_000_000
    assert units.parse_duration("1.5", "--health-timeout") == 1_500_000_000
    with pytest.raises(units.InvalidValue, match=r"^invalid --health-interval 'soon': expected a duration"):
        units.parse_duration("soon", "--health-interval")
    with pytest.raises(units.InvalidValue, match="out of range"):
        units.parse_duration("99999999999h", "--health-interval")


def test_filters_split_once_into_pairs() -> None:
    assert units.parse_filter("label=a=b") == ("label", "a=b")
    assert units.parse_filter("Status=exited") == ("status", "exited")
    assert units.parse_filter("name=") == ("name", "")
    for bad in ("status", "=x", ""):
        with pytest.raises(units.InvalidValue, match=f"^invalid filter {bad!r}: expected KEY=VALUE$"):
            units.parse_filter(bad)


def test_errors_are_controller_errors_that_exit_1() -> None:
    with pytest.raises(ControllerError) as caught:
        units.parse_cpus("x")
    assert caught.value.exit_code == 1
