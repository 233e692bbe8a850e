"""warmctl doctor [--probe]"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.completion import complete_refs
from warmctl.cli.options import JsonOption, app_of, flag, output_for


def command(
    ctx: typer.Context,
    probe: Annotated[
        bool,
        flag("--probe", help="Also checkpoint and restore a tiny container, end to end."),
    ] = False,
    probe_image: Annotated[
        str | None,
        typer.Option("--probe-image", metavar="IMAGE",
                     help="Image for --probe (implies it); its default command must keep "
                          "running. Default: localhost/warmctl-test/busybox.",
                     show_default=False),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option("--snapshot", metavar="REF", autocompletion=complete_refs,
                     help="Also compare this host with the one that recorded REF: CPU flags, "
                          "kernel, CRIU, podman, runtime, image.",
                     show_default=False),
    ] = None,
    json_mode: JsonOption = False,
    quiet: Annotated[
        bool, flag("--quiet", "-q", help="Print only warnings and failures.")
    ] = False,
) -> None:
    """Check whether this host can checkpoint and restore containers; say how to fix it.

    One line per check: ok, warn or fail, with a fix. Exits 6 when any check fails.
    """
    from warmctl.errors import HostError
    from warmctl.host import doctor

    app = app_of(ctx)
    out = output_for(json_mode, quiet)
    facts = doctor.gather_facts(app.podman, app.home)
    checks = doctor.run_checks(facts)
    if probe or probe_image is not None:
        with out.progress("doctor") as progress:
            progress.phase("probe: checkpoint and restore of a tiny container")
            if facts.podman is None:
                checks.append(doctor.Check("probe", doctor.FAIL, "not run: podman is unusable",
                                           "fix podman first"))
            else:
                checks.append(doctor.probe(app.podman, app.catalogue, probe_image))
    if snapshot is not None:
        from warmctl.errors import NotFoundError
        from warmctl.refs import parse_ref

        ref = parse_ref(snapshot)
        if not (app.home / "catalogue.db").exists():
            # Looking must not create a catalogue: doctor changes nothing without --probe.
            raise NotFoundError(f"no snapshot {ref}: there is no catalogue at {app.home}")
        snap = app.catalogue().get(ref)
        image_id = app.podman.image_id(snap.image_name) if facts.podman else None
        checks += doctor.snapshot_checks(facts, snap, image_id)
        checks.append(doctor.host_access_check(app.catalogue(), snap))
    ok = doctor.can_checkpoint(checks)
    if json_mode:
        out.json({"ok": ok, "checks": [check.to_dict() for check in checks]})
    else:
        out.statuses([
            (check.status, check.name,
             check.detail + (f" -> fix: {check.fix}" if check.fix else ""))
            for check in checks
            if not quiet or check.status != doctor.OK
        ])
    if not ok:
        failed = [check for check in checks if check.status == doctor.FAIL]
        if [c.name for c in failed] == [doctor.PROBE_IMAGE_CHECK]:
            from warmctl.errors import NotFoundError

            raise NotFoundError(
                f"the probe did not run: {failed[0].detail}; every other check passed",
                hint=failed[0].fix or None,
            )
        raise HostError(
            f"checkpointing cannot work here: {', '.join(c.name for c in failed)} failed",
            hint=failed[0].fix or None,
        )
