"""The library behind the verbs: take, resume, verify and remove snapshots.

Nothing here prints; callers pass a ``Progress`` and render what comes back.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warmctl import archive, host
from warmctl.catalogue import Catalogue, Snapshot, SnapshotRecord
from warmctl.errors import (
    CheckpointError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    PodmanError,
    UsageError,
    WarmctlError,
)
from warmctl.output import Progress
from warmctl.podman import COMPRESSIONS, Podman
from warmctl.refs import Ref, is_valid_name, validate_name

_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}")
_CRIU_ERROR = re.compile(r"\bError \(")


@dataclass(frozen=True)
class SnapshotOptions:
    leave_running: bool = False
    compress: str = "zstd"
    tcp_established: bool = False
    file_locks: bool = False
    labels: dict[str, str] | None = None


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
    if options.compress not in COMPRESSIONS:
        raise UsageError(f"--compress must be one of {', '.join(COMPRESSIONS)}")
    progress.phase("inspecting")
    info = podman.inspect_container(container)
    if info is None:
        raise NotFoundError(f"no such container: {container}", hint="see: podman ps")
    if not info.running:
        raise WarmctlError(
            f"container {container} is {info.state}, not running: only a running container "
            "can be snapshotted"
        )
    versions = podman.host_versions()
    catalogue.check_writable()
    record = SnapshotRecord(
        name=name,
        container_name=info.name,
        container_id=info.id,
        image_name=info.image_name,
        image_id=info.image_id,
        compression=options.compress,
        ports=info.ports,
        labels=options.labels or {},
        host={
            "podman": versions.podman,
            "runtime": versions.runtime,
            "runtime_version": versions.runtime_version,
            "criu": host.criu_version(),
            "kernel": versions.kernel,
            "hostname": versions.hostname,
        },
        extra=extra or {},
    )
    with catalogue.new_temp_file() as temp:
        progress.phase("checkpointing")
        progress.watch_file(temp.path)
        try:
            result = podman.checkpoint(
                info.id,
                temp.path,
                leave_running=options.leave_running,
                compress=options.compress,
                tcp_established=options.tcp_established,
                file_locks=options.file_locks,
            )
        except CheckpointError as err:
            raise keep_criu_log(catalogue, err, f"{name}-dump") from err
        finally:
            progress.stop_watching()
        progress.phase("hashing")
        digest = archive.sha256_file(temp.path, progress.advance)
        progress.phase("publishing")
        record = SnapshotRecord(**{**record.__dict__, "criu_stats": result.criu_statistics})
        return catalogue.publish(temp, record, sha256=digest)


@dataclass(frozen=True)
class ResumeOptions:
    name: str | None = None
    publish: tuple[str, ...] = ()
    replace: bool = False
    tcp_established: bool = False
    file_locks: bool = False


def resume_snapshot(
    catalogue: Catalogue,
    podman: Podman,
    ref: Ref,
    options: ResumeOptions,
    progress: Progress,
) -> str:
    """Restore a snapshot as a running container; returns the container's name."""
    snapshot = catalogue.get(ref)
    target = options.name or snapshot.container_name
    with catalogue.hold_archive(snapshot) as held:
        # The digest is checked on the very file podman will read (a hard link that a
        # concurrent rm or prune cannot take away).
        progress.phase("verifying digest")
        check_digest(snapshot, held.path, progress)
        existing = podman.inspect_container(target)
        if existing is not None:
            ours = existing.id == snapshot.container_id and not existing.running
            if not (options.replace or ours):
                raise ConflictError(
                    f"a container named {target} already exists ({existing.state})",
                    hint="choose another with --name, or remove it with --replace",
                )
            progress.phase(f"removing container {target}")
            podman.remove_container(existing.id)
        progress.phase("restoring")
        try:
            podman.restore(
                held.path,
                name=target,
                publish=options.publish,
                tcp_established=options.tcp_established,
                file_locks=options.file_locks,
            )
        except PodmanError as err:
            # podman may leave a created-but-not-running container behind; it is not ours
            # to keep, and it would hold the name for the next attempt.
            with contextlib.suppress(WarmctlError):
                leftover = podman.inspect_container(target)
                if leftover is not None and not leftover.running:
                    podman.remove_container(leftover.id)
            if isinstance(err, CheckpointError):
                raise keep_criu_log(catalogue, err, f"{snapshot.name}-restore") from err
            raise
    return target


def check_digest(snapshot: Snapshot, path: Path, progress: Progress) -> None:
    try:
        digest = archive.sha256_file(path, progress.advance)
    except OSError as exc:
        raise IntegrityError(f"archive of {snapshot.ref} is unreadable: {exc.strerror}") from exc
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


def keep_criu_log(catalogue: Catalogue, err: CheckpointError, label: str) -> CheckpointError:
    """Copy CRIU's log into the catalogue's logs/ (podman removes its copy with the
    container) and add CRIU's first error line to the message."""
    if err.criu_log is None or not err.criu_log.is_file():
        return err
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = catalogue.logs_dir / f"{stamp}-{label}.log"
    try:
        shutil.copyfile(err.criu_log, kept)
        os.chmod(kept, 0o600)
    except OSError:
        return err
    err.criu_log = kept
    criu_line = first_criu_error(kept)
    if criu_line:
        err.message += f"; CRIU: {criu_line}"
    err.message += f"; log: {kept}"
    return err


def first_criu_error(log_path: Path) -> str:
    """CRIU's first 'Error (file:line): ...' line, without its timestamp."""
    try:
        with open(log_path, errors="replace") as log:
            for line in log:
                if _CRIU_ERROR.search(line):
                    _, _, message = line.partition("): ")
                    return (message or line).strip()
    except OSError:
        pass
    return ""
