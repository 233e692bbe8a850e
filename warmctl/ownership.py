"""Files owned by the process that made them: it holds an exclusive ``flock`` on the file for
as long as it needs it, so any other process can tell a live owner from a dead one (killed,
crashed) without trusting PIDs, which the kernel reuses. Used for the catalogue's temporary
files and for resume's CRIU configuration files."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def owner_is_gone(path: Path) -> bool:
    """True when no process holds the lock on path (its creator died or forgot it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
