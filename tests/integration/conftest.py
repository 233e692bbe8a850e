"""Integration fixtures: a real podman, as root, with the test images provisioned.

Each test gets its own catalogue directory and a unique container-name prefix; every container
whose name starts with it is removed afterwards, even when the test fails. When
WARMCTL_REQUIRE_PODMAN=1 (CI sets it), a host that cannot checkpoint fails the run instead of
skipping these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import IMAGES, Containers, Warmctl

from warmctl.podman.runner import podman_environment


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


@pytest.fixture
def warmctl(tmp_path: Path) -> Warmctl:
    return Warmctl(tmp_path / "home")


@pytest.fixture
def containers() -> Iterator[Containers]:
    made = Containers()
    try:
        yield made
    finally:
        made.cleanup()
