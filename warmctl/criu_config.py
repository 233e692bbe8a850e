"""CRIU's configuration for one podman checkpoint or restore, and how it reaches CRIU.

What warmctl tells CRIU (podman 4.3 has no flag for any of it):
- at snapshot, ``skip-in-flight``: a client connection the kernel has accepted but the service
  not yet (it sits in the listening socket's queue) made CRIU refuse the dump. Any connection
  arriving while CRIU has the container frozen is one, so under a steady stream of new clients
  most dumps failed (measured: 14 of 20 with one client reconnecting in a loop; with this
  option none of 10 by hand, of 3 at 1 GiB under bench/under_load.py's clients (where
  podman's own checkpoint failed 3 of 3), nor any in the tests). Skipped connections stay
  with the source when it keeps running; the snapshot simply does not hold them.
- at resume, ``tcp-close`` (unless ``--tcp-established``): the snapshot's established
  connections are restored closed, so any number of clones come up under new names and
  addresses (without it CRIU refuses: "Connected TCP socket in image").
- at resume through the archive, ``auto-dedup``: CRIU punches each restored page out of the
  image file podman unpacked, so the page cache it frees is the memory its next pages go into
  (restore_time at 1 GiB 0.8 to 1.3 s instead of 1.5 to 2.3 s on this project's VMs). Never for
  a restore in place: a failed one would leave podman's stored checkpoint punched.

How: CRIU reads the file named by the environment variable CRIU_CONFIG_FILE, also when runc
drives it over RPC, besides runc's own configuration file (the ``org.criu.config`` annotation,
else /etc/criu/runc.conf), which it does not hide. podman gives the runtime only PATH and
XDG_RUNTIME_DIR, and runc runs the first ``criu`` on PATH. So warmctl writes, for one podman
command, ``/run/warmctl/criu/TOKEN.conf`` and ``/run/warmctl/criu/TOKEN.bin/criu``, a shell
script that sets CRIU_CONFIG_FILE and executes the criu podman would have run, and puts
``TOKEN.bin`` first on that podman's PATH. Both exist only while the command runs; the host's
/etc/criu is never touched, and nothing stays in the container's spec.

Earlier warmctl releases named the file in the restored container's spec (the annotation);
snapshots of such containers still carry it, naming a file long gone, which would hide
/etc/criu/runc.conf from the container: resume drops it (``spec_for_restore``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shlex
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from warmctl.errors import LeftUnfinished, TimedOut
from warmctl.host import facts as host
from warmctl.ownership import owner_is_gone

log = logging.getLogger(__name__)

ANNOTATION = "org.criu.config"
DIRECTORY = Path("/run/warmctl/criu")  # root's only: CRIU reads the file as root
RUNC_DEFAULT = Path("/etc/criu/runc.conf")
HOW = ("a configuration file per podman command, in /run/warmctl/criu, named to CRIU by "
       "CRIU_CONFIG_FILE through a criu wrapper first on podman's PATH")


def checkpoint_options(*, tcp_established: bool) -> list[str]:
    """CRIU's options for a snapshot: with established connections checkpointed (the
    default), connections not yet accepted are skipped rather than fail the dump. Without
    (--no-tcp-established, strict) CRIU refuses both."""
    return ["skip-in-flight"] if tcp_established else []


def restore_options(*, tcp_established: bool, in_place: bool) -> list[str]:
    options = [] if in_place else ["auto-dedup"]
    if not tcp_established:
        options.append("tcp-close")
    return options


@contextlib.contextmanager
def for_one_command(options: Sequence[str]) -> Iterator[Path | None]:
    """A directory to put first on podman's PATH while the context is open, whose ``criu``
    gives CRIU ``options``; None without options, without a criu, or when the files cannot be
    made (then CRIU runs as podman would run it)."""
    real_criu = host.criu_path() if options else None
    if real_criu is None:
        yield None
        return
    try:
        conf, fd = _write_config(DIRECTORY, options)
    except OSError as err:
        log.debug("criu: no configuration file of warmctl's (%s)", err)
        yield None
        return
    bin_dir = conf.with_suffix(".bin")
    podman_goes_on = False
    try:
        try:
            _write_wrapper(bin_dir, conf, Path(real_criu))
        except OSError as err:
            log.debug("criu: no wrapper (%s)", err)
            yield None
        else:
            log.debug("criu: %s (%s)", conf, ", ".join(options))
            yield bin_dir
    except (LeftUnfinished, TimedOut):
        # warmctl stopped waiting while podman goes on in its own session (waiting.py): its
        # CRIU may not have read the files yet. They stay; once this process is gone its lock
        # is free, and the next command's sweep (_remove_stale) removes them.
        podman_goes_on = True
        raise
    finally:
        if not podman_goes_on:
            shutil.rmtree(bin_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                conf.unlink()
        os.close(fd)


def spec_for_restore(config_dump: bytes, spec_dump: bytes) -> bytes:
    """spec.dump as podman should create the restored container from it: without an
    ``org.criu.config`` annotation naming a file of an earlier warmctl restore (see above).
    A configuration the container names itself is kept."""
    try:
        config = json.loads(config_dump)
        spec = json.loads(spec_dump)
    except ValueError:
        return spec_dump  # podman will say what is wrong with it
    if not isinstance(config, dict) or not isinstance(spec, dict):
        return spec_dump
    annotations = spec.get("annotations")
    if not isinstance(annotations, dict) or not _is_ours(annotations.get(ANNOTATION)):
        return spec_dump
    log.debug("criu: dropping %s, named by an earlier restore", annotations[ANNOTATION])
    spec["annotations"] = {key: value for key, value in annotations.items()
                           if key != ANNOTATION}
    return json.dumps(spec).encode()


def _is_ours(value: object) -> bool:
    """A file warmctl named for a restore."""
    return isinstance(value, str) and Path(value).parent == DIRECTORY


def _write_config(directory: Path, options: Sequence[str]) -> tuple[Path, int]:
    """A new 0600 file in ``directory``, and the descriptor that holds its lock
    (warmctl/ownership.py): a later command removes the file once that lock is free."""
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
        text = "# warmctl: one podman command only (see warmctl/criu_config.py)\n"
        os.write(fd, (text + "".join(f"{option}\n" for option in options)).encode())
        # Locked before it gets the name the sweep looks at; the rename keeps the lock.
        path = directory / f"{stem}.conf"
        os.rename(creating, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            creating.unlink()
        raise
    return path, fd


def _write_wrapper(bin_dir: Path, conf: Path, real_criu: Path) -> None:
    if os.statvfs(bin_dir.parent).f_flag & os.ST_NOEXEC:
        # runc could not execute the wrapper and would fail the whole command.
        raise PermissionError(f"{bin_dir.parent} is on a noexec file system")
    bin_dir.mkdir(mode=0o700)
    script = ("#!/bin/sh\n# warmctl: CRIU with one command's configuration "
              "(see warmctl/criu_config.py)\n"
              f"CRIU_CONFIG_FILE={shlex.quote(str(conf))}\nexport CRIU_CONFIG_FILE\n"
              f'exec {shlex.quote(str(real_criu))} "$@"\n')
    fd = os.open(bin_dir / "criu", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o700)
    with os.fdopen(fd, "w") as out:
        out.write(script)


def _remove_stale(directory: Path) -> None:
    """Files left by a warmctl that was killed (their lock is free), and the wrappers that
    name them."""
    for path in directory.glob("*.conf"):
        if owner_is_gone(path):
            shutil.rmtree(path.with_suffix(".bin"), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    for bin_dir in directory.glob("*.bin"):
        if not bin_dir.with_suffix(".conf").exists():
            shutil.rmtree(bin_dir, ignore_errors=True)
