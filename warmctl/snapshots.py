"""The library behind the verbs: take, resume, verify and remove snapshots.

Nothing here prints; callers pass a ``Progress`` and render what comes back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from warmctl import archive, criu_config, feed, host, hostcache, hostcompat, transcode
from warmctl.catalogue import Catalogue, Snapshot, SnapshotRecord
from warmctl.diagnose import criu_errors, diagnose
from warmctl.errors import (
    CheckpointError,
    ConflictError,
    HostError,
    IntegrityError,
    Interrupted,
    NotFoundError,
    PodmanError,
    UsageError,
    WarmctlError,
)
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

T = TypeVar("T")
log = logging.getLogger(__name__)
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}")


@dataclass(frozen=True)
class SnapshotOptions:
    leave_running: bool = False
    compress: str = "zstd"
    tcp_established: bool = False
    file_locks: bool = False
    labels: dict[str, str] | None = None

    def __post_init__(self) -> None:
        # Checked when the options are made, before warm spends minutes warming.
        if self.compress not in COMPRESSIONS:
            raise UsageError(f"--compress must be one of {', '.join(COMPRESSIONS)}")


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.fullmatch(key):
            raise UsageError(f"invalid label {item!r}: expected KEY=VALUE")
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

    On failure the container is left as podman left it and nothing is recorded.
    """
    validate_name(name)
    criu_version = require_usable_criu()
    progress.phase("inspecting")
    info = podman.inspect_container(container)
    if info is None:
        raise NotFoundError(f"no such container: {container}", hint="see: podman ps")
    if not info.running:
        raise WarmctlError(
            f"container {container} is {info.state}, not running: only a running container "
            "can be snapshotted"
        )
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
    with contextlib.ExitStack() as stack:
        archive_file = stack.enter_context(catalogue.new_temp_file())
        result, digest, plain_bytes, interrupted = _checkpoint_into(
            catalogue, podman, info.id, name, options, archive_file.path, progress)
        with _rescue_on_failure(catalogue, archive_file.path, name,
                                armed=lambda: not options.leave_running):
            progress.phase("publishing")
            record = dataclasses.replace(
                record,
                host=_host_record(versions, criu_version),
                criu_stats=result.criu_statistics,
                extra={**record.extra, "plain_bytes": plain_bytes,
                       "cpu": hostcompat.cpu_record(),
                       **({} if options.leave_running else _in_place_extra(podman, info.id))},
            )
            snapshot = catalogue.publish(archive_file, record, sha256=digest)
    if interrupted:
        raise Interrupted(
            f"interrupted after podman had stopped {info.name}: its state is recorded as "
            f"{snapshot.ref}, so that it is not lost", hint=f"warmctl resume {snapshot.ref}")
    return snapshot


def _checkpoint_into(
    catalogue: Catalogue, podman: Podman, container_id: str, name: str,
    options: SnapshotOptions, dest: Path, progress: Progress,
) -> tuple[CheckpointResult, str, int | None, bool]:
    """Checkpoint into ``dest``. Returns podman's result, the archive's sha256, the plain
    tar's size (when warmctl compressed it) and whether the user pressed Ctrl-C meanwhile.

    For zstd, podman writes a plain tar and warmctl compresses it on all cores while podman
    is still writing (see warmctl/transcode.py); gzip and none podman writes itself.
    """
    def checkpoint(export: Path, compress: str) -> CheckpointResult:
        try:
            return podman.checkpoint(
                container_id, export, leave_running=options.leave_running, compress=compress,
                tcp_established=options.tcp_established, file_locks=options.file_locks,
            )
        except CheckpointError as err:
            raise keep_criu_log(catalogue, err, f"{name}-dump") from err

    ours = options.compress == "zstd"
    running: concurrent.futures.Future[CheckpointResult] | None = None

    def stopped_by_checkpoint() -> bool:
        """podman's checkpoint succeeded and stopped the container: the export is now the
        only copy of its memory."""
        return (not options.leave_running and running is not None and running.done()
                and not running.cancelled() and running.exception() is None)

    with contextlib.ExitStack() as stack:
        export = stack.enter_context(catalogue.new_temp_file(".plain")).path if ours else dest
        with _rescue_on_failure(catalogue, export, name, armed=stopped_by_checkpoint):
            progress.phase("checkpointing")
            progress.watch_file(export)
            interrupted, digest = False, None
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                running = pool.submit(checkpoint, export, "none" if ours else options.compress)
                try:
                    if ours:
                        digest = transcode.compress_zstd(
                            export, dest, progress.advance,
                            still_growing=lambda: not running.done())
                    result = running.result()
                except KeyboardInterrupt:
                    # Ctrl-C reached warmctl only: podman runs in a session of its own. A
                    # checkpoint stopped halfway can leave the container dead with its state
                    # in no archive, so podman finishes first.
                    interrupted, digest = True, None
                    progress.phase("interrupted: letting podman finish the checkpoint")
                    result = running.result()
                except BaseException:
                    running.result()  # podman's own failure says more than ours
                    raise
                finally:
                    progress.stop_watching()
            if interrupted and options.leave_running:
                raise Interrupted(
                    "interrupted: the container kept running; nothing was recorded")
            if digest is None:
                progress.phase("compressing" if ours else "hashing")
                digest = (transcode.compress_zstd(export, dest, progress.advance) if ours
                          else archive.sha256_file(dest, progress.advance))
            return result, digest, export.stat().st_size if ours else None, interrupted


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
        saved = catalogue.rescue(path, name)
        note = (f"the checkpoint had already stopped the container: its memory is kept in "
                f"{saved} (podman container restore --import {saved})")
        if isinstance(exc, WarmctlError):
            exc.message = f"{exc.message}; {note}"
            raise
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"interrupted; {note}") from exc
        reason = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) else str(exc)
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


@dataclass(frozen=True)
class Resumed:
    container: str
    criu_stats: dict[str, int]  # CRIU's restore statistics (restore_time, pages_restored, ...)


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
    """
    snapshot = catalogue.get(ref)
    criu_version = require_usable_criu()
    require_runtime_can_checkpoint(hostcache.host_versions(podman))
    if hostcompat.needs_comparison(snapshot):
        progress.phase("comparing hosts")
        hostcompat.check_before_resume(snapshot, podman, criu_version, strict=options.strict,
                                       warn=warn or (lambda _: None))
    target = options.name or snapshot.container_name
    existing = podman.inspect_container(target)
    if existing is not None:
        ours = existing.id == snapshot.container_id and not existing.running
        if not (options.replace or ours):
            raise ConflictError(
                f"a container named {target} already exists ({existing.state})",
                hint="choose another with --name, or remove it with --replace",
            )
        if _restorable_in_place(podman, snapshot, existing, options):
            restored, interrupted = _restore_in_place(catalogue, podman, snapshot, existing,
                                                      options, progress)
            return _resumed(target, restored, interrupted)
    # The archive is read through a hard link that a concurrent rm or prune cannot take away.
    with catalogue.hold_archive(snapshot) as held:
        if existing is not None:
            # Otherwise the digest is checked while podman reads; here a damaged archive
            # must not cost the user the container it was to replace.
            progress.phase("verifying digest")
            check_digest(snapshot, held.path, progress)
            progress.phase(f"removing container {target}")
            podman.remove_container(existing.id)
        progress.phase("restoring")
        if snapshot.plain_bytes is not None:
            progress.expect(snapshot.plain_bytes)
        try:
            restored, interrupted = _restore_through_feed(held.path, snapshot, podman, target,
                                                          options, progress)
        except (WarmctlError, KeyboardInterrupt) as err:
            # First keep CRIU's log: it lives in the leftover container's directory.
            if isinstance(err, CheckpointError):
                keep_criu_log(catalogue, err, f"{snapshot.name}-restore")
            # A failed or interrupted restore may leave a created-but-not-running container
            # behind (a damaged archive even a running one); it is not ours to keep, and it
            # would hold the name for the next attempt.
            _remove_leftover(podman, target, running_too=isinstance(err, IntegrityError))
            raise
    return _resumed(target, restored, interrupted)


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
    progress.phase(f"restoring {existing.name} in place")
    log.debug("the checkpoint in %s's storage is %s: restoring in place", existing.name,
              snapshot.ref)
    try:
        return _let_podman_finish(lambda: podman.restore_in_place(
            existing.id, tcp_established=options.tcp_established,
            file_locks=options.file_locks), progress)
    except CheckpointError as err:
        raise keep_criu_log(catalogue, err, f"{snapshot.name}-restore") from err


def _restore_through_feed(source: Path, snapshot: Snapshot, podman: Podman, target: str,
                          options: ResumeOptions, progress: Progress) -> tuple[RestoreResult, bool]:
    """podman restores ``source`` read through an ArchiveFeed (see feed.py for why and how).
    Returns podman's result and whether the user pressed Ctrl-C meanwhile.

    Raises IntegrityError when the archive turns out damaged, whatever podman did. When podman
    failed without reading the whole archive, it may have imported only the configuration
    tar (a podman that reads differently): then it is tried once more, with whole archives.
    """
    for config_reads in (feed.CONFIG_READS, 0):
        # Only a configuration read can name CRIU's configuration (see criu_config.py).
        with (criu_config.for_one_restore() if config_reads
              else contextlib.nullcontext()) as config_file, \
                feed.ArchiveFeed(source, snapshot.sha256, plain_bytes=snapshot.plain_bytes,
                                 label=snapshot.ref, config_reads=config_reads,
                                 advance=progress.advance, criu_config=config_file) as fed:
            try:
                restored, interrupted = _let_podman_finish(lambda: podman.restore(
                    fed.path,
                    name=target,
                    publish=options.publish,
                    tcp_established=options.tcp_established,
                    file_locks=options.file_locks,
                ), progress)
            except PodmanError:
                fed.verify()  # damage explains the failure better than podman's message
                if fed.archive_was_read or not config_reads:
                    raise
                log.debug("podman failed after reading only the configuration (%s): "
                          "trying again with the whole archive for every read", fed.reads)
                _remove_leftover(podman, target, running_too=False)
                continue
        fed.verify()
        return restored, interrupted
    raise AssertionError("unreachable: the second attempt returns or raises")


def _remove_leftover(podman: Podman, target: str, *, running_too: bool) -> None:
    with contextlib.suppress(WarmctlError):
        leftover = podman.inspect_container(target)
        if leftover is not None and (running_too or not leftover.running):
            podman.remove_container(leftover.id)


def _let_podman_finish(work: Callable[[], T], progress: Progress) -> tuple[T, bool]:
    """Run a podman call (in a session of its own, so Ctrl-C reaches warmctl only) and let
    it finish even when interrupted: a restore stopped halfway leaves a broken container.
    Returns its result and whether the user asked to stop; a second Ctrl-C abandons it."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(work)
        try:
            return running.result(), False
        except KeyboardInterrupt:
            progress.phase("interrupted: letting podman finish (Ctrl-C again abandons it)")
            return running.result(), True


def check_digest(snapshot: Snapshot, path: Path, progress: Progress) -> None:
    compare_digest(snapshot, archive.sha256_file(path, progress.advance))


def compare_digest(snapshot: Snapshot, digest: str) -> None:
    if digest != snapshot.sha256:
        raise IntegrityError(
            f"archive of {snapshot.ref} is corrupt: sha256 {digest[:16]}... "
            f"does not match the recorded {snapshot.sha256[:16]}...",
            hint=f"remove it with: warmctl rm {snapshot.ref}",
        )


@dataclass(frozen=True)
class VerifyResult:
    snapshot: Snapshot
    ok: bool
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.snapshot.ref, "ok": self.ok, "problem": self.problem or None}


def verify_snapshot(catalogue: Catalogue, snapshot: Snapshot, progress: Progress) -> VerifyResult:
    """Recompute the digest and read the archive's structure to its end."""
    try:
        with catalogue.hold_archive(snapshot) as held:
            progress.phase(f"verifying {snapshot.ref}")
            check_digest(snapshot, held.path, progress)
            archive.verify_structure(held.path)
    except IntegrityError as err:
        return VerifyResult(snapshot, False, err.message)
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
    the container and fail halfway. Costs one ``criu --version``. Returns CRIU's version."""
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

