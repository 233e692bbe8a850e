"""One resume's claim on a container name.

Two things keep a resume from destroying what it did not create:
- A host-wide lock per name (an flock on a file in /run/warmctl/names, held for the whole
  resume): two resumes to one name cannot both decide that the name is theirs to fill or to
  replace. The second is refused at once (exit 4); the first goes on undisturbed.
- A mark on the container this resume creates: an annotation holding a fresh token, written
  into the spec podman creates the container from (feed.py answers podman's configuration
  reads). After a failed restore only a container carrying this token is removed, by its id,
  never whatever holds the name by then. The annotation stays on the container; a later
  resume of a snapshot of it writes its own token over it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from warmctl.errors import ConflictError
from warmctl.podman.types import ContainerInfo, Podman

log = logging.getLogger(__name__)

LOCK_DIRECTORY = Path("/run/warmctl/names")  # tmpfs: the locks go with a reboot
ANNOTATION = "io.warmctl.resume"


@dataclass(frozen=True)
class NameClaim:
    name: str
    token: str

    def mark_spec(self, spec_dump: bytes) -> bytes:
        """spec.dump with this resume's token among its annotations."""
        try:
            spec = json.loads(spec_dump)
        except ValueError:
            return spec_dump  # podman will say what is wrong with it
        if not isinstance(spec, dict):
            return spec_dump
        annotations = spec.get("annotations")
        if not isinstance(annotations, dict):
            annotations = {}
        spec["annotations"] = {**annotations, ANNOTATION: self.token}
        return json.dumps(spec).encode()

    def made(self, info: ContainerInfo | None) -> bool:
        """Whether ``info`` is the container this resume created."""
        return info is not None and info.annotations.get(ANNOTATION) == self.token

    def created_container(self, podman: Podman) -> ContainerInfo | None:
        """The container under the name that this resume created, if there is one."""
        info = podman.inspect_container(self.name)
        return info if self.made(info) else None


@contextlib.contextmanager
def claim_name(name: str) -> Iterator[NameClaim]:
    """Hold the name for this process, or raise ConflictError when another resume does."""
    claim = NameClaim(name, secrets.token_hex(16))
    try:
        fd = _open_lock(name)
    except OSError as err:
        # Not root (podman will refuse the restore anyway) or no /run: a mark without a lock.
        log.debug("no lock for the container name %s: %s", name, err)
        yield claim
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(
                f"another warmctl is resuming a container named {name} right now",
                hint="let it finish, or choose another name with --name") from None
        yield claim
    finally:
        os.close(fd)


def _open_lock(name: str) -> int:
    LOCK_DIRECTORY.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Hashed: a container name is not a trusted path component. Lock files are never
    # removed (removing one races a process about to lock it); /run empties at boot.
    key = hashlib.sha256(name.encode()).hexdigest()[:32]
    return os.open(LOCK_DIRECTORY / f"{key}.lock",
                   os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
