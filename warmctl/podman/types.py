"""What warmctl needs from podman: the adapter's result types and the ``Podman`` interface.

``Podman`` is the interface the rest of the code depends on; ``PodmanCLI`` (``cli.py``)
drives the real program; unit tests use a fake. Its optional methods (volumes, the stored
checkpoint) have defaults that say this adapter does not know them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from warmctl.errors import PodmanError
from warmctl.podman.runner import CommandResult

COMPRESSIONS = ("zstd", "none", "gzip")


@dataclass(frozen=True)
class VolumeSettings:
    """How a named volume was made, as `podman volume inspect` shows it: enough to make it
    again as it was (saved_volumes.py puts a volume back after a failed resume)."""

    driver: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"driver": self.driver, "labels": self.labels, "options": self.options}


@dataclass(frozen=True)
class Mount:
    """One of a container's mounts, as podman inspect lists it."""

    type: str  # "volume" (a named volume) or "bind" (a host path)
    name: str  # the volume's name; "" for a bind mount
    source: str  # the host path
    destination: str  # the path inside the container


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image_name: str
    image_id: str
    state: str  # podman's status word: running, exited, created, ...
    checkpointed: bool
    pid: int = 0  # the container's init process on the host, 0 when not running
    ports: list[str] = field(default_factory=list)  # "HOST_IP:HOST_PORT:CONTAINER_PORT/PROTO"
    labels: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)  # the spec's (Config.Annotations)

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class CheckpointResult:
    criu_statistics: dict[str, int]
    duration_us: int | None


@dataclass(frozen=True)
class RestoreResult:
    container_id: str
    criu_statistics: dict[str, int]
    duration_us: int | None


@dataclass(frozen=True)
class HostVersions:
    podman: str
    runtime: str
    runtime_version: str
    kernel: str
    hostname: str
    cgroup_manager: str = ""
    cgroup_version: str = ""
    # The runtime's whole --version text: crun lists its build features (+CRIU) there.
    runtime_details: str = ""


class Podman(ABC):
    """What warmctl needs from podman. Implementations: PodmanCLI, and fakes in tests."""

    @abstractmethod
    def host_versions(self) -> HostVersions: ...

    def versions_fingerprint(self) -> str | None:
        """Something that changes whenever host_versions() may: the programs' and their
        configuration files' identities. None: unknown, so host_versions() is not cached."""
        return None

    def userdata_dir(self, container: str) -> Path | None:
        """The container's directory in podman's storage, which holds its last checkpoint
        (checkpoint/, network.status, ...); None when unknown."""
        return None

    def restore_in_place(self, container: str, *, tcp_established: bool = False,
                         file_locks: bool = False, criu_bin: Path | None = None) -> RestoreResult:
        """Restore a checkpointed, stopped container from the checkpoint in its own storage.

        ``criu_bin``, here and in checkpoint() and restore(): a directory put first on
        podman's PATH, whose ``criu`` hands CRIU warmctl's configuration (criu_config.py)."""
        raise PodmanError("this podman adapter cannot restore in place")

    # --- named volumes (warmctl/lifecycle/volume_plan.py) ---

    def volume_mountpoint(self, name: str) -> Path | None:
        """Where the volume's content lives on the host; None when there is no such volume."""
        raise PodmanError("this podman adapter knows no volumes")

    def volume_users(self, name: str) -> list[str]:
        """The ids of the containers (any state) that mount the volume."""
        raise PodmanError("this podman adapter knows no volumes")

    def create_volume(self, name: str, settings: VolumeSettings | None = None) -> Path:
        """A new, empty named volume (made as ``settings`` say: driver, labels, options);
        returns its mountpoint."""
        raise PodmanError("this podman adapter cannot create volumes")

    def volume_settings(self, name: str) -> VolumeSettings | None:
        """How the volume was made (driver, labels, options); None when there is none."""
        raise PodmanError("this podman adapter knows no volumes")

    def export_volume(self, name: str, dest: Path) -> None:
        """Write the volume's content as a tar into ``dest`` (truncated, written in place)."""
        raise PodmanError("this podman adapter cannot export volumes")

    def import_volume(self, name: str, tar: IO[bytes]) -> None:
        """Fill the volume with the content of a tar stream, read to its end."""
        raise PodmanError("this podman adapter cannot import volumes")

    def remove_volume(self, name: str) -> None:
        """Remove a volume; one that is already gone is not an error."""
        raise PodmanError("this podman adapter cannot remove volumes")

    @abstractmethod
    def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        """The container's state, or None when podman knows no such container."""

    @abstractmethod
    def list_containers(self, *, running_only: bool = True) -> list[str]: ...

    @abstractmethod
    def list_images(self) -> list[str]: ...

    @abstractmethod
    def image_exists(self, image: str) -> bool: ...

    def image_id(self, image: str) -> str | None:
        """The full id of a local image, or None when it is not on this host (or, in an
        implementation that cannot tell, unknown)."""
        return None

    @abstractmethod
    def run_detached(
        self,
        image: str,
        *,
        name: str,
        publish: Sequence[str] = (),
        env: Sequence[str] = (),
        volumes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        command: Sequence[str] = (),
    ) -> str:
        """Start a container in the background; returns its id."""

    @abstractmethod
    def exec(self, container: str, command: Sequence[str], *, timeout: float) -> CommandResult:
        """Run a command inside the container; a non-zero exit is returned, not raised."""

    @abstractmethod
    def checkpoint(
        self,
        container: str,
        export_to: Path,
        *,
        leave_running: bool = False,
        compress: str = "zstd",
        tcp_established: bool = False,
        file_locks: bool = False,
        criu_bin: Path | None = None,
    ) -> CheckpointResult: ...

    @abstractmethod
    def restore(
        self,
        archive: Path,
        *,
        name: str,
        publish: Sequence[str] = (),
        tcp_established: bool = False,
        file_locks: bool = False,
        ignore_volumes: bool = False,
        criu_bin: Path | None = None,
    ) -> RestoreResult:
        """``ignore_volumes``: the container mounts the volumes its configuration names as
        they are, without creating them or restoring the archive's content into them."""

    @abstractmethod
    def remove_container(self, name_or_id: str, *, force: bool = True) -> None:
        """Remove a container; a container that is already gone is not an error."""
