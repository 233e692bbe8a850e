"""warmctl rm REF..."""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.options import (
    JsonOption,
    QuietOption,
    RefsArgument,
    app_of,
    flag,
    output_for,
)


def command(
    ctx: typer.Context,
    refs: RefsArgument,
    all_generations: Annotated[
        bool, flag("--all-generations", "-a", help="Remove every generation of NAME.")
    ] = False,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Remove snapshots and their archives."""
    from warmctl.lifecycle.remove import resolve_refs
    from warmctl.refs import parse_ref
    from warmctl.units import format_size

    parsed = [parse_ref(ref) for ref in refs]
    out = output_for(json_mode, quiet)
    catalogue = app_of(ctx).catalogue()
    snapshots = resolve_refs(catalogue, parsed, all_generations=all_generations)
    freed = catalogue.remove(snapshots)
    catalogue.sweep_orphan_archives()
    if json_mode:
        out.json({"removed": [snap.ref for snap in snapshots], "bytes_freed": freed})
        return
    for snap in snapshots:
        out.line(snap.ref)
    out.info(f"removed {len(snapshots)} snapshot(s), freed {format_size(freed)}")
