"""warm: run a container from an image, warm it up, wait until it is ready, snapshot it.

Warm-up and readiness commands come from the user: host commands run through ``/bin/sh -c``
(they are shell command lines by design), commands inside the container run through
``podman exec`` split like a shell would split them, so images without a shell work too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from warmctl.catalogue import Catalogue, Snapshot
from warmctl.errors import (
    ConflictError,
    LeftUnfinished,
    NotFoundError,
    NotReadyError,
    PodmanConflictError,
    TimedOut,
    UsageError,
    WarmctlError,
)
from warmctl.output import Progress
from warmctl.podman import CommandResult, Podman
from warmctl.snapshots import SnapshotOptions, require_usable_criu, take_snapshot

_OUTPUT_LIMIT = 300  # characters of a failing command's output shown in the error


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    container: str
    command: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    podman_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Readiness:
    host_command: str | None = None
    exec_command: str | None = None
    tcp_port: int | None = None
    interval: float = 2.0
    timeout: float = 600.0

    def __post_init__(self) -> None:
        given = [x for x in (self.host_command, self.exec_command, self.tcp_port) if x is not None]
        if len(given) > 1:
            raise UsageError("give at most one of --ready, --ready-exec and --ready-tcp")
        if self.interval <= 0:
            raise UsageError("--interval must be positive")

    @property
    def configured(self) -> bool:
        return any(x is not None for x in (self.host_command, self.exec_command, self.tcp_port))

    def describe(self) -> str | None:
        if self.host_command is not None:
            return self.host_command
        if self.exec_command is not None:
            return f"exec: {self.exec_command}"
        if self.tcp_port is not None:
            return f"tcp: {self.tcp_port}"
        return None


@dataclass(frozen=True)
class WarmPlan:
    spec: ContainerSpec
    name: str
    warmup: str | None = None
    warmup_exec: str | None = None
    readiness: Readiness = field(default_factory=Readiness)
    snapshot: SnapshotOptions = field(default_factory=SnapshotOptions)
    keep_on_failure: bool = False


@dataclass
class _Attempt:
    ok: bool
    output: str
    # The command cannot run at all (missing from the image, not executable): retrying
    # until the timeout would only hide that.
    cannot_run: bool = False


def warm(
    catalogue: Catalogue,
    podman: Podman,
    plan: WarmPlan,
    progress: Progress,
    *,
    clock: Callable[[], float] = time.monotonic,
    warn: Callable[[str], None] = lambda text: None,
) -> Snapshot:
    """Run, warm, wait for ready, snapshot. When starting, warming or readiness fails the
    container is removed (unless ``keep_on_failure``) and nothing is recorded. When only the
    snapshot fails, the warm container is left as the snapshot left it (running, unless the
    checkpoint stopped it) and the error says how to retry: hours of warming are not thrown
    away for a checkpoint that may succeed on a second try."""
    spec = plan.spec
    require_usable_criu()  # fail before a long warm-up (and, not root, before podman)
    if not podman.image_exists(spec.image):
        raise NotFoundError(
            f"image {spec.image} is not on this host",
            hint="podman pull, load or import it first",
        )
    catalogue.check_writable()
    existing = podman.inspect_container(spec.container)
    if existing is not None:
        # Checked here, so that a failure below is always about a container warm made.
        raise ConflictError(f"a container named {spec.container} already exists "
                            f"({existing.state})", hint="choose another with --container")
    started = clock()
    container_id: str | None = None
    try:
        progress.phase("starting")
        container_id = podman.run_detached(
            spec.image, name=spec.container, publish=spec.publish, env=spec.env,
            volumes=spec.volumes, extra_args=spec.podman_args, command=spec.command,
        )
        if plan.warmup is not None or plan.warmup_exec is not None:
            progress.phase("warming")
            _run_warmup(podman, plan, deadline=started + plan.readiness.timeout, clock=clock)
        attempts = 0
        if plan.readiness.configured:
            attempts = _wait_until_ready(podman, plan, progress, started=started, clock=clock,
                                         warn=warn)
    except BaseException as err:
        # By id; by name only when podman run failed after it had created the container
        # (the name was free a moment ago), never when the name was taken meanwhile.
        leftover = container_id or (None if isinstance(err, PodmanConflictError)
                                    else spec.container)
        if not plan.keep_on_failure and leftover is not None:
            with contextlib.suppress(WarmctlError):
                podman.remove_container(leftover)
        raise
    warm_seconds = round(clock() - started, 3)
    progress.phase("snapshotting")
    extra = {"warm": {
        "image": spec.image,
        "command": list(spec.command),
        "warmup": plan.warmup,
        "warmup_exec": plan.warmup_exec,
        "ready": plan.readiness.describe(),
        "warm_seconds": warm_seconds,
        "probe_attempts": attempts,
    }}
    try:
        return take_snapshot(catalogue, podman, spec.container, plan.name, plan.snapshot,
                             progress, extra=extra)
    except WarmctlError as err:
        _say_the_warm_container_stays(podman, plan, err)
        raise


def _say_the_warm_container_stays(podman: Podman, plan: WarmPlan, err: WarmctlError) -> None:
    """The snapshot failed after the warming succeeded: the container is kept; the error
    says so, and how to snapshot it again."""
    container = plan.spec.container
    if isinstance(err, (LeftUnfinished, TimedOut)):
        return  # podman goes on alone, and holds the container: inspecting it would wait
    with contextlib.suppress(WarmctlError):
        info = podman.inspect_container(container)
        if info is not None and info.running:
            err.message += f"; the warm container {container} is still running"
            err.hint = f"retry: {snapshot_command(plan)}" + (f"; {err.hint}" if err.hint else "")


def snapshot_command(plan: WarmPlan) -> str:
    """The ``warmctl snapshot`` that takes the snapshot warm would have taken (without the
    record of the warming)."""
    options = plan.snapshot
    words = ["warmctl", "snapshot", plan.spec.container, plan.name]
    if options.leave_running:
        words.append("--leave-running")
    if options.compress != "zstd":
        words += ["--compress", options.compress]
    if not options.tcp_established:  # checkpointed by default (see criu_config.py)
        words.append("--no-tcp-established")
    if options.file_locks:
        words.append("--file-locks")
    for key, value in (options.labels or {}).items():
        words += ["--label", f"{key}={value}"]
    return shlex.join(words)


def _host_env(plan: WarmPlan) -> dict[str, str]:
    return {**os.environ, "WARMCTL_CONTAINER": plan.spec.container, "WARMCTL_NAME": plan.name}


def _run_host(command: str, env: dict[str, str], timeout: float) -> _Attempt:
    """Run the user's shell command line. It runs in a session of its own, so that on a
    timeout (or Ctrl-C) the whole process group goes, not only /bin/sh: a probe's children
    (``curl ... &``, a pipeline) would otherwise live on, one more set at every attempt."""
    proc = subprocess.Popen(  # noqa: S603 - the user's own shell command line, by design
        ["/bin/sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, errors="replace", env=env,
        start_new_session=True)
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return _Attempt(False, f"timed out after {timeout:.0f}s")
        except BaseException:
            _kill_group(proc)
            raise
    return _Attempt(proc.returncode == 0, _last_output(stdout, stderr, proc.returncode))


_DRAIN_PATIENCE = 2.0  # seconds: what a killed group's pipes may take to close


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the command's process group (its session's: the shell is its leader) and reap
    the shell. A descendant that left the group and holds the pipes is not waited for long."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=_DRAIN_PATIENCE)
    proc.wait()


def _run_exec(podman: Podman, container: str, command: str, timeout: float) -> _Attempt:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"cannot split {command!r}: {exc}") from exc
    try:
        result: CommandResult = podman.exec(container, argv, timeout=max(timeout, 0.1))
    except WarmctlError as err:
        return _Attempt(False, err.message)
    return _Attempt(result.returncode == 0,
                    _last_output(result.stdout, result.stderr, result.returncode),
                    cannot_run=_cannot_run(result))


def _cannot_run(result: CommandResult) -> bool:
    """podman exec's answer when the command is not in the container or not executable:
    exit 127 (also a shell's "command not found"), or 126 with the OCI runtime's words."""
    return result.returncode == 127 or (
        result.returncode == 126 and "OCI runtime" in result.stderr)


def _run_warmup(podman: Podman, plan: WarmPlan, *, deadline: float,
                clock: Callable[[], float]) -> None:
    if plan.warmup is not None:
        attempt = _run_host(plan.warmup, _host_env(plan), deadline - clock())
        if not attempt.ok:
            raise NotReadyError(f"warm-up command failed: {attempt.output}")
    if plan.warmup_exec is not None:
        attempt = _run_exec(podman, plan.spec.container, plan.warmup_exec, deadline - clock())
        if not attempt.ok:
            raise NotReadyError(f"warm-up inside the container failed: {attempt.output}")


def _wait_until_ready(podman: Podman, plan: WarmPlan, progress: Progress, *, started: float,
                      clock: Callable[[], float], warn: Callable[[str], None]) -> int:
    """Retry the readiness probe every interval until it succeeds; returns the attempts.
    After --ready-exec's first failure, ``warn`` gets what it said; a command that cannot run
    in the container ends the wait at once."""
    readiness = plan.readiness
    deadline = started + readiness.timeout
    tcp_target = _tcp_target(podman, plan) if readiness.tcp_port is not None else None
    attempts = 0
    last = _Attempt(False, "no attempt made")
    while True:
        attempts += 1
        progress.phase(f"waiting for ready: attempt {attempts}")
        attempt_started = clock()
        budget = max(min(readiness.interval * 5, deadline - attempt_started), 0.1)
        if readiness.host_command is not None:
            last = _run_host(readiness.host_command, _host_env(plan), budget)
        elif readiness.exec_command is not None:
            last = _run_exec(podman, plan.spec.container, readiness.exec_command, budget)
        elif tcp_target is not None:
            last = _tcp_connect(*tcp_target, timeout=min(budget, readiness.interval))
        if last.ok:
            return attempts
        if last.cannot_run:
            raise NotReadyError(
                f"--ready-exec {readiness.exec_command!r} cannot run in "
                f"container {plan.spec.container}: {_printable(last.output)}",
                hint="give a command the image has; try it with: podman exec "
                     f"{plan.spec.container} COMMAND")
        _fail_if_container_died(podman, plan.spec.container, last)
        if attempts == 1 and readiness.exec_command is not None:
            # A probe inside the container can fail for reasons the image holds (a wrong
            # path, a missing tool): say it at once rather than after the whole timeout.
            warn(f"not ready yet: --ready-exec's first attempt failed: "
                 f"{_printable(last.output)}; retrying every {readiness.interval:g}s for up "
                 f"to {readiness.timeout:g}s")
        next_attempt = attempt_started + readiness.interval
        if next_attempt >= deadline:
            raise NotReadyError(
                f"not ready after {readiness.timeout:g}s and {attempts} probe attempt(s); "
                f"last probe: {_printable(last.output)}"
            )
        time.sleep(max(next_attempt - clock(), 0))


def _fail_if_container_died(podman: Podman, container: str, last: _Attempt) -> None:
    info = podman.inspect_container(container)
    if info is None or not info.running:
        state = info.state if info is not None else "gone"
        raise NotReadyError(f"container {container} is {state} before it was ready; "
                            f"last probe: {last.output}")


def _tcp_target(podman: Podman, plan: WarmPlan) -> tuple[str, int]:
    """Where to connect for --ready-tcp PORT: the host side of the published PORT."""
    port = plan.readiness.tcp_port
    info = podman.inspect_container(plan.spec.container)
    for binding in info.ports if info else []:
        host_part, _, container_part = binding.rpartition(":")
        host_ip, _, host_port = host_part.rpartition(":")
        if container_part.split("/")[0] == str(port) or host_port == str(port):
            return (host_ip if host_ip not in ("", "0.0.0.0") else "127.0.0.1"), int(host_port)
    raise UsageError(f"--ready-tcp {port}: the container publishes no such port (use -p)")


def _tcp_connect(host: str, port: int, timeout: float) -> _Attempt:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return _Attempt(True, "connected")
    except OSError as exc:
        return _Attempt(False, f"connect to {host}:{port}: {exc.strerror or exc}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """A command's or podman's words with their control characters escaped, as Python writes
    them ("\\x1b"): they come from outside, and reach a terminal."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _last_output(stdout: str, stderr: str, returncode: int) -> str:
    text = " ".join((stderr.strip() or stdout.strip()).split())
    if len(text) > _OUTPUT_LIMIT:
        text = "..." + text[-_OUTPUT_LIMIT:]
    return f"exit {returncode}" + (f": {text}" if text else "")

