"""warmctl snapshot CONTAINER [NAME]"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.completion import complete_compressions, complete_running_containers
from warmctl.cli.options import JsonOption, QuietOption, app_of, output_for


def command(
    ctx: typer.Context,
    container: Annotated[
        str,
        typer.Argument(help="The running container to checkpoint.",
                       autocompletion=complete_running_containers),
    ],
    name: Annotated[
        str | None,
        typer.Argument(help="Snapshot name (default: the container's name).",
                       show_default=False),
    ] = None,
    leave_running: Annotated[
        bool, typer.Option("--leave-running", "-R", help="Keep the container running.")
    ] = False,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", metavar="KEY=VALUE", help="Attach a label (repeatable)."),
    ] = None,
    compress: Annotated[
        str,
        typer.Option("--compress", "-c", metavar="zstd|none|gzip",
                     help="Archive compression.", autocompletion=complete_compressions),
    ] = "zstd",
    tcp_established: Annotated[
        bool, typer.Option("--tcp-established", help="Checkpoint established TCP connections.")
    ] = False,
    file_locks: Annotated[
        bool, typer.Option("--file-locks", help="Checkpoint file locks.")
    ] = False,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Checkpoint a running container into the catalogue; prints NAME@GEN."""
    from warmctl.snapshots import (
        SnapshotOptions,
        default_snapshot_name,
        parse_labels,
        take_snapshot,
    )

    app = app_of(ctx)
    out = output_for(json_mode, quiet)
    options = SnapshotOptions(
        leave_running=leave_running,
        compress=compress,
        tcp_established=tcp_established,
        file_locks=file_locks,
        labels=parse_labels(label or []),
    )
    snapshot_name = name if name is not None else default_snapshot_name(container)
    from warmctl.refs import validate_name

    validate_name(snapshot_name)
    catalogue = app.catalogue()
    with out.progress(f"snapshot {container}") as progress:
        snap = take_snapshot(catalogue, app.podman, container, snapshot_name, options, progress)
    if json_mode:
        out.json(snap.to_dict())
    else:
        out.line(snap.ref)
