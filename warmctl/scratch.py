"""Where an intermediate plain tar lives while podman writes or reads it.

A checkpoint is exported as a plain tar and compressed by warmctl; a compressed snapshot is
expanded into a plain tar for podman to import. That tar is transient, as big as the
container's memory, and written and read once. In memory (a memfd, which podman opens
through /proc/PID/fd/N as a regular file, as often as it likes) it costs no disk writes and
vanishes with the process, even after kill -9. It goes to the catalogue's tmp/ instead when
it would take more than half of the memory available, or when WARMCTL_SCRATCH=disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from warmctl.catalogue import Catalogue
from warmctl.errors import UsageError

_PAGE = os.sysconf("SC_PAGE_SIZE")


def mem_available() -> int:
    """MemAvailable from /proc/meminfo in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes: about what CRIU
    will dump for a container whose init is ``pid``."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)
        rss[child] = int(fields[21]) * _PAGE
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(children.get(current, []))
    return total


def _use_memory(expected_bytes: int) -> bool:
    mode = os.environ.get("WARMCTL_SCRATCH", "auto")
    if mode not in ("auto", "memory", "disk"):
        raise UsageError(f"WARMCTL_SCRATCH must be auto, memory or disk, not {mode!r}")
    if mode != "auto":
        return mode == "memory"
    return hasattr(os, "memfd_create") and 2 * expected_bytes <= mem_available()


@contextmanager
def plain_tar(catalogue: Catalogue, expected_bytes: int) -> Iterator[Path]:
    """A path podman can write or read a plain tar at, removed on exit."""
    if _use_memory(expected_bytes):
        fd = os.memfd_create("warmctl-plain-tar", os.MFD_CLOEXEC)
        try:
            yield Path(f"/proc/{os.getpid()}/fd/{fd}")
        finally:
            os.close(fd)
    else:
        with catalogue.new_temp_file(".plain") as temp:
            yield temp.path
