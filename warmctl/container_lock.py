"""One checkpoint of a container at a time, host-wide.

Two `podman container checkpoint` runs of one container that overlap can both succeed while
one of them exports an archive without config.dump and spec.dump (seen with podman 4.3.1: four
snapshots at once, two per container, recorded two such archives). Two snapshots of one
container at once are ordinary (a timer and a person), so warmctl takes them one after the
other: each holds an flock on ``/run/warmctl/locks/CONTAINER-ID.lock`` while podman
checkpoints. The lock is the kernel's: it goes with the process, however it ends. The files
stay (removing a lock file races with its next taker); /run is emptied at boot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from warmctl.errors import HostError

DIRECTORY = Path("/run/warmctl/locks")
# podman's ids are 64 hex digits; anything that could leave the directory is refused.
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@contextlib.contextmanager
def checkpointing(container_id: str, *, waiting: Callable[[], None],
                  directory: Path | None = None) -> Iterator[bool]:
    """Hold the container's checkpoint lock while the context is open; ``waiting()`` is
    called once when another process holds it, before this one waits. Yields whether it
    waited (the container may have changed meanwhile)."""
    if not _CONTAINER_ID.fullmatch(container_id):
        raise ValueError(f"not a container id: {container_id!r}")
    directory = DIRECTORY if directory is None else directory
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory / f"{container_id}.lock",
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise HostError(f"cannot lock container {container_id[:12]} for its checkpoint: "
                        f"{err.strerror}: {err.filename}") from err
    try:
        waited = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield waited
    finally:
        os.close(fd)
