"""Integration fixtures: a real podman, as root, with the test images provisioned.

Each test gets its own catalogue directory and a unique container-name prefix; every container
whose name starts with it is removed afterwards, even when the test fails. When
WARMCTL_REQUIRE_PODMAN=1 (CI sets it), a host that cannot checkpoint fails the run instead of
skipping these tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warmctl.podman import podman_environment

IMAGES = {
    "busybox": "localhost/warmctl-test/busybox",
    "memcached": "localhost/warmctl-test/memcached",
    "java": "localhost/warmctl-test/java",
}


def _host_problem() -> str | None:
    if os.geteuid() != 0:
        return "not root: podman checkpoint/restore needs root"
    if shutil.which("podman", path=podman_environment()["PATH"]) is None:
        return "podman is not installed (run scripts/provision-host)"
    for image in IMAGES.values():
        result = subprocess.run(["podman", "image", "exists", image], check=False,
                                env=podman_environment())
        if result.returncode != 0:
            return f"test image {image} is missing (run scripts/provision-host)"
    return None


_PROBLEM: str | None = None
_CHECKED = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global _PROBLEM, _CHECKED
    podman_items = [item for item in items if item.get_closest_marker("podman")]
    if not podman_items:
        return
    if not _CHECKED:
        _PROBLEM, _CHECKED = _host_problem(), True
    if _PROBLEM is None:
        return
    if os.environ.get("WARMCTL_REQUIRE_PODMAN") == "1":
        raise pytest.UsageError(
            f"WARMCTL_REQUIRE_PODMAN=1 but this host cannot run the integration tests: {_PROBLEM}"
        )
    skip = pytest.mark.skip(reason=_PROBLEM)
    for item in podman_items:
        item.add_marker(skip)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


class Warmctl:
    """Runs the real CLI in a subprocess against this test's catalogue."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**podman_environment(), "WARMCTL_HOME": str(home), "NO_COLOR": "1"}
        self.env.pop("WARMCTL_DEBUG", None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 900,
                 env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "warmctl", *args],
            capture_output=True, text=True, timeout=timeout,
            env={**self.env, **(env or {})}, check=False, stdin=subprocess.DEVNULL,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"warmctl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "warmctl", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def warmctl(tmp_path: Path) -> Warmctl:
    return Warmctl(tmp_path / "home")


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, check=False,
                            env=podman_environment(), timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {result.stderr}")
    return result


class Containers:
    """Unique container names for one test, all removed at the end."""

    def __init__(self) -> None:
        self.prefix = f"wt{uuid.uuid4().hex[:8]}"

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def cleanup(self) -> None:
        listed = podman("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split()
        ours = [n for n in listed if n.startswith(self.prefix)]
        if ours:
            podman("rm", "--force", "--time", "0", *ours, check=False)

    def state(self, name: str) -> str | None:
        result = podman("container", "inspect", "--format", "{{.State.Status}}", name, check=False)
        return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture
def containers() -> Iterator[Containers]:
    made = Containers()
    try:
        yield made
    finally:
        made.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
