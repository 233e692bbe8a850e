"""A CRIU configuration for one restore through the archive: ``auto-dedup``.

Why (measured at 1 GiB, README "Performance"): CRIU restores memory by reading each page from
the image files podman has just unpacked into memory it allocates for the process. With
``auto-dedup`` it punches each page out of the image file once restored, so the page cache it
frees is the memory its next pages go into. Without it the restore takes 1.2 GB of fresh
memory, which on a virtual machine is most of its time (CRIU's restore_time 1.3 s instead of
2.3 s). The punched files are podman's copy in the new container's storage, which podman
deletes after a restore anyway; the snapshot's archive is never touched.

How it reaches CRIU: runc gives CRIU the configuration file named by the container's
``org.criu.config`` annotation (without one, /etc/criu/runc.conf). podman creates the restored
container from the spec.dump of a configuration read, which warmctl answers itself (feed.py),
so that spec gets the annotation, naming a file that exists only while this restore runs. The
annotation stays in the container's spec; the checkpoints and restores that come later find no
file there, which CRIU takes as no configuration.

When it stays out, and the restore is podman's ordinary one:
- the runtime is not runc (crun with a libcriu older than 4.2 refuses any configuration file);
- /etc/criu/runc.conf exists: the annotation would hide it from this container for good;
- the spec names a configuration of its own (one that is not warmctl's);
- the directory for the file cannot be made (warmctl is not root).
A restore in place never gets it: a failed restore would leave podman's checkpoint punched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from warmctl.ownership import owner_is_gone

log = logging.getLogger(__name__)

ANNOTATION = "org.criu.config"
DIRECTORY = Path("/run/warmctl/criu")  # root's only: CRIU reads the file as root
RUNC_DEFAULT = Path("/etc/criu/runc.conf")
CONTENT = "# warmctl: this restore only (see warmctl/criu_config.py)\nauto-dedup\n"


@contextlib.contextmanager
def for_one_restore() -> Iterator[Path | None]:
    """The path of a configuration file that exists while the context is open, or None when
    this host keeps its own CRIU configuration or the file cannot be made."""
    if RUNC_DEFAULT.exists():
        log.debug("criu: %s exists: restoring with the host's configuration", RUNC_DEFAULT)
        yield None
        return
    try:
        path, fd = _write_config(DIRECTORY)
    except OSError as err:
        log.debug("criu: no configuration file of warmctl's (%s)", err)
        yield None
        return
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def spec_for_restore(config_dump: bytes, spec_dump: bytes, config_file: Path | None) -> bytes:
    """spec.dump as podman should create the restored container from it: with the annotation
    naming ``config_file`` when the runtime is runc, and never with one that names a file of
    an earlier warmctl restore (a snapshot of a resumed container has one), which would hide
    /etc/criu/runc.conf. A configuration the container names itself is kept."""
    try:
        config = json.loads(config_dump)
        spec = json.loads(spec_dump)
    except ValueError:
        return spec_dump  # podman will say what is wrong with it
    if not isinstance(config, dict) or not isinstance(spec, dict):
        return spec_dump
    annotations = spec.get("annotations")
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, dict):
        return spec_dump
    current = annotations.get(ANNOTATION)
    if current is not None and not _is_ours(current):
        log.debug("criu: the container names its own configuration (%s)", current)
        return spec_dump
    if config_file is not None and not _runs_on_runc(config):
        log.debug("criu: runtime %r is not runc: no configuration of warmctl's",
                  config.get("runtime"))
        config_file = None
    if config_file is None and current is None:
        return spec_dump
    kept = {key: value for key, value in annotations.items() if key != ANNOTATION}
    if config_file is None:
        log.debug("criu: dropping %s, named by an earlier restore", current)
        spec["annotations"] = kept
    else:
        log.debug("criu: restoring with %s (auto-dedup)", config_file)
        spec["annotations"] = {**kept, ANNOTATION: str(config_file)}
    return json.dumps(spec).encode()


def _runs_on_runc(config: dict[str, Any]) -> bool:
    runtime = config.get("runtime")
    return isinstance(runtime, str) and Path(runtime).name == "runc"


def _is_ours(value: object) -> bool:
    """A file warmctl named for a restore."""
    return isinstance(value, str) and Path(value).parent == DIRECTORY


def _write_config(directory: Path) -> tuple[Path, int]:
    """A new 0600 file in ``directory``, and the descriptor that holds its lock
    (warmctl/ownership.py): a later resume removes the file once that lock is free."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o077 or not directory.is_dir():
        raise PermissionError(f"{directory} is not a private directory of this user")
    _remove_stale(directory)
    stem = secrets.token_hex(8)
    creating = directory / f"{stem}.creating"
    fd = os.open(creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, CONTENT.encode())
        # Locked before it gets the name the sweep looks at; the rename keeps the lock.
        path = directory / f"{stem}.conf"
        os.rename(creating, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            creating.unlink()
        raise
    return path, fd


def _remove_stale(directory: Path) -> None:
    """Files left by a warmctl that was killed: the container it was restoring would get
    auto-dedup in its later restores too, in place included."""
    for path in directory.glob("*.conf"):
        if owner_is_gone(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
