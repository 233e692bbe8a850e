"""The podman adapter: the only place warmctl runs podman.

Every call is an argv list (never a shell) with a timeout, logged at debug level, and returns
typed results or raises typed errors (``warmctl.errors``) carrying podman's stderr and, for
checkpoint/restore failures, the path of CRIU's log. ``Podman`` is the interface the rest of
the code depends on; ``PodmanCLI`` drives the real program; unit tests use a fake.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from warmctl.errors import (
    CheckpointError,
    HostError,
    NotFoundError,
    PodmanConflictError,
    PodmanError,
)
from warmctl.host.diagnose import diagnose, shorten_runtime_command, without_warnings

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

COMPRESSIONS = ("zstd", "none", "gzip")


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


# Where podman's OCI runtimes live (containers.conf's default search list), for the fingerprint.
_RUNTIME_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/sbin", "/bin",
                 "/usr/lib/cri-o-runc/sbin", "/run/current-system/sw/bin")
_RUNTIME_FILES = tuple(f"{d}/{name}" for name in ("runc", "crun") for d in _RUNTIME_DIRS)


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


@dataclass(frozen=True)
class VolumeSettings:
    """How a named volume was made, as `podman volume inspect` shows it: enough to make it
    again as it was (volumes.py puts a volume back after a failed resume)."""

    driver: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"driver": self.driver, "labels": self.labels, "options": self.options}


@dataclass(frozen=True)
class Mount:
    """One of a container's mounts, as podman inspect lists it."""

    type: str  # "volume" (a named volume) or "bind" (a host path)
    name: str  # the volume's name; "" for a bind mount
    source: str  # the host path
    destination: str  # the path inside the container


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image_name: str
    image_id: str
    state: str  # podman's status word: running, exited, created, ...
    checkpointed: bool
    pid: int = 0  # the container's init process on the host, 0 when not running
    ports: list[str] = field(default_factory=list)  # "HOST_IP:HOST_PORT:CONTAINER_PORT/PROTO"
    labels: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)  # the spec's (Config.Annotations)

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class CheckpointResult:
    criu_statistics: dict[str, int]
    duration_us: int | None


@dataclass(frozen=True)
class RestoreResult:
    container_id: str
    criu_statistics: dict[str, int]
    duration_us: int | None


@dataclass(frozen=True)
class HostVersions:
    podman: str
    runtime: str
    runtime_version: str
    kernel: str
    hostname: str
    cgroup_manager: str = ""
    cgroup_version: str = ""
    # The runtime's whole --version text: crun lists its build features (+CRIU) there.
    runtime_details: str = ""


class Podman(ABC):
    """What warmctl needs from podman. Implementations: PodmanCLI, and fakes in tests."""

    @abstractmethod
    def host_versions(self) -> HostVersions: ...

    def versions_fingerprint(self) -> str | None:
        """Something that changes whenever host_versions() may: the programs' and their
        configuration files' identities. None: unknown, so host_versions() is not cached."""
        return None

    def userdata_dir(self, container: str) -> Path | None:
        """The container's directory in podman's storage, which holds its last checkpoint
        (checkpoint/, network.status, ...); None when unknown."""
        return None

    def restore_in_place(self, container: str, *, tcp_established: bool = False,
                         file_locks: bool = False, criu_bin: Path | None = None) -> RestoreResult:
        """Restore a checkpointed, stopped container from the checkpoint in its own storage.

        ``criu_bin``, here and in checkpoint() and restore(): a directory put first on
        podman's PATH, whose ``criu`` hands CRIU warmctl's configuration (criu_config.py)."""
        raise PodmanError("this podman adapter cannot restore in place")

    # --- named volumes (warmctl/volumes.py) ---

    def volume_mountpoint(self, name: str) -> Path | None:
        """Where the volume's content lives on the host; None when there is no such volume."""
        raise PodmanError("this podman adapter knows no volumes")

    def volume_users(self, name: str) -> list[str]:
        """The ids of the containers (any state) that mount the volume."""
        raise PodmanError("this podman adapter knows no volumes")

    def create_volume(self, name: str, settings: VolumeSettings | None = None) -> Path:
        """A new, empty named volume (made as ``settings`` say: driver, labels, options);
        returns its mountpoint."""
        raise PodmanError("this podman adapter cannot create volumes")

    def volume_settings(self, name: str) -> VolumeSettings | None:
        """How the volume was made (driver, labels, options); None when there is none."""
        raise PodmanError("this podman adapter knows no volumes")

    def export_volume(self, name: str, dest: Path) -> None:
        """Write the volume's content as a tar into ``dest`` (truncated, written in place)."""
        raise PodmanError("this podman adapter cannot export volumes")

    def import_volume(self, name: str, tar: IO[bytes]) -> None:
        """Fill the volume with the content of a tar stream, read to its end."""
        raise PodmanError("this podman adapter cannot import volumes")

    def remove_volume(self, name: str) -> None:
        """Remove a volume; one that is already gone is not an error."""
        raise PodmanError("this podman adapter cannot remove volumes")

    @abstractmethod
    def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        """The container's state, or None when podman knows no such container."""

    @abstractmethod
    def list_containers(self, *, running_only: bool = True) -> list[str]: ...

    @abstractmethod
    def list_images(self) -> list[str]: ...

    @abstractmethod
    def image_exists(self, image: str) -> bool: ...

    def image_id(self, image: str) -> str | None:
        """The full id of a local image, or None when it is not on this host (or, in an
        implementation that cannot tell, unknown)."""
        return None

    @abstractmethod
    def run_detached(
        self,
        image: str,
        *,
        name: str,
        publish: Sequence[str] = (),
        env: Sequence[str] = (),
        volumes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        command: Sequence[str] = (),
    ) -> str:
        """Start a container in the background; returns its id."""

    @abstractmethod
    def exec(self, container: str, command: Sequence[str], *, timeout: float) -> CommandResult:
        """Run a command inside the container; a non-zero exit is returned, not raised."""

    @abstractmethod
    def checkpoint(
        self,
        container: str,
        export_to: Path,
        *,
        leave_running: bool = False,
        compress: str = "zstd",
        tcp_established: bool = False,
        file_locks: bool = False,
        criu_bin: Path | None = None,
    ) -> CheckpointResult: ...

    @abstractmethod
    def restore(
        self,
        archive: Path,
        *,
        name: str,
        publish: Sequence[str] = (),
        tcp_established: bool = False,
        file_locks: bool = False,
        ignore_volumes: bool = False,
        criu_bin: Path | None = None,
    ) -> RestoreResult:
        """``ignore_volumes``: the container mounts the volumes its configuration names as
        they are, without creating them or restoring the archive's content into them."""

    @abstractmethod
    def remove_container(self, name_or_id: str, *, force: bool = True) -> None:
        """Remove a container; a container that is already gone is not an error."""


# Known failure signatures in podman's stderr, mapped to the error type and a one-line fix.
_CONFLICT_PATTERNS = (
    re.compile(r"name \"?[^\"]*\"? is already in use", re.I),
    re.compile(r"address already in use", re.I),
    re.compile(r"port is already allocated", re.I),
)
_NO_SUCH_CONTAINER = re.compile(r"no such container|no container with name or ID", re.I)
_NO_SUCH_VOLUME = re.compile(r"no such volume|no volume with name", re.I)
_VOLUME_EXISTS = re.compile(r"volume with name .* already exists", re.I)
_VOLUME_IN_USE = re.compile(r"volume is being used|being used by the following container", re.I)
_CRIU_LOG = re.compile(r"(/\S+/(?:dump|restore)\.log)")


class PodmanCLI(Podman):
    """Drives the podman program."""

    def __init__(self, program: str | None = None, *,
                 query_timeout: float = QUERY_TIMEOUT) -> None:
        # WARMCTL_PODMAN picks another podman binary (a wrapper, a newer build).
        self.program = program or os.environ.get("WARMCTL_PODMAN") or "podman"
        self.query_timeout = query_timeout  # completion asks with a much shorter one
        self._env = podman_environment()
        self._usable = False  # podman --version answered as podman does

    def _run(self, *args: str, timeout: float | None = None,
             forever: bool = False, answers_by_status: bool = False,
             criu_bin: Path | None = None) -> CommandResult:
        """podman with ``args``: within ``timeout`` (default: the query timeout), or with no
        time limit at all (``forever``); ``criu_bin`` first on its PATH. A program that is
        missing, or fails without a word and is not podman (``WARMCTL_PODMAN=/bin/false``), is
        HostError (exit 6).
        ``answers_by_status``: a silent non-zero exit is podman's answer (``image exists``)."""
        self._require_program()
        # Every podman call gets a session of its own: a Ctrl-C at the terminal reaches
        # warmctl alone, which decides what to stop (never a checkpoint or restore halfway).
        limit = None if forever else (timeout or self.query_timeout)
        env = self._env
        if criu_bin is not None:
            # podman hands the runtime only PATH (and XDG_RUNTIME_DIR); runc runs the first
            # criu on it.
            env = {**env, "PATH": os.pathsep.join((str(criu_bin), env["PATH"]))}
        result = run_subprocess([self.program, *args], timeout=limit, env=env, own_session=True)
        if result.returncode != 0 and not result.stderr.strip() and not answers_by_status:
            self.require_usable()  # podman always says why it failed; is this podman?
        return result

    def _describe(self) -> str:
        chosen = os.environ.get("WARMCTL_PODMAN")
        return f"WARMCTL_PODMAN={chosen}" if chosen == self.program else self.program

    def _require_program(self) -> None:
        fix = "install podman (apt-get install podman) or run scripts/provision-host"
        if os.sep in self.program:
            # A path: PATH plays no part, so say what is wrong with that file.
            if not os.path.exists(self.program):
                raise HostError(f"{self._describe()} does not exist",
                                hint="point WARMCTL_PODMAN at the podman program, or unset it")
            if not os.path.isfile(self.program) or not os.access(self.program, os.X_OK):
                raise HostError(f"{self._describe()} is not an executable program",
                                hint="point WARMCTL_PODMAN at the podman program, or unset it")
        elif shutil.which(self.program, path=self._env["PATH"]) is None:
            raise HostError(f"{self._describe()} not found on PATH", hint=fix)

    def require_usable(self) -> None:
        """HostError (exit 6) unless ``podman --version`` answers as podman does; asked once,
        and only after a failure or an answer podman would not give: no cost when all is well."""
        if self._usable:
            return
        self._require_program()
        result = run_subprocess([self.program, "--version"], timeout=self.query_timeout,
                                env=self._env, own_session=True)
        if result.returncode == 0 and result.stdout.startswith("podman version"):
            self._usable = True
            return
        said = (_first_error_line(result.stderr) or result.stdout.strip()).split("\n")[0][:60]
        answer = f"exited {result.returncode}" + (f": {said}" if said else " without a word")
        raise HostError(
            f"{self._describe()} is not a usable podman: `{self.program} --version` {answer}",
            hint="point WARMCTL_PODMAN at the podman program, or unset it",
        )

    def _check(self, result: CommandResult, what: str) -> CommandResult:
        if result.returncode != 0:
            raise self._error(result, what, PodmanError)
        return result

    def _error(
        self, result: CommandResult, what: str, default: type[PodmanError]
    ) -> PodmanError:
        stderr = without_warnings(result.stderr).strip()
        first = shorten_runtime_command(_first_error_line(stderr))
        message = f"{what} failed: {first}" if first else f"{what} failed"
        hint = diagnose(stderr)
        if any(p.search(stderr) for p in _CONFLICT_PATTERNS):
            return PodmanConflictError(message, argv=result.argv, returncode=result.returncode,
                                       stderr=stderr, hint=hint)
        match = _CRIU_LOG.search(stderr)
        criu_log = Path(match.group(1)) if match else None
        return default(message, argv=result.argv, returncode=result.returncode,
                       stderr=stderr, criu_log=criu_log, hint=hint)

    def _json(self, *args: str) -> Any:
        result = self._check(self._run(*args), f"podman {args[0]}")
        try:
            return json.loads(result.stdout or "null")
        except json.JSONDecodeError as exc:
            self.require_usable()
            raise PodmanError(f"podman {args[0]} printed something that is not JSON") from exc

    def host_versions(self) -> HostVersions:
        info = self._json("info", "--format", "json")
        if not isinstance(info, dict):  # a program that is not podman may print nothing
            self.require_usable()
            raise PodmanError("podman info printed no host information")
        host = info.get("host", {})
        runtime = host.get("ociRuntime", {})
        return HostVersions(
            podman=str(info.get("version", {}).get("Version", "")),
            runtime=str(runtime.get("name", "")),
            runtime_version=str(runtime.get("version", "")).splitlines()[0]
            if runtime.get("version") else "",
            kernel=str(host.get("kernel", os.uname().release)),
            hostname=str(host.get("hostname", os.uname().nodename)),
            cgroup_manager=str(host.get("cgroupManager", "")),
            cgroup_version=str(host.get("cgroupVersion", "")),
            runtime_details=str(runtime.get("version", "")),
        )

    def versions_fingerprint(self) -> str | None:
        program = shutil.which(self.program, path=self._env["PATH"])
        if program is None:
            return None
        uname = os.uname()
        parts = [uname.release, uname.version, uname.nodename]
        files = [Path(program), *map(Path, _RUNTIME_FILES), *containers_conf_files(self._env)]
        for path in files:
            try:
                found = os.stat(path)
            except OSError:
                continue
            parts.append(f"{path}:{found.st_ino}:{found.st_size}:{found.st_mtime_ns}")
        return "\n".join(parts)

    def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        result = self._run("container", "inspect", "--format", "json", name_or_id)
        if result.returncode != 0:
            if _NO_SUCH_CONTAINER.search(result.stderr):
                return None
            raise self._error(result, "podman container inspect", PodmanError)
        try:
            data = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            self.require_usable()
            raise PodmanError("podman container inspect printed something that is not JSON") \
                from exc
        if not data:
            return None
        return _container_info(data[0])

    def list_containers(self, *, running_only: bool = True) -> list[str]:
        args = ["ps", "--format", "{{.Names}}"]
        if not running_only:
            args.append("--all")
        out = self._check(self._run(*args), "podman ps").stdout
        return [line for line in out.splitlines() if line]

    def list_images(self) -> list[str]:
        out = self._check(
            self._run("images", "--format", "{{.Repository}}:{{.Tag}}"), "podman images"
        ).stdout
        # An image with several tags is listed once per tag; an untagged one is "<none>".
        return list(dict.fromkeys(
            line for line in out.splitlines() if line and "<none>" not in line))

    def image_exists(self, image: str) -> bool:
        return self._run("image", "exists", image, answers_by_status=True).returncode == 0

    def image_id(self, image: str) -> str | None:
        result = self._run("image", "inspect", "--format", "{{.Id}}", image)
        return result.stdout.strip() or None if result.returncode == 0 else None

    def run_detached(
        self,
        image: str,
        *,
        name: str,
        publish: Sequence[str] = (),
        env: Sequence[str] = (),
        volumes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        command: Sequence[str] = (),
    ) -> str:
        args = ["run", "--detach", "--name", name]
        for spec in publish:
            args += ["--publish", spec]
        for item in env:
            args += ["--env", item]
        for vol in volumes:
            args += ["--volume", vol]
        args += list(extra_args)
        args += ["--", image, *command]
        result = self._run(*args, timeout=RUN_TIMEOUT)
        if result.returncode != 0:
            raise self._error(result, f"podman run {image}", PodmanError)
        return result.stdout.strip().splitlines()[-1]

    def exec(self, container: str, command: Sequence[str], *, timeout: float) -> CommandResult:
        return self._run("exec", container, *command, timeout=timeout)

    def checkpoint(
        self,
        container: str,
        export_to: Path,
        *,
        leave_running: bool = False,
        compress: str = "zstd",
        tcp_established: bool = False,
        file_locks: bool = False,
        criu_bin: Path | None = None,
    ) -> CheckpointResult:
        args = ["container", "checkpoint", "--export", str(export_to), "--compress", compress,
                "--print-stats"]
        if leave_running:
            args.append("--leave-running")
        if tcp_established:
            args.append("--tcp-established")
        if file_locks:
            args.append("--file-locks")
        result = self._run(*args, container, forever=True, criu_bin=criu_bin)
        if result.returncode != 0:
            if _NO_SUCH_CONTAINER.search(result.stderr):
                raise NotFoundError(f"no such container: {container}")
            err = self._error(result, f"checkpoint of {container}", CheckpointError)
            if err.criu_log is None:
                err.criu_log = self._userdata_log(container, "dump.log")
            raise err
        stats = _parse_stats(result.stdout)
        return CheckpointResult(stats.criu, stats.duration_us)

    def restore(
        self,
        archive: Path,
        *,
        name: str,
        publish: Sequence[str] = (),
        tcp_established: bool = False,
        file_locks: bool = False,
        ignore_volumes: bool = False,
        criu_bin: Path | None = None,
    ) -> RestoreResult:
        args = ["container", "restore", "--import", str(archive), "--name", name,
                "--print-stats"]
        if ignore_volumes:
            args.append("--ignore-volumes")
        for spec in publish:
            args += ["--publish", spec]
        if tcp_established:
            args.append("--tcp-established")
        if file_locks:
            args.append("--file-locks")
        return self._restore(args, name, criu_bin)

    def restore_in_place(self, container: str, *, tcp_established: bool = False,
                         file_locks: bool = False, criu_bin: Path | None = None) -> RestoreResult:
        args = ["container", "restore", "--print-stats"]
        if tcp_established:
            args.append("--tcp-established")
        if file_locks:
            args.append("--file-locks")
        return self._restore([*args, container], container, criu_bin)

    def _restore(self, args: list[str], container: str,
                 criu_bin: Path | None) -> RestoreResult:
        result = self._run(*args, forever=True, criu_bin=criu_bin)
        if result.returncode != 0:
            err = self._error(result, f"restore of {container}", CheckpointError)
            if err.criu_log is None:
                err.criu_log = self._userdata_log(container, "restore.log")
            raise err
        stats = _parse_stats(result.stdout)
        return RestoreResult(stats.container_id, stats.criu, stats.duration_us)

    def userdata_dir(self, container: str) -> Path | None:
        result = self._run("container", "inspect", "--format", "{{.StaticDir}}", container)
        text = result.stdout.strip()
        return Path(text) if result.returncode == 0 and text else None

    def volume_mountpoint(self, name: str) -> Path | None:
        result = self._run("volume", "inspect", "--format", "{{.Mountpoint}}", name)
        if result.returncode != 0:
            if _NO_SUCH_VOLUME.search(result.stderr):
                return None
            raise self._error(result, "podman volume inspect", PodmanError)
        return Path(result.stdout.strip())

    def volume_users(self, name: str) -> list[str]:
        out = self._check(self._run("ps", "--all", "--no-trunc", "--filter", f"volume={name}",
                                    "--format", "{{.ID}}"), "podman ps").stdout
        return [line for line in out.splitlines() if line]

    def create_volume(self, name: str, settings: VolumeSettings | None = None) -> Path:
        args = ["volume", "create"]
        if settings is not None:
            args += ["--driver", settings.driver]
            for key, value in sorted(settings.labels.items()):
                args += ["--label", f"{key}={value}"]
            for key, value in sorted(settings.options.items()):
                args += ["--opt", f"{key}={value}"]
        result = self._run(*args, name)
        if result.returncode != 0:
            if _VOLUME_EXISTS.search(result.stderr):
                raise PodmanConflictError(f"volume {name} already exists", argv=result.argv,
                                          returncode=result.returncode, stderr=result.stderr)
            raise self._error(result, f"podman volume create {name}", PodmanError)
        mountpoint = self.volume_mountpoint(name)
        if mountpoint is None:
            raise PodmanError(f"podman volume create {name} made no volume")
        return mountpoint

    def volume_settings(self, name: str) -> VolumeSettings | None:
        result = self._run("volume", "inspect", name)
        if result.returncode != 0:
            if _NO_SUCH_VOLUME.search(result.stderr):
                return None
            raise self._error(result, "podman volume inspect", PodmanError)
        try:
            [found] = json.loads(result.stdout)
            return VolumeSettings(
                driver=str(found.get("Driver") or "local"),
                labels={str(k): str(v) for k, v in (found.get("Labels") or {}).items()},
                options={str(k): str(v) for k, v in (found.get("Options") or {}).items()})
        except (ValueError, TypeError, AttributeError) as err:
            raise PodmanError(f"podman volume inspect {name} printed no volume") from err

    def export_volume(self, name: str, dest: Path) -> None:
        # Not the query timeout: a volume may hold gigabytes.
        self._check(self._run("volume", "export", "--output", str(dest), name, forever=True),
                    f"podman volume export {name}")

    def import_volume(self, name: str, tar: IO[bytes]) -> None:
        # podman reads the tar from a pipe that a thread fills: the stream may be gigabytes,
        # decompressed from the snapshot's archive as it is read.
        read_end, write_end = os.pipe()
        failure: list[BaseException] = []

        def feed() -> None:
            try:
                with os.fdopen(write_end, "wb") as pipe:
                    shutil.copyfileobj(tar, pipe, 1024 * 1024)
            except BrokenPipeError:
                pass  # podman stopped reading: its exit status says why
            except BaseException as err:  # reported after podman exits
                failure.append(err)

        feeder = threading.Thread(target=feed, name="volume-import", daemon=True)
        feeder.start()
        try:
            result = run_subprocess([self.program, "volume", "import", name, "-"],
                                    timeout=None, env=self._env, stdin=read_end,
                                    own_session=True)
        finally:
            os.close(read_end)
            feeder.join()
        if failure:
            raise failure[0]
        self._check(result, f"podman volume import {name}")

    def remove_volume(self, name: str) -> None:
        result = self._run("volume", "rm", name)
        if result.returncode != 0 and not _NO_SUCH_VOLUME.search(result.stderr):
            if _VOLUME_IN_USE.search(result.stderr):
                raise PodmanConflictError(f"volume {name} is in use by a container",
                                          argv=result.argv, returncode=result.returncode,
                                          stderr=result.stderr)
            raise self._error(result, f"podman volume rm {name}", PodmanError)

    def remove_container(self, name_or_id: str, *, force: bool = True) -> None:
        args = ["rm", "--time", "0"]
        if force:
            args.append("--force")
        result = self._run(*args, name_or_id)
        if result.returncode != 0 and not _NO_SUCH_CONTAINER.search(result.stderr):
            raise self._error(result, f"podman rm {name_or_id}", PodmanError)

    def _userdata_log(self, container: str, filename: str) -> Path | None:
        """CRIU's log in the container's userdata dir, when podman did not name it."""
        directory = self.userdata_dir(container)
        path = directory / filename if directory is not None else None
        return path if path is not None and path.is_file() else None


@dataclass(frozen=True)
class _Stats:
    container_id: str
    criu: dict[str, int]
    duration_us: int | None


def _parse_stats(stdout: str) -> _Stats:
    """The JSON that --print-stats prints: podman's duration plus CRIU's own statistics."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        log.debug("no statistics in podman's output: %r", stdout[:200])
        return _Stats("", {}, None)
    duration = data.get("podman_checkpoint_duration", data.get("podman_restore_duration"))
    containers = data.get("container_statistics") or [{}]
    first = containers[0]
    criu = {k: int(v) for k, v in (first.get("criu_statistics") or {}).items()}
    return _Stats(str(first.get("Id", "")), criu, int(duration) if duration is not None else None)


def _first_error_line(stderr: str) -> str:
    """podman's most telling line: the last 'Error:' line, else the last non-empty line
    (of a stderr without warnings)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    line = errors[-1] if errors else (lines[-1] if lines else "")
    return line.removeprefix("Error:").strip()


def _container_info(data: dict[str, Any]) -> ContainerInfo:
    state = data.get("State", {})
    ports: list[str] = []
    for container_port, bindings in (data.get("NetworkSettings", {}).get("Ports") or {}).items():
        for binding in bindings or []:
            host_ip = binding.get("HostIp") or ""
            host_port = binding.get("HostPort") or ""
            ports.append(f"{host_ip}:{host_port}:{container_port}")
    config = data.get("Config", {})
    return ContainerInfo(
        id=str(data.get("Id", "")),
        name=str(data.get("Name", "")),
        image_name=str(data.get("ImageName", "")),
        image_id=str(data.get("Image", "")),
        state=str(state.get("Status", "")),
        checkpointed=bool(state.get("Checkpointed", False)),
        pid=int(state.get("Pid") or 0),
        ports=ports,
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
        mounts=[Mount(type=str(m.get("Type", "")), name=str(m.get("Name") or ""),
                      source=str(m.get("Source", "")), destination=str(m.get("Destination", "")))
                for m in data.get("Mounts") or [] if isinstance(m, dict)],
        annotations={str(k): str(v) for k, v in (config.get("Annotations") or {}).items()},
    )
