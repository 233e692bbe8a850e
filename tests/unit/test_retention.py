from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmctl.errors import UsageError
from warmctl.retention import (
    Decision,
    Generation,
    Policy,
    PrunePlan,
    plan_prune,
    summarize_plan,
)

GiB = 1024**3
DAY = 86400.0
T0 = datetime(2025, 1, 1, tzinfo=UTC)  # UTC is datetime.timezone.utc


def gen(name: str, generation: int, days: float = 0, size: int = GiB) -> Generation:
    return Generation(name, generation, T0 + timedelta(days=days), size)


def series(name: str, count: int, *, every_days: float = 1, size: int = GiB) -> list[Generation]:
    """Generations 1..count of ``name``, one every ``every_days``, generation 1 at T0."""
    return [gen(name, i, (i - 1) * every_days, size) for i in range(1, count + 1)]


def kept_refs(decisions: Sequence[Decision]) -> set[str]:
    return {d.generation.ref for d in decisions if d.keep}


# --- examples -------------------------------------------------------------------------------


def test_keep_last_keeps_the_newest_n_per_name() -> None:
    decisions = plan_prune(series("memcached", 5) + series("redis", 2), Policy(keep_last=3))
    assert kept_refs(decisions) == {
        "memcached@3",
        "memcached@4",
        "memcached@5",
        "redis@1",
        "redis@2",
    }


def test_keep_last_goes_by_generation_number_not_clock() -> None:
    # A clock that jumped back must not make an older generation look newer.
    generations = [gen("a", 1, days=10), gen("a", 2, days=0)]
    assert kept_refs(plan_prune(generations, Policy(keep_last=1))) == {"a@2"}


def test_keep_within_is_measured_from_the_newest_snapshot_not_now() -> None:
    # The host stopped snapshotting years ago; nothing "now"-relative may empty the catalogue.
    generations = series("a", 10, every_days=1)  # a@10 is at day 9
    decisions = plan_prune(generations, Policy(keep_within=3 * DAY))
    assert kept_refs(decisions) == {"a@7", "a@8", "a@9", "a@10"}


def test_keep_within_is_per_name() -> None:
    generations = [*series("a", 3, every_days=1), gen("b", 1, days=-100), gen("b", 2, days=-99)]
    assert kept_refs(plan_prune(generations, Policy(keep_within=1 * DAY))) == {
        "a@2",
        "a@3",
        "b@1",
        "b@2",
    }


def test_max_total_size_drops_the_oldest_until_it_fits() -> None:
    generations = series("a", 3, every_days=2) + series("b", 3, every_days=2)
    # Newest first, ties on created broken by name, descending: b@3, a@3, b@2, a@2, ...
    decisions = plan_prune(generations, Policy(max_total_size=3 * GiB))
    assert kept_refs(decisions) == {"b@3", "a@3", "b@2"}


def test_max_total_size_is_a_strict_newest_prefix() -> None:
    # b@1 is small enough to fit after a@1 is dropped, but it is older, so it goes too.
    generations = [gen("a", 2, days=3, size=6), gen("a", 1, days=2, size=5), gen("b", 1, size=1)]
    decisions = plan_prune(generations, Policy(max_total_size=10))
    assert kept_refs(decisions) == {"a@2"}


def test_reasons_name_every_policy_that_keeps() -> None:
    generations = series("a", 4, every_days=1, size=5 * GiB)
    decisions = plan_prune(
        generations, Policy(keep_last=2, keep_within=7 * DAY, max_total_size=10 * GiB)
    )
    by_ref = {d.generation.ref: d for d in decisions}
    assert by_ref["a@4"].reasons == (
        "keep-last 2",
        "within 7d of the newest",
        "fits max-total-size 10 GiB",
    )
    assert by_ref["a@2"].reasons == ("within 7d of the newest",)
    assert all(d.keep for d in decisions)


def test_removed_generations_say_why_per_policy() -> None:
    generations = series("a", 3, every_days=10)
    decisions = plan_prune(generations, Policy(keep_last=1, keep_within=2 * DAY, max_total_size=0))
    first = decisions[0]
    assert first.generation.ref == "a@1"
    assert not first.keep
    assert first.reasons == (
        "beyond keep-last 1",
        "more than 2d older than the newest",
        "over max-total-size 0 B",
    )


def test_decisions_are_sorted_by_name_then_generation() -> None:
    generations = [gen("b", 1), gen("a", 10), gen("a", 9), gen("a", 2, days=-1)]
    decisions = plan_prune(generations, Policy(keep_last=1))
    assert [d.generation.ref for d in decisions] == ["a@2", "a@9", "a@10", "b@1"]


def test_empty_input_plans_nothing() -> None:
    assert plan_prune([], Policy(keep_last=1)) == []


def test_summarize_plan() -> None:
    generations = series("a", 3, size=100)
    plan = summarize_plan(plan_prune(generations, Policy(keep_last=1)))
    assert plan == PrunePlan(kept=(generations[2],), removed=(generations[0], generations[1]))
    assert plan.bytes_freed == 200


def test_empty_policy_is_a_usage_error() -> None:
    assert Policy().is_empty
    assert not Policy(max_total_size=0).is_empty
    with pytest.raises(UsageError, match="prune needs a policy: --keep-last, --keep-within or"):
        plan_prune(series("a", 2), Policy())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep_last": 0},
        {"keep_last": -1},
        {"keep_within": -1.0},
        {"keep_within": float("nan")},
        {"max_total_size": -1},
    ],
)
def test_invalid_policy_values_are_usage_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_duplicate_generations_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        plan_prune([gen("a", 1), gen("a", 1, days=1)], Policy(keep_last=1))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Generation("a", 1, datetime(2025, 1, 1), 1)


def test_ref() -> None:
    assert gen("memcached", 3).ref == "memcached@3"


# --- properties -----------------------------------------------------------------------------


@st.composite
def generation_lists(draw: st.DrawFn) -> list[Generation]:
    # Created times are arbitrary, not increasing with the generation number: the rules must
    # hold even for a catalogue written by a host whose clock jumped.
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 20)),
            unique=True,
            max_size=25,
        )
    )
    return [
        Generation(
            name,
            number,
            T0 + timedelta(seconds=draw(st.integers(0, 30 * 86400))),
            draw(st.integers(0, 10 * GiB)),
        )
        for name, number in keys
    ]


keep_lasts = st.integers(1, 5)
keep_withins = st.floats(0, 40 * DAY)
max_total_sizes = st.integers(0, 100 * GiB)
policies = st.builds(
    Policy,
    keep_last=st.none() | keep_lasts,
    keep_within=st.none() | keep_withins,
    max_total_size=st.none() | max_total_sizes,
).filter(lambda p: not p.is_empty)


@given(generation_lists(), policies, st.randoms())
def test_plan_is_deterministic_and_ignores_input_order(
    generations: list[Generation], policy: Policy, random: Random
) -> None:
    # What --dry-run shows is exactly what a real prune does.
    first = plan_prune(generations, policy)
    assert plan_prune(generations, policy) == first
    shuffled = list(generations)
    random.shuffle(shuffled)
    assert plan_prune(shuffled, policy) == first


@given(generation_lists(), keep_lasts)
def test_keep_last_always_keeps_the_newest_of_every_name(
    generations: list[Generation], n: int
) -> None:
    newest: dict[str, int] = {}
    for g in generations:
        newest[g.name] = max(newest.get(g.name, 0), g.generation)
    kept = {
        (d.generation.name, d.generation.generation)
        for d in plan_prune(generations, Policy(keep_last=n))
        if d.keep
    }
    assert set(newest.items()) <= kept


@given(generation_lists(), max_total_sizes)
def test_max_total_size_alone_keeps_at_most_the_limit(
    generations: list[Generation], limit: int
) -> None:
    plan = summarize_plan(plan_prune(generations, Policy(max_total_size=limit)))
    assert sum(g.size_bytes for g in plan.kept) <= limit


@given(generation_lists(), policies)
def test_every_generation_gets_exactly_one_decision(
    generations: list[Generation], policy: Policy
) -> None:
    decisions = plan_prune(generations, policy)
    assert sorted(d.generation.ref for d in decisions) == sorted(g.ref for g in generations)
    assert all(d.reasons for d in decisions)
    plan = summarize_plan(decisions)
    assert len(plan.kept) + len(plan.removed) == len(generations)


@given(generation_lists(), policies)
def test_combined_policies_keep_the_union_of_each_single_policy(
    generations: list[Generation], policy: Policy
) -> None:
    singles = [
        Policy(keep_last=policy.keep_last),
        Policy(keep_within=policy.keep_within),
        Policy(max_total_size=policy.max_total_size),
    ]
    single_kept = [kept_refs(plan_prune(generations, p)) for p in singles if not p.is_empty]
    combined = plan_prune(generations, policy)
    assert kept_refs(combined) == set().union(*single_kept)
    # A kept generation lists one reason per single policy that keeps it.
    for d in combined:
        if d.keep:
            assert len(d.reasons) == sum(d.generation.ref in kept for kept in single_kept)


@given(generation_lists())
def test_an_empty_policy_is_always_a_usage_error(generations: list[Generation]) -> None:
    with pytest.raises(UsageError):
        plan_prune(generations, Policy())
