"""Verifying a snapshot: its archive against the digest and the record the catalogue holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmctl import archive
from warmctl.catalogue import Catalogue, Snapshot
from warmctl.errors import (
    DiskIOError,
    IntegrityError,
)
from warmctl.progress import Progress


def from_registry(snapshot: Snapshot) -> bool:
    """Pulled: its spec was written by whoever pushed it."""
    return "pulled" in snapshot.extra


def check_digest(snapshot: Snapshot, path: Path, progress: Progress) -> None:
    compare_digest(snapshot, archive.sha256_file(path, progress.advance))


def compare_digest(snapshot: Snapshot, digest: str) -> None:
    if digest != snapshot.sha256:
        raise IntegrityError(
            f"archive of {snapshot.ref} is corrupt: sha256 {digest[:16]}... "
            f"does not match the recorded {snapshot.sha256[:16]}...",
            hint=f"remove it with: warmctl rm {snapshot.ref}",
        )


def record_disagreements(snapshot: Snapshot, summary: archive.ArchiveSummary,
                         archive_bytes: int) -> list[str]:
    """Where an archive's own contents contradict the snapshot's record (e.g. a file swapped
    in from another snapshot): what `show` reads from the archive would otherwise be mixed
    with the record without a word. Only `verify`'s digest proves the archive is the one."""
    found = []
    if archive_bytes != snapshot.size_bytes:
        found.append(f"{archive_bytes} bytes, recorded {snapshot.size_bytes}")
    if summary.compression != snapshot.compression:
        found.append(f"{summary.compression} compression, recorded {snapshot.compression}")
    pairs = (("container id", summary.container_id, snapshot.container_id),
             ("image id", summary.image_id, snapshot.image_id))
    for what, in_archive, recorded in pairs:
        if in_archive and recorded and in_archive != recorded:
            found.append(f"{what} {in_archive[:12]}, recorded {recorded[:12]}")
    return found


@dataclass(frozen=True)
class VerifyResult:
    snapshot: Snapshot
    ok: bool
    problem: str = ""
    # The disk failed a read (EIO): not proved corrupt, and not to be removed for it.
    disk_failure: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.snapshot.ref, "ok": self.ok, "problem": self.problem or None,
                "disk_failure": self.disk_failure}


def verify_snapshot(catalogue: Catalogue, snapshot: Snapshot, progress: Progress) -> VerifyResult:
    """Recompute the digest and read the archive's structure to its end."""
    try:
        with catalogue.hold_archive(snapshot) as held:
            progress.phase(f"verifying {snapshot.ref}")
            check_digest(snapshot, held.path, progress)
            archive.verify_structure(held.path)
    except IntegrityError as err:
        return VerifyResult(snapshot, False, err.message)
    except DiskIOError as err:
        return VerifyResult(snapshot, False, err.message, disk_failure=True)
    return VerifyResult(snapshot, True)
