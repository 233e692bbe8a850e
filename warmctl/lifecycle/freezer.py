"""Named volumes captured at the same instant as memory: the cgroup freezer.

podman puts each named volume of a container into its checkpoint archive as volumes/NAME.tar,
tarred after CRIU's dump. With ``--leave-running`` the container runs again by then, so
memory and volume would come from different instants (measured: a counter 100,000 writes
ahead in the file). So for a snapshot that leaves the container running, warmctl freezes the
container's cgroup itself before podman's checkpoint: CRIU dumps a frozen cgroup and leaves it
frozen as it found it, podman tars the volumes of the still frozen container, and warmctl thaws
it as soon as podman starts writing the archive, which comes after the volumes' tars (see
docs/design.md, "Volumes"). podman's own pause cannot be used: podman refuses to checkpoint a
container it knows as paused. A checkpoint that stops its container is consistent by itself.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmctl.errors import HostError
from warmctl.podman.types import ContainerInfo
from warmctl.progress import Progress

log = logging.getLogger(__name__)

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


class _ThawWhenExportStarts:
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
