"""A snapshot as an OCI artifact: what push writes and what pull accepts.

One OCI image manifest (``artifactType`` application/vnd.warmctl.snapshot.v1) with

- a config blob (application/vnd.warmctl.snapshot.config.v1+json): the snapshot's metadata
  as ``list --json`` shows it, without local paths, plus what resume needs from ``extra``
  (the plain size, the warm-up facts, the recording CPU);
- one layer: the checkpoint archive, byte for byte as it is in the catalogue, so its digest
  is the catalogue's sha256; its media type says the compression.

Registries that predate OCI 1.1 ignore ``artifactType``; pull recognises the config's media
type too. The JSON is written canonically (sorted keys, no spaces), so pushing the same
snapshot twice writes the same config and manifest, with the same digests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from warmctl.catalogue import Snapshot, SnapshotRecord
from warmctl.errors import IntegrityError
from warmctl.labels import label_problem
from warmctl.oci.client import OCI_MANIFEST
from warmctl.oci.transfer import sha256_digest
from warmctl.podman_input import is_valid_container_name
from warmctl.refs import is_valid_name

ARTIFACT_TYPE = "application/vnd.warmctl.snapshot.v1"
CONFIG_MEDIA_TYPE = "application/vnd.warmctl.snapshot.config.v1+json"
LAYER_MEDIA_TYPES = {
    "zstd": "application/vnd.warmctl.checkpoint.v1.tar+zstd",
    "gzip": "application/vnd.warmctl.checkpoint.v1.tar+gzip",
    "none": "application/vnd.warmctl.checkpoint.v1.tar",
}
CONFIG_FORMAT = 1
MAX_CONFIG_BYTES = 1024 * 1024

# Keys of ``extra`` that describe the snapshot itself and travel with it; anything else
# (such as where a pulled copy came from) is local bookkeeping.
PORTABLE_EXTRA = ("plain_bytes", "warm", "cpu")

_CREATED = "org.opencontainers.image.created"
_TITLE = "org.opencontainers.image.title"
REF_ANNOTATION = "io.warmctl.snapshot.ref"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                                "size": self.size}
        if self.annotations:
            data["annotations"] = self.annotations
        return data


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def config_for(snapshot: Snapshot) -> bytes:
    """The config blob: ``to_dict()`` without the local archive path, plus portable extras."""
    data = snapshot.to_dict()
    data.pop("archive", None)
    data.pop("pulled", None)
    data["format"] = CONFIG_FORMAT
    data["extra"] = {k: snapshot.extra[k] for k in PORTABLE_EXTRA if k in snapshot.extra}
    return canonical_json(data)


def layer_for(snapshot: Snapshot) -> Descriptor:
    return Descriptor(LAYER_MEDIA_TYPES[snapshot.compression], f"sha256:{snapshot.sha256}",
                      snapshot.size_bytes, {_TITLE: f"{snapshot.ref}.tar"})


def manifest_for(snapshot: Snapshot, config: bytes) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": Descriptor(CONFIG_MEDIA_TYPE, sha256_digest(config), len(config)).to_dict(),
        "layers": [layer_for(snapshot).to_dict()],
        # The snapshot's own time, not the push's: pushing again gives the same manifest.
        "annotations": {_CREATED: snapshot.to_dict()["created"], REF_ANNOTATION: snapshot.ref},
    }
    return canonical_json(manifest)


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """A pulled manifest that is a warmctl snapshot."""

    config: Descriptor
    layer: Descriptor
    compression: str


def not_a_snapshot(source: str, why: str) -> IntegrityError:
    # Exit 5: what the registry holds under that name is not what warmctl is asked to trust.
    return IntegrityError(f"{source} is not a warmctl snapshot: {why}",
                          hint="push snapshots with warmctl push; images are pulled by podman")


def parse_manifest(data: bytes, media_type: str, source: str) -> Artifact:
    """Check that a manifest describes a warmctl snapshot; its config and layer."""
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise not_a_snapshot(source, f"the manifest is not JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise not_a_snapshot(source, "the manifest is not a JSON object")
    kind = manifest.get("mediaType") or media_type
    if kind != OCI_MANIFEST:
        raise not_a_snapshot(source, f"it is a {kind or 'manifest of unknown type'}")
    config = _descriptor(manifest.get("config"), source, "config")
    artifact_type = manifest.get("artifactType")
    if artifact_type != ARTIFACT_TYPE and config.media_type != CONFIG_MEDIA_TYPE:
        found = artifact_type or config.media_type
        raise not_a_snapshot(source, f"its type is {found}, not {ARTIFACT_TYPE}")
    if config.media_type != CONFIG_MEDIA_TYPE:
        raise not_a_snapshot(source, f"its config is {config.media_type}")
    if config.size > MAX_CONFIG_BYTES:
        raise not_a_snapshot(source, f"its config is {config.size} bytes")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise not_a_snapshot(source, "it does not have exactly one layer")
    layer = _descriptor(layers[0], source, "layer")
    compression = {v: k for k, v in LAYER_MEDIA_TYPES.items()}.get(layer.media_type)
    if compression is None:
        raise not_a_snapshot(source, f"its layer is {layer.media_type}")
    return Artifact(config, layer, compression)


def _descriptor(value: Any, source: str, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise not_a_snapshot(source, f"no {what} descriptor")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) \
            or not isinstance(size, int) or size < 0:
        raise not_a_snapshot(source, f"its {what} descriptor is malformed")
    # It becomes part of blob URLs: exactly sha256 and 64 lowercase hex digits, nothing else.
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise IntegrityError(f"{source}: {what} digest {digest!r} is not a sha256 digest")
    return Descriptor(media_type, digest, size)


def record_from_config(data: bytes, artifact: Artifact, *, name: str | None, source: str,
                       manifest_digest: str,
                       signed_by: dict[str, str] | None = None) -> SnapshotRecord:
    """The catalogue record for a pulled snapshot, named ``name`` (default: the name it was
    pushed under); ``signed_by``: the key that verified it ({"key", "fingerprint"})."""
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise not_a_snapshot(source, f"its config is not JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise not_a_snapshot(source, "its config is not in a format this warmctl reads "
                                     f"(format {CONFIG_FORMAT})")
    if name is None:
        name = _text(config, "name", source)
        if not is_valid_name(name):
            raise not_a_snapshot(source, f"its name {name!r} is not a snapshot name")
    if config.get("compression") != artifact.compression:
        raise not_a_snapshot(source, "its config and layer disagree on the compression")
    extra = _portable_extra(config.get("extra", {}), source)
    extra["pulled"] = {"source": source, "manifest_digest": manifest_digest,
                       "source_ref": _text(config, "ref", source),
                       "created": _text(config, "created", source),
                       "signed_by": signed_by}
    # What resume hands podman and list prints is held to the rules of what warmctl records.
    container = _text(config, "container", source)
    if not is_valid_container_name(container):
        raise not_a_snapshot(source, f"its container name {container!r} is not one podman takes")
    labels = _mapping(config, "labels", source, str)
    for key, value in labels.items():
        problem = label_problem(key, value)
        if problem:
            raise not_a_snapshot(source, f"its config has an {problem}")
    return SnapshotRecord(
        name=name,
        container_name=container,
        container_id=_text(config, "container_id", source),
        image_name=_text(config, "image", source),
        image_id=_text(config, "image_id", source),
        compression=artifact.compression,
        ports=_strings(config, "ports", source),
        labels=labels,
        host=_mapping(config, "host", source, str),
        criu_stats=_mapping(config, "criu_stats", source, int),
        extra=extra,
    )


# What each portable extra holds, as warmctl records it (take.py, warm.py, hostcompat.py):
# a pulled config is held to it, so that show, doctor and resume never meet another type.
_WARM_FIELDS: dict[str, tuple[type, ...]] = {
    "image": (str,), "command": (list,), "warmup": (str, type(None)),
    "warmup_exec": (str, type(None)), "ready": (str, type(None)),
    "warm_seconds": (int, float), "probe_attempts": (int,),
}
_SCALARS = (str, int, float, bool, type(None))


def _portable_extra(extra: Any, source: str) -> dict[str, Any]:
    """The config's ``extra``, its portable keys type-checked (exit 5 for a malformed one,
    never an internal error later); other keys are local bookkeeping and dropped."""
    if not isinstance(extra, dict):
        raise not_a_snapshot(source, "its config has a malformed 'extra'")
    kept = {k: v for k, v in extra.items() if k in PORTABLE_EXTRA}
    plain_bytes = kept.get("plain_bytes", 0)
    if not _is_count(plain_bytes):
        raise not_a_snapshot(source, "its config has a malformed 'extra.plain_bytes'")
    cpu = kept.get("cpu", {})
    if not isinstance(cpu, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in cpu.items()):
        raise not_a_snapshot(source, "its config has a malformed 'extra.cpu'")
    warm = kept.get("warm", {})
    if not isinstance(warm, dict):
        raise not_a_snapshot(source, "its config has a malformed 'extra.warm'")
    for key, value in warm.items():
        wanted = _WARM_FIELDS.get(key, _SCALARS)
        well_typed = isinstance(value, wanted) and not (
            isinstance(value, bool) and bool not in wanted)
        if key == "command":
            well_typed = well_typed and all(isinstance(word, str) for word in value)
        elif key in ("warm_seconds", "probe_attempts"):
            well_typed = well_typed and value >= 0
        if not isinstance(key, str) or not well_typed:
            raise not_a_snapshot(source, f"its config has a malformed 'extra.warm.{key}'")
    return kept


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(config: dict[str, Any], key: str, source: str) -> str:
    value = config.get(key)
    if not isinstance(value, str):
        raise not_a_snapshot(source, f"its config lacks {key!r}")
    return value


def _strings(config: dict[str, Any], key: str, source: str) -> list[str]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise not_a_snapshot(source, f"its config has a malformed {key!r}")
    return value


def _mapping(config: dict[str, Any], key: str, source: str, kind: type) -> dict[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, kind) and not isinstance(v, bool)
            for k, v in value.items()):
        raise not_a_snapshot(source, f"its config has a malformed {key!r}")
    return value
