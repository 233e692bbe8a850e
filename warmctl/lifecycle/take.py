"""Taking a snapshot: the checkpoint of a running container into the catalogue.

The container is checkpointed once at a time (container_lock.py), its volumes at the memory's
instant (freezer.py), the archive compressed as podman writes it and published with its
digest; a failure brings the container back when it stopped and keeps what it can (CRIU's log,
an archive left on a full disk). Nothing here prints; callers pass a ``Progress``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmctl import archive, container_lock, criu_config, transcode
from warmctl.catalogue import Catalogue, Snapshot, SnapshotRecord
from warmctl.errors import (
    CheckpointError,
    DiskIOError,
    IntegrityError,
    Interrupted,
    LeftUnfinished,
    NotFoundError,
    TimedOut,
    UsageError,
    WarmctlError,
)
from warmctl.host import compare as hostcompat
from warmctl.host import podman_info as hostcache
from warmctl.lifecycle import freezer
from warmctl.lifecycle.criu_logs import keep_criu_log
from warmctl.lifecycle.in_place import in_place_extra
from warmctl.lifecycle.prerequisites import require_runtime_can_checkpoint, require_usable_criu
from warmctl.lifecycle.waiting import DeferredInterrupts, PodmanCall
from warmctl.podman.types import (
    COMPRESSIONS,
    CheckpointResult,
    ContainerInfo,
    HostVersions,
    Podman,
)
from warmctl.progress import Progress
from warmctl.refs import is_valid_name, validate_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotOptions:
    leave_running: bool = False
    compress: str = "zstd"
    # Established connections are checkpointed by default (a serving container has some);
    # False (--no-tcp-established) refuses a container that has any (criu_config.py).
    tcp_established: bool = True
    file_locks: bool = False
    labels: dict[str, str] | None = None
    time_limit: float | None = None  # seconds to wait for podman's checkpoint (waiting.py)
    # When the time limit began (time.monotonic()): take_snapshot sets it before it waits for
    # the container's lock, so that the limit covers that wait and the checkpoint together.
    time_limit_started: float | None = None

    def __post_init__(self) -> None:
        # Checked when the options are made, before warm spends minutes warming.
        if self.compress not in COMPRESSIONS:
            raise UsageError(f"--compress must be one of {', '.join(COMPRESSIONS)}")


def default_snapshot_name(container: str) -> str:
    if not is_valid_name(container):
        raise UsageError(
            f"container name {container!r} is not a valid snapshot name; "
            "give one: warmctl snapshot CONTAINER NAME"
        )
    return container


def take_snapshot(
    catalogue: Catalogue,
    podman: Podman,
    container: str,
    name: str,
    options: SnapshotOptions,
    progress: Progress,
    *,
    extra: dict[str, Any] | None = None,
) -> Snapshot:
    """Checkpoint a running container into the catalogue under ``name``.

    On failure the container is left as podman left it and nothing is recorded. Snapshots of
    one container are taken one after the other (container_lock.py).
    """
    validate_name(name)
    # --time-limit counts from here: the wait for another snapshot's lock is part of it.
    options = dataclasses.replace(options, time_limit_started=time.monotonic())
    criu_version = require_usable_criu()
    progress.phase("inspecting")
    info = _running_container(podman, container)
    with container_lock.checkpointing(
            info.id, shown_as=info.name, time_limit=options.time_limit,
            started=options.time_limit_started, waiting=lambda: progress.phase(
                f"waiting for another snapshot of {info.name} to finish")) as waited:
        if waited:
            info = _running_container(podman, info.id, shown_as=container)
        return _take_locked(catalogue, podman, info, name, options, progress,
                            criu_version, extra)


def _running_container(podman: Podman, container: str, *,
                       shown_as: str | None = None) -> ContainerInfo:
    info = podman.inspect_container(container)
    shown = shown_as or container
    if info is None:
        raise NotFoundError(f"no such container: {shown}", hint="see: podman ps")
    if not info.running:
        raise WarmctlError(
            f"container {shown} is {info.state}, not running: only a running container "
            "can be snapshotted"
        )
    return info


def _take_locked(catalogue: Catalogue, podman: Podman, info: ContainerInfo, name: str,
                 options: SnapshotOptions, progress: Progress, criu_version: str,
                 extra: dict[str, Any] | None) -> Snapshot:
    catalogue.check_writable()
    record = SnapshotRecord(
        name=name, container_name=info.name, container_id=info.id,
        image_name=info.image_name, image_id=info.image_id, compression=options.compress,
        ports=info.ports, labels=options.labels or {}, extra=extra or {},
    )
    # Before the checkpoint, not beside it: `podman info` (when not cached) takes 0.25 s of
    # CPU, which lengthened CRIU's freeze or the export on two cores.
    versions = hostcache.host_versions(podman)
    require_runtime_can_checkpoint(versions)
    # Once the checkpoint has stopped the container, an interrupt waits until the snapshot is
    # recorded (a second one leaves, its export kept in rescued/), as one waits for podman.
    deferred = DeferredInterrupts(progress, "recording the snapshot")
    with contextlib.ExitStack() as stack:
        archive_file = stack.enter_context(catalogue.new_temp_file())
        # Named volumes are tarred at the memory's instant (freezer.py): frozen meanwhile.
        # Keep this inside any lock that serializes checkpoints of the container: a freeze
        # must not wait for another checkpoint to finish.
        with freezer.captured_at_one_instant(info, leave_running=options.leave_running,
                                             progress=progress) as capture:
            result, digest, plain_bytes, interrupted = _checkpoint_into(
                catalogue, podman, info.id, name, options, archive_file.path, capture.progress,
                once_stopped=lambda already: stack.enter_context(deferred.after(already)))
        with _rescue_on_failure(catalogue, archive_file.path, name,
                                armed=lambda: not options.leave_running):
            progress.phase("publishing")
            record = dataclasses.replace(
                record,
                host=_host_record(versions, criu_version),
                criu_stats=result.criu_statistics,
                extra={**record.extra, "plain_bytes": plain_bytes,
                       "cpu": hostcompat.cpu_record(), **capture.record(),
                       **({} if options.leave_running else in_place_extra(podman, info.id))},
            )
            snapshot = catalogue.publish(archive_file, record, sha256=digest)
    if interrupted or deferred.received:
        raise Interrupted(
            f"interrupted after podman had stopped {info.name}: its state is recorded as "
            f"{snapshot.ref}, so that it is not lost", hint=f"warmctl resume {snapshot.ref}")
    return snapshot


def _checkpoint_into(
    catalogue: Catalogue, podman: Podman, container_id: str, name: str,
    options: SnapshotOptions, dest: Path, progress: Progress,
    once_stopped: Callable[[bool], object] = lambda _: None,
) -> tuple[CheckpointResult, str, int | None, bool]:
    """Checkpoint into ``dest``. Returns podman's result, the archive's sha256, the plain
    tar's size (when warmctl compressed it) and whether the user pressed Ctrl-C meanwhile.
    ``once_stopped`` is called as soon as podman's checkpoint has stopped the container,
    told whether the user interrupted already.

    For zstd, podman writes a plain tar and warmctl compresses it on all cores while podman
    is still writing (see warmctl/transcode.py); gzip and none podman writes itself.
    """
    def checkpoint(export: Path, compress: str) -> CheckpointResult:
        started = time.time()
        try:
            with criu_config.for_one_command(criu_config.checkpoint_options(
                    tcp_established=options.tcp_established)) as criu_bin:
                return podman.checkpoint(
                    container_id, export, leave_running=options.leave_running,
                    compress=compress, tcp_established=options.tcp_established,
                    file_locks=options.file_locks, criu_bin=criu_bin,
                )
        except CheckpointError as err:
            # podman's short id, as `podman ps` shows it: the whole one is 64 characters.
            err.message = err.message.replace(container_id, container_id[:12])
            kept = keep_criu_log(catalogue, err, f"{name}-dump")
            if options.leave_running:
                _say_if_stopped(podman, container_id, kept)
            else:
                _bring_back_if_stopped(podman, container_id, kept, options, since=started)
            if _is_disk_failure(f"{kept.message}\n{kept.stderr}"):
                raise DiskIOError(kept.message, hint=kept.hint) from err
            raise kept from err

    ours = options.compress == "zstd"
    running: PodmanCall[CheckpointResult] | None = None

    def stopped_by_checkpoint() -> bool:
        """podman's checkpoint succeeded and stopped the container: the export is now the
        only copy of its memory. (podman 4.3 says it succeeded when CRIU was killed by a
        signal, as systemd's stop sends one to a unit's whole cgroup: then the container runs
        on and the export is empty; nothing is to be rescued.)"""
        return (not options.leave_running and running is not None and running.succeeded()
                and not _still_running(podman, container_id))

    with contextlib.ExitStack() as stack:
        export = stack.enter_context(catalogue.new_temp_file(".plain")).path if ours else dest
        with _rescue_on_failure(catalogue, export, name, armed=stopped_by_checkpoint):
            progress.phase("checkpointing")
            progress.watch_file(export)
            interrupted, digest = False, None
            running = PodmanCall(
                lambda: checkpoint(export, "none" if ours else options.compress),
                what=f"the checkpoint of {container_id[:12]}", time_limit=options.time_limit,
                started=options.time_limit_started,
                left_behind=lambda: _checkpoint_left_behind(catalogue, export, name,
                                                            container_id, options))
            try:
                try:
                    if ours:
                        digest = transcode.compress_zstd(export, dest, progress.advance,
                                                         still_growing=running.running)
                except KeyboardInterrupt:
                    # Ctrl-C reached warmctl only: podman runs in a session of its own. A
                    # checkpoint stopped halfway can leave the container dead with its state
                    # in no archive, so podman finishes first (waiting.py).
                    digest, interrupted = None, True
                except (LeftUnfinished, TimedOut):
                    raise
                except BaseException:
                    running.finish(progress)  # podman's own failure says more than ours
                    raise
                result, interrupted = running.finish(progress, interrupted=interrupted)
            finally:
                progress.stop_watching()
            if interrupted and options.leave_running:
                raise Interrupted(f"interrupted: podman finished the checkpoint and container "
                                  f"{container_id[:12]} kept running; nothing was recorded")
            if not options.leave_running:
                once_stopped(interrupted)
            if digest is None:
                progress.phase("compressing" if ours else "hashing")
                digest = (transcode.compress_zstd(export, dest, progress.advance) if ours
                          else archive.sha256_file(dest, progress.advance))
            progress.phase("checking the checkpoint")
            try:
                _require_complete_checkpoint(export, container_id)
            except CheckpointError as err:
                if _still_running(podman, container_id):
                    err.message += f"; container {container_id[:12]} runs on: nothing was lost"
                if interrupted:
                    # The signal most likely reached CRIU too, not another checkpoint.
                    raise Interrupted(f"interrupted, and meanwhile {err.message}",
                                      hint="snapshot again") from err
                raise
            return result, digest, export.stat().st_size if ours else None, interrupted


def _still_running(podman: Podman, container_id: str) -> bool:
    with contextlib.suppress(WarmctlError):
        info = podman.inspect_container(container_id)
        return info is not None and info.running
    return False


def _say_if_stopped(podman: Podman, container_id: str, err: CheckpointError) -> None:
    """A failed --leave-running checkpoint leaves the container running, but a process may
    have ended meanwhile: CRIU interrupted every process's system call, and one that does not
    restart it can end (measured: trixie's busybox ``sleep`` exited 0 at once after CRIU gave up
    on /dev/kvm, the container with it). The error says so, so that nobody takes a stopped
    service for a serving one."""
    with contextlib.suppress(WarmctlError):
        info = podman.inspect_container(container_id)
        if info is not None and not info.running:
            err.message += f"; podman left the container {info.state}, not running"
            err.hint = (f"start it again: podman start {info.name}" +
                        (f"; {err.hint}" if err.hint else ""))


# podman's and CRIU's words for a disk that failed a write (ENOSPC, EDQUOT, EIO).
_DISK_FAILURE = re.compile(r"no space left on device|disk quota exceeded|input/output error",
                           re.I)
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def _is_disk_failure(text: str) -> bool:
    return _DISK_FAILURE.search(text) is not None


def _bring_back_if_stopped(podman: Podman, container_id: str, err: CheckpointError,
                           options: SnapshotOptions, *, since: float) -> None:
    """A stopping checkpoint failed after CRIU had dumped the container and stopped it (the
    export failed: a full disk, an I/O error): its memory is then only in the checkpoint
    podman keeps in the container's storage, and ``podman start`` would lose it. Restore the
    container from there, so that it serves on as before; failing that, say exactly where
    its memory is and the command that brings it back. The error says which."""
    with contextlib.suppress(WarmctlError):
        info = podman.inspect_container(container_id)
        if info is not None and info.running:
            # CRIU gave up before stopping it (podman 5 fails the checkpoint where 4.3 said
            # it succeeded, e.g. when systemd's stop signalled CRIU too): nothing is lost.
            err.message += f"; container {container_id[:12]} runs on: nothing was lost"
            return
        if info is None or not _fresh_checkpoint_in_storage(podman, container_id, since):
            return
        short = container_id[:12]
        try:
            with criu_config.for_one_command(criu_config.restore_options(
                    tcp_established=options.tcp_established, in_place=True)) as criu_bin:
                podman.restore_in_place(container_id, tcp_established=options.tcp_established,
                                        file_locks=options.file_locks, criu_bin=criu_bin)
        except (WarmctlError, OSError) as restore_err:
            log.debug("restoring %s in place after the failed checkpoint: %s", short,
                      restore_err)
            err.message += (f"; podman had already stopped {info.name}: its memory is still "
                            f"in the checkpoint podman keeps in its storage, and warmctl could "
                            f"not restore it from there")
            err.hint = (f"bring it back warm with: podman container restore {info.name} "
                        f"(podman start {info.name} would start it cold, losing that memory)")
            return
        err.message += (f"; podman had already stopped {info.name}: warmctl restored it from "
                        f"the checkpoint podman keeps in its storage, and it runs on as before; "
                        f"nothing was recorded")


def _fresh_checkpoint_in_storage(podman: Podman, container_id: str, since: float) -> bool:
    """Whether the container's storage holds a checkpoint written by this checkpoint (at or
    after ``since``, the time it started): an older one would bring back stale memory."""
    userdata = podman.userdata_dir(container_id)
    if userdata is None:
        return False
    try:
        written = (userdata / "checkpoint" / "inventory.img").stat().st_mtime
    except OSError:
        return False
    return written >= since - 1.0  # the file system's clock is coarser than time.time()


def _require_complete_checkpoint(path: Path, container_id: str) -> None:
    """What `verify` checks, before anything is recorded: podman has exported archives
    without config.dump and spec.dump when two checkpoints of one container overlapped (one
    not warmctl's, since warmctl's own wait for each other), and resume would fail on them.
    On the zstd path ``path`` is the plain tar podman wrote: its headers are read, its memory
    images skipped."""
    try:
        archive.verify_checkpoint_quickly(path)
    except IntegrityError as err:
        raise CheckpointError(
            f"podman's checkpoint of {container_id[:12]} is not complete, so it was not "
            f"recorded: {err.message}",
            hint="another checkpoint of this container may have run at the same time "
                 "(podman container checkpoint outside warmctl): snapshot again") from err


def _checkpoint_left_behind(catalogue: Catalogue, export: Path, name: str, container_id: str,
                            options: SnapshotOptions) -> str:
    """What warmctl leaves when it stops waiting for a checkpoint, podman going on alone.
    A stopping checkpoint's export, once podman writes it, moves to rescued/ (podman goes on
    writing the same file), and the checkpoint stays in the container's storage too."""
    short = container_id[:12]
    if options.leave_running:
        return (f"podman goes on checkpointing {short} in its own session: the container is "
                "frozen until CRIU has dumped it, then runs on; nothing is recorded")
    kept = ""
    with contextlib.suppress(OSError):
        if export.stat().st_size > 0:
            saved = catalogue.rescue(export, name)
            kept = f", and its export goes to {saved}"
    return (f"podman goes on checkpointing {short} in its own session: once it has finished, "
            f"the container is stopped and its memory kept in podman's storage (podman "
            f"container restore {short}){kept}; nothing is recorded")


@contextlib.contextmanager
def _rescue_on_failure(catalogue: Catalogue, path: Path, name: str,
                       armed: Callable[[], bool]) -> Iterator[None]:
    """When the block fails while ``armed()`` (the checkpoint stopped the container, so
    ``path`` holds the only copy of its memory), keep ``path`` in the catalogue's
    rescued/ folder and say so in the error, whatever the error was."""
    try:
        yield
    except BaseException as exc:
        if not armed() or not path.exists():
            raise
        try:
            saved = catalogue.rescue(path, name)
        except OSError as rescue_err:
            # Even the rename failed (a disk gone bad): podman's storage still has it.
            note = (f"the checkpoint had already stopped the container, and its export could "
                    f"not be kept in rescued/ ({rescue_err.strerror}): its memory is in the "
                    f"checkpoint podman keeps in its storage (podman container restore "
                    f"CONTAINER brings it back warm; podman start would lose it)")
        else:
            note = (f"the checkpoint had already stopped the container: its memory is kept "
                    f"in {saved} (podman container restore --import {saved})")
        if isinstance(exc, WarmctlError):
            exc.message = f"{exc.message}; {note}"
            raise
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"interrupted; {note}") from exc
        reason = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) else str(exc)
        if ((isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS)
                or _is_disk_failure(reason) or "disk is full" in reason):
            raise DiskIOError(f"{reason}; {note}") from exc
        raise WarmctlError(f"{reason}; {note}") from exc


def _host_record(versions: HostVersions, criu_version: str) -> dict[str, str]:
    return {
        "podman": versions.podman,
        "runtime": versions.runtime,
        "runtime_version": versions.runtime_version,
        "criu": criu_version,
        "kernel": versions.kernel,
        "hostname": versions.hostname,
    }
