"""A fake podman for unit tests: containers in a dict, checkpoints written from a real podman
archive kept as test data. Only what warmctl's library code calls is implemented."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import zstandard

from warmctl.errors import CheckpointError, HostError, PodmanConflictError, PodmanError
from warmctl.podman.runner import CommandResult, starting
from warmctl.podman.types import (
    CheckpointResult,
    ContainerInfo,
    HostVersions,
    Podman,
    RestoreResult,
)

DATA = Path(__file__).parent / "data"
REAL_ARCHIVE = DATA / "podman-checkpoint-busybox.tar"  # zstd, as podman wrote it


def plain_archive_bytes() -> bytes:
    return as_plain(REAL_ARCHIVE.read_bytes())


def as_plain(data: bytes) -> bytes:
    """An archive's tar stream, as podman reads it whatever the compression."""
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data),
                                                          read_across_frames=True).read()
    return data


def spec_annotations(data: bytes) -> dict[str, str]:
    """The annotations of the spec.dump in a tar stream: podman creates the container with
    them. Empty when there is no spec.dump."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.name == "spec.dump" and member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                annotations = json.loads(extracted.read()).get("annotations") or {}
                return {str(k): str(v) for k, v in annotations.items()}
    return {}


def tar_member_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getnames()


def _criu_options(criu_bin: Path | None) -> list[str]:
    """What the criu wrapper in ``criu_bin`` hands CRIU, read while the file exists."""
    if criu_bin is None:
        return []
    script = (criu_bin / "criu").read_text()
    conf = Path(next(line for line in script.splitlines()
                     if line.startswith("CRIU_CONFIG_FILE=")).partition("=")[2].strip("'"))
    return [line for line in conf.read_text().splitlines() if not line.startswith("#")]


@dataclass
class FakePodman(Podman):
    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    images: set[str] = field(default_factory=lambda: {"localhost/img"})
    calls: list[str] = field(default_factory=list)
    # Per checkpoint or restore: the options CRIU would have read from warmctl's
    # configuration (criu_config.py), [] when podman got none.
    criu_configs: list[list[str]] = field(default_factory=list)
    versions: HostVersions | None = field(default_factory=lambda: HostVersions(
        "4.3.1", "runc", "runc 1.1.5", "6.18.0", "testhost"))  # None: podman is missing
    fail_checkpoint: str | CheckpointError | None = None
    fail_restore: str | None = None
    exec_results: list[int] = field(default_factory=list)
    exec_stdout: str = ""
    exits_at_once: bool = False  # containers started by run_detached stop at once
    restored_from: list[bytes] = field(default_factory=list)  # what each import read got
    config_reads: int = 2
    exports: bytes | None = None  # what checkpoint writes instead of a real archive
    # Where containers' storage lives; None: the fake keeps no checkpoint in storage, so
    # resume never restores in place.
    storage: Path | None = None
    # Called while podman "runs" a checkpoint (after its export is written) or a restore
    # (before it creates the container): a test presses Ctrl-C or holds podman up there.
    while_running: Callable[[], None] | None = None
    _next_id: int = 1

    def add(self, name: str, *, running: bool = True, ports: Sequence[str] = (),
            annotations: dict[str, str] | None = None) -> ContainerInfo:
        info = ContainerInfo(
            id=f"id{self._next_id:04d}", name=name, image_name="localhost/img:latest",
            image_id="iid", state="running" if running else "exited", checkpointed=False,
            ports=list(ports), pid=0, annotations=dict(annotations or {}),
        )
        self._next_id += 1
        self.containers[name] = info
        return info

    def host_versions(self) -> HostVersions:
        if self.versions is None:
            raise HostError("podman not found on PATH", hint="install podman")
        return self.versions

    def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        for info in self.containers.values():
            if name_or_id in (info.name, info.id):
                return info
        return None

    def list_containers(self, *, running_only: bool = True) -> list[str]:
        return [n for n, c in self.containers.items() if c.running or not running_only]

    def list_images(self) -> list[str]:
        return sorted(self.images)

    def image_exists(self, image: str) -> bool:
        return image in self.images

    def image_id(self, image: str) -> str | None:
        return "iid" if image.removesuffix(":latest") in self.images else None

    def run_detached(self, image: str, *, name: str, publish: Sequence[str] = (),
                     env: Sequence[str] = (), volumes: Sequence[str] = (),
                     extra_args: Sequence[str] = (), command: Sequence[str] = ()) -> str:
        self.calls.append(" ".join(["run", image, *command]))
        if name in self.containers:
            raise PodmanConflictError(f"name {name} in use")
        ports = [f"127.0.0.1:{p.split(':')[-2]}:{p.split(':')[-1]}/tcp" for p in publish]
        return self.add(name, running=not self.exits_at_once, ports=ports).id

    def exec(self, container: str, command: Sequence[str], *, timeout: float) -> CommandResult:
        self.calls.append(f"exec {container} {' '.join(command)}")
        code = self.exec_results.pop(0) if self.exec_results else 0
        return CommandResult(["podman", "exec", container, *command], code, self.exec_stdout,
                             "" if code == 0 else f"exec failed with {code}")

    def checkpoint(self, container: str, export_to: Path, *, leave_running: bool = False,
                   compress: str = "zstd", tcp_established: bool = False,
                   file_locks: bool = False, criu_bin: Path | None = None) -> CheckpointResult:
        starting(lambda: None)  # podman's process starts here (waiting.PodmanCall's gate)
        self.calls.append(f"checkpoint {container} compress={compress}")
        self.criu_configs.append(_criu_options(criu_bin))
        if isinstance(self.fail_checkpoint, CheckpointError):
            raise self.fail_checkpoint
        if self.fail_checkpoint:
            raise CheckpointError(self.fail_checkpoint, stderr=self.fail_checkpoint)
        if self.exports is not None:
            export_to.write_bytes(self.exports)
        elif compress == "zstd":
            shutil.copyfile(REAL_ARCHIVE, export_to)
        else:
            assert compress == "none", "the fake writes zstd or plain archives"
            export_to.write_bytes(plain_archive_bytes())
        if self.while_running is not None:
            self.while_running()
        info = self.inspect_container(container)
        assert info is not None
        if not leave_running:
            self.containers[info.name] = replace(info, state="exited", checkpointed=True)
        if self.storage is not None:  # podman keeps the checkpoint in the container's storage
            images = self.storage / info.id / "checkpoint"
            shutil.rmtree(images, ignore_errors=True)
            images.mkdir(parents=True)
            (images / "pages-1.img").write_bytes(os.urandom(64))
            (images / "inventory.img").write_bytes(b"inventory")
        return CheckpointResult({"frozen_time": 1000, "pages_written": 33}, 5000)

    def userdata_dir(self, container: str) -> Path | None:
        info = self.inspect_container(container)
        return self.storage / info.id if self.storage is not None and info else None

    def restore_in_place(self, container: str, *, tcp_established: bool = False,
                         file_locks: bool = False, criu_bin: Path | None = None) -> RestoreResult:
        """As podman: restores from the checkpoint in storage, then removes it."""
        starting(lambda: None)
        self.criu_configs.append(_criu_options(criu_bin))
        info = self.inspect_container(container)
        assert info is not None and self.storage is not None
        self.calls.append(f"restore in place {info.id}")
        if self.fail_restore:
            raise CheckpointError(self.fail_restore, stderr=self.fail_restore)
        shutil.rmtree(self.storage / info.id / "checkpoint")
        self.containers[info.name] = replace(info, state="running", checkpointed=False)
        return RestoreResult(info.id, {"restore_time": 5}, 1000)

    def restore(self, archive: Path, *, name: str, publish: Sequence[str] = (),
                tcp_established: bool = False, file_locks: bool = False,
                ignore_volumes: bool = False,
                criu_bin: Path | None = None) -> RestoreResult:
        """Reads ``archive`` as podman 4.3 to 5.x does: opened anew for each of
        ``config_reads`` reads of config.dump, then once more to import it all."""
        starting(lambda: None)
        self.calls.append(f"restore {name}")
        self.criu_configs.append(_criu_options(criu_bin))
        if self.while_running is not None:
            self.while_running()
        annotations: dict[str, str] = {}
        for _ in range(self.config_reads):
            configuration = as_plain(archive.read_bytes())
            if "config.dump" not in tar_member_names(configuration):
                raise PodmanError("failed extracting runtime information: no config.dump")
            annotations = annotations or spec_annotations(configuration)
        if name in self.containers:
            raise PodmanConflictError(f"name {name} is already in use")
        imported = as_plain(archive.read_bytes())
        self.restored_from.append(imported)
        annotations = annotations or spec_annotations(imported)
        if len(imported) % 512 or imported[-1024:] != bytes(1024):
            raise PodmanError("unpacking of checkpoint archive failed: invalid tar header")
        if "checkpoint/inventory.img" not in tar_member_names(imported):
            self.add(name, running=False, annotations=annotations)
            raise CheckpointError("a complete checkpoint for this container cannot be found, "
                                  "cannot restore: stat .../checkpoint/inventory.img")
        info = self.add(name, running=self.fail_restore is None, annotations=annotations)
        if self.fail_restore:
            raise CheckpointError(self.fail_restore, stderr=self.fail_restore)
        return RestoreResult(info.id, {"restore_time": 10}, 2000)

    def remove_container(self, name_or_id: str, *, force: bool = True) -> None:
        self.calls.append(f"rm {name_or_id}")
        info = self.inspect_container(name_or_id)
        if info is not None:
            del self.containers[info.name]
