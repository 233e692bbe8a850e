"""warmctl prune [NAME...]"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.completion import complete_names
from warmctl.cli.options import JsonOption, QuietOption, app_of, flag, output_for


def command(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME]...", help="Only these snapshot names (default: all).",
                       autocompletion=complete_names, show_default=False),
    ] = None,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", metavar="N", help="Keep the N newest generations per name.",
                     show_default=False),
    ] = None,
    keep_within: Annotated[
        str | None,
        typer.Option("--keep-within", metavar="DURATION",
                     help="Keep generations created within DURATION of their name's newest "
                          "(e.g. 7d).", show_default=False),
    ] = None,
    max_total_size: Annotated[
        str | None,
        typer.Option("--max-total-size", metavar="SIZE",
                     help="Drop the oldest generations, across names, until the total fits "
                          "(e.g. 20G).", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, flag("--dry-run", "-n", help="Print what would go, and why; delete nothing.")
    ] = False,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Remove the snapshots no retention policy keeps, then leftovers.

    A generation is kept if any policy keeps it. Orphan archives and temporary files that no
    live process holds are removed too.
    """
    from warmctl.lifecycle.remove import prune_snapshots
    from warmctl.refs import validate_name
    from warmctl.retention import Policy
    from warmctl.units import format_size, parse_duration_exact, parse_size

    policy = Policy(
        keep_last=keep_last,
        keep_within=parse_duration_exact(keep_within) if keep_within is not None else None,
        max_total_size=parse_size(max_total_size) if max_total_size is not None else None,
    )
    selected = [validate_name(n) for n in names or []]
    out = output_for(json_mode, quiet)
    result = prune_snapshots(app_of(ctx).catalogue(), policy, selected, dry_run=dry_run)
    if json_mode:
        out.json({
            "dry_run": dry_run,
            "removed": [{"ref": d.generation.ref, "reasons": list(d.reasons)}
                        for d in result.decisions if not d.keep],
            "kept": [{"ref": d.generation.ref, "reasons": list(d.reasons)}
                     for d in result.decisions if d.keep],
            "bytes_freed": result.bytes_freed,
            "leftovers_removed": result.leftovers_removed,
        })
        return
    for d in result.decisions:
        action = "keep" if d.keep else ("would remove" if dry_run else "remove")
        out.line(f"{action}\t{d.generation.ref}\t{'; '.join(d.reasons)}")
    for name in result.leftovers_removed:
        out.info(f"removed leftover {name}")
    removed = sum(1 for d in result.decisions if not d.keep)
    out.info(f"{'would remove' if dry_run else 'removed'} {removed} snapshot(s), "
             f"{'would free' if dry_run else 'freed'} {format_size(result.bytes_freed)}")
