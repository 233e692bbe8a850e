"""warmctl push REF DESTINATION"""

from __future__ import annotations

from typing import Annotated

import typer

from warmctl.cli.options import (
    AuthfileOption,
    CertDirOption,
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
    sign_key: Annotated[
        str | None,
        typer.Option("--sign-by-sigstore-private-key", metavar="PATH", show_default=False,
                     help="Sign the pushed snapshot with this EC P-256 private key (PEM), "
                          "as a cosign signature beside it in the repository."),
    ] = None,
    passphrase_file: Annotated[
        str | None,
        typer.Option("--sign-passphrase-file", metavar="PATH", show_default=False,
                     help="The passphrase of an encrypted signing key, in this file."),
    ] = None,
    tls_verify: TlsVerifyOption = "true",
    authfile: AuthfileOption = None,
    cert_dir: CertDirOption = None,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Upload a snapshot to an OCI registry; prints where it went.

    The archive becomes a blob whose digest is the snapshot's sha256, with the metadata as
    the artifact's config. A blob the registry already holds is not sent again: pushing a
    snapshot again with a key signs it.
    """
    from pathlib import Path

    from warmctl.errors import UsageError
    from warmctl.oci.reference import parse_reference
    from warmctl.oci.sharing import SigningOptions, push_snapshot
    from warmctl.refs import parse_ref

    parsed = parse_ref(ref)
    parse_reference(destination)  # a malformed destination is exit 2 before anything is read
    options = registry_options(tls_verify, authfile, cert_dir)
    if passphrase_file and not sign_key:
        raise UsageError("--sign-passphrase-file needs --sign-by-sigstore-private-key")
    signing = (SigningOptions(Path(sign_key), Path(passphrase_file) if passphrase_file else None)
               if sign_key else None)
    out = output_for(json_mode, quiet)
    catalogue = app_of(ctx).catalogue()
    with out.progress(f"push {ref}") as progress:
        result = push_snapshot(catalogue, parsed, destination, options, progress, signing)
    if json_mode:
        out.json(result.to_dict())
        return
    if result.skipped_existing:
        out.info(f"{result.ref}: the registry had its archive already; nothing large sent")
    if result.signature:
        out.info(f"signed with key {result.signature['key_fingerprint']} "
                 f"({result.signature['tag']})")
    out.line(f"{result.destination}@{result.manifest_digest}")
