"""Named volumes: captured at the same instant as memory, and clones with volumes of their own.

podman puts each named volume of a container into its checkpoint archive as volumes/NAME.tar,
tarred after CRIU's dump. With ``--leave-running`` the container runs again by then, so
memory and volume would come from different instants (measured: a counter 100,000 writes
ahead in the file). So for a snapshot that leaves the container running, warmctl freezes the
container's cgroup itself before podman's checkpoint: CRIU dumps a frozen cgroup and leaves it
frozen as it found it, podman tars the volumes of the still frozen container, and warmctl thaws
it as soon as podman starts writing the archive, which comes after the volumes' tars (see
docs/design.md, "Volumes"). podman's own pause cannot be used: podman refuses to checkpoint a
container it knows as paused. A checkpoint that stops its container is consistent by itself.

On resume under another name, the snapshot's volumes would collide with the source's (podman:
"volume with name ... already exists"). A clone gets new volumes, NAME-VOLUME, created and
filled from the archive's volumes/*.tar by warmctl; podman is told to leave volumes alone
(``--ignore-volumes``) and is served a config.dump and spec.dump that name the new volumes
(feed.py answers its configuration reads). ``--volumes shared`` mounts the snapshot's volumes
as they are now, and ``--volumes snapshot`` replaces their content with the snapshot's.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from warmctl import archive
from warmctl.errors import (
    ConflictError,
    DiskIOError,
    HostError,
    IntegrityError,
    NotFoundError,
    PodmanError,
    UsageError,
    WarmctlError,
)
from warmctl.output import Progress
from warmctl.podman import ContainerInfo, Podman, VolumeSettings
from warmctl.waiting import in_daemon_thread

log = logging.getLogger(__name__)
T = TypeVar("T")

MODES = ("new", "shared", "snapshot")
# podman's rule for volume names (and container names).
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CONFIG_SEARCH_LIMIT = 64 * 1024 * 1024  # as feed.py: podman writes the configuration first
_FREEZE_TIMEOUT = 30.0  # seconds for the kernel to freeze every task of the cgroup
_POLL = 0.005


# --- one instant: snapshot ------------------------------------------------------------------


class Freezer:
    """The freezer of a container's cgroup (cgroup v1 ``freezer.state``, or v2
    ``cgroup.freeze``), driven directly: podman still sees the container as running."""

    def __init__(self, control: Path, version: int) -> None:
        self.control = control
        self.version = version
        self._lock = threading.Lock()
        self._frozen_at: float | None = None
        self.frozen_seconds = 0.0

    @classmethod
    def of_process(cls, pid: int, *, proc: Path = Path("/proc"),
                   cgroup_root: Path = Path("/sys/fs/cgroup")) -> Freezer:
        """The freezer of the cgroup that holds process ``pid``. Raises HostError when there
        is none (then the volumes cannot be captured at the memory's instant)."""
        try:
            lines = (proc / str(pid) / "cgroup").read_text().splitlines()
        except OSError as err:
            raise HostError(f"cannot read the cgroup of process {pid}: {err.strerror}") from err
        unified = None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "freezer" in controllers.split(","):
                state = cgroup_root / "freezer" / path.lstrip("/") / "freezer.state"
                if state.is_file():
                    return cls(state, 1)
            elif controllers == "":
                unified = path
        if unified is not None:
            for root in (cgroup_root, cgroup_root / "unified"):
                control = root / unified.lstrip("/") / "cgroup.freeze"
                if control.is_file():
                    return cls(control, 2)
        raise HostError(
            f"no cgroup freezer for the container's process {pid}: its volumes cannot be "
            "captured at the same instant as its memory",
            hint="snapshot without --leave-running (the container stays stopped while podman "
                 "exports its volumes)")

    def freeze(self) -> None:
        with self._lock:
            self._write("FROZEN" if self.version == 1 else "1")
            self._frozen_at = time.monotonic()
        deadline = time.monotonic() + _FREEZE_TIMEOUT
        while not self._is_frozen():
            if time.monotonic() > deadline:
                self.thaw()
                raise HostError(f"the container's cgroup did not freeze within "
                                f"{_FREEZE_TIMEOUT:.0f}s ({self.control})")
            time.sleep(_POLL)

    def thaw(self) -> None:
        """Idempotent; called by the export watcher and again when the checkpoint is over."""
        with self._lock:
            if self._frozen_at is None:
                return
            self._write("THAWED" if self.version == 1 else "0")
            self.frozen_seconds = time.monotonic() - self._frozen_at
            self._frozen_at = None
            log.debug("volumes: container thawed after %.3f s", self.frozen_seconds)

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """While open, a small process of its own session waits on a pipe from this one, and
        thaws the cgroup if this process dies first (kill -9, SIGTERM): a container must
        never be left frozen by a warmctl that is gone. Closed after the thaw, it exits."""
        thawed = "THAWED" if self.version == 1 else "0"
        guard = subprocess.Popen(  # noqa: S603 - this Python, a fixed script, no shell
            [sys.executable, "-c", _GUARD_SCRIPT, str(self.control), thawed],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, text=True, preexec_fn=_prepare_guard)
        try:
            yield
        finally:
            self.thaw()
            assert guard.stdin is not None
            with contextlib.suppress(OSError):
                guard.stdin.write("thawed")
                guard.stdin.close()
            guard.wait()

    def _write(self, value: str) -> None:
        try:
            self.control.write_text(value)
        except OSError as err:
            raise HostError(f"cannot write {value} to {self.control}: {err.strerror}") from err

    def _is_frozen(self) -> bool:
        if self.version == 1:
            return self.control.read_text().strip() == "FROZEN"
        events = (self.control.parent / "cgroup.events").read_text().split()
        return "frozen" in events and events[events.index("frozen") + 1] == "1"


def _prepare_guard() -> None:
    """In the guard, before it runs (set before exec, so that no signal finds it half
    started): SIGTERM, SIGHUP and SIGINT are ignored, and stay so through exec, so that a
    signal sent to warmctl and its guard together (a closed terminal's, or systemd's stop,
    which signals the unit's whole cgroup) leaves the guard watching; it thaws when warmctl
    dies or ends. And it leaves warmctl's cgroup for the root of the hierarchies systemd
    tracks units by, so that the SIGKILL systemd sends the unit's cgroup when the stop timeout
    passes does not reach it either: it outlives warmctl by the moment it takes to thaw."""
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    for procs in _UNIT_TRACKING_ROOTS:
        try:
            with open(procs, "w") as root:
                root.write("0")  # 0: the writing process
        except OSError:
            pass  # not mounted, or not allowed (a cgroup namespace): the signals still are


# Where systemd looks for a unit's processes: the named v1 hierarchy (hybrid hosts), the v2
# hierarchy beside it (hybrid) or as the only one (unified hosts).
_UNIT_TRACKING_ROOTS = ("/sys/fs/cgroup/systemd/cgroup.procs",
                        "/sys/fs/cgroup/unified/cgroup.procs",
                        "/sys/fs/cgroup/cgroup.procs")


# The guard: reads its stdin to the end; unless warmctl said it thawed, it thaws.
_GUARD_SCRIPT = """
import sys
if sys.stdin.read() != "thawed":
    with open(sys.argv[1], "w") as control:
        control.write(sys.argv[2])
"""


class _ThawWhenExportStarts(Progress):
    """Passes progress on; when the checkpoint starts watching the file podman exports into,
    thaws the container as soon as that file has any bytes. podman tars the volumes into its
    own storage first and only then writes the archive, so by then the volumes are captured."""

    def __init__(self, inner: Progress, freezer: Freezer) -> None:
        self._inner = inner
        self._freezer = freezer
        self._done = threading.Event()

    def phase(self, text: str) -> None:
        self._inner.phase(text)

    def advance(self, count: int) -> None:
        self._inner.advance(count)

    def expect(self, total: int) -> None:
        self._inner.expect(total)

    def watch_file(self, path: Any) -> None:
        self._inner.watch_file(path)
        threading.Thread(target=self._thaw_when_written, args=(Path(path),),
                         name="volumes-thaw", daemon=True).start()

    def stop_watching(self) -> None:
        self._inner.stop_watching()

    def stop(self) -> None:
        self._done.set()

    def _thaw_when_written(self, path: Path) -> None:
        while not self._done.is_set():
            try:
                if path.stat().st_size > 0:
                    break
            except OSError:
                pass
            time.sleep(_POLL)
        with contextlib.suppress(HostError):  # the caller thaws once more and reports it
            self._freezer.thaw()


@dataclass
class Capture:
    """What a snapshot of a container learns about its mounts (``extra["volumes"]``)."""

    progress: Progress
    named: list[dict[str, str]] = field(default_factory=list)
    bind_mounts: list[dict[str, str]] = field(default_factory=list)
    method: str = ""  # "frozen" (--leave-running) or "stopped"
    frozen_seconds: float | None = None

    def record(self) -> dict[str, Any]:
        if not (self.named or self.bind_mounts):
            return {}
        record: dict[str, Any] = {"named": self.named, "bind_mounts": self.bind_mounts}
        if self.named:
            record["capture"] = self.method
        if self.frozen_seconds is not None:
            record["frozen_ms"] = round(self.frozen_seconds * 1000)
        return {"volumes": record}


@contextlib.contextmanager
def captured_at_one_instant(info: ContainerInfo, *, leave_running: bool,
                            progress: Progress) -> Iterator[Capture]:
    """Around podman's checkpoint of ``info``: for a container with named volumes that is to
    keep running, freeze it so that its volumes are tarred at the memory's instant. The
    checkpoint must use ``capture.progress`` (its watch_file() is the thaw's cue)."""
    capture = Capture(
        progress,
        named=[{"name": m.name, "destination": m.destination}
               for m in info.mounts if m.type == "volume"],
        bind_mounts=[{"source": m.source, "destination": m.destination}
                     for m in info.mounts if m.type == "bind"],
        method="frozen" if leave_running else "stopped")
    if not (leave_running and capture.named):
        yield capture
        return
    freezer = Freezer.of_process(info.pid)
    with freezer.guarded():
        progress.phase("freezing the container (its volumes are exported at this instant)")
        freezer.freeze()
        watcher = _ThawWhenExportStarts(progress, freezer)
        capture.progress = watcher
        try:
            yield capture
        finally:
            watcher.stop()
            freezer.thaw()  # at the latest when podman is done (a failure included)
            capture.frozen_seconds = freezer.frozen_seconds


def bind_mount_warnings(extra: dict[str, Any]) -> list[str]:
    """One line per host path the snapshot's container had bind-mounted."""
    record = extra.get("volumes")
    binds = record.get("bind_mounts", []) if isinstance(record, dict) else []
    return [f"bind mount {b.get('source')} -> {b.get('destination')} is a host path: "
            "its content is not in the snapshot" for b in binds if isinstance(b, dict)]


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


# --- saved copies: a failed resume never costs a volume --------------------------------------
#
# Before resume removes a volume (--volumes snapshot, or --replace of a clone), its content is
# exported into HOME/saved-volumes/VOLUME@STAMP-PID-ID.tar (0600, fsync'd, flock'd by the
# resume while it runs), beside VOLUME@STAMP-PID-ID.json (how the volume was made, and the mode
# and owner of its top directory, which podman's export leaves out). After a failure it is made
# again from them; after a success they are deleted. A resume killed outright (kill -9, a
# crash, a power cut) leaves them, unlocked: the next resume puts such a copy back itself when
# its volume is missing, and otherwise says where it is (put_back_left_copies).

SAVED_DIR = "saved-volumes"
_SAVED_NAME = re.compile(r"(?P<volume>[A-Za-z0-9][A-Za-z0-9_.-]*)@(?P<stamp>[0-9]{8}T[0-9]{6}Z)"
                         r"-(?P<pid>[0-9]+)-[0-9a-f]{8}\.(?P<kind>tar|json|partial)")


@dataclass
class SavedVolume:
    """One volume's content, saved before a resume removes the volume."""

    volume: str
    partial: Path  # where podman exports it; renamed to ``path`` once whole and on disk
    fd: int  # the flock that says its resume is alive
    path: Path | None = None  # VOLUME@STAMP-PID-ID.tar, once whole
    removed: bool = False  # the volume has been removed since (undo() makes it again)

    @property
    def settings_path(self) -> Path:
        return self.partial.with_suffix(".json")

    def how_to_put_back(self) -> str:
        return (f"its content from before this resume is kept in {self.path} (podman volume "
                f"import {self.volume} {self.path}; the next warmctl resume puts it back by "
                "itself if the volume is missing)")

    def put_back(self, podman: Podman) -> None:
        assert self.path is not None
        _recreate(podman, self.volume, self.path, _read_settings(self.settings_path))

    def discard(self) -> None:
        for path in (self.partial, self.path, self.settings_path):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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


def _not_saved(volume: str, home: Path, reason: str) -> WarmctlError:
    message = (f"cannot save volume {volume}'s content before replacing it: {reason}; "
               "nothing was removed")
    hint = f"the copy goes to {home / SAVED_DIR} and needs as much space as the volume holds"
    if re.search(r"no space left|input/output error|disk quota", reason, re.I):
        return DiskIOError(message, hint=hint)
    return WarmctlError(message, hint=hint)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}  # made as a plain local volume, then
    return record if isinstance(record, dict) else {}


def _recreate(podman: Podman, volume: str, copy: Path, record: dict[str, Any]) -> None:
    """Make ``volume`` again as it was: same driver, labels and options, the saved files, and
    the mode and owner of its top directory."""
    def texts(key: str) -> dict[str, str]:
        value = record.get(key)
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    settings = VolumeSettings(driver=str(record.get("driver") or "local"),
                              labels=texts("labels"), options=texts("options"))
    mountpoint = podman.create_volume(volume, settings)
    with copy.open("rb") as tar:
        podman.import_volume(volume, tar)
    top = record.get("top")
    if isinstance(top, dict):
        with contextlib.suppress(OSError, TypeError, ValueError):
            os.chown(mountpoint, int(top["uid"]), int(top["gid"]))
            os.chmod(mountpoint, int(top["mode"]))


def put_back_left_copies(home: Path, podman: Podman, warn: Callable[[str], None]) -> None:
    """Copies that a resume killed outright (kill -9, a crash) left in saved-volumes/: a copy
    whose volume is missing is put back now (nothing of the user's is overwritten); one whose
    volume exists is named, with the command that puts it back. A volume that a running
    resume holds a copy of is left to it. Never fails the caller."""
    directory = home / SAVED_DIR
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return
    left: list[tuple[Path, re.Match[str], int]] = []  # locked here: their resume is gone
    busy: set[str] = set()  # volumes a running resume has a copy of
    try:
        for path in entries:
            found = _SAVED_NAME.fullmatch(path.name)
            if found is None or found["kind"] == "json" or path.is_symlink() \
                    or not path.is_file():
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                busy.add(found["volume"])
                continue
            left.append((path, found, fd))
        for path, found, _ in left:
            if found["kind"] == "partial":
                # An export that never finished: its volume was never removed (removal
                # waits for a whole copy on disk).
                with contextlib.suppress(OSError):
                    path.unlink()
                    path.with_suffix(".json").unlink(missing_ok=True)
            elif found["volume"] not in busy:
                _handle_left_copy(podman, path, found, warn=warn)
    finally:
        for _, _, fd in left:
            os.close(fd)


def _handle_left_copy(podman: Podman, path: Path, found: re.Match[str], *,
                      warn: Callable[[str], None]) -> None:
    volume, stamp = found["volume"], found["stamp"]
    left = f"saved by a resume that did not finish ({stamp}, process {found['pid']})"
    try:
        if podman.volume_mountpoint(volume) is None:
            def put_back() -> None:
                _recreate(podman, volume, path, _read_settings(path.with_suffix(".json")))
                path.unlink()
                path.with_suffix(".json").unlink(missing_ok=True)

            _, interrupted = through_interrupts(put_back)  # never left half done
            warn(f"volume {volume} was missing: put back from {path}, {left}")
            if interrupted:
                raise KeyboardInterrupt
            return
    except (WarmctlError, OSError) as err:
        reason = err.message if isinstance(err, WarmctlError) else str(err)
        warn(f"{path} holds volume {volume}'s content, {left}; putting it back failed "
             f"({reason}): podman volume create {volume}; podman volume import {volume} {path}")
        return
    warn(f"{path} holds volume {volume}'s content, {left}; the volume exists, so it is left "
         f"as it is: podman volume import {volume} {path} puts the saved files back into it; "
         f"delete {path} once it is not needed")


def through_interrupts(work: Callable[[], T]) -> tuple[T, bool]:
    """Run ``work`` (podman calls that change volumes or containers) to its end in a thread of
    its own, and wait for it whatever Ctrl-C, SIGTERM or SIGHUP arrive meanwhile (Python
    delivers them to the main thread only, as KeyboardInterrupt). Returns its result and
    whether an interruption came. So warmctl always knows whether a volume was removed, and a
    put-back never stops halfway (only kill -9 can stop it: the copy then stays on disk, see
    put_back_left_copies). ``work``'s own error is raised."""
    future = in_daemon_thread(work, name="volumes")
    interrupted = False
    while True:
        try:
            concurrent.futures.wait([future])
            break
        except KeyboardInterrupt:
            interrupted = True
    return future.result(), interrupted


def _to_the_end(work: Callable[[], T]) -> T:
    """through_interrupts(), the interruption raised afterwards."""
    result, interrupted = through_interrupts(work)
    if interrupted:
        raise KeyboardInterrupt
    return result
