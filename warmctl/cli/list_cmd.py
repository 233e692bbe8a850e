"""warmctl list [NAME]"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from warmctl.cli.completion import complete_names
from warmctl.cli.options import JsonOption, QuietOption, app_of, output_for


def command(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(help="Only this snapshot name.", autocompletion=complete_names,
                       show_default=False),
    ] = None,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """List snapshots, oldest first within each name."""
    from warmctl.provenance import trust_column
    from warmctl.refs import validate_name
    from warmctl.units import format_duration, format_size

    if name is not None:
        validate_name(name)
    out = output_for(json_mode, quiet)
    catalogue = app_of(ctx).catalogue()
    if json_mode:
        out.json_text(catalogue.list_json(name))
        return
    snapshots = catalogue.list_snapshots(name)
    now = datetime.now(UTC)
    rows = [
        [
            snap.ref,
            snap.created.strftime("%Y-%m-%d %H:%M:%S"),
            format_duration((now - snap.created).total_seconds()),
            format_size(snap.size_bytes),
            snap.container_name,
            snap.image_name,
            trust_column(snap),
            ",".join(f"{k}={v}" for k, v in snap.labels.items()),
        ]
        for snap in snapshots
    ]
    out.table(
        ["REF", "CREATED (UTC)", "AGE", "SIZE", "CONTAINER", "IMAGE", "ORIGIN", "LABELS"],
        rows,
        empty="no snapshots" + (f" named {name}" if name else ""),
    )
