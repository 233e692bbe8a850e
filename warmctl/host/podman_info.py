"""podman's host versions, remembered between commands.

``podman info`` costs about 0.25 s of CPU, and every snapshot records what it says. Run
alongside a checkpoint it lengthened CRIU's freeze or the export (measured on two cores), so
its answer is kept in the user's cache directory, keyed by a fingerprint of the programs and
configuration files it depends on (Podman.versions_fingerprint), and asked again when the
fingerprint changes or the answer is a day old.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from warmctl.podman import HostVersions, Podman

MAX_AGE_S = 24 * 3600


def default_cache_file() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("warmctl") / "host-versions.json"


def host_versions(podman: Podman, cache_file: Path | None = None) -> HostVersions:
    """podman.host_versions(), from the cache when its fingerprint still matches."""
    fingerprint = podman.versions_fingerprint()
    if fingerprint is None:
        return podman.host_versions()
    path = cache_file or default_cache_file()
    remembered = _read(path, fingerprint)
    if remembered is not None:
        return remembered
    versions = podman.host_versions()
    _write(path, fingerprint, versions)
    return versions


def _read(path: Path, fingerprint: str) -> HostVersions | None:
    try:
        entry = json.loads(path.read_text())
        if entry["fingerprint"] != fingerprint or time.time() - entry["at"] > MAX_AGE_S:
            return None
        return HostVersions(**entry["versions"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, unreadable or from another warmctl: ask podman


def _write(path: Path, fingerprint: str, versions: HostVersions) -> None:
    """Best effort, atomically: a cache that cannot be written only costs time."""
    entry = {"fingerprint": fingerprint, "at": time.time(),
             "versions": dataclasses.asdict(versions)}
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".host-versions-")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(entry, file)
            os.replace(temp, path)
        except OSError:
            os.unlink(temp)
            raise
