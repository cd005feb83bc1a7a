"""The rollout planner: examples, flag parsing, and properties checked over many seeded random fleets."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable

import pytest

from controller.errors import UsageError
from controller.rollout.plan import (
    EXP,
    Count,
    Plan,
    PlanHost,
    PlanOptions,
    Wave,
    make_plan,
    parse_batch,
    parse_budgets,
    parse_count,
)


def fleet(n: int, sites: str = "abc") -> list[PlanHost]:
    """h1..hn, site a, b, c, a, b, c, …"""
    return [PlanHost(f"h{i + 1}", {"site": sites[i % len(sites)]}) for i in range(n)]


def waves(plan: Plan) -> list[list[str]]:
    return [list(w.hosts) for w in plan.waves]


def test_canary_then_batches_of_a_count() -> None:
    plan = make_plan(fleet(8), PlanOptions(canary=Count(1), batch=Count(3)))
    assert waves(plan) == [["h1"], ["h2", "h3", "h4"], ["h5", "h6", "h7"], ["h8"]]
    assert [w.canary for w in plan.waves] == [True, False, False, False]
    assert [w.number for w in plan.waves] == [0, 1, 2, 3]


def test_percentages_are_of_all_hosts_rounded_up() -> None:
    plan = make_plan(fleet(10), PlanOptions(canary=Count(10, percent=True), batch=Count(25, percent=True)))
    assert waves(plan) == [["h1"], ["h2", "h3", "h4"], ["h5", "h6", "h7"], ["h8", "h9", "h10"]]
    assert make_plan(fleet(3), PlanOptions(canary=Count(1, percent=True))).waves[0].hosts == ("h1",)


def test_no_canary() -> None:
    plan = make_plan(fleet(4), PlanOptions(canary=Count(0), batch=Count(2)))
    assert waves(plan) == [["h1", "h2"], ["h3", "h4"]]
    assert plan.waves[0].number == 1 and not plan.waves[0].canary


def test_exp_doubles_after_the_canary() -> None:
    plan = make_plan(fleet(20, "a"), PlanOptions(canary=Count(1), batch=EXP))
    assert [len(w) for w in waves(plan)] == [1, 1, 2, 4, 8, 4]


def test_budget_one_per_site_in_every_wave() -> None:
    """The issue's case: --canary 1 --batch 50% --budget site=1 on 8 hosts over 3 sites."""
    plan = make_plan(
        fleet(8), PlanOptions(canary=Count(1), batch=Count(50, percent=True), budgets={"site": 1})
    )
    assert waves(plan) == [["h1"], ["h2", "h3", "h4"], ["h5", "h6", "h7"], ["h8"]]
    # h4 is site a like h1, but h1 switched in the canary wave: budgets count within a wave


def test_a_skipped_host_goes_in_the_next_wave_first() -> None:
    hosts = [PlanHost("a1", {"site": "a"}), PlanHost("a2", {"site": "a"}), PlanHost("b1", {"site": "b"})]
    plan = make_plan(hosts, PlanOptions(canary=Count(0), batch=Count(2), budgets={"site": 1}))
    assert waves(plan) == [["a1", "b1"], ["a2"]]


def test_hosts_without_the_label_share_the_empty_value() -> None:
    hosts = [PlanHost("x"), PlanHost("y"), PlanHost("z", {"site": "a"})]
    plan = make_plan(hosts, PlanOptions(canary=Count(0), batch=Count(3), budgets={"site": 1}))
    assert waves(plan) == [["x", "z"], ["y"]]


def test_several_budgets_hold_together() -> None:
    hosts = [
        PlanHost("h1", {"site": "a", "rack": "1"}),
        PlanHost("h2", {"site": "a", "rack": "2"}),
        PlanHost("h3", {"site": "b", "rack": "1"}),
        PlanHost("h4", {"site": "b", "rack": "2"}),
    ]
    plan = make_plan(hosts, PlanOptions(canary=Count(0), batch=Count(4), budgets={"site": 1, "rack": 1}))
    assert waves(plan) == [["h1", "h4"], ["h2", "h3"]]


def test_max_fail_rounds_down() -> None:
    assert make_plan(fleet(8), PlanOptions(max_fail=Count(10, percent=True))).max_fail == 0
    assert make_plan(fleet(8), PlanOptions(max_fail=Count(25, percent=True))).max_fail == 2
    assert make_plan(fleet(8), PlanOptions(max_fail=Count(3))).max_fail == 3


def test_empty_selection_and_duplicates() -> None:
    assert make_plan([], PlanOptions()).waves == ()
    with pytest.raises(UsageError, match="host selected twice: h1"):
        make_plan([PlanHost("h1"), PlanHost("h1")], PlanOptions())


def test_the_plan_round_trips_through_json() -> None:
    plan = make_plan(fleet(9), PlanOptions(batch=EXP, budgets={"site": 2}, max_fail=Count(1)))
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan
    assert list(again.hosts()) == [h for w in plan.waves for h in w.hosts]
    assert again.wave_of("h1") == 0
    with pytest.raises(KeyError):
        again.wave_of("nope")


def test_flag_parsing() -> None:
    assert parse_count("3", "--canary") == Count(3)
    assert parse_count(" 25% ", "--canary") == Count(25, percent=True)
    assert parse_count("0", "--max-fail") == Count(0)
    assert parse_batch("exp") == EXP and parse_batch("EXP") == EXP
    assert parse_batch("50%") == Count(50, percent=True)
    assert parse_budgets(["site=1", "rack=2"]) == {"site": 1, "rack": 2}
    assert str(Count(5, percent=True)) == "5%" and str(Count(5)) == "5"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_count("many", "--canary"), "invalid --canary 'many': expected a number of hosts"),
        (
            lambda: parse_count("101%", "--max-fail"),
            "invalid --max-fail '101%': a percentage is at most 100%",
        ),
        (lambda: parse_count("-1", "--canary"), "invalid --canary '-1'"),
        (lambda: parse_batch("0"), "invalid --batch '0': must be at least 1"),
        (lambda: parse_batch("0%"), "invalid --batch '0%': must be at least 1"),
        (lambda: parse_budgets(["site"]), "invalid --budget 'site': expected LABEL=N"),
        (lambda: parse_budgets(["site=x"]), "invalid --budget 'site=x': expected LABEL=N"),
        (lambda: parse_budgets(["site=0"]), "invalid --budget 'site=0': at least 1 host per site"),
        (lambda: parse_budgets(["site=1", "site=2"]), "invalid --budget 'site=2': site already has a budget"),
    ],
)
def test_bad_flags(call: Callable[[], object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        call()
    assert str(info.value).startswith(message)


# ---- properties over random fleets -----------------------------------------------------------------


def _random_case(rng: random.Random) -> tuple[list[PlanHost], PlanOptions]:
    n = rng.randint(0, 60)
    keys = ["site", "rack", "zone"]
    hosts = []
    for i in range(n):
        labels = {k: rng.choice("abcd") for k in keys if rng.random() < 0.85}
        hosts.append(PlanHost(f"host-{i}", labels))
    rng.shuffle(hosts)

    def count(high: int) -> Count:
        return Count(rng.randint(0, 100), True) if rng.random() < 0.4 else Count(rng.randint(0, high))

    batch: Count | str = EXP if rng.random() < 0.3 else count(12)
    if isinstance(batch, Count) and batch.value == 0:
        batch = Count(1)
    budgets = {k: rng.randint(1, 3) for k in rng.sample(keys, rng.randint(0, 3))}
    return hosts, PlanOptions(canary=count(4), batch=batch, budgets=budgets, max_fail=count(10))


def _check(hosts: list[PlanHost], options: PlanOptions, plan: Plan) -> None:
    by_name = {h.name: h for h in hosts}
    order = [h.name for h in hosts]
    placed = [h for w in plan.waves for h in w.hosts]
    # every host exactly once
    assert sorted(placed) == sorted(order)
    assert all(w.hosts for w in plan.waves)
    # waves numbered in order; the canary (if any) first and only first
    canaries = [w for w in plan.waves if w.canary]
    want_canary = options.canary.of(len(hosts)) > 0 and hosts
    assert len(canaries) == (1 if want_canary else 0)
    if canaries:
        assert plan.waves[0] is canaries[0] and canaries[0].number == 0
        assert len(canaries[0].hosts) <= options.canary.of(len(hosts))
    rest = [w for w in plan.waves if not w.canary]
    assert [w.number for w in rest] == list(range(1, len(rest) + 1))

    def size_of(w: Wave) -> int:
        if w.canary:
            return options.canary.of(len(hosts))
        if isinstance(options.batch, Count):
            return max(1, options.batch.of(len(hosts)))
        return 1 << (w.number - 1)

    # budgets hold in every wave
    for w in plan.waves:
        for key, limit in options.budgets.items():
            used = Counter(by_name[h].labels.get(key, "") for h in w.hosts)
            assert max(used.values()) <= limit, (w, key)
    # sizes: never above the wave's size; exp doubles
    for w in rest:
        assert len(w.hosts) <= size_of(w)
        if not options.budgets and w is not rest[-1]:
            assert len(w.hosts) == size_of(w)
    # greedy and in order: within a wave hosts keep selection order, and a host left for later could not
    # have joined (its wave was full, or a budget of its wave was used up)
    for i, w in enumerate(plan.waves):
        assert [h for h in order if h in w.hosts] == list(w.hosts)
        if len(w.hosts) < size_of(w):
            for h in (h for v in plan.waves[i + 1 :] for h in v.hosts):
                fits = all(
                    Counter(by_name[x].labels.get(k, "") for x in w.hosts)[by_name[h].labels.get(k, "")] < n
                    for k, n in options.budgets.items()
                )
                assert not fits, (w, h)
    # the max-fail tolerance
    assert plan.max_fail == options.max_fail.of(len(hosts), round_up=False)


def test_properties_hold_for_random_fleets() -> None:
    rng = random.Random(14)
    for _ in range(1500):
        hosts, options = _random_case(rng)
        plan = make_plan(hosts, options)
        _check(hosts, options, plan)
        assert make_plan(hosts, options) == plan  # deterministic


def test_the_check_catches_a_broken_plan() -> None:
    """The property check is not vacuous: a plan over budget, or one missing a host, fails it."""
    hosts = fleet(4)
    options = PlanOptions(canary=Count(0), batch=Count(4), budgets={"site": 1})
    with pytest.raises(AssertionError):
        _check(hosts, options, Plan((Wave(1, ("h1", "h2", "h3", "h4")),), 0))
    with pytest.raises(AssertionError):
        _check(hosts, options, Plan((Wave(1, ("h1", "h2", "h3")),), 0))
    _check(hosts, options, make_plan(hosts, options))
