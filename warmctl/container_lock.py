"""One checkpoint of a container at a time, host-wide.

Two `podman container checkpoint` runs of one container that overlap can both succeed while
one of them exports an archive without config.dump and spec.dump (seen with podman 4.3.1: four
snapshots at once, two per container, recorded two such archives). Two snapshots of one
container at once are ordinary (a timer and a person), so warmctl takes them one after the
other: each holds an flock on ``/run/warmctl/locks/CONTAINER-ID.lock`` while podman
checkpoints. The lock is the kernel's: it goes with the process, however it ends. The files
stay (removing a lock file races with its next taker); /run is emptied at boot.

The wait is bounded and never silent: a checkpoint that hangs would otherwise hold every later
snapshot of its container (a timer's, a unit's stop) forever. The holder writes its PID into
the file, so that the one waiting can say whom it waits for; after ``NOTICE_AFTER`` seconds it
says so on stderr, and ``--time-limit`` counts the wait (exit 124, nothing done).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from warmctl.errors import HostError, TimedOut
from warmctl.units import format_duration

DIRECTORY = Path("/run/warmctl/locks")
# podman's ids are 64 hex digits; anything that could leave the directory is refused.
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# A wait shorter than this is a snapshot finishing its last step: not worth a line. A longer
# one is said once, so that a command that seems to hang says why.
NOTICE_AFTER = 1.0
# flock has no timeout of its own: try again this often (short against a checkpoint's seconds).
_POLL_INTERVAL = 0.05


def _say_on_stderr(text: str) -> None:
    sys.stderr.write(f"warmctl: {text}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def checkpointing(container_id: str, *, waiting: Callable[[], None],
                  shown_as: str | None = None, time_limit: float | None = None,
                  started: float | None = None, say: Callable[[str], None] = _say_on_stderr,
                  directory: Path | None = None) -> Iterator[bool]:
    """Hold the container's checkpoint lock while the context is open; ``waiting()`` is
    called once when another process holds it, before this one waits, and ``say`` once more
    after ``NOTICE_AFTER`` seconds of waiting, naming the container, the lock and its holder.
    With ``time_limit`` (seconds since ``started``, a time.monotonic(), default now), raises
    TimedOut when it passes before the lock is free. Yields whether it waited (the container
    may have changed meanwhile)."""
    if not _CONTAINER_ID.fullmatch(container_id):
        raise ValueError(f"not a container id: {container_id!r}")
    directory = DIRECTORY if directory is None else directory
    path = directory / f"{container_id}.lock"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise HostError(f"cannot lock container {container_id[:12]} for its checkpoint: "
                        f"{err.strerror}: {err.filename}") from err
    try:
        waited = False
        if not _try_lock(fd):
            waiting()
            waited = True
            _wait_for_lock(fd, path, shown_as or container_id[:12], time_limit=time_limit,
                           started=time.monotonic() if started is None else started, say=say)
        _record_holder(fd)
        yield waited
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for_lock(fd: int, path: Path, shown: str, *, time_limit: float | None,
                   started: float, say: Callable[[str], None]) -> None:
    wait_started = time.monotonic()
    deadline = None if time_limit is None else started + time_limit
    said = False
    while not _try_lock(fd):
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            assert time_limit is not None
            raise TimedOut(
                f"gave up waiting for {_holder(fd)} to finish checkpointing container {shown} "
                f"(lock {path}): the time limit ({format_duration(time_limit)}) passed after "
                f"{format_duration(now - wait_started)} of waiting; nothing was done",
                hint="see what that process is doing (a checkpoint that hangs: ps, "
                     "podman ps), then retry")
        if not said and now - wait_started >= NOTICE_AFTER:
            say(f"waiting for {_holder(fd)} to finish checkpointing container {shown} "
                f"(lock {path})")
            said = True
        time.sleep(_POLL_INTERVAL if deadline is None
                   else max(min(_POLL_INTERVAL, deadline - now), 0.0))


def _record_holder(fd: int) -> None:
    """Our PID in the lock file, for a process that waits to name (best effort: the lock is
    the flock, not the file's content)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _holder(fd: int) -> str:
    """``another warmctl (pid 1234)``, or without the PID when the file does not say it."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"another warmctl (pid {text})" if text.isdigit() else "another warmctl"
