"""warmctl snapshot CONTAINER [NAME]"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.completion import complete_running_containers
from warmctl.cli.options import (
    JsonOption,
    QuietOption,
    app_of,
    compress_option,
    file_locks_option,
    label_option,
    leave_running_option,
    output_for,
    report_snapshot,
    snapshot_options,
    snapshot_tcp_option,
    time_limit_option,
)


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
    leave_running: Annotated[bool, leave_running_option()] = False,
    label: Annotated[list[str] | None, label_option()] = None,
    compress: Annotated[str, compress_option()] = "zstd",
    tcp_established: Annotated[bool, snapshot_tcp_option()] = True,
    file_locks: Annotated[bool, file_locks_option()] = False,
    time_limit: Annotated[str | None, time_limit_option()] = None,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Checkpoint a running container into the catalogue; prints NAME@GEN."""
    from warmctl.lifecycle.take import default_snapshot_name, take_snapshot

    app = app_of(ctx)
    out = output_for(json_mode, quiet)
    options = snapshot_options(leave_running=leave_running, compress=compress,
                               tcp_established=tcp_established, file_locks=file_locks,
                               label=label, time_limit=time_limit)
    snapshot_name = name if name is not None else default_snapshot_name(container)
    catalogue = app.catalogue()
    with out.progress(f"snapshot {container}") as progress:
        snap = take_snapshot(catalogue, app.podman, container, snapshot_name, options, progress)
    report_snapshot(out, snap, json_mode=json_mode)
