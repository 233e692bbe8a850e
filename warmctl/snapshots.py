"""The library behind the verbs: take, resume, verify and remove snapshots.

Nothing here prints; callers pass a ``Progress`` and render what comes back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warmctl import (
    archive,
    container_lock,
    criu_config,
    feed,
    freshness,
    spec_policy,
    transcode,
    volumes,
)
from warmctl.catalogue import Catalogue, Snapshot, SnapshotRecord
from warmctl.claim import NameClaim, claim_name
from warmctl.errors import (
    CheckpointError,
    ConflictError,
    DiskIOError,
    HostError,
    IntegrityError,
    Interrupted,
    LeftUnfinished,
    NotFoundError,
    PodmanError,
    TimedOut,
    UsageError,
    WarmctlError,
)
from warmctl.host import compare as hostcompat
from warmctl.host import facts as host
from warmctl.host import podman_info as hostcache
from warmctl.host.diagnose import criu_errors, diagnose
from warmctl.labels import label_problem
from warmctl.output import Progress
from warmctl.podman import (
    COMPRESSIONS,
    CheckpointResult,
    ContainerInfo,
    HostVersions,
    Podman,
    RestoreResult,
)
from warmctl.refs import Ref, is_valid_name, validate_name
from warmctl.retention import Decision, Generation, Policy, plan_prune, summarize_plan
from warmctl.waiting import DeferredInterrupts, PodmanCall

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


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` labels, refused (exit 2) saying what is wrong (see warmctl.labels)."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"invalid label {item!r}: expected KEY=VALUE")
        problem = label_problem(key, value)
        if problem:
            raise UsageError(problem)
        if key in labels:  # the last one would win unseen: a typo or a script's mistake
            raise UsageError(f"label {key!r} is given twice: give each label key once")
        labels[key] = value
    return labels


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
        # Named volumes are tarred at the memory's instant (volumes.py): frozen meanwhile.
        # Keep this inside any lock that serializes checkpoints of the container: a freeze
        # must not wait for another checkpoint to finish.
        with volumes.captured_at_one_instant(info, leave_running=options.leave_running,
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
                       **({} if options.leave_running else _in_place_extra(podman, info.id))},
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
        if info is None or info.running or not _fresh_checkpoint_in_storage(
                podman, container_id, since):
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


@dataclass(frozen=True)
class ResumeOptions:
    name: str | None = None
    publish: tuple[str, ...] = ()
    replace: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    strict: bool = False  # refuse a snapshot from a host that differs (hostcompat)
    volumes: str | None = None  # volumes.MODES; None: a clone's own, else the snapshot's
    time_limit: float | None = None  # seconds to wait for podman's restore (waiting.py)
    allow_host_access: bool = False  # resume a pulled snapshot whatever it asks (spec_policy)
    max_age: float | None = None  # seconds: refuse an older snapshot (freshness.py)

    def __post_init__(self) -> None:
        if self.volumes is not None and self.volumes not in volumes.MODES:
            raise UsageError(f"--volumes must be one of {', '.join(volumes.MODES)}")


@dataclass(frozen=True)
class Resumed:
    container: str
    criu_stats: dict[str, int]  # CRIU's restore statistics (restore_time, pages_restored, ...)
    volumes: list[dict[str, str]] = dataclasses.field(default_factory=list)  # VolumeUse's


def resume_snapshot(
    catalogue: Catalogue,
    podman: Podman,
    ref: Ref,
    options: ResumeOptions,
    progress: Progress,
    *,
    warn: Callable[[str], None] | None = None,
) -> Resumed:
    """Restore a snapshot as a running container.

    A snapshot from another host (pulled, or recorded under another host name) is compared
    with this host first: each difference goes to ``warn``, or with ``strict`` refuses.

    It replaces only what ``--replace`` names, or the snapshot's source container stopped by
    a recorded snapshot's checkpoint and untouched since; after a failure it removes only the
    container it created itself (claim.py), by id.
    """
    snapshot = catalogue.get(ref)
    freshness.refuse_if_older(snapshot, options.max_age)  # first: a refusal touches nothing
    criu_version = require_usable_criu()
    require_runtime_can_checkpoint(hostcache.host_versions(podman))
    if hostcompat.needs_comparison(snapshot):
        progress.phase("comparing hosts")
        hostcompat.check_before_resume(snapshot, podman, criu_version, strict=options.strict,
                                       warn=warn or (lambda _: None))
    # Copies of volumes that a resume killed outright left behind (volumes.py).
    volumes.put_back_left_copies(catalogue.home, podman, warn or (lambda _: None))
    target = options.name or snapshot.container_name
    with claim_name(target) as name_claim:
        existing = podman.inspect_container(target)
        if existing is not None and not options.replace:
            _refuse_unless_replaceable(catalogue, podman, snapshot, existing)
        if existing is not None and _restorable_in_place(podman, snapshot, existing, options):
            restored, interrupted = _restore_in_place(catalogue, podman, snapshot, existing,
                                                      options, progress)
            return _resumed(target, restored, interrupted)
        # The archive is read through a hard link that a concurrent rm or prune cannot take.
        with catalogue.hold_archive(snapshot) as held:
            if from_registry(snapshot) and not options.allow_host_access:
                # Before anything is removed or restored (spec_policy.py).
                spec_policy.refuse_host_access(snapshot.ref,
                                               spec_policy.archive_host_access(held.path))
            plan = volumes.plan_for_restore(podman, held.path, target=target,
                                            source_container=snapshot.container_name,
                                            mode=options.volumes, replacing=existing)
            if existing is not None or plan.remove_first:
                # Otherwise the digest is checked while podman reads; here a damaged archive
                # must not cost the user the container or the volumes it was to replace.
                _check_before_replacing(snapshot, held.path, plan, target, existing, progress)
            if existing is not None:
                progress.phase(f"removing container {target}")
                podman.remove_container(existing.id)
            progress.phase("restoring")
            if snapshot.plain_bytes is not None:
                progress.expect(snapshot.plain_bytes)
            try:
                # Before a volume is removed, its content is on disk (volumes.py): a failure
                # from here on puts it back as it was.
                volumes.save_before_removing(catalogue.home, podman, plan, progress)
                volumes.prepare(podman, plan, held.path, progress)
                restored, interrupted = _restore_through_feed(held.path, snapshot, podman,
                                                              name_claim, options, progress,
                                                              plan)
            except (WarmctlError, KeyboardInterrupt) as err:
                reported = _after_failed_restore(catalogue, podman, snapshot, name_claim, plan,
                                                 err)
                if reported is err:
                    raise
                raise reported from err
            volumes.done(plan)
    return dataclasses.replace(_resumed(target, restored, interrupted), volumes=plan.to_list())


def _check_before_replacing(snapshot: Snapshot, path: Path, plan: volumes.VolumePlan,
                            target: str, existing: ContainerInfo | None,
                            progress: Progress) -> None:
    """Before resume removes a container or a volume: the archive is the one recorded, and
    holds every volume's content the restore needs. Any failure here has touched nothing."""
    untouched = ([f"{target} is as it was ({existing.state})"] if existing is not None else [])
    untouched += [f"volume {name} is as it was" for name in plan.remove_first]
    progress.phase("verifying digest")
    try:
        check_digest(snapshot, path, progress)
        if plan.remove_first:
            volumes.require_volume_tars(plan, path)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while verifying {snapshot.ref}'s archive: "
                          f"{'; '.join(untouched)}") from None
    except WarmctlError as err:
        if plan.remove_first:
            err.message += f"; nothing was removed: {', '.join(untouched)}"
        raise


def _after_failed_restore(catalogue: Catalogue, podman: Podman, snapshot: Snapshot,
                          name_claim: NameClaim, plan: volumes.VolumePlan,
                          err: WarmctlError | KeyboardInterrupt) -> BaseException:
    """Clean up after a failed (or interrupted) restore: CRIU's log kept, the container this
    resume created removed, the volumes put back as they were. Returns the error to raise,
    saying where each volume the resume was to replace stands."""
    # First keep CRIU's log: it lives in the leftover container's directory.
    if isinstance(err, CheckpointError):
        keep_criu_log(catalogue, err, f"{snapshot.name}-restore")
    if isinstance(err, (LeftUnfinished, TimedOut)) and not _podman_never_started(err):
        # podman goes on alone: its container is its business, and the copies stay.
        notes = volumes.left_unfinished(plan)
    else:
        # Both run to their end through a Ctrl-C or SIGTERM meanwhile (the resume fails
        # either way): a volume is put back only once the container using it is gone.
        _, again = volumes.through_interrupts(lambda: _remove_created(podman, name_claim, err))
        notes, again_in_undo = volumes.undo(podman, plan)
        if again or again_in_undo:
            log.debug("interrupted again while cleaning up after: %s", err)
    if isinstance(err, KeyboardInterrupt):
        return Interrupted("; ".join(["interrupted", *notes])) if notes else err
    if notes:
        err.message = "; ".join([err.message, *notes])
    return err


def _podman_never_started(err: WarmctlError) -> bool:
    """warmctl left before podman's restore had started, and it never will (waiting.py's
    gate): nothing goes on alone, so the volumes can be put back at once. Read from the
    message; if its words change, the copies are merely kept (left_unfinished)."""
    return "podman had not started it, and will not" in err.message


def _refuse_unless_replaceable(catalogue: Catalogue, podman: Podman, snapshot: Snapshot,
                               existing: ContainerInfo) -> None:
    """Without --replace, the name may be held only by the snapshot's source container, as
    a recorded snapshot's checkpoint left it: stopped, checkpointed, its checkpoint in
    podman's storage one the catalogue holds. Anything else (running, paused, exited on its
    own, started or checkpointed since) is not warmctl's to remove: exit 4."""
    name = existing.name
    if existing.id != snapshot.container_id:
        raise ConflictError(f"a container named {name} already exists ({existing.state}) and "
                            f"is not {snapshot.ref}'s source",
                            hint="choose another name with --name, or remove it with --replace")
    if existing.state != "exited" or not existing.checkpointed:
        why = ("exited on its own, not by the checkpoint" if existing.state == "exited"
               else existing.state)
        raise ConflictError(
            f"{name}, the source container of {snapshot.ref}, is {why}: it changed since "
            "the snapshot", hint="choose another name with --name, or replace it with --replace")
    fingerprint = _stored_checkpoint(podman, existing.id)
    recorded = {"container_id": existing.id, "checkpoint": fingerprint}
    if fingerprint is None or not any(s.extra.get("in_place") == recorded
                                      for s in catalogue.list_snapshots()):
        # Typically a stopping checkpoint whose export failed or was cut (a full disk, a
        # signal before warmctl handled them): that checkpoint may be the only copy of the
        # container's memory, so say how to bring it back before anything replaces it.
        raise ConflictError(
            f"{name}, the source container of {snapshot.ref}, holds a checkpoint that no "
            "snapshot in the catalogue recorded: its memory may be in podman's storage only",
            hint=f"bring it back warm with: podman container restore {name}, then record it "
                 f"with: warmctl snapshot {name}; or choose another name with --name, or "
                 "replace it, losing that memory, with --replace")


def _remove_created(podman: Podman, name_claim: NameClaim, err: BaseException) -> None:
    """After a failed restore, remove the container this resume created (a damaged
    archive's even when running, and one whose digest the disk failed to read: not proved
    the recorded archive), by its id; never whatever else holds the name. Not when warmctl
    left podman to finish alone: its container is podman's business then."""
    if isinstance(err, (LeftUnfinished, TimedOut)):
        return
    with contextlib.suppress(WarmctlError):
        created = name_claim.created_container(podman)
        if created is not None and (isinstance(err, (IntegrityError, DiskIOError))
                                    or not created.running):
            podman.remove_container(created.id)


def _resumed(target: str, restored: RestoreResult, interrupted: bool) -> Resumed:
    if interrupted:
        raise Interrupted(f"interrupted while podman restored {target}: it finished, and "
                          f"{target} is running")
    return Resumed(target, restored.criu_statistics)


# Besides checkpoint/, what `podman container restore` reads from a container's storage.
_IN_PLACE_FILES = ("network.status", "devshm-checkpoint.tar", "rootfs-diff.tar", "deleted.files")


def checkpoint_fingerprint(userdata: Path) -> str | None:
    """The identity (name, size, mtime, inode) of every file of the checkpoint kept in a
    container's storage: any later checkpoint, restore or removal changes it. None when there
    is no checkpoint there."""
    try:
        files = sorted(p for p in (userdata / "checkpoint").rglob("*") if p.is_file())
        if not files:
            return None
        files += [userdata / name for name in _IN_PLACE_FILES if (userdata / name).is_file()]
        digest = hashlib.sha256()
        for path in files:
            found = path.stat()
            digest.update(f"{path.relative_to(userdata)}\0{found.st_size}\0"
                          f"{found.st_mtime_ns}\0{found.st_ino}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


def _stored_checkpoint(podman: Podman, container_id: str) -> str | None:
    """The fingerprint of the checkpoint podman keeps in the container's storage, if any."""
    userdata = podman.userdata_dir(container_id)
    return checkpoint_fingerprint(userdata) if userdata is not None else None


def _in_place_extra(podman: Podman, container_id: str) -> dict[str, Any]:
    """extra's "in_place", for a checkpoint that stopped its container: what lets a later
    resume restore in place, since the checkpoint in the container's storage is, at this
    moment, exactly the snapshot. Optional: no podman trouble here may fail the snapshot."""
    with contextlib.suppress(WarmctlError):
        fingerprint = _stored_checkpoint(podman, container_id)
        if fingerprint is not None:
            return {"in_place": {"container_id": container_id, "checkpoint": fingerprint}}
    return {}


def _restorable_in_place(podman: Podman, snapshot: Snapshot, existing: ContainerInfo,
                         options: ResumeOptions) -> bool:
    """The target is the snapshot's own source, stopped by its checkpoint, and the checkpoint
    in its storage is still this snapshot's (nothing checkpointed, restored or removed it
    since). Ports cannot change in place: --publish takes the archive's way."""
    record = snapshot.extra.get("in_place")
    if not isinstance(record, dict) or options.publish:
        return False
    if existing.id != record.get("container_id") or existing.running or not existing.checkpointed:
        return False
    fingerprint = _stored_checkpoint(podman, existing.id)
    return fingerprint is not None and fingerprint == record.get("checkpoint")


def _restore_in_place(catalogue: Catalogue, podman: Podman, snapshot: Snapshot,
                      existing: ContainerInfo, options: ResumeOptions,
                      progress: Progress) -> tuple[RestoreResult, bool]:
    """podman restores the container from the checkpoint in its storage: nothing to unpack
    (at 1 GiB 1.2 to 1.7 s, against 3 to 5 s through the archive). On failure the container
    stays as it was, checkpoint included, and the snapshot's archive is untouched."""
    name = existing.name
    progress.phase(f"restoring {name} in place")
    log.debug("the checkpoint in %s's storage is %s: restoring in place", name, snapshot.ref)
    criu_options = criu_config.restore_options(tcp_established=options.tcp_established,
                                                in_place=True)
    try:
        with criu_config.for_one_command(criu_options) as criu_bin:
            call = PodmanCall(
                lambda: podman.restore_in_place(
                    existing.id, tcp_established=options.tcp_established,
                    file_locks=options.file_locks, criu_bin=criu_bin),
                what=f"the restore of {name}", time_limit=options.time_limit,
                left_behind=lambda: (f"podman goes on restoring {name} in place in its own "
                                     f"session: {name} runs once it has finished, or stays "
                                     f"stopped with its checkpoint if it fails "
                                     f"(see: podman ps -a)"))
            return call.finish(progress)
    except CheckpointError as err:
        raise keep_criu_log(catalogue, err, f"{snapshot.name}-restore") from err


# podman imported the configuration tar (a podman that imports on an earlier read than
# feed.CONFIG_READS): it found no CRIU images (libpod's check for inventory.img).
_IMPORTED_CONFIGURATION_ONLY = re.compile(
    r"complete checkpoint for this container cannot be found|inventory\.img", re.I)


def _restore_through_feed(source: Path, snapshot: Snapshot, podman: Podman,
                          name_claim: NameClaim, options: ResumeOptions, progress: Progress,
                          plan: volumes.VolumePlan | None = None) -> tuple[RestoreResult, bool]:
    """podman restores ``source`` read through an ArchiveFeed (see feed.py for why and how)
    into a container marked as this resume's (claim.py). Returns podman's result and whether
    the user pressed Ctrl-C meanwhile.

    Raises IntegrityError when the archive turns out damaged, whatever podman did. When podman
    failed for want of CRIU's images without any read having had the whole archive, it
    imported the configuration tar (a podman that reads differently): then it is tried once
    more, with whole archives, unless the volumes ``plan`` needs an edited configuration (a
    clone must not get the source's volumes). Any other failure (a name or port in use, a
    missing image, CRIU's own, an interruption) is reported as it is.
    """
    target = name_claim.name
    plan = plan or volumes.VolumePlan()
    criu_options = criu_config.restore_options(tcp_established=options.tcp_established,
                                                in_place=False)
    # A registry's spec reaches podman only edited (spec_policy.py): no whole-archive retry.
    confine = from_registry(snapshot)
    for config_reads in (feed.CONFIG_READS,) if confine else (feed.CONFIG_READS, 0):
        with criu_config.for_one_command(criu_options) as criu_bin, \
                feed.ArchiveFeed(source, snapshot.sha256, plain_bytes=snapshot.plain_bytes,
                                 label=snapshot.ref, config_reads=config_reads,
                                 advance=progress.advance,
                                 edit_dumps=plan.edit_dumps if plan.renames else None,
                                 mark_spec=name_claim.mark_spec, confine=confine) as fed:
            call = PodmanCall(
                lambda: podman.restore(
                    fed.path, name=target, publish=options.publish,
                    tcp_established=options.tcp_established, file_locks=options.file_locks,
                    ignore_volumes=plan.ignore_volumes, criu_bin=criu_bin),
                what=f"the restore of {target}", time_limit=options.time_limit,
                left_behind=lambda: _restore_left_behind(target, fed))
            try:
                restored, interrupted = call.finish(progress)
            except PodmanError as err:
                fed.verify()  # damage explains the failure better than podman's message
                if (fed.archive_was_read or not config_reads or plan.renames or confine
                        or not _IMPORTED_CONFIGURATION_ONLY.search(f"{err.message}\n{err.stderr}")):
                    raise
                log.debug("podman failed after reading only the configuration (%s): "
                          "trying again with the whole archive for every read", fed.reads)
                _remove_created(podman, name_claim, err)
                volumes.remove_made_by_podman(podman, plan)  # the retry makes them again
                continue
        fed.verify()
        return restored, interrupted
    raise AssertionError("unreachable: the second attempt returns or raises")


def _restore_left_behind(target: str, fed: feed.ArchiveFeed) -> str:
    """What warmctl leaves when it stops waiting for a restore through the feed."""
    fed.abandon()  # the stream podman has must never pass for a whole archive
    if fed.fed_whole:
        return (f"podman, which has read the whole archive, goes on restoring {target} in its "
                f"own session: {target} runs once it has finished (see: podman ps -a)")
    return (f"podman had not read the whole archive: its restore fails without warmctl, and "
            f"may leave {target} created but not running (see: podman ps -a; remove it with "
            f"podman rm {target})")


def from_registry(snapshot: Snapshot) -> bool:
    """Pulled: its spec was written by whoever pushed it."""
    return "pulled" in snapshot.extra


def check_digest(snapshot: Snapshot, path: Path, progress: Progress) -> None:
    compare_digest(snapshot, archive.sha256_file(path, progress.advance))


def compare_digest(snapshot: Snapshot, digest: str) -> None:
    if digest != snapshot.sha256:
        raise IntegrityError(
            f"archive of {snapshot.ref} is corrupt: sha256 {digest[:16]}... "
            f"does not match the recorded {snapshot.sha256[:16]}...",
            hint=f"remove it with: warmctl rm {snapshot.ref}",
        )


def record_disagreements(snapshot: Snapshot, summary: archive.ArchiveSummary,
                         archive_bytes: int) -> list[str]:
    """Where an archive's own contents contradict the snapshot's record (e.g. a file swapped
    in from another snapshot): what `show` reads from the archive would otherwise be mixed
    with the record without a word. Only `verify`'s digest proves the archive is the one."""
    found = []
    if archive_bytes != snapshot.size_bytes:
        found.append(f"{archive_bytes} bytes, recorded {snapshot.size_bytes}")
    if summary.compression != snapshot.compression:
        found.append(f"{summary.compression} compression, recorded {snapshot.compression}")
    pairs = (("container id", summary.container_id, snapshot.container_id),
             ("image id", summary.image_id, snapshot.image_id))
    for what, in_archive, recorded in pairs:
        if in_archive and recorded and in_archive != recorded:
            found.append(f"{what} {in_archive[:12]}, recorded {recorded[:12]}")
    return found


@dataclass(frozen=True)
class VerifyResult:
    snapshot: Snapshot
    ok: bool
    problem: str = ""
    # The disk failed a read (EIO): not proved corrupt, and not to be removed for it.
    disk_failure: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.snapshot.ref, "ok": self.ok, "problem": self.problem or None,
                "disk_failure": self.disk_failure}


def verify_snapshot(catalogue: Catalogue, snapshot: Snapshot, progress: Progress) -> VerifyResult:
    """Recompute the digest and read the archive's structure to its end."""
    try:
        with catalogue.hold_archive(snapshot) as held:
            progress.phase(f"verifying {snapshot.ref}")
            check_digest(snapshot, held.path, progress)
            archive.verify_structure(held.path)
    except IntegrityError as err:
        return VerifyResult(snapshot, False, err.message)
    except DiskIOError as err:
        return VerifyResult(snapshot, False, err.message, disk_failure=True)
    return VerifyResult(snapshot, True)


@dataclass(frozen=True)
class PruneResult:
    decisions: list[Decision]
    bytes_freed: int
    leftovers_removed: list[str]


def prune_snapshots(catalogue: Catalogue, policy: Policy, names: Sequence[str] = (),
                    *, dry_run: bool = False) -> PruneResult:
    """Remove what the policy does not keep (among ``names``, or all), then leftovers.

    The plan comes from one read of the catalogue: a snapshot published after it is not in
    the plan, so it cannot be removed by it. A dry run plans exactly the same.
    """
    snapshots = [s for s in catalogue.list_snapshots() if not names or s.name in names]
    unknown = sorted(set(names) - {s.name for s in snapshots})
    if unknown:
        # As rm: a typo must not look like a prune that found nothing to remove.
        raise NotFoundError(f"no snapshot {', '.join(unknown)}", hint="see: warmctl list")
    by_ref = {s.ref: s for s in snapshots}
    decisions = plan_prune(
        [Generation(s.name, s.generation, s.created, s.size_bytes) for s in snapshots], policy
    )
    plan = summarize_plan(decisions)
    if dry_run:
        return PruneResult(decisions, plan.bytes_freed, [])
    freed = catalogue.remove([by_ref[g.ref] for g in plan.removed])
    leftovers = [p.name for p in catalogue.sweep_orphan_archives()]
    leftovers += [p.name for p in catalogue.swept_on_open + catalogue.sweep_temporary_files()]
    return PruneResult(decisions, freed, leftovers)


def resolve_refs(catalogue: Catalogue, refs: Sequence[Ref], *, all_generations: bool = False) \
        -> list[Snapshot]:
    """Every snapshot the references name, each once, in the order given."""
    found: dict[str, Snapshot] = {}
    for ref in refs:
        if all_generations:
            if ref.generation is not None:
                raise UsageError(f"--all-generations takes names, not {ref}")
            snapshots = catalogue.list_snapshots(ref.name)
            if not snapshots:
                raise NotFoundError(f"no snapshot {ref}", hint="see: warmctl list")
        else:
            snapshots = [catalogue.get(ref)]
        for snap in snapshots:
            found.setdefault(snap.ref, snap)
    return list(found.values())


def require_usable_criu() -> str:
    """Fail with exit 6 before any container is touched when the CRIU that runc will run is
    missing or, by ``host.CRIU_KERNEL_PAIRS``, too old for this kernel: podman would freeze
    the container and fail halfway. Costs one ``criu --version``. Returns CRIU's version.
    Not root: exit 6 before that (host.require_root)."""
    host.require_root()
    kernel = host.kernel_release()
    path = host.criu_path()
    if path is None:
        raise HostError("CRIU is not installed (no criu on PATH): podman cannot checkpoint "
                        "or restore", hint=host.missing_criu_fix(kernel))
    version = host.criu_version()
    if not version:
        raise HostError(f"{path} --version failed: CRIU is unusable",
                        hint=host.missing_criu_fix(kernel))
    advice = host.criu_kernel_advice(version, kernel)
    if advice is not None:
        raise HostError(advice.problem, hint=advice.fix)
    return version


def require_runtime_can_checkpoint(versions: HostVersions) -> None:
    """Fail with exit 6, before the container is touched, when podman's runtime is known not
    to checkpoint here (host.runtime_problem)."""
    problem = host.runtime_problem(versions.runtime, versions.runtime_details)
    if problem is not None:
        raise HostError(problem.problem, hint=problem.fix)


def keep_criu_log(catalogue: Catalogue, err: CheckpointError, label: str) -> CheckpointError:
    """Copy CRIU's log into the catalogue's logs/ (podman removes its copy with the
    container), add CRIU's first error line to the message, and a fix as the hint when the
    failure is a known one."""
    criu_lines: list[str] = []
    if err.criu_log is not None and err.criu_log.is_file():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = catalogue.logs_dir / f"{stamp}-{label}.log"
        try:
            shutil.copyfile(err.criu_log, kept)
            os.chmod(kept, 0o600)
        except OSError:
            pass
        else:
            err.criu_log = kept
            criu_lines = criu_error_lines(kept)
            if criu_lines:
                err.message += f"; CRIU: {criu_lines[0]}"
            err.message += f"; log: {kept}"
    err.hint = failure_hint(err.stderr, "\n".join(criu_lines)) or err.hint
    return err


def failure_hint(stderr: str, criu_log_text: str = "") -> str | None:
    """diagnose(), told this host's CRIU version and kernel so that an upgrade names the
    release this host needs."""
    criu_version = ""
    with contextlib.suppress(WarmctlError):
        criu_version = host.criu_version()
    return diagnose(stderr, criu_log_text, criu_version=criu_version,
                    kernel=host.kernel_release())


def criu_error_lines(log_path: Path) -> list[str]:
    """CRIU's error lines in its log file, in order (see diagnose.criu_errors)."""
    try:
        with open(log_path, errors="replace") as log:
            return criu_errors(log)
    except OSError:
        return []

