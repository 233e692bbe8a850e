"""The podman adapter: ``PodmanCLI`` drives the real program through ``runner.py``.

It returns typed results (``types.py``) or raises typed errors (``warmctl.errors``) carrying
podman's stderr and, for checkpoint/restore failures, the path of CRIU's log.

Over 450 lines: it is one class, a method per podman command, with the parsers of podman's
answers; cutting the class would scatter one job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from warmctl.errors import (
    CheckpointError,
    HostError,
    NotFoundError,
    PodmanConflictError,
    PodmanError,
)
from warmctl.host.diagnose import diagnose, shorten_runtime_command, without_warnings
from warmctl.podman.runner import (
    QUERY_TIMEOUT,
    RUN_TIMEOUT,
    CommandResult,
    containers_conf_files,
    podman_environment,
    run_subprocess,
)
from warmctl.podman.types import (
    CheckpointResult,
    ContainerInfo,
    HostVersions,
    Mount,
    Podman,
    RestoreResult,
    VolumeSettings,
)

log = logging.getLogger(__name__)


# Where podman's OCI runtimes live (containers.conf's default search list), for the fingerprint.
_RUNTIME_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/sbin", "/bin",
                 "/usr/lib/cri-o-runc/sbin", "/run/current-system/sw/bin")
_RUNTIME_FILES = tuple(f"{d}/{name}" for name in ("runc", "crun") for d in _RUNTIME_DIRS)


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
