"""What is measured: one dataclass per kind of measurement, and the methods compared."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    kind: str  # "snapshot" or "resume"


# The first method of each kind is podman's default: the baseline of every ratio.
PODMAN_EXPORT = Method("podman-export", "podman checkpoint --export", "snapshot")
WARMCTL_SNAPSHOT = Method("warmctl-snapshot", "warmctl snapshot", "snapshot")
PODMAN_CHECKPOINT_IN_PLACE = Method(
    "podman-checkpoint-in-place", "podman checkpoint (in place, stops)", "snapshot")
PODMAN_IMPORT = Method("podman-import", "podman restore --import", "resume")
WARMCTL_RESUME = Method("warmctl-resume", "warmctl resume", "resume")
PODMAN_RESTORE_IN_PLACE = Method("podman-restore-in-place", "podman restore (in place)", "resume")
COLD_REFILL = Method("cold-refill", "cold: new container + refill", "resume")

METHODS = (PODMAN_EXPORT, WARMCTL_SNAPSHOT, PODMAN_CHECKPOINT_IN_PLACE,
           PODMAN_IMPORT, WARMCTL_RESUME, PODMAN_RESTORE_IN_PLACE, COLD_REFILL)
BASELINE = {"snapshot": PODMAN_EXPORT, "resume": PODMAN_IMPORT}


@dataclass(frozen=True)
class SnapshotSample:
    """One checkpoint of the filled source container (or of a copy, for in-place)."""

    method: str
    size_mib: int
    repetition: int
    seconds: float  # the command, start to exit
    archive_bytes: int | None  # None: no archive file (kept in podman's storage)
    frozen_us: int | None  # CRIU's frozen_time: how long the container's processes stood still


@dataclass(frozen=True)
class ResumeSample:
    """One way of getting a warm cache back, then reading it."""

    method: str
    size_mib: int
    repetition: int
    seconds: float  # the command (cold path: start the container, wait, refill)
    first_hit_s: float  # from the command's exit to the first correct get
    check_s: float  # reading every value back
    mismatches: int  # values missing or wrong: must be 0
    criu_restore_us: int | None = None  # CRIU's own restore_time (--print-stats), if restored


@dataclass(frozen=True)
class MicroSample:
    """A short CLI call timed repeatedly."""

    key: str
    label: str
    runs_s: list[float] = field(default_factory=list)
    target_s: float | None = None

    @property
    def median_s(self) -> float:
        return median(self.runs_s)
