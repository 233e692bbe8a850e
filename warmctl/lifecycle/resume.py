"""Resuming a snapshot: a running container again, in place or through the feed.

In place when the target is the snapshot's own stopped source and the checkpoint in its
storage is still the snapshot's (in_place.py); otherwise podman restores from the archive,
fed through a FIFO (feed.py). A container of the target's name is replaced only when it is
safe to (the snapshot's digest checked first), the volumes follow volume_plan.py, and a failed
restore leaves things as they were. Nothing here prints; callers pass a ``Progress``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from warmctl import criu_config, spec_policy
from warmctl.catalogue import Catalogue, Snapshot
from warmctl.errors import (
    CheckpointError,
    ConflictError,
    DiskIOError,
    IntegrityError,
    Interrupted,
    LeftUnfinished,
    PodmanError,
    TimedOut,
    UsageError,
    WarmctlError,
)
from warmctl.host import compare as hostcompat
from warmctl.host import podman_info as hostcache
from warmctl.lifecycle import feed, freshness, saved_volumes, volume_plan
from warmctl.lifecycle.claim import NameClaim, claim_name
from warmctl.lifecycle.criu_logs import keep_criu_log
from warmctl.lifecycle.in_place import stored_checkpoint
from warmctl.lifecycle.prerequisites import require_runtime_can_checkpoint, require_usable_criu
from warmctl.lifecycle.verify import check_digest, from_registry
from warmctl.lifecycle.waiting import PodmanCall
from warmctl.podman.types import (
    ContainerInfo,
    Podman,
    RestoreResult,
)
from warmctl.progress import Progress
from warmctl.refs import Ref

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumeOptions:
    name: str | None = None
    publish: tuple[str, ...] = ()
    replace: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    strict: bool = False  # refuse a snapshot from a host that differs (hostcompat)
    volumes: str | None = None  # volume_plan.MODES; None: a clone's own, else the snapshot's
    time_limit: float | None = None  # seconds to wait for podman's restore (waiting.py)
    allow_host_access: bool = False  # resume a pulled snapshot whatever it asks (spec_policy)
    max_age: float | None = None  # seconds: refuse an older snapshot (freshness.py)

    def __post_init__(self) -> None:
        if self.volumes is not None and self.volumes not in volume_plan.MODES:
            raise UsageError(f"--volumes must be one of {', '.join(volume_plan.MODES)}")


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
    # Copies of volumes that a resume killed outright left behind (saved_volumes.py).
    saved_volumes.put_back_left_copies(catalogue.home, podman, warn or (lambda _: None))
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
            plan = volume_plan.plan_for_restore(podman, held.path, target=target,
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
                # Before a volume is removed, its content is on disk (saved_volumes.py): a failure
                # from here on puts it back as it was.
                volume_plan.save_before_removing(catalogue.home, podman, plan, progress)
                volume_plan.prepare(podman, plan, held.path, progress)
                restored, interrupted = _restore_through_feed(held.path, snapshot, podman,
                                                              name_claim, options, progress,
                                                              plan)
            except (WarmctlError, KeyboardInterrupt) as err:
                reported = _after_failed_restore(catalogue, podman, snapshot, name_claim, plan,
                                                 err)
                if reported is err:
                    raise
                raise reported from err
            volume_plan.done(plan)
    return dataclasses.replace(_resumed(target, restored, interrupted), volumes=plan.to_list())


def _check_before_replacing(snapshot: Snapshot, path: Path, plan: volume_plan.VolumePlan,
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
            volume_plan.require_volume_tars(plan, path)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while verifying {snapshot.ref}'s archive: "
                          f"{'; '.join(untouched)}") from None
    except WarmctlError as err:
        if plan.remove_first:
            err.message += f"; nothing was removed: {', '.join(untouched)}"
        raise


def _after_failed_restore(catalogue: Catalogue, podman: Podman, snapshot: Snapshot,
                          name_claim: NameClaim, plan: volume_plan.VolumePlan,
                          err: WarmctlError | KeyboardInterrupt) -> BaseException:
    """Clean up after a failed (or interrupted) restore: CRIU's log kept, the container this
    resume created removed, the volumes put back as they were. Returns the error to raise,
    saying where each volume the resume was to replace stands."""
    # First keep CRIU's log: it lives in the leftover container's directory.
    if isinstance(err, CheckpointError):
        keep_criu_log(catalogue, err, f"{snapshot.name}-restore")
    if isinstance(err, (LeftUnfinished, TimedOut)) and not _podman_never_started(err):
        # podman goes on alone: its container is its business, and the copies stay.
        notes = volume_plan.left_unfinished(plan)
    else:
        # Both run to their end through a Ctrl-C or SIGTERM meanwhile (the resume fails
        # either way): a volume is put back only once the container using it is gone.
        _, again = saved_volumes.through_interrupts(
            lambda: _remove_created(podman, name_claim, err))
        notes, again_in_undo = volume_plan.undo(podman, plan)
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
    fingerprint = stored_checkpoint(podman, existing.id)
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
    fingerprint = stored_checkpoint(podman, existing.id)
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
                          plan: volume_plan.VolumePlan | None = None) -> tuple[RestoreResult, bool]:
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
    plan = plan or volume_plan.VolumePlan()
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
                volume_plan.remove_made_by_podman(podman, plan)  # the retry makes them again
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
