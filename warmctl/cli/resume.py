"""warmctl resume REF"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.completion import complete_volume_modes
from warmctl.cli.options import (
    JsonOption,
    QuietOption,
    RefArgument,
    app_of,
    file_locks_option,
    flag,
    output_for,
    parse_max_age,
    parse_time_limit,
    resume_tcp_option,
    time_limit_option,
)


def command(
    ctx: typer.Context,
    ref: RefArgument,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", metavar="CONTAINER",
                     help="Container name (default: the snapshot's source container's).",
                     show_default=False),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option("--publish", "-p", metavar="SPEC",
                     help="Publish a port, as podman's --publish (repeatable). "
                          "Default: the ports the source container published."),
    ] = None,
    replace: Annotated[
        bool, flag("--replace", help="Remove an existing container of that name first.")
    ] = False,
    tcp_established: Annotated[bool, resume_tcp_option()] = False,
    file_locks: Annotated[bool, file_locks_option(verb="Restore")] = False,
    volumes: Annotated[
        str | None,
        typer.Option("--volumes", metavar="new|shared|snapshot",
                     help="The snapshot's named volumes: new (volumes of the container's own, "
                          "NAME-VOLUME, filled from the snapshot; the default under another "
                          "name), shared (the volumes the snapshot names, as they are now), "
                          "snapshot (those volumes, their content replaced by the snapshot's).",
                     autocompletion=complete_volume_modes, show_default=False),
    ] = None,
    strict: Annotated[
        bool,
        flag("--strict",
             help="Refuse (exit 6) a snapshot from another host when this host "
                  "differs: CPU flags, kernel, CRIU, podman, runtime, image."),
    ] = False,
    time_limit: Annotated[str | None, time_limit_option(what="restore")] = None,
    max_age: Annotated[
        str | None,
        typer.Option("--max-age", metavar="DURATION", show_default=False,
                     help="Refuse (exit 11) a snapshot taken more than DURATION ago (e.g. 10m, "
                          "2h), before anything is changed: a cache resumed from an old "
                          "snapshot serves stale values. Default: any age."),
    ] = None,
    allow_host_access: Annotated[
        bool,
        flag("--allow-host-access",
             help="Resume a snapshot pulled from a registry even if its container asks for "
                  "host access (privileged, host namespaces or paths, devices, capabilities, "
                  "hooks); otherwise that is refused (exit 6)."),
    ] = False,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Restore a snapshot as a running container; prints the container's name."""
    from warmctl.podman_input import validate_container_name, validate_publish
    from warmctl.refs import Ref, parse_ref
    from warmctl.snapshots import ResumeOptions, resume_snapshot

    parsed = parse_ref(ref)
    if name is not None:
        validate_container_name(name)
    for spec in publish or ():
        validate_publish(spec)
    app = app_of(ctx)
    out = output_for(json_mode, quiet)
    options = ResumeOptions(
        name=name,
        publish=tuple(publish or ()),
        replace=replace,
        tcp_established=tcp_established,
        file_locks=file_locks,
        strict=strict,
        volumes=volumes,
        time_limit=parse_time_limit(time_limit),
        allow_host_access=allow_host_access,
        max_age=parse_max_age(max_age),
    )
    catalogue = app.catalogue()
    # NAME means its newest generation now: pin it, so that what is resumed and what is
    # reported cannot differ when another snapshot lands meanwhile.
    snapshot = catalogue.get(parsed)
    with out.progress(f"resume {snapshot.ref}") as progress:
        resumed = resume_snapshot(catalogue, app.podman, Ref(snapshot.name, snapshot.generation),
                                  options, progress, warn=out.warn)
    if json_mode:
        out.json({"ref": snapshot.ref, "container": resumed.container,
                  "criu_stats": resumed.criu_stats, "volumes": resumed.volumes})
    else:
        out.line(resumed.container)
        for use in resumed.volumes:
            out.info(f"volume {use['volume']} at {use['destination']}: "
                     + ("filled from the snapshot's " + use["snapshot_volume"]
                        if use["content"] == "snapshot" else "as it is now (shared)"))
