"""warmctl warm IMAGE NAME [-- COMMAND ARGS...]"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.completion import complete_images
from warmctl.cli.options import (
    JsonOption,
    QuietOption,
    app_of,
    compress_option,
    file_locks_option,
    flag,
    label_option,
    leave_running_option,
    output_for,
    parse_time_limit,
    snapshot_tcp_option,
    time_limit_option,
)

_CONTAINER = "Container options"
_WARM = "Warm-up and readiness"
_SNAP = "Snapshot options"


def command(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="The image to run.",
                                         autocompletion=complete_images)],
    name: Annotated[str, typer.Argument(help="Snapshot name.")],
    container_command: Annotated[
        list[str] | None,
        typer.Argument(metavar="[-- COMMAND ARGS...]",
                       help="Command for the container (after --).", show_default=False),
    ] = None,
    container: Annotated[
        str | None,
        typer.Option("--container", metavar="NAME", rich_help_panel=_CONTAINER,
                     help="Container name (default: the snapshot name).", show_default=False),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option("--publish", "-p", metavar="SPEC", rich_help_panel=_CONTAINER,
                     help="Publish a port, as podman's (repeatable)."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", rich_help_panel=_CONTAINER,
                     help="Set an environment variable (repeatable)."),
    ] = None,
    volume: Annotated[
        list[str] | None,
        typer.Option("--volume", "-v", metavar="SPEC", rich_help_panel=_CONTAINER,
                     help="Mount a volume, as podman's (repeatable)."),
    ] = None,
    podman_arg: Annotated[
        list[str] | None,
        typer.Option("--podman-arg", metavar="ARG", rich_help_panel=_CONTAINER,
                     help="Pass ARG to podman run (repeatable)."),
    ] = None,
    warmup: Annotated[
        str | None,
        typer.Option("--warmup", metavar="CMD", rich_help_panel=_WARM,
                     help="Shell command run on the host to warm the service; it sees "
                          "WARMCTL_CONTAINER and WARMCTL_NAME.", show_default=False),
    ] = None,
    warmup_exec: Annotated[
        str | None,
        typer.Option("--warmup-exec", metavar="CMD", rich_help_panel=_WARM,
                     help="Command run inside the container (podman exec).",
                     show_default=False),
    ] = None,
    ready: Annotated[
        str | None,
        typer.Option("--ready", metavar="CMD", rich_help_panel=_WARM,
                     help="Readiness probe: shell command on the host, ready when it exits 0.",
                     show_default=False),
    ] = None,
    ready_exec: Annotated[
        str | None,
        typer.Option("--ready-exec", metavar="CMD", rich_help_panel=_WARM,
                     help="Readiness probe run inside the container.", show_default=False),
    ] = None,
    ready_tcp: Annotated[
        int | None,
        typer.Option("--ready-tcp", metavar="PORT", rich_help_panel=_WARM,
                     help="Readiness probe: a TCP connect to the published PORT.",
                     show_default=False),
    ] = None,
    interval: Annotated[
        str, typer.Option("--interval", metavar="DURATION", rich_help_panel=_WARM,
                          help="Time between probe attempts.")
    ] = "2s",
    timeout: Annotated[
        str, typer.Option("--timeout", metavar="DURATION", rich_help_panel=_WARM,
                          help="Give up (exit 9) when warm-up and readiness together take "
                               "longer than this.")
    ] = "10m",
    keep_on_failure: Annotated[
        bool, flag("--keep-on-failure", rich_help_panel=_WARM,
                           help="Leave the container for inspection when warming fails.")
    ] = False,
    leave_running: Annotated[bool, leave_running_option(_SNAP)] = False,
    label: Annotated[list[str] | None, label_option(_SNAP)] = None,
    compress: Annotated[str, compress_option(_SNAP)] = "zstd",
    tcp_established: Annotated[bool, snapshot_tcp_option(_SNAP)] = True,
    file_locks: Annotated[bool, file_locks_option(_SNAP)] = False,
    time_limit: Annotated[str | None, time_limit_option(_SNAP)] = None,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run IMAGE, warm it up, wait until it is ready, and snapshot it as NAME."""
    from warmctl.podman_input import (
        validate_container_name,
        validate_podman_run_arg,
        validate_port,
        validate_publish,
    )
    from warmctl.refs import validate_name
    from warmctl.snapshots import SnapshotOptions, parse_labels
    from warmctl.units import parse_duration
    from warmctl.warm import ContainerSpec, Readiness, WarmPlan, warm

    validate_name(name)
    if container is not None:
        validate_container_name(container, option="--container")
    for spec in publish or ():
        validate_publish(spec)
    for arg in podman_arg or ():
        validate_podman_run_arg(arg)
    if ready_tcp is not None:
        validate_port(ready_tcp, what="--ready-tcp port")
    plan = WarmPlan(
        spec=ContainerSpec(
            image=image,
            container=container or name,
            command=tuple(container_command or ()),
            publish=tuple(publish or ()),
            env=tuple(env or ()),
            volumes=tuple(volume or ()),
            podman_args=tuple(podman_arg or ()),
        ),
        name=name,
        warmup=warmup,
        warmup_exec=warmup_exec,
        readiness=Readiness(
            host_command=ready,
            exec_command=ready_exec,
            tcp_port=ready_tcp,
            interval=parse_duration(interval),
            timeout=parse_duration(timeout),
        ),
        snapshot=SnapshotOptions(
            leave_running=leave_running,
            compress=compress,
            tcp_established=tcp_established,
            file_locks=file_locks,
            labels=parse_labels(label or []),
            time_limit=parse_time_limit(time_limit),
        ),
        keep_on_failure=keep_on_failure,
    )
    app = app_of(ctx)
    out = output_for(json_mode, quiet)
    catalogue = app.catalogue()
    with out.progress(f"warm {name}") as progress:
        snap = warm(catalogue, app.podman, plan, progress, warn=out.warn)
    from warmctl.volumes import bind_mount_warnings

    for warning in bind_mount_warnings(snap.extra):
        out.warn(warning)
    if json_mode:
        out.json(snap.to_dict())
    else:
        out.line(snap.ref)
