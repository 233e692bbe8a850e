"""The saved copies of volumes: a failed resume never costs a volume.

What a copy is and when it is made or put back is told below; volume_plan.py makes them
(save_before_removing) and a failed restore puts them back. ``through_interrupts`` runs such
work to its end whatever signals arrive.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from warmctl.errors import (
    DiskIOError,
    WarmctlError,
)
from warmctl.lifecycle.waiting import in_daemon_thread
from warmctl.podman.types import Podman, VolumeSettings

T = TypeVar("T")


# --- saved copies: a failed resume never costs a volume --------------------------------------
#
# Before resume removes a volume (--volumes snapshot, or --replace of a clone), its content is
# exported into HOME/saved-volumes/VOLUME@STAMP-PID-ID.tar (0600, fsync'd, flock'd by the
# resume while it runs), beside VOLUME@STAMP-PID-ID.json (how the volume was made, and the mode
# and owner of its top directory, which podman's export leaves out). After a failure it is made
# again from them; after a success they are deleted. A resume killed outright (kill -9, a
# crash, a power cut) leaves them, unlocked: the next resume puts such a copy back itself when
# its volume is missing, and otherwise says where it is (put_back_left_copies).

SAVED_DIR = "saved-volumes"
_SAVED_NAME = re.compile(r"(?P<volume>[A-Za-z0-9][A-Za-z0-9_.-]*)@(?P<stamp>[0-9]{8}T[0-9]{6}Z)"
                         r"-(?P<pid>[0-9]+)-[0-9a-f]{8}\.(?P<kind>tar|json|partial)")


@dataclass
class SavedVolume:
    """One volume's content, saved before a resume removes the volume."""

    volume: str
    partial: Path  # where podman exports it; renamed to ``path`` once whole and on disk
    fd: int  # the flock that says its resume is alive
    path: Path | None = None  # VOLUME@STAMP-PID-ID.tar, once whole
    removed: bool = False  # the volume has been removed since (undo() makes it again)

    @property
    def settings_path(self) -> Path:
        return self.partial.with_suffix(".json")

    def how_to_put_back(self) -> str:
        return (f"its content from before this resume is kept in {self.path} (podman volume "
                f"import {self.volume} {self.path}; the next warmctl resume puts it back by "
                "itself if the volume is missing)")

    def put_back(self, podman: Podman) -> None:
        assert self.path is not None
        _recreate(podman, self.volume, self.path, _read_settings(self.settings_path))

    def discard(self) -> None:
        for path in (self.partial, self.path, self.settings_path):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _not_saved(volume: str, home: Path, reason: str) -> WarmctlError:
    message = (f"cannot save volume {volume}'s content before replacing it: {reason}; "
               "nothing was removed")
    hint = f"the copy goes to {home / SAVED_DIR} and needs as much space as the volume holds"
    if re.search(r"no space left|input/output error|disk quota", reason, re.I):
        return DiskIOError(message, hint=hint)
    return WarmctlError(message, hint=hint)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}  # made as a plain local volume, then
    return record if isinstance(record, dict) else {}


def _recreate(podman: Podman, volume: str, copy: Path, record: dict[str, Any]) -> None:
    """Make ``volume`` again as it was: same driver, labels and options, the saved files, and
    the mode and owner of its top directory."""
    def texts(key: str) -> dict[str, str]:
        value = record.get(key)
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    settings = VolumeSettings(driver=str(record.get("driver") or "local"),
                              labels=texts("labels"), options=texts("options"))
    mountpoint = podman.create_volume(volume, settings)
    with copy.open("rb") as tar:
        podman.import_volume(volume, tar)
    top = record.get("top")
    if isinstance(top, dict):
        with contextlib.suppress(OSError, TypeError, ValueError):
            os.chown(mountpoint, int(top["uid"]), int(top["gid"]))
            os.chmod(mountpoint, int(top["mode"]))


def put_back_left_copies(home: Path, podman: Podman, warn: Callable[[str], None]) -> None:
    """Copies that a resume killed outright (kill -9, a crash) left in saved-volumes/: a copy
    whose volume is missing is put back now (nothing of the user's is overwritten); one whose
    volume exists is named, with the command that puts it back. A volume that a running
    resume holds a copy of is left to it. Never fails the caller."""
    directory = home / SAVED_DIR
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return
    left: list[tuple[Path, re.Match[str], int]] = []  # locked here: their resume is gone
    busy: set[str] = set()  # volumes a running resume has a copy of
    try:
        for path in entries:
            found = _SAVED_NAME.fullmatch(path.name)
            if found is None or found["kind"] == "json" or path.is_symlink() \
                    or not path.is_file():
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                busy.add(found["volume"])
                continue
            left.append((path, found, fd))
        for path, found, _ in left:
            if found["kind"] == "partial":
                # An export that never finished: its volume was never removed (removal
                # waits for a whole copy on disk).
                with contextlib.suppress(OSError):
                    path.unlink()
                    path.with_suffix(".json").unlink(missing_ok=True)
            elif found["volume"] not in busy:
                _handle_left_copy(podman, path, found, warn=warn)
    finally:
        for _, _, fd in left:
            os.close(fd)


def _handle_left_copy(podman: Podman, path: Path, found: re.Match[str], *,
                      warn: Callable[[str], None]) -> None:
    volume, stamp = found["volume"], found["stamp"]
    left = f"saved by a resume that did not finish ({stamp}, process {found['pid']})"
    try:
        if podman.volume_mountpoint(volume) is None:
            def put_back() -> None:
                _recreate(podman, volume, path, _read_settings(path.with_suffix(".json")))
                path.unlink()
                path.with_suffix(".json").unlink(missing_ok=True)

            _, interrupted = through_interrupts(put_back)  # never left half done
            warn(f"volume {volume} was missing: put back from {path}, {left}")
            if interrupted:
                raise KeyboardInterrupt
            return
    except (WarmctlError, OSError) as err:
        reason = err.message if isinstance(err, WarmctlError) else str(err)
        warn(f"{path} holds volume {volume}'s content, {left}; putting it back failed "
             f"({reason}): podman volume create {volume}; podman volume import {volume} {path}")
        return
    warn(f"{path} holds volume {volume}'s content, {left}; the volume exists, so it is left "
         f"as it is: podman volume import {volume} {path} puts the saved files back into it; "
         f"delete {path} once it is not needed")


def through_interrupts(work: Callable[[], T]) -> tuple[T, bool]:
    """Run ``work`` (podman calls that change volumes or containers) to its end in a thread of
    its own, and wait for it whatever Ctrl-C, SIGTERM or SIGHUP arrive meanwhile (Python
    delivers them to the main thread only, as KeyboardInterrupt). Returns its result and
    whether an interruption came. So warmctl always knows whether a volume was removed, and a
    put-back never stops halfway (only kill -9 can stop it: the copy then stays on disk, see
    put_back_left_copies). ``work``'s own error is raised."""
    future = in_daemon_thread(work, name="volumes")
    interrupted = False
    while True:
        try:
            concurrent.futures.wait([future])
            break
        except KeyboardInterrupt:
            interrupted = True
    return future.result(), interrupted
