"""warmctl push REF DESTINATION"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.options import (
    AuthfileOption,
    JsonOption,
    QuietOption,
    RefArgument,
    TlsVerifyOption,
    app_of,
    output_for,
    registry_options,
)


def command(
    ctx: typer.Context,
    ref: RefArgument,
    destination: Annotated[
        str,
        typer.Argument(metavar="DESTINATION",
                       help="HOST[:PORT]/PATH[:TAG] in a registry; the default tag is "
                            "NAME-GEN."),
    ],
    tls_verify: TlsVerifyOption = "true",
    authfile: AuthfileOption = None,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Upload a snapshot to an OCI registry; prints where it went.

    The archive becomes a blob whose digest is the snapshot's sha256, with the metadata as
    the artifact's config. A blob the registry already holds is not sent again.
    """
    from warmctl.refs import parse_ref
    from warmctl.registry import parse_reference
    from warmctl.sharing import push_snapshot

    parsed = parse_ref(ref)
    parse_reference(destination)  # a malformed destination is exit 2 before anything is read
    options = registry_options(tls_verify, authfile)
    out = output_for(json_mode, quiet)
    catalogue = app_of(ctx).catalogue()
    with out.progress(f"push {ref}") as progress:
        result = push_snapshot(catalogue, parsed, destination, options, progress)
    if json_mode:
        out.json(result.to_dict())
        return
    if result.skipped_existing:
        out.info(f"{result.ref}: the registry had its archive already; nothing large sent")
    out.line(f"{result.destination}@{result.manifest_digest}")
