"""A restore's named volumes: a clone's own, the source's shared, or the snapshot's content.

On resume under another name, the snapshot's volumes would collide with the source's (podman:
"volume with name ... already exists"). A clone gets new volumes, NAME-VOLUME, created and
filled from the archive's volumes/*.tar by warmctl; podman is told to leave volumes alone
(``--ignore-volumes``) and is served a config.dump and spec.dump that name the new volumes
(feed.py answers its configuration reads). ``--volumes shared`` mounts the snapshot's volumes
as they are now, and ``--volumes snapshot`` replaces their content with the snapshot's (a
copy saved first: saved_volumes.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from warmctl import archive
from warmctl.errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    PodmanError,
    UsageError,
    WarmctlError,
)
from warmctl.lifecycle.saved_volumes import (
    SAVED_DIR,
    SavedVolume,
    _fsync_dir,
    _not_saved,
    _write_synced,
    through_interrupts,
)
from warmctl.podman.types import ContainerInfo, Podman
from warmctl.progress import Progress

T = TypeVar("T")

MODES = ("new", "shared", "snapshot")
# podman's rule for volume names (and container names).
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CONFIG_SEARCH_LIMIT = 64 * 1024 * 1024  # as feed.py: podman writes the configuration first


# --- clones: resume -------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeUse:
    archived: str  # the volume's name in the snapshot
    volume: str  # the volume the restored container mounts
    destination: str
    content: str  # "snapshot" (filled from the archive) or "current" (as it is)

    def to_dict(self) -> dict[str, str]:
        return {"snapshot_volume": self.archived, "volume": self.volume,
                "destination": self.destination, "content": self.content}


@dataclass
class VolumePlan:
    """How a restore treats the snapshot's named volumes."""

    uses: list[VolumeUse] = field(default_factory=list)
    create: bool = False  # warmctl creates and fills the volumes (renamed ones)
    ignore_volumes: bool = False  # podman's --ignore-volumes
    remove_first: list[str] = field(default_factory=list)  # replaced by the snapshot's content
    # Volumes podman's restore creates itself (from volumes/NAME.tar), none of them existing
    # by then: after a failed restore, the ones it left are removed (a volume in remove_first
    # is then put back as it was).
    podman_creates: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # what to remove if the restore fails
    mountpoints: dict[str, Path] = field(default_factory=dict)
    # The content of each volume in remove_first, saved before it is removed (keep_until_done).
    saved: list[SavedVolume] = field(default_factory=list)

    @property
    def renames(self) -> bool:
        """The configuration podman reads must be edited (volumes of other names)."""
        return any(use.volume != use.archived for use in self.uses)

    def to_list(self) -> list[dict[str, str]]:
        return [use.to_dict() for use in self.uses]

    def edit_dumps(self, config_dump: bytes, spec_dump: bytes) -> tuple[bytes, bytes]:
        """config.dump naming the new volumes, and spec.dump mounting their mountpoints."""
        config, spec = json.loads(config_dump), json.loads(spec_dump)
        by_name = {use.archived: use for use in self.uses}
        sources: dict[str, str] = {}
        for volume in config.get("namedVolumes") or []:
            use = by_name.get(volume.get("volumeName"))
            if use is not None:
                volume["volumeName"] = use.volume
                sources[str(volume.get("dest"))] = str(self.mountpoints[use.volume])
        for mount in spec.get("mounts") or []:
            if mount.get("destination") in sources:
                mount["source"] = sources[mount["destination"]]
        return json.dumps(config).encode(), json.dumps(spec).encode()


def plan_for_restore(podman: Podman, source: Path, *, target: str, source_container: str,
                     mode: str | None, replacing: ContainerInfo | None) -> VolumePlan:
    """Decide, before anything is touched, which volumes the restored ``target`` mounts.

    ``mode`` None: a clone (``target`` is not the snapshot's container name) gets new
    volumes; under the source's name the snapshot's volumes are restored by podman, which
    must not find them existing (then the user chooses: ConflictError, exit 4).
    ``replacing``: the container resume removes first (its use of a volume is no conflict).
    """
    if mode is not None and mode not in MODES:
        raise UsageError(f"--volumes must be one of {', '.join(MODES)}")
    dumps = archive.configuration_files(source, within=_CONFIG_SEARCH_LIMIT)
    if dumps is None:
        return VolumePlan()  # podman will say what is wrong with the archive
    try:
        config = json.loads(dumps[0])
    except ValueError:
        return VolumePlan()
    named = archive.named_volumes(config) if isinstance(config, dict) else []
    if not named:
        return VolumePlan()
    if mode is None:
        mode = "new" if target != source_container else None
    if mode == "new":
        return _plan_new(podman, named, target, replacing)
    if mode == "shared":
        for volume in named:
            if podman.volume_mountpoint(volume["name"]) is None:
                raise NotFoundError(f"--volumes shared: there is no volume {volume['name']}",
                                    hint="leave out --volumes shared: the snapshot's content "
                                         "then goes into a volume of its own")
        return VolumePlan([VolumeUse(v["name"], v["name"], v["destination"], "current")
                           for v in named], ignore_volumes=True)
    existing = [v["name"] for v in named if podman.volume_mountpoint(v["name"]) is not None]
    if mode is None and existing:
        listed = ", ".join(existing)
        raise ConflictError(
            f"the snapshot's volume {listed} already exists, and {target} would mount it "
            "(its source container is gone or replaced)",
            hint="choose one: --volumes snapshot replaces its content with the snapshot's; "
                 "--volumes shared keeps the current volume as it is; --name NEW makes a "
                 "clone with volumes of its own")
    for name in existing:  # mode "snapshot": they will be removed, if no one else uses them
        users = [u for u in podman.volume_users(name)
                 if replacing is None or not replacing.id.startswith(u)]
        if users:
            raise ConflictError(f"volume {name} is in use by container {users[0][:12]}",
                                hint="stop and remove that container, or resume with "
                                     "--name NEW (a clone, with volumes of its own)")
    return VolumePlan([VolumeUse(v["name"], v["name"], v["destination"], "snapshot")
                       for v in named], remove_first=existing,
                      podman_creates=[v["name"] for v in named])


def _plan_new(podman: Podman, named: list[dict[str, str]], target: str,
              replacing: ContainerInfo | None) -> VolumePlan:
    uses = [VolumeUse(v["name"], clone_volume_name(target, v["name"]), v["destination"],
                      "snapshot") for v in named]
    replaced: list[str] = []
    for use in uses:
        if podman.volume_mountpoint(use.volume) is None:
            continue
        # An earlier clone's volume, used by nothing but the container --replace removes,
        # goes with it.
        users = podman.volume_users(use.volume)
        if replacing is not None and users and all(replacing.id.startswith(u) for u in users):
            replaced.append(use.volume)
        else:
            raise ConflictError(
                f"volume {use.volume} (for {target}'s copy of {use.archived}) already exists",
                hint=f"remove it (podman volume rm {use.volume}), choose another --name, or "
                     "--volumes shared")
    return VolumePlan(uses, create=True, ignore_volumes=True, remove_first=replaced)


def clone_volume_name(container: str, volume: str) -> str:
    """The volume a clone named ``container`` gets for the snapshot's ``volume``."""
    name = f"{container}-{volume}"
    if not _VOLUME_NAME.fullmatch(name):
        raise UsageError(f"{name!r} cannot be a volume name: choose another --name")
    return name


def prepare(podman: Podman, plan: VolumePlan, source: Path, progress: Progress) -> None:
    """Make the volumes the plan needs before podman restores: remove the ones to be replaced
    by the snapshot's content (saved first: save_before_removing()), create the clone's and
    fill them from ``source``. On failure the caller calls undo()."""
    saved = {copy.volume: copy for copy in plan.saved}
    for name in plan.remove_first:
        copy = saved.get(name)
        if copy is None or copy.path is None:
            raise AssertionError(f"volume {name} would be removed without a saved copy")
        progress.phase(f"removing volume {name} (the snapshot's content replaces it)")

        def remove(name: str = name, copy: SavedVolume = copy) -> None:
            podman.remove_volume(name)
            copy.removed = True  # in the same thread: nothing can come between

        _to_the_end(remove)
    if not plan.create:
        return
    for use in plan.uses:
        plan.mountpoints[use.volume] = podman.create_volume(use.volume)
        plan.created.append(use.volume)
    _fill(podman, plan, source, progress)


def _fill(podman: Podman, plan: VolumePlan, source: Path, progress: Progress) -> None:
    """Stream each volumes/NAME.tar of the archive into its new volume: one pass, nothing
    extracted by path (podman's volume import unpacks it inside the volume)."""
    wanted = {use.archived: use.volume for use in plan.uses}
    filled: set[str] = set()
    try:
        with archive.open_tar_stream(source) as tar:
            for member in tar:
                found = archive.VOLUME_TAR.fullmatch(member.name)
                if not (found and member.isreg() and found.group(1) in wanted):
                    continue
                volume = wanted[found.group(1)]
                progress.phase(f"filling volume {volume} from the snapshot")
                reader = tar.extractfile(member)
                if reader is None:
                    continue
                podman.import_volume(volume, reader)
                filled.add(found.group(1))
                if filled == set(wanted):
                    break
    except archive.STREAM_ERRORS as err:
        raise IntegrityError(f"{source} is damaged: {archive.one_line(err)}") from err
    missing = sorted(set(wanted) - filled)
    if missing:
        raise IntegrityError(f"the snapshot names volume {missing[0]} but its archive holds "
                             f"no volumes/{missing[0]}.tar")


def require_volume_tars(plan: VolumePlan, source: Path) -> None:
    """The archive holds volumes/NAME.tar for every volume filled from the snapshot: checked
    before a volume is removed for it (the tars come last: the whole stream is read)."""
    wanted = {use.archived for use in plan.uses if use.content == "snapshot"}
    found: set[str] = set()
    try:
        with archive.open_tar_stream(source) as tar:
            for member in tar:
                named = archive.VOLUME_TAR.fullmatch(member.name)
                if named and member.isreg():
                    found.add(named.group(1))
                    if wanted <= found:
                        break
    except (*archive.STREAM_ERRORS, tarfile.TarError) as err:
        raise IntegrityError(f"{source} is damaged: {archive.one_line(err)}") from err
    missing = sorted(wanted - found)
    if missing:
        raise IntegrityError(f"the snapshot names volume {missing[0]} but its archive holds "
                             f"no volumes/{missing[0]}.tar")


def undo(podman: Podman, plan: VolumePlan) -> tuple[list[str], bool]:
    """After a failed restore: remove the volumes prepare() created and those podman's
    restore left, and put back each volume prepare() removed, from its saved copy. Runs to
    its end whatever Ctrl-C or SIGTERM come meanwhile. Returns what the error should say
    about each volume the resume was to replace, and whether it was interrupted."""
    return through_interrupts(lambda: _undo(podman, plan))


def _undo(podman: Podman, plan: VolumePlan) -> list[str]:
    for name in plan.created:
        with contextlib.suppress(WarmctlError):
            podman.remove_volume(name)
    plan.created.clear()
    remove_made_by_podman(podman, plan)
    notes = []
    for copy in plan.saved:
        if not copy.removed:
            copy.discard()
            notes.append(f"volume {copy.volume} is as it was (nothing was removed)")
            continue
        try:
            copy.put_back(podman)
        except (WarmctlError, OSError) as err:
            reason = err.message if isinstance(err, WarmctlError) else str(err)
            notes.append(f"volume {copy.volume} could not be put back ({reason}): "
                         f"{copy.how_to_put_back()}")
            copy.release()
        else:
            copy.discard()
            notes.append(f"volume {copy.volume} is as it was (put back from its copy)")
    plan.saved.clear()
    return notes


def remove_made_by_podman(podman: Podman, plan: VolumePlan) -> None:
    """Remove the volumes a failed restore of podman's made (the snapshot's content): none
    of them existed, or prepare() had removed it (then undo() puts it back). One that a
    container mounts (not this resume's, which is removed first) stays: then putting back
    fails, and says so."""
    removed = {copy.volume for copy in plan.saved if copy.removed}
    for name in plan.podman_creates:
        if name in plan.remove_first and name not in removed:
            continue  # never removed: it is the user's own, as it was
        with contextlib.suppress(WarmctlError):
            if podman.volume_mountpoint(name) is not None and not podman.volume_users(name):
                podman.remove_volume(name)


def done(plan: VolumePlan) -> None:
    """The restore succeeded: the saved copies are no longer needed."""
    for copy in plan.saved:
        copy.discard()
    plan.saved.clear()


def left_unfinished(plan: VolumePlan) -> list[str]:
    """podman goes on alone (a second Ctrl-C, --time-limit): whether the restore will succeed
    is unknown, so each saved copy stays, and the error says where."""
    notes = [f"volume {copy.volume} was removed: {copy.how_to_put_back()}"
             for copy in plan.saved if copy.removed]
    for copy in plan.saved:
        if copy.removed:
            copy.release()
        else:
            copy.discard()
    plan.saved.clear()
    return notes


def save_before_removing(home: Path, podman: Podman, plan: VolumePlan,
                         progress: Progress) -> None:
    """Save the content of every volume prepare() will remove, before any is removed: a
    volume without a whole copy on disk is never removed. A failure here has removed
    nothing (undo() discards what was saved)."""
    if not plan.remove_first:
        return
    directory = home / SAVED_DIR
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    except OSError as err:
        raise _not_saved(plan.remove_first[0], home, err.strerror or str(err)) from err
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in plan.remove_first:
        progress.phase(f"saving volume {name} (put back if the resume fails)")
        settings = podman.volume_settings(name)
        mountpoint = podman.volume_mountpoint(name)
        if settings is None or mountpoint is None:
            raise ConflictError(f"volume {name} went away while resume prepared to replace "
                                "it: nothing was removed", hint="resume again")
        stem = f"{name}@{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        partial = directory / f"{stem}.partial"
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise _not_saved(name, home, err.strerror or str(err)) from err
        fcntl.flock(fd, fcntl.LOCK_EX)
        copy = SavedVolume(name, partial, fd)
        plan.saved.append(copy)
        try:
            podman.export_volume(name, partial)  # podman truncates and writes in place
            os.fsync(fd)
            record: dict[str, Any] = {"volume": name, **settings.to_dict()}
            with contextlib.suppress(OSError):  # a driver's volume may live elsewhere
                top = os.stat(mountpoint)
                record["top"] = {"mode": stat.S_IMODE(top.st_mode), "uid": top.st_uid,
                                 "gid": top.st_gid}
            _write_synced(copy.settings_path, json.dumps(record).encode())
            copy.path = directory / f"{stem}.tar"
            os.rename(partial, copy.path)
            _fsync_dir(directory)
        except PodmanError as err:
            raise _not_saved(name, home, err.message) from err
        except OSError as err:
            raise _not_saved(name, home, err.strerror or str(err)) from err


def _to_the_end(work: Callable[[], T]) -> T:
    """through_interrupts(), the interruption raised afterwards."""
    result, interrupted = through_interrupts(work)
    if interrupted:
        raise KeyboardInterrupt
    return result
