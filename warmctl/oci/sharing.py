"""push and pull: snapshots to and from an OCI registry (see warmctl/artifact.py for the format).

Nothing is recorded until every byte pulled has been checked against its digest; push changes
nothing locally. Nothing here prints: callers pass a ``Progress``.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmctl.catalogue import Catalogue, Snapshot
from warmctl.errors import IntegrityError, NotFoundError, UsageError
from warmctl.oci import artifact, cosign, trust_policy
from warmctl.oci.client import DEFAULT_CHUNK_SIZE, OCI_MANIFEST, RegistryClient
from warmctl.oci.credentials import find_credentials
from warmctl.oci.reference import Reference, parse_reference
from warmctl.oci.transfer import sha256_digest
from warmctl.progress import Progress
from warmctl.refs import Ref, validate_name
from warmctl.units import format_size

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey


@dataclass(frozen=True)
class RegistryOptions:
    tls_verify: bool = True
    authfile: Path | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    signature_policy: Path | None = None  # pull: --signature-policy, else podman's files
    cert_dir: Path | None = None  # --cert-dir, else certs.d (transport.py)


@dataclass(frozen=True)
class SigningOptions:
    """push --sign-by-sigstore-private-key KEY [--sign-passphrase-file FILE]"""

    key: Path
    passphrase_file: Path | None = None


@dataclass(frozen=True)
class PushResult:
    ref: str
    destination: str
    manifest_digest: str
    blob_digest: str
    bytes_uploaded: int
    skipped_existing: bool  # the archive was in the repository already
    signature: dict[str, str] | None = None  # {"tag", "key_fingerprint"} when signed

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "destination": self.destination,
                "manifest_digest": self.manifest_digest, "blob_digest": self.blob_digest,
                "bytes_uploaded": self.bytes_uploaded, "skipped_existing": self.skipped_existing,
                "signature": self.signature}


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
                          credentials=credentials, chunk_size=options.chunk_size,
                          cert_dir=options.cert_dir)


def push_snapshot(catalogue: Catalogue, ref: Ref, destination: str, options: RegistryOptions,
                  progress: Progress, signing: SigningOptions | None = None) -> PushResult:
    """Upload a snapshot as an artifact: the archive, then the config, then the manifest
    that makes them visible under the tag. Blobs the repository has already are skipped.
    With ``signing``, a cosign signature of the manifest follows (see cosign.py); the key is
    read before anything is sent."""
    snapshot = catalogue.get(ref)
    target = push_destination(destination, snapshot)
    key = (cosign.load_private_key(signing.key, signing.passphrase_file)
           if signing is not None else None)
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
        signature = None
        if key is not None:
            progress.phase("signing")
            signature = sign_manifest(client, target, manifest_digest, key)
    return PushResult(snapshot.ref, str(target), manifest_digest, layer.digest, uploaded,
                      skipped, signature)


def sign_manifest(client: RegistryClient, target: Reference, manifest_digest: str,
                  key: EllipticCurvePrivateKey) -> dict[str, str]:
    """Add a cosign signature of ``manifest_digest``, as ``target`` names it, to the
    repository's ``sha256-<hex>.sig`` manifest. Signatures already there stay, except an
    earlier one of the same payload by the same key, which this one replaces."""
    payload = cosign.payload_for(str(target), manifest_digest)
    payload_digest = sha256_digest(payload)
    signature = cosign.sign(key, payload)
    if client.blob_size(payload_digest) != len(payload):
        client.push_blob(payload, payload_digest)
    tag = cosign.signature_tag(manifest_digest)
    existing = client.find_manifest(tag)
    public = key.public_key()
    layers = [layer for layer in (cosign.signature_layers(existing[0]) if existing else [])
              if not (layer.digest == payload_digest
                      and cosign.verifies(public, payload, layer.signature))]
    layers.append(cosign.SignatureLayer(payload_digest, len(payload), signature))
    config = cosign.signature_config(layers)
    config_digest = sha256_digest(config)
    if client.blob_size(config_digest) is None:
        client.push_blob(config, config_digest)
    client.put_manifest(tag, cosign.signature_manifest(layers, config, OCI_MANIFEST),
                        OCI_MANIFEST)
    return {"tag": tag, "key_fingerprint": cosign.fingerprint(public)}


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
        # Before any blob: a snapshot the policy refuses is not downloaded.
        verdict = check_policy(client, ref, manifest_digest, options, progress)
        config = _fetch_config(client, found.config)
        record = artifact.record_from_config(config, found, name=name, source=source,
                                             manifest_digest=manifest_digest,
                                             signed_by=_signer(verdict.signed_by))
        # Which scope let it in: `show` says so of an unsigned one (provenance.py).
        record.extra["pulled"]["policy_scope"] = verdict.scope.name
        with catalogue.new_temp_file() as temp:
            progress.phase(f"downloading {format_size(found.layer.size)}")
            progress.expect(found.layer.size)
            with temp.path.open("r+b") as out:
                digest = client.fetch_blob(found.layer.digest, found.layer.size, out,
                                           progress.advance)
            _require_digest(f"{source}: the checkpoint archive", digest, found.layer.digest)
            progress.phase("publishing")
            return catalogue.publish(temp, record, sha256=digest)


def check_policy(client: RegistryClient, ref: Reference, manifest_digest: str,
                 options: RegistryOptions, progress: Progress) -> trust_policy.Verdict:
    """The host's signature policy on this manifest: a Verdict, or PolicyRefused (exit 5).
    Signatures are downloaded only when the scope asks for them."""
    path = trust_policy.policy_file(options.signature_policy, os.environ)
    policy = trust_policy.parse_policy(_read_policy(path), str(path))
    signatures: list[trust_policy.FoundSignature] = []
    if policy.scope_for(ref).needs_signatures:
        progress.phase("reading signatures")
        signatures = _signatures(client, manifest_digest)
    return trust_policy.decide(policy, ref, manifest_digest, signatures, _policy_keys,
                               lambda key, payload, sig: cosign.verifies(key.key, payload, sig))


def _read_policy(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise trust_policy.BadPolicy(
            f"no signature policy at {path}: nothing is accepted without one",
            hint="podman reads the same file; see containers-policy.json(5)") from None
    except OSError as exc:
        raise trust_policy.BadPolicy(f"cannot read signature policy {path}: {exc.strerror}"
                                     ) from exc


def _policy_keys(requirement: trust_policy.Requirement) -> list[cosign.PublicKey]:
    keys: list[cosign.PublicKey] = []
    for path in requirement.key_paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise trust_policy.BadPolicy(f"cannot read the policy's key {path}: "
                                         f"{exc.strerror}") from exc
        keys += cosign.load_public_keys(data, path)
    for data in requirement.key_datas:
        keys += cosign.load_public_keys(data, "keyData")
    return keys


def _signatures(client: RegistryClient, manifest_digest: str) \
        -> list[trust_policy.FoundSignature]:
    """The cosign signatures of ``manifest_digest`` in the repository: payloads checked
    against their digests; none when there is no .sig manifest."""
    found = client.find_manifest(cosign.signature_tag(manifest_digest))
    if found is None:
        return []
    signatures = []
    for layer in cosign.signature_layers(found[0]):
        out = io.BytesIO()
        try:
            digest = client.fetch_blob(layer.digest, layer.size, out, lambda _: None)
        except (NotFoundError, IntegrityError):
            continue  # a payload that is missing or too long counts as no signature
        if f"sha256:{digest}" == layer.digest:  # else it counts as no signature
            signatures.append(trust_policy.FoundSignature(out.getvalue(), layer.signature))
    return signatures


def _signer(key: cosign.PublicKey | None) -> dict[str, str] | None:
    return {"key": key.source, "fingerprint": key.fingerprint} if key else None


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
