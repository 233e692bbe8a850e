"""Running commands and reading the clock: the one place where either happens.

Every figure the benchmark reports comes from ``timed`` (a monotonic clock around a callable);
``run`` is ``timed`` around one program. Podman and warmctl are run as a user would run them:
their own programs, no shell, the caller's environment plus the sbin directories (where
podman's runtime finds CRIU's shim).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
COMMAND_TIMEOUT = 1800.0


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """Seconds that action took, and what it returned."""
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join(path + [d for d in SBIN_DIRS if d not in path])
    env["NO_COLOR"] = "1"
    for name in ("WARMCTL_DEBUG", "WARMCTL_HOME"):
        env.pop(name, None)
    env.update(extra or {})
    return env


class CommandFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def run(argv: list[str], *, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT) -> Completed:
    """Run argv to completion and time it (process start to exit)."""
    seconds, proc = timed(lambda: subprocess.run(  # noqa: S603 - argv list, no shell
        argv, capture_output=True, text=True, errors="replace", env=command_env(env),
        stdin=subprocess.DEVNULL, timeout=timeout, check=False,
    ))
    done = Completed(argv, seconds, proc.returncode, proc.stdout, proc.stderr)
    if check and done.returncode != 0:
        last = done.stderr.strip().splitlines()[-3:]
        raise CommandFailed(f"{' '.join(argv)} exited {done.returncode}: {' | '.join(last)}")
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def warmctl_program() -> str:
    """The warmctl next to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "warmctl"
    if beside.exists():
        return str(beside)
    found = shutil.which("warmctl")
    if found is None:
        raise SystemExit("bench: warmctl is not installed in this Python's environment")
    return found


class Podman:
    """podman, plus the containers this run made (all named PREFIX-...)."""

    IMAGE = "localhost/warmctl-test/memcached"

    def __init__(self) -> None:
        self.prefix = f"wbench{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str, check: bool = True) -> Completed:
        return run(["podman", *args], check=check)

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def run_memcached(self, name: str, port: int, memory_mib: int) -> Completed:
        return self("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:11211",
                    self.IMAGE, "-m", str(memory_mib), "-p", "11211")

    def remove(self, name: str) -> None:
        self("rm", "--force", "--time", "0", name, check=False)

    def cleanup(self) -> None:
        listed = self("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split()
        ours = [n for n in listed if n.startswith(self.prefix)]
        if ours:
            self("rm", "--force", "--time", "0", *ours, check=False)


class Warmctl:
    """The warmctl CLI against one catalogue."""

    def __init__(self, home: Path) -> None:
        self.program = warmctl_program()
        self.home = home

    def __call__(self, *args: str, check: bool = True) -> Completed:
        return run([self.program, "--home", str(self.home), *args], check=check)
