"""push and pull: snapshots to and from an OCI registry (see warmctl/artifact.py for the format).

Nothing is recorded until every byte pulled has been checked against its digest; push changes
nothing locally. Nothing here prints: callers pass a ``Progress``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmctl import artifact
from warmctl.catalogue import Catalogue, Snapshot
from warmctl.errors import IntegrityError, UsageError
from warmctl.output import Progress
from warmctl.refs import Ref, validate_name
from warmctl.registry import (
    DEFAULT_CHUNK_SIZE,
    OCI_MANIFEST,
    Reference,
    RegistryClient,
    find_credentials,
    parse_reference,
    sha256_digest,
)
from warmctl.units import format_size


@dataclass(frozen=True)
class RegistryOptions:
    tls_verify: bool = True
    authfile: Path | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE


@dataclass(frozen=True)
class PushResult:
    ref: str
    destination: str
    manifest_digest: str
    blob_digest: str
    bytes_uploaded: int
    skipped_existing: bool  # the archive was in the repository already

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "destination": self.destination,
                "manifest_digest": self.manifest_digest, "blob_digest": self.blob_digest,
                "bytes_uploaded": self.bytes_uploaded, "skipped_existing": self.skipped_existing}


def default_tag(snapshot: Snapshot) -> str:
    """``NAME-GEN``: a tag cannot hold the '@' of a reference."""
    return f"{snapshot.name}-{snapshot.generation}"


def push_destination(destination: str, snapshot: Snapshot) -> Reference:
    ref = parse_reference(destination)
    if ref.digest is not None:
        raise UsageError(f"cannot push to a digest ({destination}): give a tag, or none for "
                         f"the default {default_tag(snapshot)}")
    return ref if ref.tag else ref.with_tag(default_tag(snapshot))


def _client(ref: Reference, options: RegistryOptions, *, push: bool) -> RegistryClient:
    credentials = find_credentials(ref, authfile=options.authfile)
    return RegistryClient(ref, push=push, tls_verify=options.tls_verify,
                          credentials=credentials, chunk_size=options.chunk_size)


def push_snapshot(catalogue: Catalogue, ref: Ref, destination: str, options: RegistryOptions,
                  progress: Progress) -> PushResult:
    """Upload a snapshot as an artifact: the archive, then the config, then the manifest
    that makes them visible under the tag. Blobs the repository has already are skipped."""
    snapshot = catalogue.get(ref)
    target = push_destination(destination, snapshot)
    config = artifact.config_for(snapshot)
    layer = artifact.layer_for(snapshot)
    with contextlib.ExitStack() as stack:
        # Read through a hard link that a concurrent rm or prune cannot take away.
        held = stack.enter_context(catalogue.hold_archive(snapshot))
        client = stack.enter_context(_client(target, options, push=True))
        progress.phase(f"connecting to {target.registry}")
        client.connect()
        uploaded = 0
        skipped = client.blob_size(layer.digest) == layer.size
        if not skipped:
            progress.phase(f"uploading {snapshot.ref} ({format_size(layer.size)})")
            progress.expect(layer.size)
            with held.path.open("rb") as archive_file:
                client.push_blob_file(archive_file, layer.size, layer.digest, progress.advance)
            uploaded += layer.size
        config_digest = sha256_digest(config)
        if client.blob_size(config_digest) is None:
            progress.phase("uploading the metadata")
            client.push_blob(config, config_digest)
            uploaded += len(config)
        progress.phase(f"tagging {target.tag}")
        manifest_digest = client.put_manifest(target.tag or "", artifact.manifest_for(
            snapshot, config), OCI_MANIFEST)
    return PushResult(snapshot.ref, str(target), manifest_digest, layer.digest, uploaded,
                      skipped)


def pull_snapshot(catalogue: Catalogue, source: str, name: str | None,
                  options: RegistryOptions, progress: Progress) -> Snapshot:
    """Download an artifact into the catalogue as the next generation of ``name`` (default:
    the name it was pushed under). Both blobs are checked against their digests before
    anything is recorded; a mismatch is IntegrityError with nothing left behind."""
    if name is not None:
        validate_name(name)
    ref = parse_reference(source)
    with _client(ref, options, push=False) as client:
        progress.phase(f"connecting to {ref.registry}")
        client.connect()
        progress.phase("reading the manifest")
        data, media_type, manifest_digest = client.get_manifest()
        found = artifact.parse_manifest(data, media_type, source)
        config = _fetch_config(client, found.config)
        record = artifact.record_from_config(config, found, name=name, source=source,
                                             manifest_digest=manifest_digest)
        with catalogue.new_temp_file() as temp:
            progress.phase(f"downloading {format_size(found.layer.size)}")
            progress.expect(found.layer.size)
            with temp.path.open("r+b") as out:
                digest = client.fetch_blob(found.layer.digest, found.layer.size, out,
                                           progress.advance)
            _require_digest(f"{source}: the checkpoint archive", digest, found.layer.digest)
            progress.phase("publishing")
            return catalogue.publish(temp, record, sha256=digest)


def _fetch_config(client: RegistryClient, descriptor: artifact.Descriptor) -> bytes:
    """The config blob, checked, in memory (parse_manifest capped its size)."""
    out = io.BytesIO()
    digest = client.fetch_blob(descriptor.digest, descriptor.size, out, lambda _: None)
    _require_digest(f"{client.ref}: the snapshot's metadata", digest, descriptor.digest)
    return out.getvalue()


def _require_digest(what: str, digest: str, expected: str) -> None:
    if f"sha256:{digest}" != expected:
        raise IntegrityError(
            f"{what} is corrupt: it hashes to sha256:{digest[:16]}..., the manifest says "
            f"{expected[:23]}...; nothing was recorded",
            hint="push it again from a good copy",
        )
