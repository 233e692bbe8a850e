"""Which snapshots a verb names, and removing them: resolving references, and prune's plan
carried out on the catalogue (the rules are retention.py's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from warmctl.catalogue import Catalogue, Snapshot
from warmctl.errors import (
    NotFoundError,
    UsageError,
)
from warmctl.refs import Ref
from warmctl.retention import Decision, Generation, Policy, plan_prune, summarize_plan


@dataclass(frozen=True)
class PruneResult:
    decisions: list[Decision]
    bytes_freed: int
    leftovers_removed: list[str]


def prune_snapshots(catalogue: Catalogue, policy: Policy, names: Sequence[str] = (),
                    *, dry_run: bool = False) -> PruneResult:
    """Remove what the policy does not keep (among ``names``, or all), then leftovers.

    The plan comes from one read of the catalogue: a snapshot published after it is not in
    the plan, so it cannot be removed by it. A dry run plans exactly the same.
    """
    snapshots = [s for s in catalogue.list_snapshots() if not names or s.name in names]
    unknown = sorted(set(names) - {s.name for s in snapshots})
    if unknown:
        # As rm: a typo must not look like a prune that found nothing to remove.
        raise NotFoundError(f"no snapshot {', '.join(unknown)}", hint="see: warmctl list")
    by_ref = {s.ref: s for s in snapshots}
    decisions = plan_prune(
        [Generation(s.name, s.generation, s.created, s.size_bytes) for s in snapshots], policy
    )
    plan = summarize_plan(decisions)
    if dry_run:
        return PruneResult(decisions, plan.bytes_freed, [])
    freed = catalogue.remove([by_ref[g.ref] for g in plan.removed])
    leftovers = [p.name for p in catalogue.sweep_orphan_archives()]
    leftovers += [p.name for p in catalogue.swept_on_open + catalogue.sweep_temporary_files()]
    return PruneResult(decisions, freed, leftovers)


def resolve_refs(catalogue: Catalogue, refs: Sequence[Ref], *, all_generations: bool = False) \
        -> list[Snapshot]:
    """Every snapshot the references name, each once, in the order given."""
    found: dict[str, Snapshot] = {}
    for ref in refs:
        if all_generations:
            if ref.generation is not None:
                raise UsageError(f"--all-generations takes names, not {ref}")
            snapshots = catalogue.list_snapshots(ref.name)
            if not snapshots:
                raise NotFoundError(f"no snapshot {ref}", hint="see: warmctl list")
        else:
            snapshots = [catalogue.get(ref)]
        for snap in snapshots:
            found.setdefault(snap.ref, snap)
    return list(found.values())
