"""Running podman (and the few host programs warmctl asks): the only place warmctl starts a process.

Every call is an argv list (never a shell) with a timeout, logged at debug level
(``run_subprocess``). The environment podman runs in (``podman_environment``: the sbin
directories on PATH), the containers.conf files it reads, and the spawn gate that lets a
waiting thread refuse to start a program once the wait is over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from warmctl.errors import (
    HostError,
    PodmanError,
)

log = logging.getLogger(__name__)

# Ordinary queries take well under a second.
QUERY_TIMEOUT = 60.0
# podman run may pull an image. Checkpoint and restore get no timeout at all: killing podman
# halfway through can leave a container frozen or dead with its memory in no archive.
RUN_TIMEOUT = 3600.0
# runc finds criu through PATH. A shim for a newer CRIU typically lives in /usr/local/sbin,
# which some environments (cron, sudo's secure_path variants) leave out; put the usual
# directories back so that podman -> conmon -> runc finds the same criu as an admin's shell.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def containers_conf_files(environ: Mapping[str, str], *,
                          share: Path = Path("/usr/share/containers"),
                          etc: Path = Path("/etc/containers")) -> list[Path]:
    """The containers.conf files a root podman 4 reads, in order: later ones win. They choose
    podman's runtime and cgroup manager (so versions_fingerprint includes them), and its
    default ulimits (which doctor checks).

    CONTAINERS_CONF, when set, replaces them all (containers/common's systemConfigs).
    """
    override = environ.get("CONTAINERS_CONF")
    if override:
        return [Path(override)]
    files = [p for p in (share / "containers.conf", etc / "containers.conf") if p.is_file()]
    dropins = etc / "containers.conf.d"
    if dropins.is_dir():
        files += sorted(p for p in dropins.glob("*.conf") if p.is_file())
    return files


def podman_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment podman runs in: the caller's, with the sbin directories on PATH."""
    env = dict(os.environ if base is None else base)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    path += [d for d in _SBIN_DIRS if d not in path]
    env["PATH"] = os.pathsep.join(path)
    # podman 5 warns on every command, on stderr, that cgroup v1 is deprecated: on a cgroup v1
    # host that line would stand before every error podman prints. doctor names the cgroups.
    env.setdefault("PODMAN_IGNORE_CGROUPSV1_WARNING", "1")
    return env


P = TypeVar("P")


class NotStarted(Exception):
    """A SpawnGate was closed before the program could start."""


class SpawnGate:
    """Says whether a program was started, to a caller that may stop waiting for it
    (waiting.PodmanCall, on a second Ctrl-C or a time limit): once closed, nothing more starts
    through it, so warmctl never says "podman goes on alone" of a podman that never ran, and
    never leaves one to start after it has gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.started = False

    def close(self) -> bool:
        """Let nothing start from now on; returns whether a program started before."""
        with self._lock:
            self._closed = True
            return self.started

    def spawn(self, start: Callable[[], P]) -> P:
        with self._lock:
            if self._closed:
                raise NotStarted("the caller stopped waiting before the program started")
            proc = start()
            self.started = True
            return proc


_this_thread = threading.local()


@contextlib.contextmanager
def spawning_through(gate: SpawnGate) -> Iterator[None]:
    """Programs that run_subprocess starts in this thread while the context is open start
    through ``gate``."""
    _this_thread.gate = gate
    try:
        yield
    finally:
        _this_thread.gate = None


def starting(start: Callable[[], P]) -> P:
    """``start()`` a program, through this thread's SpawnGate when there is one (what a fake
    podman calls to stand for its program starting)."""
    gate: SpawnGate | None = getattr(_this_thread, "gate", None)
    return gate.spawn(start) if gate is not None else start()


def run_subprocess(
    argv: Sequence[str],
    *,
    timeout: float | None,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    own_session: bool = False,
) -> CommandResult:
    """Run argv without a shell, capture its output, and log what ran.

    ``own_session``: the program gets a session of its own, so a Ctrl-C at the terminal does
    not reach it (checkpoint and restore must not stop halfway; the caller decides).
    Raises HostError when the program is missing, and PodmanError on a timeout; a non-zero
    exit is returned, not raised, since what it means depends on the caller.
    """
    argv = [str(a) for a in argv]
    log.debug("running %s", " ".join(argv))

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(  # noqa: S603 - argv list, no shell
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin, text=True,
            errors="replace", env=dict(env) if env is not None else None,
            start_new_session=own_session)

    try:
        proc = starting(start)
    except FileNotFoundError as exc:
        raise HostError(
            f"{argv[0]} is not installed or not on PATH",
            hint="install podman (apt-get install podman) or run scripts/provision-host",
        ) from exc
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise PodmanError(
                f"{' '.join(argv[:2])} did not finish within {exc.timeout:.0f}s",
                argv=argv,
            ) from exc
    returncode = proc.returncode
    stderr_tail = stderr.strip().rsplit("\n", 1)[-1] if returncode else ""
    log.debug("exit %d: %s %s", returncode, argv[0], stderr_tail)
    return CommandResult(argv, returncode, stdout, stderr)
