"""Which snapshot generations ``warmctl prune`` keeps: pure rules, no I/O.

The catalogue hands in its generations and a :class:`Policy`; :func:`plan_prune` returns one
:class:`Decision` per generation. A dry run and a real run call the same function on the same
input, so what ``--dry-run`` prints is what a real prune removes. The result does not depend on
the order of the input.

Policies (any combination, at least one):

``keep_last`` N (N >= 1)
    Per name, the N highest generation numbers are kept. Generation numbers grow with time,
    so they, not the recorded clock, say which is newest.

``keep_within`` D seconds (D >= 0)
    Per name, a generation is kept if it was created at most D before the created time of that
    name's newest generation (the highest number), as restic's ``--keep-within`` does. It is
    measured from the newest snapshot and not from now, so a host that stopped snapshotting
    does not lose everything once D has passed. The newest generation of a name is always kept.

``max_total_size`` S bytes (S >= 0)
    Across all names together, generations are walked from the newest to the oldest, i.e. in
    descending order of (created time, name, generation), and kept while the running total of
    their sizes stays <= S. The first one that does not fit, and every older one, is not kept
    by this policy, even if a smaller, older one would still fit: this is "drop the oldest
    until the catalogue fits", and what is kept is always a newest-first prefix. Alone, it can
    remove every generation of a name; combine it with ``keep_last 1`` to prevent that.

A generation is kept if any given policy keeps it. A kept generation's reasons name every policy
that keeps it; a removed one's reasons say, per given policy, why that policy did not keep it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from warmctl.errors import UsageError
from warmctl.refs import format_ref
from warmctl.units import format_duration_exact, format_size_exact


@dataclass(frozen=True)
class Generation:
    name: str
    generation: int
    created: datetime  # timezone-aware; the catalogue stores UTC
    size_bytes: int

    def __post_init__(self) -> None:
        # Naive and aware datetimes cannot be compared; fail here, where the cause is visible.
        if self.created.tzinfo is None:
            raise ValueError(f"{self.ref}: created must be timezone-aware, got {self.created}")
        if self.size_bytes < 0:
            raise ValueError(f"{self.ref}: negative size {self.size_bytes}")

    @property
    def ref(self) -> str:
        return format_ref(self.name, self.generation)


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    # Seconds: exactly as typed (a Decimal from the command line), so that it is echoed intact.
    keep_within: float | Decimal | None = None
    max_total_size: int | None = None  # bytes

    def __post_init__(self) -> None:
        # Built straight from command-line options, so bad values are usage errors.
        if self.keep_last is not None and self.keep_last < 1:
            raise UsageError(f"--keep-last must be at least 1, got {self.keep_last}")
        # "not >= 0" also rejects NaN, which would silently keep nothing.
        if self.keep_within is not None and not self.keep_within >= 0:
            raise UsageError(f"--keep-within must not be negative, got {self.keep_within}")
        if self.max_total_size is not None and self.max_total_size < 0:
            raise UsageError(f"--max-total-size must not be negative, got {self.max_total_size}")

    @property
    def is_empty(self) -> bool:
        return self.keep_last is None and self.keep_within is None and self.max_total_size is None


@dataclass(frozen=True)
class Decision:
    generation: Generation
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PrunePlan:
    kept: tuple[Generation, ...]
    removed: tuple[Generation, ...]

    @property
    def bytes_freed(self) -> int:
        return sum(g.size_bytes for g in self.removed)


@dataclass(frozen=True)
class _Rule:
    kept: frozenset[Generation]
    keep_reason: str
    drop_reason: str


def plan_prune(generations: Sequence[Generation], policy: Policy) -> list[Decision]:
    """One decision per generation, sorted by name then generation; see the module docstring."""
    if policy.is_empty:
        raise UsageError("prune needs a policy: --keep-last, --keep-within or --max-total-size")
    refs = Counter(g.ref for g in generations)
    duplicates = sorted(ref for ref, count in refs.items() if count > 1)
    if duplicates:
        # Two rows for one ref is a catalogue bug; planning around it could remove the wrong one.
        raise ValueError(f"duplicate generations in prune input: {', '.join(duplicates)}")

    rules = []
    if policy.keep_last is not None:
        n = policy.keep_last
        rules.append(_Rule(_keep_last(generations, n), f"keep-last {n}", f"beyond keep-last {n}"))
    if policy.keep_within is not None:
        d = format_duration_exact(policy.keep_within)
        rules.append(
            _Rule(
                _keep_within(generations, policy.keep_within),
                f"within {d} of the newest",
                f"more than {d} older than the newest",
            )
        )
    if policy.max_total_size is not None:
        s = format_size_exact(policy.max_total_size)
        rules.append(
            _Rule(
                _keep_max_total_size(generations, policy.max_total_size),
                f"fits max-total-size {s}",
                f"over max-total-size {s}",
            )
        )

    decisions = []
    for g in sorted(generations, key=lambda g: (g.name, g.generation)):
        keep_reasons = tuple(rule.keep_reason for rule in rules if g in rule.kept)
        if keep_reasons:
            decisions.append(Decision(g, True, keep_reasons))
        else:
            decisions.append(Decision(g, False, tuple(rule.drop_reason for rule in rules)))
    return decisions


def summarize_plan(decisions: Iterable[Decision]) -> PrunePlan:
    decisions = list(decisions)
    return PrunePlan(
        kept=tuple(d.generation for d in decisions if d.keep),
        removed=tuple(d.generation for d in decisions if not d.keep),
    )


def _newest_first_by_name(generations: Iterable[Generation]) -> list[list[Generation]]:
    by_name: defaultdict[str, list[Generation]] = defaultdict(list)
    for g in generations:
        by_name[g.name].append(g)
    return [sorted(group, key=lambda g: g.generation, reverse=True) for group in by_name.values()]


def _keep_last(generations: Iterable[Generation], n: int) -> frozenset[Generation]:
    return frozenset(g for group in _newest_first_by_name(generations) for g in group[:n])


def _keep_within(generations: Iterable[Generation],
                 seconds: float | Decimal) -> frozenset[Generation]:
    kept: set[Generation] = set()
    for group in _newest_first_by_name(generations):
        newest = group[0].created
        # Compared in float seconds: timedelta(seconds=...) overflows for durations like 1e12w.
        kept.update(g for g in group if (newest - g.created).total_seconds() <= seconds)
    return frozenset(kept)


def _keep_max_total_size(generations: Iterable[Generation], limit: int) -> frozenset[Generation]:
    kept: set[Generation] = set()
    total = 0
    newest_first = sorted(
        generations, key=lambda g: (g.created, g.name, g.generation), reverse=True
    )
    for g in newest_first:
        total += g.size_bytes
        if total > limit:
            break  # a strict prefix: nothing older is kept, even if it would fit
        kept.add(g)
    return frozenset(kept)
