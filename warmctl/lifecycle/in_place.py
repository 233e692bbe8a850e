"""The checkpoint podman keeps in a container's storage: its fingerprint, recorded when a
snapshot stops its container (take.py) and compared before a resume restores in place
(resume.py).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from warmctl.errors import WarmctlError
from warmctl.podman.types import Podman

# Besides checkpoint/, what `podman container restore` reads from a container's storage.
_IN_PLACE_FILES = ("network.status", "devshm-checkpoint.tar", "rootfs-diff.tar", "deleted.files")


def checkpoint_fingerprint(userdata: Path) -> str | None:
    """The identity (name, size, mtime, inode) of every file of the checkpoint kept in a
    container's storage: any later checkpoint, restore or removal changes it. None when there
    is no checkpoint there."""
    try:
        files = sorted(p for p in (userdata / "checkpoint").rglob("*") if p.is_file())
        if not files:
            return None
        files += [userdata / name for name in _IN_PLACE_FILES if (userdata / name).is_file()]
        digest = hashlib.sha256()
        for path in files:
            found = path.stat()
            digest.update(f"{path.relative_to(userdata)}\0{found.st_size}\0"
                          f"{found.st_mtime_ns}\0{found.st_ino}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


def stored_checkpoint(podman: Podman, container_id: str) -> str | None:
    """The fingerprint of the checkpoint podman keeps in the container's storage, if any."""
    userdata = podman.userdata_dir(container_id)
    return checkpoint_fingerprint(userdata) if userdata is not None else None


def in_place_extra(podman: Podman, container_id: str) -> dict[str, Any]:
    """extra's "in_place", for a checkpoint that stopped its container: what lets a later
    resume restore in place, since the checkpoint in the container's storage is, at this
    moment, exactly the snapshot. Optional: no podman trouble here may fail the snapshot."""
    with contextlib.suppress(WarmctlError):
        fingerprint = stored_checkpoint(podman, container_id)
        if fingerprint is not None:
            return {"in_place": {"container_id": container_id, "checkpoint": fingerprint}}
    return {}
