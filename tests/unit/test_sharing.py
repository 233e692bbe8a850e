"""push and pull between catalogues through the in-process fake registry: the artifact's
layout, what is recorded, and that nothing is recorded when anything is wrong."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from fake_registry import FakeRegistry
from fakes import FakePodman

from warmctl.catalogue import Catalogue, Snapshot
from warmctl.errors import ExitCode, IntegrityError, NotFoundError, UsageError
from warmctl.lifecycle.take import SnapshotOptions, take_snapshot
from warmctl.oci import artifact
from warmctl.oci.client import OCI_MANIFEST
from warmctl.oci.errors import RegistryUnreachable
from warmctl.oci.sharing import RegistryOptions, push_snapshot
from warmctl.oci.sharing import pull_snapshot as pull
from warmctl.progress import NoProgress as Progress
from warmctl.refs import Ref

pytestmark = pytest.mark.usefixtures("usable_criu")

OPTIONS = RegistryOptions(tls_verify=False, chunk_size=8 * 1024)


@pytest.fixture
def snapshot(catalogue: Catalogue, fake_podman: FakePodman) -> Snapshot:
    fake_podman.add("mc", ports=["127.0.0.1:11211:11211/tcp"])
    return take_snapshot(catalogue, fake_podman, "mc", "mc",
                         SnapshotOptions(leave_running=True, labels={"tier": "cache"}),
                         Progress())


@pytest.fixture
def other(tmp_path: Path) -> Catalogue:
    return Catalogue(tmp_path / "other", lock_timeout=0.5).open()


def push(cat: Catalogue, registry: FakeRegistry, dest: str = "warm/mc",
         ref: str = "mc") -> dict[str, object]:
    return push_snapshot(cat, Ref(ref), f"{registry.host}/{dest}", OPTIONS,
                         Progress()).to_dict()


def test_push_writes_a_warmctl_artifact(catalogue: Catalogue, registry: FakeRegistry,
                                        snapshot: Snapshot) -> None:
    result = push(catalogue, registry)
    assert result["destination"] == f"{registry.host}/warm/mc:mc-1"  # the default tag
    assert result["blob_digest"] == f"sha256:{snapshot.sha256}"
    assert result["skipped_existing"] is False
    body, media_type = registry.manifests[("warm/mc", "mc-1")]
    assert media_type == OCI_MANIFEST
    assert result["manifest_digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    manifest = json.loads(body)
    assert manifest["artifactType"] == artifact.ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == artifact.CONFIG_MEDIA_TYPE
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.warmctl.checkpoint.v1.tar+zstd"
    assert registry.blobs[layer["digest"]] == snapshot.archive.read_bytes()
    config = json.loads(registry.blobs[manifest["config"]["digest"]])
    assert "archive" not in config and config["ref"] == "mc@1"
    assert config["labels"] == {"tier": "cache"}
    assert set(config["extra"]) == {"plain_bytes", "cpu"}
    assert result["bytes_uploaded"] == snapshot.size_bytes + manifest["config"]["size"]


def test_second_push_skips_what_the_registry_has(catalogue: Catalogue, registry: FakeRegistry,
                                                 snapshot: Snapshot) -> None:
    first = push(catalogue, registry)
    patches = registry.patches
    second = push(catalogue, registry)
    assert second["skipped_existing"] is True and second["bytes_uploaded"] == 0
    assert second["manifest_digest"] == first["manifest_digest"]  # same bytes, same digest
    assert registry.patches == patches
    tagged = push(catalogue, registry, dest="warm/mc:stable")
    assert tagged["destination"] == f"{registry.host}/warm/mc:stable"


def test_pull_into_another_catalogue(catalogue: Catalogue, other: Catalogue,
                                     registry: FakeRegistry, snapshot: Snapshot) -> None:
    push(catalogue, registry)
    source = f"{registry.host}/warm/mc:mc-1"
    pulled = pull(other, source, None, OPTIONS, Progress())
    assert pulled.ref == "mc@1"
    assert pulled.archive.read_bytes() == snapshot.archive.read_bytes()
    mine, theirs = snapshot.to_dict(), pulled.to_dict()
    for key in ("sha256", "size_bytes", "compression", "container", "container_id", "image",
                "image_id", "ports", "labels", "host", "criu_stats"):
        assert theirs[key] == mine[key], key
    assert pulled.extra["plain_bytes"] == snapshot.extra["plain_bytes"]
    assert pulled.extra["cpu"] == snapshot.extra["cpu"]
    assert theirs["pulled"]["source"] == source
    assert theirs["pulled"]["source_ref"] == "mc@1"
    assert theirs["pulled"]["created"] == mine["created"]
    # Under another name, and again: new generations.
    assert pull(other, source, "copy", OPTIONS, Progress()).ref == "copy@1"
    assert pull(other, source, "copy", OPTIONS, Progress()).ref == "copy@2"
    assert list(other.tmp_dir.iterdir()) == []


def test_pull_refuses_a_corrupt_blob_and_records_nothing(
    catalogue: Catalogue, other: Catalogue, registry: FakeRegistry, snapshot: Snapshot
) -> None:
    push(catalogue, registry)
    digest = f"sha256:{snapshot.sha256}"
    data = bytearray(registry.blobs[digest])
    data[len(data) // 2] ^= 0xFF
    registry.blobs[digest] = bytes(data)
    with pytest.raises(IntegrityError, match="corrupt") as err:
        pull(other, f"{registry.host}/warm/mc:mc-1", None, OPTIONS, Progress())
    assert err.value.exit_code == ExitCode.INTEGRITY
    assert other.list_snapshots() == []
    assert list(other.tmp_dir.iterdir()) == [] and list(other.archives_dir.iterdir()) == []


def test_pull_refuses_what_is_not_a_warmctl_snapshot(
    other: Catalogue, registry: FakeRegistry
) -> None:
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    registry.blobs[digest] = config
    image = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest, "size": len(config)},
        "layers": [],
    }).encode()
    registry.put_manifest("library/memcached", "1", image, OCI_MANIFEST)
    with pytest.raises(IntegrityError, match="is not a warmctl snapshot") as err:
        pull(other, f"{registry.host}/library/memcached:1", None, OPTIONS, Progress())
    assert err.value.exit_code == ExitCode.INTEGRITY
    assert "application/vnd.oci.image.config.v1+json" in err.value.message
    registry.put_manifest("docker/img", "1", b"{}",
                          "application/vnd.docker.distribution.manifest.v2+json")
    with pytest.raises(IntegrityError, match=r"is a application/vnd\.docker"):
        pull(other, f"{registry.host}/docker/img:1", None, OPTIONS, Progress())
    assert other.list_snapshots() == []


def test_pull_of_a_missing_tag_is_not_found(other: Catalogue, registry: FakeRegistry) -> None:
    with pytest.raises(NotFoundError) as err:
        pull(other, f"{registry.host}/warm/nothing:1", None, OPTIONS, Progress())
    assert err.value.exit_code == ExitCode.NOT_FOUND


def test_bad_arguments_fail_before_any_network(other: Catalogue) -> None:
    with pytest.raises(UsageError):
        pull(other, "memcached:1", None, OPTIONS, Progress())
    with pytest.raises(UsageError):
        pull(other, "127.0.0.1:1/warm/mc", "Bad Name", OPTIONS, Progress())


def test_push_to_a_digest_is_a_usage_error(catalogue: Catalogue, snapshot: Snapshot) -> None:
    with pytest.raises(UsageError, match="cannot push to a digest"):
        push_snapshot(catalogue, Ref("mc"), "127.0.0.1:1/mc@sha256:" + "a" * 64, OPTIONS,
                      Progress())


def test_push_to_a_registry_that_is_down(catalogue: Catalogue, snapshot: Snapshot) -> None:
    with FakeRegistry() as reg:
        host = reg.host
    with pytest.raises(RegistryUnreachable) as err:
        push_snapshot(catalogue, Ref("mc"), f"{host}/warm/mc", OPTIONS, Progress())
    assert err.value.exit_code == ExitCode.ENVIRONMENT and host in err.value.message
    assert [s.ref for s in catalogue.list_snapshots()] == ["mc@1"]
    assert list(catalogue.tmp_dir.iterdir()) == []


def test_gzip_and_plain_archives_keep_their_media_type(
    catalogue: Catalogue, fake_podman: FakePodman, registry: FakeRegistry
) -> None:
    fake_podman.add("mc")
    snap = take_snapshot(catalogue, fake_podman, "mc", "plain",
                         SnapshotOptions(leave_running=True, compress="none"), Progress())
    push(catalogue, registry, dest="warm/plain", ref="plain")
    manifest = json.loads(registry.manifests[("warm/plain", "plain-1")][0])
    assert manifest["layers"][0]["mediaType"] == "application/vnd.warmctl.checkpoint.v1.tar"
    assert manifest["layers"][0]["digest"] == f"sha256:{snap.sha256}"


def test_manifest_validation_details() -> None:
    good: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact.ARTIFACT_TYPE,
        "config": {"mediaType": artifact.CONFIG_MEDIA_TYPE, "digest": "sha256:" + "a" * 64,
                   "size": 10},
        "layers": [{"mediaType": artifact.LAYER_MEDIA_TYPES["gzip"],
                    "digest": "sha256:" + "b" * 64, "size": 20}],
    }
    found = artifact.parse_manifest(json.dumps(good).encode(), OCI_MANIFEST, "src")
    assert found.compression == "gzip" and found.layer.size == 20
    # Without artifactType (an older registry dropped it), the config's type suffices.
    older = {k: v for k, v in good.items() if k != "artifactType"}
    assert artifact.parse_manifest(json.dumps(older).encode(), "", "src").config.size == 10
    for broken, why in [
        ({**good, "layers": []}, "exactly one layer"),
        ({**good, "layers": [{**good["layers"][0], "mediaType": "x/y"}]}, "layer is x/y"),
        ({**good, "config": {**good["config"], "size": 1 << 30}}, "bytes"),
        ({**good, "config": "nope"}, "no config"),
    ]:
        with pytest.raises(IntegrityError, match=why):
            artifact.parse_manifest(json.dumps(broken).encode(), OCI_MANIFEST, "src")
    with pytest.raises(IntegrityError, match="not JSON"):
        artifact.parse_manifest(b"<html>", OCI_MANIFEST, "src")


@pytest.mark.parametrize(("change", "says"), [
    ({"container": "bad name!"}, "its container name 'bad name!' is not one podman takes"),
    ({"container": ""}, "its container name '' is not one podman takes"),
    ({"labels": {"tier": "a\nb"}}, "control character"),
    ({"labels": {"tier": "x" * 2000}}, "2000 bytes, more than the 1024 allowed"),
    ({"labels": {"clé": "x"}}, "invalid label key 'clé'"),
])
def test_a_pulled_config_is_held_to_what_warmctl_records(
        snapshot: Snapshot, change: dict[str, Any], says: str) -> None:
    """resume hands a pulled snapshot's container name to podman and list prints its labels:
    a registry's config gets no more leeway than the command line."""
    config = {**json.loads(artifact.config_for(snapshot)), **change}
    layer = artifact.Descriptor("application/vnd.warmctl.checkpoint.v1.tar+zstd",
                                f"sha256:{snapshot.sha256}", snapshot.size_bytes)
    pulled = artifact.Artifact(layer, layer, snapshot.compression)
    good = artifact.record_from_config(artifact.config_for(snapshot), pulled, name=None,
                                       source="reg/x", manifest_digest="sha256:" + "0" * 64)
    assert good.container_name == snapshot.container_name
    with pytest.raises(IntegrityError, match=says) as err:
        artifact.record_from_config(json.dumps(config).encode(), pulled, name=None,
                                    source="reg/x", manifest_digest="sha256:" + "0" * 64)
    assert err.value.exit_code == ExitCode.INTEGRITY


def serve_config(registry: FakeRegistry, snapshot: Snapshot, config: dict[str, Any],
                 tag: str) -> str:
    """Put ``snapshot`` in the fake registry with ``config`` as its metadata; its source."""
    body = artifact.canonical_json(config)
    registry.blobs["sha256:" + hashlib.sha256(body).hexdigest()] = body
    registry.blobs[f"sha256:{snapshot.sha256}"] = snapshot.archive.read_bytes()
    registry.put_manifest("warm/odd", tag, artifact.manifest_for(snapshot, body), OCI_MANIFEST)
    return f"{registry.host}/warm/odd:{tag}"


WARM = {"image": "localhost/img", "command": ["sleep", "1"], "warmup": None,
        "warmup_exec": "sh -c 'x'", "ready": "tcp: 80", "warm_seconds": 1.5,
        "probe_attempts": 2}


@pytest.mark.parametrize(("path", "value"), [
    (("extra",), ["plain_bytes"]),
    (("extra",), "x"),
    (("extra", "plain_bytes"), "12"),
    (("extra", "plain_bytes"), -1),
    (("extra", "plain_bytes"), True),
    (("extra", "cpu"), ["x86_64"]),
    (("extra", "cpu"), {"arch": "x86_64", "flags": ["sse"]}),
    (("extra", "warm"), "warm"),
    (("extra", "warm"), ["image"]),
    (("extra", "warm"), 5),
    (("extra", "warm", "command"), "sleep 1"),
    (("extra", "warm", "command"), [1, 2]),
    (("extra", "warm", "image"), {"name": "x"}),
    (("extra", "warm", "warm_seconds"), "1.5"),
    (("extra", "warm", "probe_attempts"), 2.5),
    (("extra", "warm", "probe_attempts"), False),
    (("extra", "warm", "unknown"), {"nested": 1}),
    (("criu_stats",), {"frozen_time": "1000"}),
    (("host",), ["kernel"]),
    (("ports",), "127.0.0.1:1:1"),
    (("labels",), ["a=b"]),
    (("created",), 1234),
    (("ref",), None),
])
def test_a_pulled_config_with_a_malformed_field_is_refused_exit_5(
    other: Catalogue, registry: FakeRegistry, snapshot: Snapshot,
    path: tuple[str, ...], value: Any
) -> None:
    """Wrong types where warmctl records others (strings for numbers, lists for objects):
    exit 5 at pull, nothing recorded, never an internal error in a later show or resume."""
    config = json.loads(artifact.config_for(snapshot))
    config["extra"]["warm"] = dict(WARM)
    # The config as pushed, with the warm-up facts a `warm` records, pulls well.
    good = pull(other, serve_config(registry, snapshot, config, "good"), "good", OPTIONS,
                Progress())
    assert good.extra["warm"] == WARM
    where = config
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    with pytest.raises(IntegrityError, match=r"malformed|lacks") as err:
        pull(other, serve_config(registry, snapshot, config, "bad"), "bad", OPTIONS,
             Progress())
    assert err.value.exit_code == ExitCode.INTEGRITY
    assert [s.ref for s in other.list_snapshots()] == ["good@1"]
