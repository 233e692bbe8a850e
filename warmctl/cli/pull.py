"""warmctl pull SOURCE [NAME]"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.options import (
    AuthfileOption,
    CertDirOption,
    JsonOption,
    QuietOption,
    TlsVerifyOption,
    app_of,
    output_for,
    registry_options,
)


def command(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(metavar="SOURCE",
                       help="HOST[:PORT]/PATH[:TAG] or HOST[:PORT]/PATH@sha256:DIGEST in a "
                            "registry; the default tag is latest."),
    ],
    name: Annotated[
        str | None,
        typer.Argument(help="Snapshot name here (default: the name it was pushed under).",
                       show_default=False),
    ] = None,
    signature_policy: Annotated[
        str | None,
        typer.Option("--signature-policy", metavar="PATH", show_default=False,
                     help="Trust policy (containers-policy.json(5)); default: "
                          "$HOME/.config/containers/policy.json, else "
                          "/etc/containers/policy.json, as podman."),
    ] = None,
    tls_verify: TlsVerifyOption = "true",
    authfile: AuthfileOption = None,
    cert_dir: CertDirOption = None,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Download a snapshot from an OCI registry into the catalogue; prints NAME@GEN.

    Every blob is checked against its digest before anything is recorded; an artifact that
    is not a warmctl snapshot is refused. The host's signature policy decides first: a
    snapshot it refuses (exit 5) is not downloaded.
    """
    import dataclasses
    from pathlib import Path

    from warmctl.oci.sharing import pull_snapshot

    options = dataclasses.replace(
        registry_options(tls_verify, authfile, cert_dir),
        signature_policy=Path(signature_policy) if signature_policy else None)
    out = output_for(json_mode, quiet)
    catalogue = app_of(ctx).catalogue()
    with out.progress(f"pull {source}") as progress:
        snap = pull_snapshot(catalogue, source, name, options, progress)
    if json_mode:
        out.json(snap.to_dict())
    else:
        out.line(snap.ref)
