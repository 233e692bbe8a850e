"""CRIU's page daemon (``criu lazy-pages``) for one lazy restore through podman, and the
supervisor that starts it, holds its userfaultfds, and ends the container if it fails.

Why it works this way (docs/lazy-resume.md has the measurements):

- runc tells CRIU ``lazy_pages=false`` over RPC, and only the configuration file runc names
  itself (the spec annotation ``org.criu.config``) overrides RPC settings: the restored spec
  must name a file that says ``lazy-pages`` (``spec_with_config``; in place, podman 4.3 reads
  the container's ``userdata/config.json`` at restore, through the archive the imported
  ``spec.dump``).
- The restoring CRIU connects to ``lazy-pages.socket`` in its work directory before anything
  else, so the daemon must already listen there; but the images it serves exist only once
  podman has unpacked them. runc runs the first ``criu`` on PATH, after the unpacking, with its
  own command line (``restore ... --image-path IMAGES --work-path WORK``) readable at
  /proc/PPID/cmdline: warmctl's wrapper (``wrapper_script``) asks the supervisor for a daemon
  on those directories and waits, bounded, until its socket exists.
- When the daemon dies before every page is in, the kernel releases its userfaultfds and the
  restored processes read ZEROS where pages were missing (measured: a memcached answered 11
  wrong values in 50 ms, then died of SIGFPE). The supervisor therefore holds a duplicate of
  every userfaultfd the daemon receives (pidfd_getfd), all of them taken before any restored
  task runs (CRIU's ``pre-resume`` action script asks and waits): a dead daemon then leaves
  the processes blocked on their next missing page, never reading wrong memory, until the
  supervisor has killed the container's init process (its PID namespace goes with it).
- The supervisor runs in a session of its own, started by warmctl before podman: it must
  outlive warmctl (Ctrl-C, --time-limit) and podman, and the daemon must not be a child of
  CRIU (which treats unknown children as failures) nor sit in the container's cgroup.

Files, in a 0700 session directory (``/run/warmctl/lazy/TOKEN``): ``bin/criu`` (the
wrapper), ``criu.conf`` (``lazy-pages``, the action script, warmctl's options), ``pre-resume``
(the action script: ``take-uffds`` asks, ``uffds-taken`` answers), ``request`` (the wrapper's:
images, work directory, runc's pid file), ``ready`` (the supervisor's answer: ``ok PID`` or
``failed WHY``), ``criu-pids`` (every CRIU the wrapper started), ``lazy-pages.log`` (the
daemon's log), and ``status.json`` (the outcome). Everything but ``status.json`` (and the log,
after a failure) is removed when the supervisor ends.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from warmctl.host.criu_kernel import version_tuple

if TYPE_CHECKING:
    from warmctl.podman.types import HostVersions

ANNOTATION = "org.criu.config"
SOCKET = "lazy-pages.socket"
DIRECTORY = Path("/run/warmctl/lazy")  # root's only
# Bounded waits: for the wrapper's request (podman may unpack gigabytes first), for the
# daemon's socket, and the wrapper's for the supervisor's answer.
REQUEST_TIMEOUT = 600.0
SOCKET_TIMEOUT = 10.0
WRAPPER_TIMEOUT = 15.0
# After the daemon listens: until runc's pid file says the container runs (a daemon that stalls
# while CRIU restores hangs the restore: measured), and until every page is in.
RESTORE_TIMEOUT = 120.0
FILL_TIMEOUT = 600.0
_PIDFD_GETFD = 438  # the same number on every architecture (Linux 5.6)


# crun reads the spec's org.criu.config from 1.26 on (with libcriu >= 4.2; crun's release notes,
# issue 16); userfaultfd's sysctl exists when the kernel has userfaultfd (Linux 5.2 on).
CRUN_READS_CRIU_CONFIG = (1, 26)
PIDFD_GETFD_KERNEL = (5, 6)
USERFAULTFD_SYSCTL = Path("/proc/sys/vm/unprivileged_userfaultfd")


def lazy_restore_problem(versions: HostVersions, *, userfaultfd: bool | None = None) -> str | None:
    """Why a lazy restore cannot work with this host's runtime and kernel, in one line, or
    None when it can. Pure: ``versions`` is podman's (``warmctl.host.podman_info``), and
    ``userfaultfd`` whether the kernel has it (``kernel_has_userfaultfd``; None: unknown, not
    held against it). The runtime must hand CRIU the file ``org.criu.config`` names (runc does;
    crun from 1.26, from its release notes, not measured here), and the kernel must have
    pidfd_getfd, without which a dying daemon would leave the service reading zero pages.

    crun 1.21 (podman 5.4 test host): lazy pages did reach CRIU through the wrapper's
    CRIU_CONFIG_FILE (crun sends no ``lazy_pages`` over RPC), but a restore whose daemon
    failed went on past the wrapper's refusal, and podman restored the container eagerly
    (docs/lazy-resume.md): the supervisor's guarantees do not hold there, so lazy restore is
    not offered before 1.26."""
    runtime = versions.runtime
    words = versions.runtime_version.split()
    version = words[-1] if words else ""
    if runtime == "crun":
        if not version or version_tuple(version) < CRUN_READS_CRIU_CONFIG:
            return (f"crun {version or '(version unknown)'} reads no org.criu.config before "
                    f"{'.'.join(map(str, CRUN_READS_CRIU_CONFIG))} and does not fail a restore "
                    "whose page daemon failed: resume restores every page first")
    elif runtime != "runc":
        return (f"podman's runtime is {runtime or 'unknown'}: lazy restore needs runc or crun "
                f"{'.'.join(map(str, CRUN_READS_CRIU_CONFIG))} or later")
    kernel = version_tuple(versions.kernel)
    if kernel and kernel < PIDFD_GETFD_KERNEL:
        return (f"Linux {versions.kernel} has no pidfd_getfd (5.6): a page daemon that died "
                "would leave the service reading zero pages")
    if userfaultfd is False:
        return f"Linux {versions.kernel} has no userfaultfd: CRIU cannot restore lazily"
    return None


def kernel_has_userfaultfd(sysctl: Path = USERFAULTFD_SYSCTL) -> bool:
    """The kernel was built with userfaultfd (its sysctl exists): cheap, no CRIU run."""
    return sysctl.exists()


@dataclass(frozen=True)
class Request:
    """What the wrapper read from runc's command line."""

    images: Path
    work: Path
    pid_file: Path | None = None

    def to_text(self) -> str:
        return "".join(f"{line}\n" for line in (self.images, self.work, self.pid_file or ""))

    @classmethod
    def from_text(cls, text: str) -> Request:
        lines = text.split("\n")
        if len(lines) < 3 or not lines[0] or not lines[1]:
            raise ValueError(f"not a request: {text!r}")
        return cls(Path(lines[0]), Path(lines[1]), Path(lines[2]) if lines[2] else None)


def restore_request(runtime_argv: Sequence[str]) -> Request | None:
    """The directories of a ``runc restore`` command line; None for anything else (podman's
    own ``criu`` calls, a checkpoint)."""
    if "restore" not in runtime_argv:
        return None
    values: dict[str, str] = {}
    args = list(runtime_argv)
    for i, arg in enumerate(args):
        for flag in ("--image-path", "--work-path", "--pid-file"):
            if arg == flag and i + 1 < len(args):
                values[flag] = args[i + 1]
            elif arg.startswith(flag + "="):
                values[flag] = arg[len(flag) + 1:]
    if "--image-path" not in values or "--work-path" not in values:
        return None
    pid_file = values.get("--pid-file")
    return Request(Path(values["--image-path"]), Path(values["--work-path"]),
                   Path(pid_file) if pid_file else None)


def wrapper_script(session: Path, real_criu: Path, *,
                   wait_seconds: float = WRAPPER_TIMEOUT) -> str:
    """The ``criu`` put first on podman's PATH for a lazy restore. For a ``swrk`` whose parent
    is a ``runc restore`` it asks the supervisor for a daemon (once per session) and waits for
    its answer; then it executes the real CRIU with the session's configuration. A supervisor
    that does not answer in time, or fails, fails the restore (CRIU would fail anyway without
    a daemon, or hang)."""
    s = shlex.quote(str(session))
    tenths = max(1, round(wait_seconds * 10))
    return f"""#!/bin/sh
# warmctl: a lazy restore's criu (see warmctl/lazy_pages.py)
S={s}
if [ "$1" = swrk ]; then
  echo $$ >> "$S/criu-pids"
  args=$(tr '\\0' '\\n' < /proc/$PPID/cmdline)
  img=$(printf '%s\\n' "$args" | sed -n '/^--image-path$/{{n;p;q;}}')
  work=$(printf '%s\\n' "$args" | sed -n '/^--work-path$/{{n;p;q;}}')
  pidf=$(printf '%s\\n' "$args" | sed -n '/^--pid-file$/{{n;p;q;}}')
  if [ -n "$img" ] && [ -n "$work" ] && printf '%s\\n' "$args" | grep -qx restore; then
    if [ ! -e "$S/request" ]; then
      printf '%s\\n%s\\n%s\\n' "$img" "$work" "$pidf" > "$S/request.tmp" &&
        mv "$S/request.tmp" "$S/request"
    fi
    i=0
    while [ ! -e "$S/ready" ]; do
      if [ -e "$S/status.json" ]; then
        echo "warmctl: the page daemon's supervisor has ended: $(cat "$S/status.json")" >&2
        exit 1
      fi
      i=$((i + 1))
      if [ $i -gt {tenths} ]; then
        echo "warmctl: no page daemon for the lazy restore after {wait_seconds:g} s" >&2
        exit 1
      fi
      sleep 0.1
    done
    case $(cat "$S/ready") in ok*) ;; *)
      echo "warmctl: the page daemon failed: $(cat "$S/ready")" >&2; exit 1;; esac
  fi
fi
CRIU_CONFIG_FILE="$S/criu.conf"
export CRIU_CONFIG_FILE
exec {shlex.quote(str(real_criu))} "$@"
"""


def action_script(session: Path, *, wait_seconds: float = WRAPPER_TIMEOUT) -> str:
    """CRIU's action script for a lazy restore: at ``pre-resume`` (every page the daemon
    serves has its userfaultfd there, and no restored task runs yet: measured) it asks the
    supervisor to take the userfaultfds and waits for it, so that no moment exists in which a
    dying daemon would leave the tasks zero pages. No answer in time fails the restore."""
    s = shlex.quote(str(session))
    tenths = max(1, round(wait_seconds * 10))
    return f"""#!/bin/sh
# warmctl: a lazy restore's action script (see warmctl/lazy_pages.py)
[ "$CRTOOLS_SCRIPT_ACTION" = pre-resume ] || exit 0
S={s}
[ -e "$S/status.json" ] || [ -e "$S/take-uffds" ] || : > "$S/take-uffds"
i=0
while [ ! -e "$S/uffds-taken" ]; do
  [ -e "$S/status.json" ] && break
  i=$((i + 1))
  if [ $i -gt {tenths} ]; then
    break
  fi
  sleep 0.1
done
[ -e "$S/uffds-taken" ] && exit 0
echo "warmctl: the page daemon's supervisor did not take its userfaultfds" >&2
exit 1
"""


def spec_with_config(spec: bytes, config: Path) -> bytes:
    """An OCI spec (config.json, spec.dump) whose ``org.criu.config`` names ``config``."""
    loaded = json.loads(spec)
    if not isinstance(loaded, dict):
        raise ValueError("the spec is not a JSON object")
    annotations = loaded.get("annotations")
    loaded["annotations"] = {**(annotations if isinstance(annotations, dict) else {}),
                             ANNOTATION: str(config)}
    return json.dumps(loaded).encode()


def spec_without_config(spec: bytes, config: Path) -> bytes:
    """The spec without the annotation, when it names ``config``; otherwise as it was."""
    loaded = json.loads(spec)
    annotations = loaded.get("annotations") if isinstance(loaded, dict) else None
    if not isinstance(annotations, dict) or annotations.get(ANNOTATION) != str(config):
        return spec
    loaded["annotations"] = {k: v for k, v in annotations.items() if k != ANNOTATION}
    return json.dumps(loaded).encode()


@contextlib.contextmanager
def annotated_in_place(config_json: Path, config: Path) -> Iterator[None]:
    """For a restore in place: podman 4.3 hands runc the container's ``userdata/config.json``
    as it is, so the annotation goes there for the restore, and out again afterwards (podman
    rewrites the file at restore: the rest of its edits stay)."""
    _replace(config_json, spec_with_config(config_json.read_bytes(), config))
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            _replace(config_json, spec_without_config(config_json.read_bytes(), config))


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.warmctl-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 path.stat().st_mode & 0o777)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


@dataclass
class Outcome:
    """What the supervisor writes to ``status.json``."""

    state: str  # "filled", "failed", "no-request", "container-ended"
    reason: str = ""
    daemon_pid: int | None = None
    daemon_status: int | None = None  # exit status; negative: the signal that ended it
    seconds_to_ready: float | None = None
    seconds_to_fill: float | None = None
    uffds_held: int = 0
    held_before_resume: int | None = None  # userfaultfds held when CRIU's pre-resume asked
    killed: list[int] = field(default_factory=list)  # PIDs the supervisor killed

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"


def _put(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class UffdHolder:
    """Duplicates of a process's userfaultfds (pidfd_getfd), so that its death does not
    release them: the faulting processes then wait instead of reading zero pages."""

    def __init__(self, pid: int) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._pid = pid
        self.held: dict[int, int] = {}  # the daemon's fd -> ours
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:  # already gone: nothing to hold
            self._pidfd = -1

    def scan(self) -> None:
        if self._pidfd < 0:
            return
        try:
            names = os.listdir(f"/proc/{self._pid}/fd")
        except OSError:
            return
        for name in names:
            number = int(name)
            if number in self.held:
                continue
            try:
                target = os.readlink(f"/proc/{self._pid}/fd/{name}")
            except OSError:
                continue
            if target != "anon_inode:[userfaultfd]":
                continue
            fd = self._libc.syscall(_PIDFD_GETFD, self._pidfd, number, 0)
            if fd >= 0:
                self.held[number] = fd

    def release(self) -> None:
        for fd in self.held.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.held.clear()
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = -1


def _alive_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def kill_restore(session: Path, request: Request | None) -> list[int]:
    """Ends what a failed lazy restore would leave: the container's init process (from
    runc's pid file; its PID namespace dies with it), every process in the container's
    cgroups (a restore that hung has no pid file yet, and its half-restored processes lived
    on after CRIU was killed: measured), and any CRIU this session's wrapper started that
    still runs (a restore whose daemon stalls waits forever). By PID, each checked first."""
    killed: list[int] = []

    def kill(pid: int) -> None:
        if pid > 1 and pid != os.getpid() and pid not in killed:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    if request is not None and request.pid_file is not None:
        with contextlib.suppress(OSError, ValueError):
            kill(int(request.pid_file.read_text().strip()))
    if request is not None:
        for pid in container_processes(container_id(request.work)):
            kill(pid)
    with contextlib.suppress(OSError):
        for line in (session / "criu-pids").read_text().split():
            with contextlib.suppress(ValueError):
                argv = _alive_cmdline(int(line))
                # The wrapper's PID is CRIU's (it executes it); CRIU renames itself
                # ("criu: restore --rpc"), so any of its arguments naming criu will do.
                if argv and any("criu" in arg for arg in argv):
                    kill(int(line))
    return killed


def container_id(work: Path) -> str | None:
    """podman's container ID, from its work directory (``.../ID/userdata``)."""
    name = work.parent.name
    if work.name == "userdata" and len(name) == 64 and all(c in "0123456789abcdef"
                                                           for c in name):
        return name
    return None


def container_processes(ident: str | None, proc: Path = Path("/proc")) -> list[int]:
    """PIDs whose cgroup is the container's (``libpod-ID``: podman's name for it with the
    cgroupfs manager, ``libpod-ID.scope`` with systemd's); conmon is not among them."""
    if ident is None:
        return []
    mark = f"libpod-{ident}"
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if mark in cgroups:
            found.append(int(entry.name))
    return found


def supervise(session: Path, real_criu: Path, *,
              request_timeout: float = REQUEST_TIMEOUT,
              socket_timeout: float = SOCKET_TIMEOUT,
              restore_timeout: float = RESTORE_TIMEOUT,
              fill_timeout: float = FILL_TIMEOUT,
              poll: float = 0.005,
              log_level: int = 4,
              on_failure: Callable[[Path, Request | None], list[int]] = kill_restore) -> Outcome:
    """One restore's page daemon, from the wrapper's request to its end. Every wait is
    bounded: a daemon that is not done within ``fill_timeout`` of listening, or whose
    restore has not started the container (runc's pid file) within ``restore_timeout``, is
    killed and counts as failed. Writes ``ready`` for the wrapper and ``status.json`` at the
    end, and returns the same outcome."""
    bounds = _Bounds(request_timeout, socket_timeout, restore_timeout, fill_timeout, poll)
    try:
        outcome = _supervise(session, real_criu, bounds, log_level, on_failure)
    except Exception as err:  # the outcome must be written whatever went wrong
        if not (session / "ready").exists():
            with contextlib.suppress(OSError):
                _put(session / "ready", "failed: the supervisor failed\n")
        outcome = Outcome("failed", f"the supervisor failed: {err!r}")
    _put(session / "status.json", outcome.to_json())
    _tidy(session, keep_log=outcome.state != "filled")
    return outcome


@dataclass(frozen=True)
class _Bounds:
    request: float
    socket: float
    restore: float
    fill: float
    poll: float


def _supervise(session: Path, real_criu: Path, bounds: _Bounds, log_level: int,
               on_failure: Callable[[Path, Request | None], list[int]]) -> Outcome:
    request_timeout, socket_timeout, poll = bounds.request, bounds.socket, bounds.poll
    deadline = time.monotonic() + request_timeout
    while not (session / "request").exists():
        if time.monotonic() > deadline:
            _put(session / "ready", "failed: no request\n")
            return Outcome("no-request", f"no restore asked for a daemon in {request_timeout:g} s")
        time.sleep(poll)
    try:
        request = Request.from_text((session / "request").read_text())
    except (OSError, ValueError) as err:
        _put(session / "ready", "failed: bad request\n")
        return Outcome("failed", f"unreadable request: {err}")
    started = time.monotonic()
    sock = request.work / SOCKET
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # an earlier restore's, in the same directory
    log_file = session / "lazy-pages.log"
    with open(session / "daemon.stderr", "wb") as stderr:
        daemon = subprocess.Popen(  # noqa: S603 (the host's CRIU, fixed arguments)
            [str(real_criu), "lazy-pages", "-D", str(request.images), "-W", str(request.work),
             "-o", str(log_file), f"-v{log_level}"],
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, close_fds=True)
    outcome = Outcome("failed", daemon_pid=daemon.pid)
    socket_deadline = time.monotonic() + socket_timeout
    while not sock.exists():
        if daemon.poll() is not None or time.monotonic() > socket_deadline:
            if daemon.poll() is None:
                daemon.kill()
            outcome.daemon_status = daemon.wait()
            _put(session / "ready", "failed: the daemon did not listen\n")
            outcome.reason = (f"criu lazy-pages did not listen within {socket_timeout:g} s "
                              f"(status {outcome.daemon_status}; see {log_file})")
            return outcome
        time.sleep(poll)
    outcome.seconds_to_ready = round(time.monotonic() - started, 3)
    holder = UffdHolder(daemon.pid)
    _put(session / "ready", f"ok {daemon.pid}\n")
    listening = time.monotonic()
    overdue = ""
    try:
        while daemon.poll() is None:
            holder.scan()
            if (session / "take-uffds").exists() and not (session / "uffds-taken").exists():
                outcome.held_before_resume = len(holder.held)
                _put(session / "uffds-taken", f"{len(holder.held)}\n")
            waited = time.monotonic() - listening
            if (request.pid_file is not None and waited > bounds.restore
                    and not request.pid_file.exists()):
                overdue = f"the restore had not started the container after {bounds.restore:g} s"
            elif waited > bounds.fill:
                overdue = f"the pages were not all in after {bounds.fill:g} s"
            if overdue:
                daemon.kill()
                daemon.wait()
                break
            time.sleep(poll)
        outcome.daemon_status = daemon.returncode
        outcome.uffds_held = len(holder.held)
        if daemon.returncode == 0 and not _container_ended(request):
            outcome.state = "filled"
            outcome.seconds_to_fill = round(time.monotonic() - started, 3)
        elif daemon.returncode == 0:
            # The daemon also ends with 0 when the restored processes exit (measured: a
            # container killed mid-fill), which is no failure of the fill.
            outcome.state = "container-ended"
            outcome.reason = "the container ended before every page was in"
        else:
            # Before the userfaultfds go: until then the processes wait on missing pages.
            outcome.killed = on_failure(session, request)
            why = (f"{overdue}: criu lazy-pages was killed" if overdue else
                   f"criu lazy-pages ended with {_describe(daemon.returncode)} before every "
                   "page was in")
            outcome.reason = f"{why}: the restore was ended by force (see {log_file})"
    finally:
        holder.release()
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
    return outcome


def _container_ended(request: Request) -> bool:
    """The container's init (runc's pid file) is gone; False when unknown."""
    if request.pid_file is None:
        return False
    try:
        pid = int(request.pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    return not Path(f"/proc/{pid}").exists()


def _describe(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-status).name}"
    return f"status {status}"


def _tidy(session: Path, *, keep_log: bool) -> None:
    keep = {"status.json"} | ({"lazy-pages.log", "daemon.stderr"} if keep_log else set())
    for path in session.iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@dataclass(frozen=True)
class Session:
    """One lazy restore's directory, wrapper and configuration, before podman runs."""

    directory: Path

    @property
    def bin_dir(self) -> Path:
        """First on podman's PATH for the restore."""
        return self.directory / "bin"

    @property
    def config(self) -> Path:
        """What the spec's ``org.criu.config`` must name."""
        return self.directory / "criu.conf"

    @property
    def status(self) -> Path:
        return self.directory / "status.json"

    def outcome(self) -> Outcome | None:
        """The supervisor's, once it has ended."""
        try:
            return Outcome(**json.loads(self.status.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def create_session(real_criu: Path, options: Sequence[str] = (), *,
                   parent: Path = DIRECTORY, wait_seconds: float = WRAPPER_TIMEOUT) -> Session:
    """A new session directory with its wrapper and CRIU configuration (``lazy-pages`` plus
    ``options``)."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = parent / secrets.token_hex(8)
    directory.mkdir(mode=0o700)
    session = Session(directory)
    text = "# warmctl: one lazy restore (see warmctl/lazy_pages.py)\nlazy-pages\n"
    script = directory / "pre-resume"
    script.write_text(action_script(directory, wait_seconds=wait_seconds))
    script.chmod(0o700)
    session.config.write_text(text + f"action-script {script}\n"
                              + "".join(f"{option}\n" for option in options))
    session.bin_dir.mkdir(mode=0o700)
    wrapper = session.bin_dir / "criu"
    wrapper.write_text(wrapper_script(directory, real_criu, wait_seconds=wait_seconds))
    wrapper.chmod(0o700)
    return session


def start_supervisor(session: Session, real_criu: Path, *,
                     request_timeout: float = REQUEST_TIMEOUT,
                     restore_timeout: float = RESTORE_TIMEOUT,
                     fill_timeout: float = FILL_TIMEOUT,
                     python: str = sys.executable, timeout: float = 30.0) -> int:
    """Starts ``supervise`` in a session of its own, detached from warmctl's terminal,
    signals and lifetime: a short-lived launcher starts it and exits, so it is nobody's
    child to wait for (no fork of warmctl itself, whose other threads may hold locks).
    Returns its PID."""
    supervise_argv = [python, "-m", "warmctl.lazy_pages", "supervise", str(session.directory),
                      str(real_criu), "--request-timeout", str(request_timeout),
                      "--restore-timeout", str(restore_timeout),
                      "--fill-timeout", str(fill_timeout)]
    launched = subprocess.run(  # noqa: S603 (this Python, this module)
        [python, "-m", "warmctl.lazy_pages", "launch", "--", *supervise_argv],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        check=False)
    text = launched.stdout.strip()
    if launched.returncode != 0 or not text.isdigit():
        raise OSError(f"the page daemon's supervisor did not start: {launched.stderr.strip()}")
    return int(text)


def _launch(argv: Sequence[str]) -> int:
    child = subprocess.Popen(  # noqa: S603 (start_supervisor's command line)
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)
    print(child.pid, flush=True)
    return 0


def _ignore(signum: int, frame: object) -> None:
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warmctl.lazy_pages")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("supervise", help="one lazy restore's page daemon")
    run.add_argument("session", type=Path)
    run.add_argument("criu", type=Path)
    run.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT)
    run.add_argument("--restore-timeout", type=float, default=RESTORE_TIMEOUT)
    run.add_argument("--fill-timeout", type=float, default=FILL_TIMEOUT)
    launch = sub.add_parser("launch", help="start a command in a session of its own")
    launch.add_argument("argv", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "launch":
        return _launch(args.argv)
    # Nothing of the caller's may end it: not a terminal's Ctrl-C or hangup, nor a SIGTERM
    # meant for warmctl (it has a session of its own anyway). A handler, not SIG_IGN: the
    # daemon it executes gets the default dispositions back.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, _ignore)
    outcome = supervise(args.session, args.criu, request_timeout=args.request_timeout,
                        restore_timeout=args.restore_timeout, fill_timeout=args.fill_timeout)
    return 0 if outcome.state == "filled" else 1


if __name__ == "__main__":
    sys.exit(main())
